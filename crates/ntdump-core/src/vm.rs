//! `!vm`: the virtual-memory summary, from KDBG variables (and, where given, symbol addresses).
//!
//! Each field records where its value came from, or why it has none: a build that lacks a variable gives
//! `None` with a reason, never a made-up zero. KDBG offsets: WINDOWS_INTERNALS.md §3.2.

use crate::addr::{Va, PAGE_SIZE};
use crate::dump::Dump;
use crate::kernel::kdbg::field;
use crate::kernel::Kernel;

/// One `!vm` line: a value in pages, or the reason there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmField {
    /// Field key (e.g. `"nonpaged_pool_usage"`).
    pub key: &'static str,
    /// WinDbg's label (e.g. `"NonPagedPool Usage"`).
    pub label: &'static str,
    /// Value in pages (for counts such as failures: the count).
    pub value: Option<u64>,
    /// Where the value came from (`"KDBG.MmAvailablePages (0x1a8)"`), or why it is missing.
    pub source: String,
    /// True when `value` is a count, not pages.
    pub is_count: bool,
}

crate::ser::tuple!(VmField: key, label, value, source, is_count);

/// How a field is read.
#[derive(Debug, Clone, Copy)]
enum Src {
    /// KDBG field holding the address of a pointer-sized variable, in pages.
    KdbgPages(u64, &'static str),
    /// KDBG field holding the address of a variable in bytes (converted to pages).
    KdbgBytes(u64, &'static str),
    /// KDBG field holding the address of an MMPFNLIST whose first field is the page total.
    KdbgListTotal(u64, &'static str),
    /// A symbol (name without `nt!`) holding a pointer-sized page count.
    Sym(&'static str),
    /// A symbol naming an array of u32 counters, summed (`count` entries).
    SymU32Sum(&'static str, u64),
    /// No source the core can read; the text says why (callers may fill the field otherwise).
    Unavailable(&'static str),
    /// As `KdbgPages`, but a 0 is "not maintained by this build" (e.g. MmNumberOfPhysicalPages on
    /// Windows 10 19041+) and the next source is tried.
    KdbgPagesNonZero(u64, &'static str),
    /// The dump header's PhysicalMemoryBlock (`PHYSICAL_MEMORY_DESCRIPTOR.NumberOfPages`, x64 at
    /// 0x88 + 8 as u64, x86 at 0x64 + 4 as u32), which the kernel copies from MmPhysicalMemoryBlock
    /// when it writes the dump.
    HeaderPhysicalMemoryBlock,
    /// KDBG field holding the address of a pointer variable to a PHYSICAL_MEMORY_DESCRIPTOR
    /// (KDBG.MmPhysicalMemoryBlock, 0x270): its NumberOfPages.
    KdbgMemoryBlock(u64, &'static str),
}

struct Spec {
    key: &'static str,
    label: &'static str,
    srcs: &'static [Src],
    is_count: bool,
}

const SPECS: &[Spec] = &[
    Spec {
        key: "physical_memory",
        label: "Physical Memory",
        srcs: &[
            Src::KdbgPagesNonZero(
                field::MM_NUMBER_OF_PHYSICAL_PAGES,
                "MmNumberOfPhysicalPages",
            ),
            Src::HeaderPhysicalMemoryBlock,
            Src::KdbgMemoryBlock(0x270, "MmPhysicalMemoryBlock"),
        ],
        is_count: false,
    },
    Spec {
        key: "available_pages",
        label: "Available Pages",
        srcs: &[Src::KdbgPages(
            field::MM_AVAILABLE_PAGES,
            "MmAvailablePages",
        )],
        is_count: false,
    },
    Spec {
        key: "resavail_pages",
        label: "ResAvail Pages",
        srcs: &[Src::KdbgPages(
            field::MM_RESIDENT_AVAILABLE_PAGES,
            "MmResidentAvailablePages",
        )],
        is_count: false,
    },
    Spec {
        key: "locked_io_pages",
        label: "Locked IO Pages",
        srcs: &[Src::Sym("MmSystemLockPagesCount")],
        is_count: false,
    },
    Spec {
        key: "free_system_ptes",
        label: "Free System PTEs",
        srcs: &[Src::Sym("MmTotalFreeSystemPtes")],
        is_count: false,
    },
    Spec {
        key: "modified_pages",
        label: "Modified Pages",
        srcs: &[Src::KdbgListTotal(0x198, "MmModifiedPageListHead")],
        is_count: false,
    },
    Spec {
        key: "nonpaged_pool_usage",
        label: "NonPagedPool Usage",
        srcs: &[
            Src::KdbgPages(
                field::MM_ALLOCATED_NON_PAGED_POOL,
                "MmAllocatedNonPagedPool",
            ),
            Src::Sym("MmAllocatedNonPagedPool"),
        ],
        is_count: false,
    },
    Spec {
        key: "nonpaged_pool_max",
        label: "NonPagedPool Max",
        srcs: &[Src::KdbgBytes(
            field::MM_MAXIMUM_NON_PAGED_POOL_IN_BYTES,
            "MmMaximumNonPagedPoolInBytes",
        )],
        is_count: false,
    },
    Spec {
        key: "paged_pool_usage",
        label: "PagedPool Usage",
        srcs: &[Src::Unavailable(
            "no KDBG field holds it (nt!MmPagedPoolInfo needs kernel symbols)",
        )],
        is_count: false,
    },
    Spec {
        key: "paged_pool_max",
        label: "PagedPool Maximum",
        srcs: &[Src::KdbgBytes(
            field::MM_SIZE_OF_PAGED_POOL_IN_BYTES,
            "MmSizeOfPagedPoolInBytes",
        )],
        is_count: false,
    },
    Spec {
        key: "shared_commit",
        label: "Shared Commit",
        srcs: &[Src::KdbgPages(0x158, "MmSharedCommit")],
        is_count: false,
    },
    Spec {
        key: "paged_pool_commit",
        label: "PagedPool Commit",
        srcs: &[Src::KdbgPages(0x170, "MmPagedPoolCommit")],
        is_count: false,
    },
    Spec {
        key: "driver_commit",
        label: "Driver Commit",
        srcs: &[Src::KdbgPages(0x160, "MmDriverCommit")],
        is_count: false,
    },
    Spec {
        key: "committed_pages",
        label: "Committed pages",
        srcs: &[Src::KdbgPages(
            field::MM_TOTAL_COMMITTED_PAGES,
            "MmTotalCommittedPages",
        )],
        is_count: false,
    },
    Spec {
        key: "commit_limit",
        label: "Commit limit",
        srcs: &[Src::KdbgPages(
            field::MM_TOTAL_COMMIT_LIMIT,
            "MmTotalCommitLimit",
        )],
        is_count: false,
    },
    Spec {
        key: "pool_allocation_failures",
        label: "Pool allocation failures",
        srcs: &[Src::SymU32Sum("MmPoolFailures", 9)],
        is_count: true,
    },
];

/// The `!vm` summary.
#[derive(Debug, Clone)]
pub struct VmSummary {
    /// Every field in `!vm` order.
    pub fields: Vec<VmField>,
}

impl VmSummary {
    /// A field by key.
    pub fn get(&self, key: &str) -> Option<&VmField> {
        self.fields.iter().find(|f| f.key == key)
    }
}

/// NumberOfPages of the dump header's PhysicalMemoryBlock (None when the header has no descriptor:
/// NumberOfRuns still holds the "PAGE" fill, or NumberOfPages is 0).
pub fn header_physical_pages(d: &Dump) -> Option<u64> {
    use crate::bytes::LeBytes;
    let f = d.file();
    let (at, wide) = if d.header.is64 {
        (0x88u64, true)
    } else {
        (0x64u64, false)
    };
    let runs = f.u32_at(at, "NumberOfRuns").ok()?;
    if runs == crate::header::PAGE_FILL || runs == 0 {
        return None;
    }
    let n = if wide {
        f.u64_at(at + 8, "NumberOfPages").ok()?
    } else {
        u64::from(f.u32_at(at + 4, "NumberOfPages").ok()?)
    };
    (n != 0 && n != u64::from(crate::header::PAGE_FILL)).then_some(n)
}

fn read_ptr_var(d: &Dump, addr: u64) -> Result<u64, String> {
    d.read_ptr(Va(addr))
        .map_err(|e| format!("variable at {addr:#x} unreadable: {e}"))
}

/// Compute the summary. `symbol(name)` resolves kernel symbols (names without `nt!`) to VAs when a symbol
/// source is loaded; it may always return `None`.
pub fn vm_summary(d: &Dump, k: &Kernel, symbol: &dyn Fn(&str) -> Option<u64>) -> VmSummary {
    let triage = d.triage().is_some();
    let mut fields = Vec::with_capacity(SPECS.len());
    for s in SPECS {
        let mut reasons: Vec<String> = Vec::new();
        let mut got: Option<(u64, String)> = None;
        for src in s.srcs {
            let r: Result<(u64, String), String> = match *src {
                Src::KdbgPages(off, name)
                | Src::KdbgBytes(off, name)
                | Src::KdbgListTotal(off, name) => match &k.kdbg {
                    None => Err("no KDBG block".into()),
                    Some(g) => match g.get(off) {
                        None => Err(format!("KDBG too short for {name} ({off:#x})")),
                        Some(0) => Err(format!(
                            "KDBG.{name} ({off:#x}) is 0: this build has no such variable"
                        )),
                        Some(addr) => read_ptr_var(d, addr).map(|v| {
                            let v = if matches!(src, Src::KdbgBytes(..)) {
                                v / PAGE_SIZE
                            } else {
                                v
                            };
                            (v, format!("KDBG.{name} ({off:#x}) -> {addr:#x}"))
                        }),
                    },
                },
                Src::Unavailable(why) => Err(why.to_string()),
                Src::KdbgPagesNonZero(off, name) => {
                    match k.kdbg.as_ref().and_then(|g| g.get(off)) {
                        None => Err(format!("no KDBG.{name} ({off:#x})")),
                        Some(0) => Err(format!("KDBG.{name} ({off:#x}) is 0")),
                        Some(addr) => match read_ptr_var(d, addr) {
                            Ok(0) => Err(format!(
                            "KDBG.{name} ({off:#x}) -> {addr:#x} holds 0 (not maintained by this \
                             build)"
                        )),
                            Ok(v) => Ok((v, format!("KDBG.{name} ({off:#x}) -> {addr:#x}"))),
                            Err(e) => Err(e),
                        },
                    }
                }
                Src::HeaderPhysicalMemoryBlock => header_physical_pages(d)
                    .map(|n| {
                        (
                            n,
                            format!(
                                "dump header PhysicalMemoryBlock.NumberOfPages ({:#x})",
                                if d.header.is64 { 0x90 } else { 0x68 }
                            ),
                        )
                    })
                    .ok_or_else(|| "the dump header has no PhysicalMemoryBlock".to_string()),
                Src::KdbgMemoryBlock(off, name) => match k.kdbg.as_ref().and_then(|g| g.get(off)) {
                    None | Some(0) => Err(format!("no KDBG.{name} ({off:#x})")),
                    Some(addr) => read_ptr_var(d, addr).and_then(|block| {
                        let at = block + d.pointer_size();
                        read_ptr_var(d, at).and_then(|n| {
                            if n == 0 {
                                Err(format!("{name} at {block:#x}: NumberOfPages is 0"))
                            } else {
                                Ok((
                                    n,
                                    format!(
                                        "KDBG.{name} ({off:#x}) -> {addr:#x} -> \
                                             PHYSICAL_MEMORY_DESCRIPTOR {block:#x} NumberOfPages"
                                    ),
                                ))
                            }
                        })
                    }),
                },
                Src::Sym(name) => match symbol(name) {
                    None => Err(format!("nt!{name} needs kernel symbols (not in KDBG)")),
                    Some(addr) => {
                        read_ptr_var(d, addr).map(|v| (v, format!("nt!{name} at {addr:#x}")))
                    }
                },
                Src::SymU32Sum(name, n) => match symbol(name) {
                    None => Err(format!("nt!{name} needs kernel symbols (not in KDBG)")),
                    Some(addr) => {
                        let mut b = vec![0u8; (4 * n) as usize];
                        d.read_virt(Va(addr), &mut b)
                            .map(|_| {
                                let sum = b
                                    .chunks_exact(4)
                                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as u64)
                                    .sum();
                                (sum, format!("nt!{name} at {addr:#x} ({n} counters summed)"))
                            })
                            .map_err(|e| format!("nt!{name} at {addr:#x} unreadable: {e}"))
                    }
                },
            };
            match r {
                Ok(v) => {
                    got = Some(v);
                    break;
                }
                Err(e) => reasons.push(e),
            }
        }
        let (value, source) = match got {
            Some((v, src)) => (Some(v), src),
            None => {
                let mut why = reasons.join("; ");
                if triage {
                    why = format!("triage dump: kernel variables are not captured ({why})");
                }
                (None, why)
            }
        };
        fields.push(VmField {
            key: s.key,
            label: s.label,
            value,
            source,
            is_count: s.is_count,
        });
    }
    VmSummary { fields }
}
