//! Pool tag scan (`!poolfind`): valid `POOL_HEADER`s over mapped kernel memory.
//!
//! A header is accepted at every unit-aligned offset of a page (8 bytes x86, 16 x64) when (sheet §5.4):
//! the tag (header + 4) matches one of the patterns, or — with no pattern — is four printable bytes;
//! BlockSize is non-zero and the block ends inside the page; the stored PoolType is possible for the
//! era ([`super::PoolEra::decode_type`]); on legacy pools (before 19H1) PreviousSize fits before it.
//!
//! Pages are listed first ([`kernel_pages`], VA order, from the page-table leaves), then scanned in parallel (rayon) in chunks of
//! [`CHUNK_PAGES`]; hits are concatenated in page order, so output is sorted by address and does not
//! depend on the thread count. Small pool blocks never straddle a page, so pages are independent.
//!
//! Each page is scanned in two passes: pass 1 keeps the unit-aligned slots whose tag passes the tag
//! test alone (SSE2 on x86_64, four slots per compare; a scalar loop elsewhere), pass 2 applies every
//! rule to those candidates.

use rayon::prelude::*;

use super::{PoolContext, PoolEra};
use std::ops::ControlFlow;

use crate::addr::{Va, PAGE_SHIFT, PAGE_SIZE};
use crate::dump::Dump;
use crate::error::{Error, Result};
use crate::mmu::kernel_start;

/// Pages per parallel work item (16 MiB): the [`crate::scan`] contract's chunk. Pool blocks never cross
/// a page, so chunks need no overlap (no seams).
pub const CHUNK_PAGES: usize = crate::scan::CHUNK_PAGES;

/// A tag pattern: a tag matches when `tag & mask == value & mask` (`?` = any byte, a trailing `*` =
/// any rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagPattern {
    /// Tag bytes as a little-endian u32.
    pub value: u32,
    /// Bytes that must match (0xFF per significant byte).
    pub mask: u32,
}

impl TagPattern {
    /// Parse `"Thre"`, `"Thr*"`, `"T?re"`; shorter tags are space-padded (`"Ps"` = `"Ps  "`).
    pub fn parse(s: &[u8]) -> Result<TagPattern> {
        if s.is_empty() || s.len() > 4 {
            return Err(Error::Argument(format!(
                "a pool tag pattern has 1 to 4 bytes, not {}",
                s.len()
            )));
        }
        let mut value = [b' '; 4];
        let mut mask = [0xFFu8; 4];
        for (i, &c) in s.iter().enumerate() {
            match c {
                b'*' if i + 1 == s.len() => {
                    for m in mask.iter_mut().skip(i) {
                        *m = 0;
                    }
                    break;
                }
                b'*' => return Err(Error::Argument("'*' may only end a tag pattern".into())),
                b'?' => mask[i] = 0,
                _ => value[i] = c,
            }
        }
        Ok(TagPattern {
            value: u32::from_le_bytes(value),
            mask: u32::from_le_bytes(mask),
        })
    }

    /// True when `tag` matches.
    #[inline]
    pub fn matches(&self, tag: u32) -> bool {
        (tag ^ self.value) & self.mask == 0
    }
}

/// Which pool a scan keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PoolFilter {
    /// Every valid header, free blocks included.
    #[default]
    All,
    /// Allocated nonpaged blocks.
    NonPaged,
    /// Allocated paged blocks.
    Paged,
}

impl PoolFilter {
    /// `"all"`, `"nonpaged"` or `"paged"`.
    pub fn parse(s: &str) -> Result<PoolFilter> {
        match s {
            "all" => Ok(PoolFilter::All),
            "nonpaged" => Ok(PoolFilter::NonPaged),
            "paged" => Ok(PoolFilter::Paged),
            o => Err(Error::Argument(format!(
                "pool must be 'nonpaged', 'paged' or 'all', not {o:?}"
            ))),
        }
    }
}

/// Options of a scan.
#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    /// Tags to keep; `None` = every tag-like tag.
    pub tags: Option<Vec<TagPattern>>,
    /// Pool filter.
    pub pool: PoolFilter,
}

impl ScanOptions {
    /// Options from a front end's arguments: tag patterns ([`TagPattern::parse`]; None = every tag)
    /// and a pool name ([`PoolFilter::parse`]).
    pub fn parse<T: AsRef<[u8]>>(tags: Option<&[T]>, pool: &str) -> Result<ScanOptions> {
        let parse = |t: &[T]| t.iter().map(|s| TagPattern::parse(s.as_ref())).collect();
        let tags = tags.map(parse).transpose()?;
        let pool = PoolFilter::parse(pool)?;
        Ok(ScanOptions { tags, pool })
    }
}

/// Hits, sorted by address (struct of columns).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanHits {
    /// VA of the POOL_HEADER.
    pub address: Vec<u64>,
    /// Tag (protected bit removed before Windows 8).
    pub tag: Vec<u32>,
    /// Block size in bytes (header included).
    pub size: Vec<u64>,
    /// Requested POOL_TYPE (0 for free blocks).
    pub pool_type: Vec<u32>,
    /// True when allocated.
    pub allocated: Vec<bool>,
}

impl ScanHits {
    /// Number of hits.
    pub fn len(&self) -> usize {
        self.address.len()
    }
    /// True when there is no hit.
    pub fn is_empty(&self) -> bool {
        self.address.is_empty()
    }
    fn append(&mut self, o: ScanHits) {
        self.address.extend(o.address);
        self.tag.extend(o.tag);
        self.size.extend(o.size);
        self.pool_type.extend(o.pool_type);
        self.allocated.extend(o.allocated);
    }
}

/// One mapped 4 KiB page: its VA and physical frame number.
pub type PageRef = (u64, u64);

/// A scan prepared once and run in batches: the pages of [`kernel_pages`] and the options, so a front
/// end can scan pages `[lo, hi)` of the list at a time and show progress between batches.
pub struct PreparedScan {
    dump: std::sync::Arc<Dump>,
    /// The pages to scan, in VA order.
    pub pages: Vec<PageRef>,
    /// What to keep.
    pub opts: ScanOptions,
    /// Warnings from listing the pages.
    pub warnings: Vec<String>,
}

impl PreparedScan {
    /// List the mapped kernel pages of `ranges` ([start, end) VA pairs; `None`: the kernel half), at
    /// most `limit` of them ([`kernel_pages`]).
    pub fn new(
        dump: std::sync::Arc<Dump>,
        ranges: Option<&[(u64, u64)]>,
        limit: usize,
        opts: ScanOptions,
    ) -> Result<Self> {
        let (pages, warnings) = kernel_pages(&dump, ranges, limit)?;
        Ok(PreparedScan {
            dump,
            pages,
            opts,
            warnings,
        })
    }

    /// The dump scanned.
    pub fn dump(&self) -> &Dump {
        &self.dump
    }

    /// Pages `[lo, hi)` of the list, clamped to it.
    fn span(&self, lo: usize, hi: usize) -> &[PageRef] {
        let hi = hi.min(self.pages.len());
        &self.pages[lo.min(hi)..hi]
    }

    /// Scan pages `[lo, hi)` of the list ([`scan_pages`]).
    pub fn run(&self, lo: usize, hi: usize) -> ScanHits {
        scan_pages(&self.dump, self.span(lo, hi), &self.opts)
    }

    /// Touch pages `[lo, hi)` of the list ([`touch_pages`]).
    pub fn touch(&self, lo: usize, hi: usize) -> u64 {
        touch_pages(&self.dump, self.span(lo, hi))
    }
}

/// Mapped kernel pages whose frames are stored in the dump, in VA order, over `ranges` ([start, end)
/// VA pairs; default: the whole kernel half), from the leaves of the page tables ([`crate::mmu::Leaves`],
/// which skip every unmapped subtree at the level where it ends). In a triage dump the captured ranges
/// are listed with frame [`VIRTUAL_ONLY`] (read through [`Dump::read_virt`]). At most `limit` pages (a
/// warning says where it stopped). ARM64 gives [`crate::Error::Unsupported`].
pub fn kernel_pages(
    d: &Dump,
    ranges: Option<&[(u64, u64)]>,
    limit: usize,
) -> Result<(Vec<PageRef>, Vec<String>)> {
    let mode = d.paging()?;
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    let mut push = |v: u64, pfn: u64, out: &mut Vec<PageRef>| -> bool {
        if out.len() >= limit {
            warnings.push(format!(
                "stopped after {limit} pages at {v:#x} (page limit)"
            ));
            return false;
        }
        out.push((v, pfn));
        true
    };
    if d.triage().is_some() {
        let found: Vec<(u64, u64)>;
        let ranges = match ranges {
            Some(r) => r,
            None => {
                found = crate::search::kernel_ranges(d)?
                    .into_iter()
                    .map(|(s, n)| (s, s.saturating_add(n)))
                    .collect();
                &found
            }
        };
        'triage: for &(start, end) in ranges {
            let mut va = start & !(PAGE_SIZE - 1);
            while va < end {
                if !push(va, VIRTUAL_ONLY, &mut out) {
                    break 'triage;
                }
                va = match va.checked_add(PAGE_SIZE) {
                    Some(n) => n,
                    None => break,
                };
            }
        }
        return Ok((out, warnings));
    }
    let whole = [(kernel_start(mode), u64::MAX)];
    let ranges = ranges.unwrap_or(&whole);
    let mut leaves = d.leaves()?;
    for &(start, end) in ranges {
        // `u64::MAX` as the end of the default range stands for 2^64.
        let end128 = if end == u64::MAX {
            1u128 << 64
        } else {
            end as u128
        };
        let lo = start & !(PAGE_SIZE - 1);
        let flow = leaves.for_each(lo, end128, &mut |l| {
            let first = lo.saturating_sub(l.va.0) / PAGE_SIZE;
            for k in first..l.size / PAGE_SIZE {
                let v = l.va.0 + k * PAGE_SIZE;
                if v as u128 >= end128 {
                    break;
                }
                let pfn = (l.pa.0 + k * PAGE_SIZE) >> PAGE_SHIFT;
                if d.phys_page(pfn).is_some() && !push(v, pfn, &mut out) {
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        })?;
        if flow.is_break() {
            break;
        }
    }
    Ok((out, warnings))
}

/// Frame number used by [`kernel_pages`] for triage-dump pages, which have no physical frame.
pub const VIRTUAL_ONLY: u64 = u64::MAX;

/// Per-scan constants: the header layout's unit, size and tag offset.
struct Scanner<'o> {
    ctx: PoolContext,
    opts: &'o ScanOptions,
    unit: usize,
    hsize: usize,
    /// Offset of PoolTag in the header (4 in every built-in layout and every known PDB).
    tag: usize,
    /// (first bit, mask) of BlockSize, PreviousSize and PoolType in the header's first u32.
    bs: (u32, u32),
    ps: (u32, u32),
    pt: (u32, u32),
}

impl<'o> Scanner<'o> {
    fn new(ctx: PoolContext, opts: &'o ScanOptions) -> Scanner<'o> {
        // The fields are decoded from the header's first u32 (a PDB layout is taken only when
        // they lie there: crate::layouts::pool_header).
        let h = ctx.header;
        Scanner {
            ctx,
            opts,
            unit: h.unit as usize,
            hsize: h.size as usize,
            tag: h.tag as usize,
            bs: (
                u32::from(h.block_size.start),
                (1u32 << h.block_size.bits) - 1,
            ),
            ps: (
                u32::from(h.previous_size.start),
                (1u32 << h.previous_size.bits) - 1,
            ),
            pt: (u32::from(h.pool_type.start), (1u32 << h.pool_type.bits) - 1),
        }
    }

    /// Test the header at `off` and record it when it passes (the rules of
    /// [`super::page::plausible`], decoded straight from the first u32).
    #[inline]
    fn check(&self, page: &[u8], va: u64, off: usize, out: &mut ScanHits) {
        let Some(raw) = page.get(off..off + self.hsize) else {
            return;
        };
        let (Some(w0), Some(t)) = (raw.get(..4), raw.get(self.tag..self.tag + 4)) else {
            return;
        };
        let first = u32::from_le_bytes([w0[0], w0[1], w0[2], w0[3]]);
        let bs = ((first >> self.bs.0) & self.bs.1) as usize * self.unit;
        if bs == 0 || off + bs > page.len() || page.len() > PAGE_SIZE as usize {
            return;
        }
        let tag = self
            .ctx
            .clean_tag(u32::from_le_bytes([t[0], t[1], t[2], t[3]]));
        let want = match &self.opts.tags {
            Some(p) => p.iter().any(|p| p.matches(tag)),
            None => super::tag_like(tag, false),
        };
        if !want {
            return;
        }
        let prev = ((first >> self.ps.0) & self.ps.1) as usize * self.unit;
        if self.ctx.era != PoolEra::SegmentHeap && prev > off {
            return;
        }
        let Some((allocated, pool_type)) =
            self.ctx.era.decode_type((first >> self.pt.0) & self.pt.1)
        else {
            return;
        };
        let keep = match self.opts.pool {
            PoolFilter::All => true,
            PoolFilter::NonPaged => allocated && pool_type & 1 == 0,
            PoolFilter::Paged => allocated && pool_type & 1 == 1,
        };
        if keep {
            out.address.push(va + off as u64);
            out.tag.push(tag);
            out.size.push(bs as u64);
            out.pool_type.push(pool_type);
            out.allocated.push(allocated);
        }
    }

    /// Scan `bytes`: whole 4 KiB pages, consecutive in VA from `va`. No software prefetch: pass 1
    /// loads every 16 bytes in order, which the hardware prefetcher follows (prefetching the next
    /// page by hand made the scan slower; docs/benchmarks.md).
    fn span(&self, bytes: &[u8], va: u64, out: &mut ScanHits) {
        let mut cand = [0u16; PAGE_SIZE as usize / 8];
        for (i, page) in bytes.chunks(PAGE_SIZE as usize).enumerate() {
            self.every_offset(page, va + (i as u64) * PAGE_SIZE, out, &mut cand);
        }
    }

    /// Scan one page; `cand` is pass 1's scratch (its contents on entry do not matter).
    fn every_offset(
        &self,
        page: &[u8],
        va: u64,
        out: &mut ScanHits,
        cand: &mut [u16; PAGE_SIZE as usize / 8],
    ) {
        // Pass 1: the offsets whose tag bytes pass a cheap test, in a loop specialised on the
        // unit so that it compiles to straight-line (vectorisable) code. Pass 2: the full rules.
        let page4k = match <&[u8; PAGE_SIZE as usize]>::try_from(page) {
            // The fast pass reads the tag at +4 with a unit of 8 or 16 bytes.
            Ok(p) if self.tag == 4 && matches!(self.unit, 8 | 16) => Ok(p),
            _ => Err(()),
        };
        let Ok(page4k) = page4k else {
            let mut off = 0usize;
            while off + self.hsize <= page.len() {
                self.check(page, va, off, out);
                off += self.unit;
            }
            return;
        };
        let test = TagTest {
            prot_mask: if self.ctx.masks_protected_bit() {
                0x7FFF_FFFF
            } else {
                u32::MAX
            },
            patterns: self.opts.tags.as_deref(),
        };
        let k = match self.unit {
            16 => pass1::<16>(page4k, cand, &test),
            _ => pass1::<8>(page4k, cand, &test),
        };
        for &off in &cand[..k] {
            self.check(page, va, usize::from(off), out);
        }
    }
}

/// Pass 1's test of one slot's tag (bytes 4..8 of the header): after `prot_mask` (which drops the
/// protected bit before Windows 8), the tag matches one of `patterns`, or with none is printable.
struct TagTest<'p> {
    prot_mask: u32,
    patterns: Option<&'p [TagPattern]>,
}

impl TagTest<'_> {
    #[inline(always)]
    fn passes(&self, t: u32) -> bool {
        let t = t & self.prot_mask;
        match self.patterns {
            None => printable4(t),
            Some(ps) => ps.iter().any(|p| p.matches(t)),
        }
    }
}

/// Offsets (bytes) of the `UNIT`-aligned slots of `page` whose tag (bytes 4..8) passes `test`,
/// written to `cand` in page order; returns how many. SSE2 on x86_64 (four slots per compare),
/// [`pass1_scalar`] elsewhere; both give the same offsets (a unit test compares them).
#[inline(always)]
fn pass1<const UNIT: usize>(
    page: &[u8; PAGE_SIZE as usize],
    cand: &mut [u16; PAGE_SIZE as usize / 8],
    test: &TagTest<'_>,
) -> usize {
    #[cfg(target_arch = "x86_64")]
    return sse2::pass1::<UNIT>(page, cand, test);
    #[cfg(not(target_arch = "x86_64"))]
    return pass1_scalar::<UNIT>(page, cand, test);
}

/// [`pass1`], one slot at a time. Branch-free: every slot writes, the count moves on a hit.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn pass1_scalar<const UNIT: usize>(
    page: &[u8; PAGE_SIZE as usize],
    cand: &mut [u16; PAGE_SIZE as usize / 8],
    test: &TagTest<'_>,
) -> usize {
    let mut k = 0usize;
    for i in 0..PAGE_SIZE as usize / UNIT {
        let o = i * UNIT;
        let t = u32::from_le_bytes([page[o + 4], page[o + 5], page[o + 6], page[o + 7]]);
        cand[k & (PAGE_SIZE as usize / 8 - 1)] = o as u16;
        k += usize::from(test.passes(t));
    }
    k
}

/// Pass 1 with SSE2 (part of the x86_64 baseline, so always available there): the tags of four
/// slots are gathered into one vector, tested lane by lane, and the hits of 64 slots collected as a
/// bit mask before their offsets are written.
#[cfg(target_arch = "x86_64")]
mod sse2 {
    use std::arch::x86_64::*;

    use super::{TagTest, PAGE_SIZE};

    const PAGE: usize = PAGE_SIZE as usize;

    /// The tags (bytes 4..8) of the four `UNIT`-byte slots from byte `o` of `page`; `o + 4 * UNIT`
    /// must not pass the end of the page (checked by the caller's loop bounds).
    #[inline(always)]
    unsafe fn tags<const UNIT: usize>(p: *const u8, o: usize) -> __m128i {
        let v = |at: usize| _mm_loadu_si128(p.add(at).cast());
        if UNIT == 16 {
            // Lane 1 of each slot: [s0.1, s1.1, s2.1, s3.1].
            let x01 = _mm_unpacklo_epi32(v(o), v(o + 16));
            let x23 = _mm_unpacklo_epi32(v(o + 32), v(o + 48));
            _mm_unpackhi_epi64(x01, x23)
        } else {
            // Lanes 1 and 3 of two 16-byte loads (two 8-byte slots each).
            let (a, b) = (_mm_castsi128_ps(v(o)), _mm_castsi128_ps(v(o + 16)));
            _mm_castps_si128(_mm_shuffle_ps::<0xDD>(a, b))
        }
    }

    /// Candidate offsets of `page` for the lane test `ok` (all-ones lanes pass).
    #[inline(always)]
    fn collect<const UNIT: usize>(
        page: &[u8; PAGE],
        cand: &mut [u16; PAGE / 8],
        ok: impl Fn(__m128i) -> __m128i,
    ) -> usize {
        let mut k = 0usize;
        let p = page.as_ptr();
        // 64 slots per mask word: 1 KiB (UNIT 16) or 512 bytes (UNIT 8) of the page.
        for w in 0..PAGE / UNIT / 64 {
            let mut bits = 0u64;
            for q in 0..16 {
                let o = (w * 64 + q * 4) * UNIT;
                debug_assert!(o + 4 * UNIT <= PAGE);
                // SAFETY: o + 4 * UNIT <= PAGE for every w, q of these bounds, so the loads stay
                // inside `page`; the rest are register operations of SSE2 (x86_64 baseline).
                let m = unsafe { _mm_movemask_ps(_mm_castsi128_ps(ok(tags::<UNIT>(p, o)))) };
                bits |= u64::from(m as u32) << (q * 4);
            }
            while bits != 0 {
                cand[k] = ((w * 64 + bits.trailing_zeros() as usize) * UNIT) as u16;
                k += 1;
                bits &= bits - 1;
            }
        }
        k
    }

    pub(super) fn pass1<const UNIT: usize>(
        page: &[u8; PAGE],
        cand: &mut [u16; PAGE / 8],
        test: &TagTest<'_>,
    ) -> usize {
        // SAFETY (each closure and constant): SSE2 register operations only (x86_64 baseline).
        unsafe {
            let prot = _mm_set1_epi32(test.prot_mask as i32);
            let zero = _mm_setzero_si128();
            match test.patterns {
                None => {
                    // printable4 on four lanes: no high bit, no byte below 0x20, no 0x7F byte.
                    let (hi, sp) = (
                        _mm_set1_epi32(0x8080_8080u32 as i32),
                        _mm_set1_epi32(0x2020_2020),
                    );
                    let (del, one) = (_mm_set1_epi32(0x7F7F_7F7F), _mm_set1_epi32(0x0101_0101));
                    collect::<UNIT>(page, cand, |t| {
                        let t = _mm_and_si128(t, prot);
                        let below = _mm_andnot_si128(t, _mm_sub_epi32(t, sp));
                        let x = _mm_xor_si128(t, del);
                        let d = _mm_andnot_si128(x, _mm_sub_epi32(x, one));
                        let bad = _mm_and_si128(_mm_or_si128(_mm_or_si128(t, below), d), hi);
                        _mm_cmpeq_epi32(bad, zero)
                    })
                }
                Some([p]) => {
                    let (v, m) = (
                        _mm_set1_epi32(p.value as i32),
                        _mm_set1_epi32(p.mask as i32),
                    );
                    collect::<UNIT>(page, cand, |t| {
                        let t = _mm_and_si128(t, prot);
                        _mm_cmpeq_epi32(_mm_and_si128(_mm_xor_si128(t, v), m), zero)
                    })
                }
                Some(ps) => collect::<UNIT>(page, cand, |t| {
                    let t = _mm_and_si128(t, prot);
                    let mut ok = zero;
                    for p in ps {
                        let (v, m) = (
                            _mm_set1_epi32(p.value as i32),
                            _mm_set1_epi32(p.mask as i32),
                        );
                        ok = _mm_or_si128(
                            ok,
                            _mm_cmpeq_epi32(_mm_and_si128(_mm_xor_si128(t, v), m), zero),
                        );
                    }
                    ok
                }),
            }
        }
    }
}

/// True when all four bytes of `t` are in 0x20..=0x7E (SWAR: no high bit, no byte below 0x20, no
/// 0x7F byte).
#[inline(always)]
fn printable4(t: u32) -> bool {
    let high = t & 0x8080_8080;
    let below = t.wrapping_sub(0x2020_2020) & !t & 0x8080_8080;
    let x = t ^ 0x7F7F_7F7F;
    let del = x.wrapping_sub(0x0101_0101) & !x & 0x8080_8080;
    (high | below | del) == 0
}

fn scan_page(ctx: &PoolContext, page: &[u8], va: u64, opts: &ScanOptions, out: &mut ScanHits) {
    let sc = Scanner::new(*ctx, opts);
    if page.len() == PAGE_SIZE as usize {
        sc.span(page, va, out);
    } else {
        // A short or long slice (fuzzing): test every offset, bounded by the slice.
        let mut off = 0usize;
        while off + sc.hsize <= page.len() {
            sc.check(page, va, off, out);
            off += sc.unit;
        }
    }
}

/// Scan `pages` (from [`kernel_pages`]) for pool headers, in parallel; hits sorted by address within
/// the order of `pages`.
pub fn scan_pages(d: &Dump, pages: &[PageRef], opts: &ScanOptions) -> ScanHits {
    let _scan = d.sequential();
    let ctx = PoolContext::of(d);
    let parts: Vec<ScanHits> = pages
        .par_chunks(CHUNK_PAGES)
        .map(|chunk| {
            let sc = Scanner::new(ctx, opts);
            // Room for the usual density (a few headers per page with every tag, few with a
            // pattern) so the columns rarely grow by copying; unused capacity is never touched.
            let per_page = if opts.tags.is_none() { 12 } else { 1 };
            let cap = chunk.len() * per_page;
            let mut h = ScanHits {
                address: Vec::with_capacity(cap),
                tag: Vec::with_capacity(cap),
                size: Vec::with_capacity(cap),
                pool_type: Vec::with_capacity(cap),
                allocated: Vec::with_capacity(cap),
            };
            let mut buf = [0u8; PAGE_SIZE as usize];
            let file = d.file();
            let base = file.as_ptr() as usize;
            let mut i = 0;
            while i < chunk.len() {
                let (va, pfn) = chunk[i];
                if pfn == VIRTUAL_ONLY {
                    if d.read_virt(Va(va), &mut buf).is_ok() {
                        sc.span(&buf, va, &mut h);
                    }
                    i += 1;
                    continue;
                }
                let Some(first) = d.phys_page(pfn) else {
                    i += 1;
                    continue;
                };
                // Extend over pages consecutive in VA, frame and file.
                let start = first.as_ptr() as usize - base;
                let mut n = 1;
                while let Some(&(v2, f2)) = chunk.get(i + n) {
                    let next = d.phys_page(f2);
                    let contiguous = v2 == va + n as u64 * PAGE_SIZE
                        && f2 == pfn + n as u64
                        && next.is_some_and(|p| {
                            p.as_ptr() as usize - base == start + n * PAGE_SIZE as usize
                        });
                    if !contiguous {
                        break;
                    }
                    n += 1;
                }
                let bytes = file
                    .get(start..start + n * PAGE_SIZE as usize)
                    .unwrap_or(first);
                sc.span(bytes, va, &mut h);
                i += if bytes.len() == first.len() { 1 } else { n };
            }
            h
        })
        .collect();
    let total: usize = parts.iter().map(ScanHits::len).sum();
    let mut out = ScanHits {
        address: Vec::with_capacity(total),
        tag: Vec::with_capacity(total),
        size: Vec::with_capacity(total),
        pool_type: Vec::with_capacity(total),
        allocated: Vec::with_capacity(total),
    };
    for p in parts {
        out.append(p);
    }
    out
}

/// Scan one page's bytes (fuzzing and tests): `page` is 4 KiB at VA `va`, read for `ctx`'s machine
/// and era.
pub fn scan_bytes(ctx: &PoolContext, page: &[u8], va: Va, opts: &ScanOptions) -> ScanHits {
    let va = va.0;
    let mut h = ScanHits::default();
    scan_page(ctx, page, va, opts, &mut h);
    h
}

/// Touch every byte of `pages` once (sum them), in parallel: the physical limit a scan is compared
/// with in the benchmark. Returns the sum (so the work is not optimised away).
pub fn touch_pages(d: &Dump, pages: &[PageRef]) -> u64 {
    let _scan = d.sequential();
    pages
        .par_chunks(CHUNK_PAGES)
        .map(|chunk| {
            let mut s = 0u64;
            for &(_, pfn) in chunk {
                if let Some(p) = d.phys_page(pfn) {
                    for c in p.chunks_exact(8) {
                        s = s.wrapping_add(u64::from_le_bytes(c.try_into().unwrap_or_default()));
                    }
                }
            }
            s
        })
        .reduce(|| 0, u64::wrapping_add)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::Machine;
    use crate::pool::layout::POOL_HEADER_X64;

    /// A header layout from a PDB with the tag elsewhere than +4 is scanned by the generic path,
    /// and gives the same hits as the built-in layout on the same blocks moved accordingly.
    #[test]
    fn header_override_with_another_tag_offset() {
        let mut ctx = PoolContext::new(Machine::X64, 19041, 1);
        let mut page = vec![0u8; PAGE_SIZE as usize];
        // Two blocks of 0x40 bytes (BlockSize 4 units), PoolType 2 (nonpaged, in use).
        for (i, tag) in [b"Abcd", b"Efgh"].iter().enumerate() {
            let o = i * 0x40;
            page[o..o + 4].copy_from_slice(&[0, 0, 4, 2]);
            page[o + 4..o + 8].copy_from_slice(*tag);
        }
        let opts = ScanOptions::default();
        let builtin = scan_bytes(&ctx, &page, crate::Va(0xFFFF_C000_0000_0000), &opts);
        assert_eq!(builtin.len(), 2);
        // The same headers with the tag at +8: found only with the layout that says so.
        let mut moved = vec![0u8; PAGE_SIZE as usize];
        for i in 0..2 {
            let o = i * 0x40;
            moved[o..o + 4].copy_from_slice(&page[o..o + 4]);
            moved[o + 8..o + 12].copy_from_slice(&page[o + 4..o + 8]);
        }
        assert!(scan_bytes(&ctx, &moved, crate::Va(0xFFFF_C000_0000_0000), &opts).is_empty());
        ctx.header = header_with_tag(8);
        let got = scan_bytes(&ctx, &moved, crate::Va(0xFFFF_C000_0000_0000), &opts);
        assert_eq!(got, builtin);
    }

    fn header_with_tag(tag: u16) -> crate::pool::layout::PoolHeaderLayout {
        crate::pool::layout::PoolHeaderLayout {
            name: "pdb",
            tag,
            process_billed: None,
            ..POOL_HEADER_X64
        }
    }

    /// The SSE2 pass 1 and the scalar one give the same candidates, for both units, printable and
    /// pattern tests, with and without the protected bit masked, on pages of random bytes with tags
    /// planted (some with the protected bit set) and on pages of printable text.
    #[test]
    fn pass1_simd_equals_scalar() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let pats = [
            TagPattern::parse(b"Thre").unwrap(),
            TagPattern::parse(b"Fi*").unwrap(),
            TagPattern::parse(b"?ro?").unwrap(),
        ];
        let tests = [
            (u32::MAX, None),
            (0x7FFF_FFFF, None),
            (u32::MAX, Some(&pats[..1])),
            (0x7FFF_FFFF, Some(&pats[..1])),
            (u32::MAX, Some(&pats[..])),
            (0x7FFF_FFFF, Some(&pats[1..])),
        ];
        let mut page = [0u8; PAGE_SIZE as usize];
        for round in 0..200 {
            for b in page.chunks_mut(8) {
                b.copy_from_slice(&next().to_le_bytes());
            }
            if round % 4 == 0 {
                for b in page.iter_mut() {
                    *b = 0x20 + *b % 0x5F;
                }
            }
            for _ in 0..40 {
                let at = (next() as usize % (PAGE_SIZE as usize / 8)) * 8 + 4;
                let tag = [b"Thre", b"File", b"Proc", b"Fi\x00\x00"][next() as usize % 4];
                page[at..at + 4].copy_from_slice(tag);
                if next() % 3 == 0 {
                    page[at + 3] |= 0x80;
                }
            }
            for &(prot_mask, patterns) in &tests {
                let t = TagTest {
                    prot_mask,
                    patterns,
                };
                let (mut a, mut b) = ([0u16; 512], [0u16; 512]);
                let (ka, kb) = (
                    pass1::<16>(&page, &mut a, &t),
                    pass1_scalar::<16>(&page, &mut b, &t),
                );
                assert_eq!(a[..ka], b[..kb], "unit 16, round {round}");
                let (ka, kb) = (
                    pass1::<8>(&page, &mut a, &t),
                    pass1_scalar::<8>(&page, &mut b, &t),
                );
                assert_eq!(a[..ka], b[..kb], "unit 8, round {round}");
                assert!(round % 4 != 0 || patterns.is_some() || kb > 0);
            }
        }
    }

    #[test]
    fn patterns() {
        let p = TagPattern::parse(b"Thr*").unwrap();
        assert!(p.matches(u32::from_le_bytes(*b"Thre")));
        assert!(!p.matches(u32::from_le_bytes(*b"Thxe")));
        let p = TagPattern::parse(b"Ps").unwrap();
        assert!(p.matches(u32::from_le_bytes(*b"Ps  ")));
        let p = TagPattern::parse(b"T?re").unwrap();
        assert!(p.matches(u32::from_le_bytes(*b"Txre")));
        assert!(TagPattern::parse(b"*abc").is_err());
        assert!(TagPattern::parse(b"").is_err());
    }
}
