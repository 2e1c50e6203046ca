//! Where searched bytes come from: stored physical runs, a triage dump's captured VA ranges, or the leaves
//! of the kernel page tables ([`crate::mmu::Leaves`]). Each source emits [`Span`]s (an address, a file offset, a length) in address
//! order; [`Spans`] joins the ones that follow each other both in the address space and in the file.

use std::ops::ControlFlow;

use crate::addr::PAGE_SHIFT;
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
