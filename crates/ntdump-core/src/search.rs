//! Pattern search over kernel virtual memory, a triage dump's captured ranges, or physical memory: the
//! engine behind kd's `s -b/-w/-d/-q/-a/-u` and `!for_each_module s`.
//!
//! * Bytes are never copied: the searched slices borrow the dump's map. Pages that are adjacent in the
//!   address space *and* in the file are searched as one slice; a match that straddles two pages stored in
//!   different places in the file is still found (the seam check).
//! * Work is split into chunks of at most [`SearchOptions::chunk_size`] bytes (16 MiB) overlapping by the
//!   longest pattern's length − 1 (the scanner contract of [`crate::scan`]), searched on rayon's global pool (`RAYON_NUM_THREADS`). Hits are sorted
//!   by address, then pattern, so the result never depends on the number of threads.
//! * Every start position is tried: overlapping matches are all reported. [`SearchOptions::align`] keeps
//!   only hits at multiples of the alignment (kd's `s -d` reports dword-aligned hits only).
//! * Unreadable memory (unmapped, paged out, or missing from the dump) is skipped and counted in
//!   [`SearchResult::pages_unreadable`].
//! * Bounded work on hostile input: at most [`MAX_PATTERNS`] patterns of at most [`MAX_PATTERN_LEN`]
//!   bytes; the page-table walk reads a bounded number of entries (looping tables give an error); with
//!   [`SearchOptions::limit`] the search stops once the first `limit` hits by address are known.

mod engine;
mod matcher;
mod source;

use std::ops::ControlFlow;

use crate::addr::PAGE_SHIFT;
use crate::dump::Dump;
use crate::error::{Error, Result};
use crate::mmu::{va_end, Leaf};

pub use crate::mmu::kernel_start;
pub use matcher::{Matcher, MAX_PATTERNS, MAX_PATTERN_LEN};

use engine::{Counts, Engine, Piece};
use source::{phys_range, Span, Spans};

/// Default chunk size (bytes) of the parallel scan: 16 MiB, the [`crate::scan`] contract's chunk.
pub const CHUNK_SIZE: usize = crate::scan::CHUNK_BYTES;

/// What to search.
#[derive(Debug, Clone, Copy)]
pub enum Target<'r> {
    /// Kernel virtual memory in these `(start VA, length in bytes)` ranges (a range may end at 2^64).
    /// Triage dumps search what they captured inside the ranges.
    Virtual(&'r [(u64, u64)]),
    /// Every mapped kernel-half VA (x64: 0xFFFF8000_00000000 and up; x86/PAE: 0x80000000 and up), found
    /// by walking the page tables; triage dumps: every captured range in that half.
    Kernel,
    /// Physical memory in these `(start PA, length in bytes)` ranges, or every stored run when `None`.
    Physical(Option<&'r [(u64, u64)]>),
}

impl<'r> Target<'r> {
    /// The target a front end's arguments name: `ranges` (VA, or PA with `physical`), or `kernel`
    /// (the mapped kernel half, never with ranges or `physical`); physical without ranges is every
    /// stored run. Anything else is an [`Error::Argument`] saying what to give.
    pub fn choose(ranges: Option<&'r [(u64, u64)]>, kernel: bool, physical: bool) -> Result<Self> {
        match (ranges, kernel, physical) {
            (Some(_), true, _) => Err(Error::Argument("give either ranges or kernel=True".into())),
            (_, true, true) => Err(Error::Argument(
                "kernel=True searches virtual memory, not physical".into(),
            )),
            (None, true, false) => Ok(Target::Kernel),
            (r, false, true) => Ok(Target::Physical(r)),
            (Some(r), false, false) => Ok(Target::Virtual(r)),
            (None, false, false) => Err(Error::Argument(
                "a virtual search needs ranges or kernel=True".into(),
            )),
        }
    }
}

/// How to search.
#[derive(Debug, Clone, Copy)]
pub struct SearchOptions {
    /// Report only hits whose address (VA or PA) is a multiple of this many bytes; 1 (or 0) reports all.
    pub align: u64,
    /// Keep only the first `limit` hits by address, and stop searching once they are known.
    pub limit: Option<usize>,
    /// Bytes per parallel chunk (default [`CHUNK_SIZE`]); small values are for tests.
    pub chunk_size: usize,
}

impl SearchOptions {
    /// Options with hits kept at multiples of `align` bytes (0 counts as 1) and at most `limit`
    /// hits; the default chunk size.
    pub fn new(align: u64, limit: Option<usize>) -> SearchOptions {
        let align = align.max(1);
        SearchOptions {
            align,
            limit,
            ..SearchOptions::default()
        }
    }
}

impl Default for SearchOptions {
    fn default() -> Self {
        SearchOptions {
            align: 1,
            limit: None,
            chunk_size: CHUNK_SIZE,
        }
    }
}

/// Hits as columns, sorted by address then pattern, plus what was searched.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SearchResult {
    /// Address of each hit's first byte: a VA, or a PA for [`Target::Physical`].
    #[serde(skip)]
    pub addresses: Vec<u64>,
    /// Index (into the pattern list) of the pattern found at each address.
    #[serde(skip)]
    pub patterns: Vec<u32>,
    /// 4 KiB pages of which at least one byte was searched.
    pub pages_searched: u64,
    /// 4 KiB pages of the ranges that could not be read: not mapped, not present (paged out …), not
    /// captured, or missing from the dump. For [`Target::Kernel`] only mapped pages whose frame is
    /// missing from the dump count; for [`Target::Physical`]`(None)` the pages the header declares but
    /// the file is too short to hold. After an early stop (`truncated`) these cover the part searched.
    pub pages_unreadable: u64,
    /// True when hits were cut at `limit` (more may exist).
    pub truncated: bool,
}

/// Sort and merge overlapping or adjacent `(start, length)` ranges into `(start, end)` with `end` as
/// u128 (may be 2^64). Fails on a range that runs past 2^64.
fn merge(ranges: &[(u64, u64)]) -> Result<Vec<(u64, u128)>> {
    let mut v: Vec<(u64, u128)> = Vec::with_capacity(ranges.len());
    for &(s, n) in ranges {
        let e = s as u128 + n as u128;
        if e > 1 << 64 {
            return Err(Error::Argument(format!(
                "range at {s:#x} of {n:#x} bytes runs past the end of the address space"
            )));
        }
        if n > 0 {
            v.push((s, e));
        }
    }
    v.sort_unstable();
    let mut out: Vec<(u64, u128)> = Vec::with_capacity(v.len());
    for (s, e) in v {
        match out.last_mut() {
            Some(last) if s as u128 <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    Ok(out)
}

/// 4 KiB pages touched by merged ranges, below `upto` (exclusive).
fn pages_in(ranges: &[(u64, u128)], upto: u128) -> u64 {
    let mut n = 0u64;
    let mut last: Option<u128> = None;
    for &(s, e) in ranges {
        let e = e.min(upto);
        if (s as u128) >= e {
            break;
        }
        let (first, lastp) = ((s as u128) >> PAGE_SHIFT, (e - 1) >> PAGE_SHIFT);
        n += (lastp - first + 1) as u64;
        if last == Some(first) {
            n -= 1;
        }
        last = Some(lastp);
    }
    n
}

fn finish(engine: Engine<'_, '_>, unreadable: impl FnOnce(&Counts) -> u64) -> SearchResult {
    let (hits, counts) = engine.finish();
    let pages_unreadable = unreadable(&counts);
    let (addresses, patterns) = hits.into_iter().unzip();
    SearchResult {
        addresses,
        patterns,
        pages_searched: counts.pages_searched,
        pages_unreadable,
        truncated: counts.truncated,
    }
}

/// Search `dump` for `patterns` (each 1 to [`MAX_PATTERN_LEN`] bytes) in `target`.
///
/// A hit lies entirely inside one range of the target (ranges that overlap or touch are merged first).
/// Errors: bad patterns or ranges ([`Error::Argument`]), virtual search of an ARM64 dump
/// ([`Error::Unsupported`]), or page tables
/// that loop ([`Error::Format`]). Unreadable memory is never an error.
pub fn search<P: AsRef<[u8]>>(
    dump: &Dump,
    patterns: &[P],
    target: Target<'_>,
    opts: &SearchOptions,
) -> Result<SearchResult> {
    let m = Matcher::new(patterns)?;
    let mut engine = Engine::new(&m, opts.align, opts.limit, opts.chunk_size);
    let file = dump.file();
    let _scan = dump.sequential();
    match target {
        Target::Physical(None) => {
            let mut spans = Spans::new(file, &mut engine);
            for r in dump.phys().runs() {
                let span = Span {
                    addr: r.base_pfn << PAGE_SHIFT,
                    off: r.file_offset,
                    len: r.pages << PAGE_SHIFT,
                };
                if spans.push(span).is_break() {
                    break;
                }
            }
            let _ = spans.flush();
            let missing = dump.phys().missing_pages;
            Ok(finish(engine, |_| missing))
        }
        Target::Physical(Some(ranges)) => {
            let ranges = merge(ranges)?;
            let mut spans = Spans::new(file, &mut engine);
            for &(s, e) in &ranges {
                let len = (e - s as u128).min(u64::MAX as u128) as u64;
                if phys_range(dump.phys(), s, len, s, &mut spans).0.is_break() {
                    break;
                }
            }
            let _ = spans.flush();
            Ok(finish(engine, |c| unread(&ranges, c)))
        }
        Target::Virtual(ranges) => {
            let ranges = merge(ranges)?;
            if dump.triage().is_some() {
                search_triage(dump, &ranges, engine, false)
            } else {
                search_tables(dump, &ranges, engine, false)
            }
        }
        Target::Kernel => {
            let mode = dump.paging()?;
            let ranges = [(kernel_start(mode), va_end(mode))];
            if dump.triage().is_some() {
                search_triage(dump, &ranges, engine, true)
            } else {
                search_tables(dump, &ranges, engine, true)
            }
        }
    }
}

/// Pages of `ranges` not searched, up to where the search stopped.
fn unread(ranges: &[(u64, u128)], c: &Counts) -> u64 {
    let upto = c.stopped_at.map(|a| a as u128).unwrap_or(u128::MAX);
    pages_in(ranges, upto).saturating_sub(c.pages_searched)
}

fn search_triage<'a>(
    dump: &'a Dump,
    ranges: &[(u64, u128)],
    mut engine: Engine<'a, '_>,
    kernel: bool,
) -> Result<SearchResult> {
    let t = dump.triage().map(|t| t.ranges.as_slice()).unwrap_or(&[]);
    let mut spans = Spans::new(dump.file(), &mut engine);
    'outer: for &(s, e) in ranges {
        let i = t.partition_point(|r| (r.va as u128 + r.len as u128) <= s as u128);
        for r in &t[i..] {
            let (rs, re) = (r.va as u128, r.va as u128 + r.len as u128);
            if rs >= e {
                break;
            }
            let (a, b) = (rs.max(s as u128), re.min(e));
            if a < b {
                let span = Span {
                    addr: a as u64,
                    off: r.file_offset + (a - rs) as u64,
                    len: (b - a) as u64,
                };
                if spans.push(span).is_break() {
                    break 'outer;
                }
            }
        }
    }
    let _ = spans.flush();
    Ok(finish(
        engine,
        |c| if kernel { 0 } else { unread(ranges, c) },
    ))
}

fn search_tables<'a>(
    dump: &'a Dump,
    ranges: &[(u64, u128)],
    mut engine: Engine<'a, '_>,
    kernel: bool,
) -> Result<SearchResult> {
    let mut leaves = dump.leaves()?;
    let phys = dump.phys();
    let mut missing = 0u64;
    let mut spans = Spans::new(dump.file(), &mut engine);
    // Leaves contiguous in both VA and PA are joined first: one physical-run lookup per stretch.
    let mut run: Option<(u64, u64, u64)> = None; // (VA, PA, length in bytes)
    let mut flush = |run: &mut Option<(u64, u64, u64)>, spans: &mut Spans<'_, '_, '_>| {
        let Some((va, pa, len)) = run.take() else {
            return ControlFlow::Continue(());
        };
        let (flow, miss) = phys_range(phys, pa, len, va, spans);
        missing += miss;
        flow
    };
    'ranges: for &(s, e) in ranges {
        let mut on_leaf = |l: Leaf| {
            let (a, b) = ((l.va.0 as u128).max(s as u128), l.va_end().min(e));
            if a >= b {
                return ControlFlow::Continue(());
            }
            let (va, len) = (a as u64, (b - a) as u64);
            let pa = l.pa.0 + (va - l.va.0);
            if let Some(r) = &mut run {
                let joins = r.0 as u128 + r.2 as u128 == a
                    && r.1 as u128 + r.2 as u128 == pa as u128
                    && r.2 < 1 << 40;
                if joins {
                    r.2 += len;
                    return ControlFlow::Continue(());
                }
            }
            let flow = flush(&mut run, &mut spans);
            run = Some((va, pa, len));
            flow
        };
        let flow = leaves.for_each(s, e, &mut on_leaf)?;
        if flow.is_break() || flush(&mut run, &mut spans).is_break() {
            break 'ranges;
        }
    }
    let _ = spans.flush();
    Ok(finish(engine, |c| {
        if kernel {
            missing
        } else {
            unread(ranges, c)
        }
    }))
}

/// Search caller-given `pieces` of memory: `(address, bytes)` sorted by address and disjoint. Pieces
/// that follow each other without a gap form one address space, and matches across their boundary are
/// found. This is the engine [`search`] uses, exposed for other scanners and for tests.
pub fn search_slices<P: AsRef<[u8]>>(
    pieces: &[(u64, &[u8])],
    patterns: &[P],
    opts: &SearchOptions,
) -> Result<SearchResult> {
    let m = Matcher::new(patterns)?;
    let mut engine = Engine::new(&m, opts.align, opts.limit, opts.chunk_size);
    for &(addr, data) in pieces {
        if addr as u128 + data.len() as u128 > 1 << 64 {
            return Err(Error::Argument(format!(
                "piece at {addr:#x} runs past the end of the address space"
            )));
        }
        if engine.last_end().is_some_and(|e| e > addr as u128) {
            return Err(Error::Argument(format!(
                "piece at {addr:#x} overlaps or precedes the previous one"
            )));
        }
        if engine.push(Piece { addr, data }).is_break() {
            break;
        }
    }
    Ok(finish(engine, |_| 0))
}

/// The mapped kernel-half VA ranges of `dump`, as `(start VA, length in bytes)`, coalesced: every valid
/// or transition leaf (4 KiB, 2/4 MiB, 1 GiB pages) whether or not its frame is stored in the dump. Triage
/// dumps give their captured ranges in that half.
pub fn kernel_ranges(dump: &Dump) -> Result<Vec<(u64, u64)>> {
    let mode = dump.paging()?;
    let (start, end) = (kernel_start(mode), va_end(mode));
    let mut out: Vec<(u64, u128)> = Vec::new();
    let mut add = |s: u64, e: u128| match out.last_mut() {
        Some(last) if last.1 == s as u128 => last.1 = e,
        _ => out.push((s, e)),
    };
    if let Some(t) = dump.triage() {
        for r in &t.ranges {
            let e = r.va as u128 + r.len as u128;
            if r.va >= start && e <= end {
                add(r.va, e);
            }
        }
    } else {
        let mut leaves = dump.leaves()?;
        let _ = leaves.for_each(start, end, &mut |l| {
            add(l.va.0, l.va_end());
            ControlFlow::Continue(())
        })?;
    }
    // A range ending at 2^64 cannot hold its length in a u64 only if it covers the whole space.
    Ok(out
        .into_iter()
        .map(|(s, e)| (s, (e - s as u128).min(u64::MAX as u128) as u64))
        .collect())
}

/// Which of `ranges` (`(start, length in bytes)`, e.g. the loaded modules) holds each address of
/// `addresses`: the index into `ranges`, or `None` when none does. When ranges overlap, the one with
/// the highest start holding the address wins (ties: the longer one). O((n + m) log m).
pub fn attribute(addresses: &[u64], ranges: &[(u64, u64)]) -> Vec<Option<u32>> {
    let end = |&(s, n): &(u64, u64)| s as u128 + n as u128;
    let mut order: Vec<usize> = (0..ranges.len()).collect();
    order.sort_by_key(|&i| (ranges[i].0, end(&ranges[i])));
    addresses
        .iter()
        .map(|&a| {
            let k = order.partition_point(|&i| ranges[i].0 <= a);
            // The last range starting at or below `a`, else (nested or overlapping ranges) the
            // nearest one below it that still holds `a`.
            order[..k]
                .iter()
                .rev()
                .find(|&&i| (a as u128) < end(&ranges[i]))
                .map(|&i| i as u32)
        })
        .collect()
}

/// Hits of a search over every loaded module, with the module holding each hit.
#[derive(Debug, Clone, Default)]
pub struct ModuleHits {
    /// The search result (addresses sorted).
    pub result: SearchResult,
    /// Per hit: index into the module list of the module holding it, -1 for none.
    pub module: Vec<i64>,
    /// Per hit: offset from that module's base (the address itself for none).
    pub offset: Vec<u64>,
}

/// Search every module of `modules` (`[base, base + size)`, in load order) for `patterns` and
/// attribute the hits. Modules that run past the top of the address space (`range_fits` false) are
/// skipped but keep their index.
pub fn search_modules<P: AsRef<[u8]>>(
    d: &Dump,
    modules: &[crate::kernel::ModuleInfo],
    patterns: &[P],
    opts: &SearchOptions,
) -> Result<ModuleHits> {
    let space_end = d.va_top() as u128 + 1;
    let ranges: Vec<(u64, u64)> = modules
        .iter()
        .map(|m| (m.base, if m.range_fits(space_end) { m.size } else { 0 }))
        .collect();
    let searched: Vec<(u64, u64)> = ranges.iter().copied().filter(|r| r.1 > 0).collect();
    let result = search(d, patterns, Target::Virtual(&searched), opts)?;
    let owner = attribute(&result.addresses, &ranges);
    let module = owner.iter().map(|o| o.map_or(-1, i64::from)).collect();
    let offset = owner
        .iter()
        .zip(&result.addresses)
        .map(|(o, &a)| o.map_or(a, |i| a - ranges[i as usize].0))
        .collect();
    Ok(ModuleHits {
        result,
        module,
        offset,
    })
}

#[cfg(test)]
mod attribute_tests {
    use super::attribute;

    #[test]
    fn attribute_picks_the_holding_range() {
        let ranges = [
            (0x3000, 0x1000),
            (0x1000, 0x1000),
            (0x1000, 0x4000),
            (0x1800, 0x100),
        ];
        let hits = [
            0x0fff,
            0x1000,
            0x1850,
            0x1fff,
            0x2000,
            0x3000,
            0x4fff,
            0x5000,
            u64::MAX,
        ];
        let got = attribute(&hits, &ranges);
        assert_eq!(
            got,
            [
                None,
                Some(2),
                Some(3),
                Some(2),
                Some(2),
                Some(0),
                Some(2),
                None,
                None
            ]
        );
        assert!(attribute(&hits, &[]).iter().all(Option::is_none));
        // A range reaching the top of the address space.
        assert_eq!(attribute(&[u64::MAX], &[(u64::MAX - 1, 2)]), [Some(0)]);
    }
}
