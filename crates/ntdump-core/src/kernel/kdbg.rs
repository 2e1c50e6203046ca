//! The KDBG block (`KDDEBUGGER_DATA64`): where the debugger finds kernel variables without symbols.
//! Field offsets: WINDOWS_INTERNALS.md §3.2 (WRK, Volatility 3 `kdbg.json`, Rekall, Ghidra agree).

use crate::addr::{Pa, Va, PAGE_SIZE};
use crate::dump::Dump;
use crate::error::{Error, Result};
use crate::header::Machine;

/// "KDBG" as a little-endian u32.
pub const KDBG_TAG: u32 = 0x4742_444B;

/// Offsets of the fields ntdump reads (bytes from the start of the block).
pub mod field {
    /// KernBase (value).
    pub const KERN_BASE: u64 = 0x18;
    /// PsLoadedModuleList (address of the list head).
    pub const PS_LOADED_MODULE_LIST: u64 = 0x48;
    /// PsActiveProcessHead (address of the list head).
    pub const PS_ACTIVE_PROCESS_HEAD: u64 = 0x50;
    /// MmPfnDatabase (address of the pointer variable).
    pub const MM_PFN_DATABASE: u64 = 0xC0;
    /// MmNumberOfPhysicalPages (address of the variable; pages).
    pub const MM_NUMBER_OF_PHYSICAL_PAGES: u64 = 0xF8;
    /// MmMaximumNonPagedPoolInBytes (address of the variable; bytes).
    pub const MM_MAXIMUM_NON_PAGED_POOL_IN_BYTES: u64 = 0x100;
    /// MmSizeOfPagedPoolInBytes (address of the variable; bytes).
    pub const MM_SIZE_OF_PAGED_POOL_IN_BYTES: u64 = 0x140;
    /// MmTotalCommitLimit (address; pages).
    pub const MM_TOTAL_COMMIT_LIMIT: u64 = 0x148;
    /// MmTotalCommittedPages (address; pages).
    pub const MM_TOTAL_COMMITTED_PAGES: u64 = 0x150;
    /// MmAvailablePages (address; pages).
    pub const MM_AVAILABLE_PAGES: u64 = 0x1A8;
    /// MmResidentAvailablePages (address; pages).
    pub const MM_RESIDENT_AVAILABLE_PAGES: u64 = 0x1B0;
    /// PoolTrackTable (address of the pointer variable).
    pub const POOL_TRACK_TABLE: u64 = 0x1B8;
    /// NonPagedPoolDescriptor (address of the descriptor).
    pub const NON_PAGED_POOL_DESCRIPTOR: u64 = 0x1C0;
    /// NtBuildLab (address of an ASCII string).
    pub const NT_BUILD_LAB: u64 = 0x208;
    /// KiProcessorBlock (address of the array of KPRCB pointers).
    pub const KI_PROCESSOR_BLOCK: u64 = 0x218;
    /// MmUnloadedDrivers (address of the pointer variable).
    pub const MM_UNLOADED_DRIVERS: u64 = 0x220;
    /// MmLastUnloadedDriver (address of the u32 index).
    pub const MM_LAST_UNLOADED_DRIVER: u64 = 0x228;
    /// MmAllocatedNonPagedPool (address; pages).
    pub const MM_ALLOCATED_NON_PAGED_POOL: u64 = 0x250;
    /// PteBase (value, Win10 1607+).
    pub const PTE_BASE: u64 = 0x360;
}

/// A copy of the KDBG block.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Kdbg {
    /// VA of the block.
    pub va: u64,
    /// Header.Size (bytes).
    pub size: u32,
    /// The block's bytes (at most `size`, at most 4 KiB).
    #[serde(serialize_with = "crate::ser::bytes")]
    pub bytes: Vec<u8>,
    /// True on x86: 64-bit fields hold 32-bit addresses (masked on read).
    #[serde(skip)]
    pub x86: bool,
}

impl Kdbg {
    /// Read and check the block at `at`. Fails when the owner tag is not "KDBG" (e.g. an encoded block).
    pub fn read(d: &Dump, at: Va) -> Result<Kdbg> {
        let va = at.0;
        let mut head = [0u8; 0x18];
        d.read_virt(at, &mut head)?;
        let tag = u32::from_le_bytes([head[0x10], head[0x11], head[0x12], head[0x13]]);
        let size = u32::from_le_bytes([head[0x14], head[0x15], head[0x16], head[0x17]]);
        if tag != KDBG_TAG {
            return Err(Error::Symbol(format!(
                "no KDBG owner tag at {va:#x} (found {tag:#010x}); the block may be encoded (Windows 8+ x64)"
            )));
        }
        let size = size.clamp(0x18, PAGE_SIZE as u32);
        let mut bytes = vec![0u8; size as usize];
        let got = d.read_virt_padded(at, &mut bytes);
        if got < 0x58 {
            return Err(Error::Symbol(format!(
                "KDBG at {va:#x}: only {got} of {size} bytes readable"
            )));
        }
        Ok(Kdbg {
            va,
            size,
            bytes,
            x86: d.header.machine == Machine::X86,
        })
    }

    /// The 64-bit field at `off` (masked to 32 bits on x86), or `None` when the block is too short.
    pub fn get(&self, off: u64) -> Option<u64> {
        let o = usize::try_from(off).ok()?;
        let b = self.bytes.get(o..o + 8)?;
        let v = u64::from_le_bytes(b.try_into().ok()?);
        Some(if self.x86 { v & 0xFFFF_FFFF } else { v })
    }

    /// Dereference the pointer-sized variable whose address is in field `off` (an "&V" field).
    pub fn deref_ptr(&self, d: &Dump, off: u64) -> Option<u64> {
        let addr = self.get(off).filter(|&a| a != 0)?;
        d.read_ptr(Va(addr)).ok()
    }

    /// KernBase.
    pub fn kern_base(&self) -> Option<u64> {
        self.get(field::KERN_BASE).filter(|&b| b != 0)
    }
}

/// Find a KDBG block by scanning physical memory for its owner tag (raw images, dumps whose header
/// pointer is missing): a candidate needs a plausible Size and a KernBase whose page starts with "MZ".
/// Returns the block's VA, found by locating its physical page inside the kernel image. Bounded: at most
/// the first 4 GiB of stored memory and 64 candidates.
pub fn scan_for_kdbg(d: &Dump) -> Option<Va> {
    let sizes = [
        0x290u32, 0x318, 0x328, 0x330, 0x340, 0x360, 0x368, 0x380, 0x390, 0x3A0,
    ];
    let mut candidates = 0;
    for r in d.phys().runs() {
        for k in 0..r.pages {
            let pfn = r.base_pfn + k;
            if pfn >= (1 << 20) {
                return None;
            }
            let page = d.phys_page(pfn)?;
            let mut i = 0x10;
            while i + 8 <= page.len() {
                if page[i..i + 4] == KDBG_TAG.to_le_bytes() {
                    let size =
                        u32::from_le_bytes(page[i + 4..i + 8].try_into().unwrap_or_default());
                    if sizes.contains(&size) {
                        candidates += 1;
                        if let Some(va) = locate_block(d, Pa((pfn << 12) + (i as u64 - 0x10))) {
                            return Some(va);
                        }
                        if candidates > 64 {
                            return None;
                        }
                    }
                }
                i += 4;
            }
        }
    }
    None
}

fn locate_block(d: &Dump, pa: Pa) -> Option<Va> {
    let mut b = [0u8; 0x20];
    d.read_phys(pa, &mut b).ok()?;
    let pa = pa.0;
    let mut kb = u64::from_le_bytes(b[0x18..0x20].try_into().ok()?);
    if d.header.machine == Machine::X86 {
        kb &= 0xFFFF_FFFF;
    }
    let mut mz = [0u8; 2];
    d.read_virt(Va(kb), &mut mz).ok()?;
    if &mz != b"MZ" {
        return None;
    }
    // Walk the kernel image (bounded at 64 MiB) for the page that maps `pa`.
    let target = pa & !(PAGE_SIZE - 1);
    for p in 0..(64 << 20) / PAGE_SIZE {
        let va = kb + p * PAGE_SIZE;
        if d.translate(Va(va)).ok().map(|x| x.0 & !(PAGE_SIZE - 1)) == Some(target) {
            return Some(Va(va + (pa & (PAGE_SIZE - 1))));
        }
    }
    None
}
