//! Where searched bytes come from: stored physical runs, a triage dump's captured VA ranges, or the leaves
//! of the kernel page tables. Each source emits [`Span`]s (an address, a file offset, a length) in address
//! order; [`Spans`] joins the ones that follow each other both in the address space and in the file.

use std::ops::ControlFlow;

use crate::addr::{PAGE_SHIFT, PAGE_SIZE};
use crate::dump::Dump;
use crate::error::{Error, PtLevel, Result};
use crate::mmu::{classify_invalid, EntryKind, Mode, ModeSpec};
use crate::phys::PhysMap;

use super::engine::{Engine, Piece};

/// Bytes at `addr` (VA or PA) stored at file offset `off`, `len` bytes long.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Span {
    pub addr: u64,
    pub off: u64,
    pub len: u64,
}

/// Joins spans contiguous in both address and file, and feeds the result to an engine.
pub(crate) struct Spans<'a, 'e, 'm> {
    file: &'a [u8],
    cur: Option<Span>,
    pub engine: &'e mut Engine<'a, 'm>,
}

impl<'a, 'e, 'm> Spans<'a, 'e, 'm> {
    pub fn new(file: &'a [u8], engine: &'e mut Engine<'a, 'm>) -> Self {
        Spans {
            file,
            cur: None,
            engine,
        }
    }

    /// Add a span; bytes past the end of the file are dropped.
    pub fn push(&mut self, s: Span) -> ControlFlow<()> {
        if s.len == 0 {
            return ControlFlow::Continue(());
        }
        if let Some(c) = &mut self.cur {
            if c.addr as u128 + c.len as u128 == s.addr as u128 && c.off + c.len == s.off {
                c.len += s.len;
                return ControlFlow::Continue(());
            }
        }
        let prev = self.cur.replace(s);
        match prev {
            Some(p) => self.emit(p),
            None => ControlFlow::Continue(()),
        }
    }

    fn emit(&mut self, s: Span) -> ControlFlow<()> {
        let flen = self.file.len() as u64;
        let start = s.off.min(flen);
        let end = s.off.saturating_add(s.len).min(flen);
        let data = &self.file[start as usize..end as usize];
        self.engine.push(Piece { addr: s.addr, data })
    }

    /// Emit the span held back for joining.
    pub fn flush(&mut self) -> ControlFlow<()> {
        match self.cur.take() {
            Some(s) => self.emit(s),
            None => ControlFlow::Continue(()),
        }
    }
}

/// Emit the stored parts of the physical range `[pa, pa + len)`, placed at `addr` onward. Returns the
/// control flow and the number of 4 KiB pages of the range that are not stored.
pub(crate) fn phys_range(
    phys: &PhysMap,
    pa: u64,
    len: u64,
    addr: u64,
    out: &mut Spans<'_, '_, '_>,
) -> (ControlFlow<()>, u64) {
    let end = pa as u128 + len as u128;
    let runs = phys.runs();
    let first_pfn = pa >> PAGE_SHIFT;
    let mut i = runs.partition_point(|r| r.base_pfn + r.pages <= first_pfn);
    let mut stored_pages = 0u64;
    let total_pages = if len == 0 {
        0
    } else {
        (((end - 1) >> PAGE_SHIFT) as u64) - first_pfn + 1
    };
    while i < runs.len() {
        let r = runs[i];
        let r_start = (r.base_pfn as u128) << PAGE_SHIFT;
        if r_start >= end {
            break;
        }
        let r_end = ((r.base_pfn + r.pages) as u128) << PAGE_SHIFT;
        let s = r_start.max(pa as u128);
        let e = r_end.min(end);
        if s < e {
            stored_pages += ((e - 1) >> PAGE_SHIFT) as u64 - (s >> PAGE_SHIFT) as u64 + 1;
            let span = Span {
                addr: addr + (s - pa as u128) as u64,
                off: r.file_offset + (s - r_start) as u64,
                len: (e - s) as u64,
            };
            if out.push(span).is_break() {
                return (ControlFlow::Break(()), total_pages - stored_pages);
            }
        }
        i += 1;
    }
    (ControlFlow::Continue(()), total_pages - stored_pages)
}

/// A valid (or transition) leaf of the page tables: `size` bytes of VA at `va` map to PA `pa`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Leaf {
    pub va: u64,
    pub pa: u64,
    pub size: u64,
}

/// Enumerates the leaves of the kernel page tables over a VA range, skipping unmapped subtrees.
///
/// Entries are read as [`crate::mmu::walk`] reads them: valid entries, large pages where the level allows
/// them, transition entries (followed as tables above the last level), a PML4E with PS set is invalid.
pub(crate) struct Leaves<'d> {
    dump: &'d Dump,
    mode: Mode,
    spec: ModeSpec,
    root: u64,
    /// Entries still allowed to be read (guards against looping tables).
    budget: u64,
}

/// The lowest kernel-half VA of `mode` (x64: 0xFFFF8000_00000000; 32-bit: 0x80000000).
pub fn kernel_start(mode: Mode) -> u64 {
    match mode {
        Mode::X64 => 0xFFFF_8000_0000_0000,
        Mode::X86 | Mode::Pae => 0x8000_0000,
    }
}

/// One past the highest VA of `mode` (2^64 or 2^32).
pub(crate) fn va_end(mode: Mode) -> u128 {
    match mode {
        Mode::X64 => 1 << 64,
        Mode::X86 | Mode::Pae => 1 << 32,
    }
}

impl<'d> Leaves<'d> {
    pub fn new(dump: &'d Dump) -> Result<Self> {
        let mode = dump.mode().ok_or_else(|| {
            Error::Argument("ARM64 address translation is not implemented yet".into())
        })?;
        let spec = mode.spec();
        let present = dump.phys().present_pages();
        Ok(Leaves {
            dump,
            mode,
            spec,
            root: dump.dtb() & spec.root_mask,
            budget: present.saturating_mul(8).saturating_add(1 << 22),
        })
    }

    /// Call `f` for every leaf meeting `[start, end)` (VA, `end` may be 2^64), in VA order.
    pub fn for_each(
        &mut self,
        start: u64,
        end: u128,
        f: &mut dyn FnMut(Leaf) -> ControlFlow<()>,
    ) -> Result<ControlFlow<()>> {
        // Split into the canonical halves, as linear (48-bit) addresses on x64.
        let mut parts: Vec<(u128, u128, u64)> = Vec::new(); // (lin start, lin end, lin -> VA add)
        match self.mode {
            Mode::X64 => {
                let low_end = end.min(1 << 47);
                if (start as u128) < low_end {
                    parts.push((start as u128, low_end, 0));
                }
                let hi = 0xFFFF_8000_0000_0000u128;
                let s = (start as u128).max(hi);
                if s < end {
                    let off = 0xFFFF_0000_0000_0000u64;
                    parts.push((s - off as u128, end - off as u128, off));
                }
            }
            Mode::X86 | Mode::Pae => {
                let e = end.min(1 << 32);
                if (start as u128) < e {
                    parts.push((start as u128, e, 0));
                }
            }
        }
        for (lo, hi, add) in parts {
            let mut g = |l: Leaf| {
                f(Leaf {
                    va: l.va.wrapping_add(add),
                    ..l
                })
            };
            if self.table(0, self.root, 0, lo, hi, &mut g)?.is_break() {
                return Ok(ControlFlow::Break(()));
            }
        }
        Ok(ControlFlow::Continue(()))
    }

    /// Visit the entries of the table at `table` (PA) of level `depth`, which covers linear VAs from
    /// `base`, that meet `[lo, hi)`.
    fn table(
        &mut self,
        depth: usize,
        table: u64,
        base: u64,
        lo: u128,
        hi: u128,
        f: &mut dyn FnMut(Leaf) -> ControlFlow<()>,
    ) -> Result<ControlFlow<()>> {
        let l = self.spec.levels[depth];
        let last = depth + 1 == self.spec.levels.len();
        let esz = self.spec.entry_size;
        let Some(page) = self.dump.phys_page(table >> PAGE_SHIFT) else {
            return Ok(ControlFlow::Continue(())); // the table is not in the dump: nothing readable below
        };
        let span = 1u128 << l.shift;
        let count = 1u128 << l.bits;
        let first = ((lo - base as u128) >> l.shift).min(count);
        let stop = ((hi - base as u128).div_ceil(span)).min(count);
        for idx in first..stop {
            let off = (table & (PAGE_SIZE - 1)) as usize + (idx as usize) * esz as usize;
            let Some(raw) = page.get(off..off + esz as usize) else {
                break;
            };
            if self.budget == 0 {
                return Err(Error::format(
                    format!(
                        "the page tables at DTB {:#x} hold more entries than the dump could map \
                         (tables that loop?)",
                        self.dump.dtb()
                    ),
                    0,
                ));
            }
            self.budget -= 1;
            let mut b = [0u8; 8];
            b[..raw.len()].copy_from_slice(raw);
            let value = u64::from_le_bytes(b);
            let va = base + (idx << l.shift) as u64;
            let kind = if value & 1 != 0 {
                if last || (l.large != 0 && value & 0x80 != 0) {
                    EntryKind::Page
                } else if l.level == PtLevel::Pml4e && value & 0x80 != 0 {
                    continue; // reserved: the walk reports it invalid
                } else {
                    EntryKind::Table
                }
            } else {
                classify_invalid(self.mode, value)
            };
            let flow = match kind {
                EntryKind::Table | EntryKind::Transition if !last => {
                    let next = value & self.spec.frame_mask;
                    let sub_lo = lo.max(va as u128);
                    let sub_hi = hi.min(va as u128 + span);
                    self.table(depth + 1, next, va, sub_lo, sub_hi, f)?
                }
                EntryKind::Transition | EntryKind::Page if last => f(Leaf {
                    va,
                    pa: value & self.spec.frame_mask,
                    size: PAGE_SIZE,
                }),
                EntryKind::Page => {
                    let pa = if self.mode == Mode::X86 {
                        (value & 0xFFC0_0000) | (((value >> 13) & 0xF) << 32)
                    } else {
                        value & self.spec.frame_mask & !(l.large - 1)
                    };
                    f(Leaf {
                        va,
                        pa,
                        size: l.large,
                    })
                }
                _ => ControlFlow::Continue(()),
            };
            if flow.is_break() {
                return Ok(ControlFlow::Break(()));
            }
        }
        Ok(ControlFlow::Continue(()))
    }
}
