//! Pool tag scan (`!poolfind`): valid `POOL_HEADER`s over mapped kernel memory.
//!
//! A header is accepted at every unit-aligned offset of a page (8 bytes x86, 16 x64) when (sheet §5.4):
//! the tag (header + 4) matches one of the patterns, or — with no pattern — is four printable bytes;
//! BlockSize is non-zero and the block ends inside the page; the stored PoolType is possible for the
//! era ([`super::PoolEra::decode_type`]); on legacy pools (before 19H1) PreviousSize fits before it.
//!
//! Pages are listed first ([`kernel_pages`], VA order), then scanned in parallel (rayon) in chunks of
//! [`CHUNK_PAGES`]; hits are concatenated in page order, so output is sorted by address and does not
//! depend on the thread count. Small pool blocks never straddle a page, so pages are independent.

use rayon::prelude::*;

use super::layout::pool_header;
use super::page::{header_at, plausible};
use super::PoolContext;
use crate::addr::{Va, PAGE_SIZE};
use crate::dump::Dump;
use crate::error::{Error, Result};
use crate::mmu::Mode;

/// Pages per parallel work item (16 MiB).
pub const CHUNK_PAGES: usize = 4096;

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

/// Options of a scan.
#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    /// Tags to keep; `None` = every tag-like tag.
    pub tags: Option<Vec<TagPattern>>,
    /// Pool filter.
    pub pool: PoolFilter,
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

/// Mapped kernel pages whose frames are stored in the dump, in VA order, over `ranges` ([start, end)
/// VA pairs; default: every mapped kernel-half range, from [`crate::search::kernel_ranges`]). Each range
/// is translated with [`Dump::walk`], skipping every unmapped subtree at the level where it ends. In a
/// triage dump the captured ranges are listed with frame [`VIRTUAL_ONLY`] (read through
/// [`Dump::read_virt`]). At most `limit` pages (a warning says where it stopped).
pub fn kernel_pages(
    d: &Dump,
    ranges: Option<&[(u64, u64)]>,
    limit: usize,
) -> Result<(Vec<PageRef>, Vec<String>)> {
    let mode = d.mode().ok_or_else(|| {
        Error::Argument("ARM64 address translation is not implemented yet".into())
    })?;
    let spec = mode.spec();
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
    'ranges: for &(start, end) in ranges {
        let mut va = start & !(PAGE_SIZE - 1);
        if d.triage().is_some() {
            while va < end {
                if !push(va, VIRTUAL_ONLY, &mut out) {
                    break 'ranges;
                }
                va = match va.checked_add(PAGE_SIZE) {
                    Some(n) => n,
                    None => break,
                };
            }
            continue;
        }
        while va < end {
            let w = d.walk(Va(va))?;
            let next = match w.result {
                Ok((pa, size)) => {
                    let page_base = va & !(size - 1);
                    let pa_base = pa.0 & !(size - 1);
                    let first = (va - page_base) / PAGE_SIZE;
                    for k in first..size / PAGE_SIZE {
                        let v = page_base + k * PAGE_SIZE;
                        if v >= end {
                            break;
                        }
                        let pfn = (pa_base + k * PAGE_SIZE) >> 12;
                        if d.phys_page(pfn).is_some() && !push(v, pfn, &mut out) {
                            break 'ranges;
                        }
                    }
                    page_base.checked_add(size)
                }
                Err(_) => {
                    let Some(level) = w.steps.len().checked_sub(1) else {
                        break; // the top-level table is unreadable: nothing in this range is
                    };
                    let span = 1u64 << spec.levels[level].shift;
                    (va & !(span - 1)).checked_add(span)
                }
            };
            match next {
                // x64: jump the non-canonical hole.
                Some(n) if mode == Mode::X64 && n == 0x0000_8000_0000_0000 => {
                    va = 0xFFFF_8000_0000_0000
                }
                Some(n) => va = n,
                None => break,
            }
        }
    }
    Ok((out, warnings))
}

/// Frame number used by [`kernel_pages`] for triage-dump pages, which have no physical frame.
pub const VIRTUAL_ONLY: u64 = u64::MAX;

/// Per-scan constants: header field positions and, for exact tags, substring finders.
struct Scanner<'o> {
    ctx: PoolContext,
    opts: &'o ScanOptions,
    unit: usize,
    hsize: usize,
    bs: (u32, u32),
    /// Finders for exact tags (and, before Windows 8, their protected-bit twins); `None` when a
    /// pattern has wildcards or no tags were given (then every offset is tested).
    finders: Option<Vec<memchr::memmem::Finder<'static>>>,
}

impl<'o> Scanner<'o> {
    fn new(ctx: PoolContext, opts: &'o ScanOptions) -> Scanner<'o> {
        let h = pool_header(ctx.machine);
        let finders = opts.tags.as_ref().and_then(|pats| {
            if pats.is_empty() || pats.len() > 8 || pats.iter().any(|p| p.mask != u32::MAX) {
                return None;
            }
            let mut f = Vec::new();
            for p in pats {
                let mut vals = vec![p.value];
                if ctx.masks_protected_bit() && p.value & 0x8000_0000 == 0 {
                    vals.push(p.value | 0x8000_0000);
                }
                for v in vals {
                    f.push(memchr::memmem::Finder::new(&v.to_le_bytes()).into_owned());
                }
            }
            Some(f)
        });
        Scanner {
            ctx,
            opts,
            unit: h.unit as usize,
            hsize: h.size as usize,
            bs: (
                u32::from(h.block_size.start),
                (1u32 << h.block_size.bits) - 1,
            ),
            finders,
        }
    }

    /// Test the header at `off` and record it when it passes.
    #[inline]
    fn check(&self, page: &[u8], va: u64, off: usize, out: &mut ScanHits) {
        let Some(raw) = page.get(off..off + 8) else {
            return;
        };
        let first = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
        let bs = (first >> self.bs.0) & self.bs.1;
        if bs == 0 || off + bs as usize * self.unit > page.len() {
            return;
        }
        let tag = self
            .ctx
            .clean_tag(u32::from_le_bytes([raw[4], raw[5], raw[6], raw[7]]));
        let want = match &self.opts.tags {
            Some(p) => p.iter().any(|p| p.matches(tag)),
            None => super::tag_like(tag, false),
        };
        if !want {
            return;
        }
        let h = pool_header(self.ctx.machine);
        let Some((b, ok)) = header_at(&self.ctx, h, page, va, off) else {
            return;
        };
        if !plausible(&self.ctx, &b, ok, off) {
            return;
        }
        let keep = match self.opts.pool {
            PoolFilter::All => true,
            PoolFilter::NonPaged => b.allocated && b.pool_type & 1 == 0,
            PoolFilter::Paged => b.allocated && b.pool_type & 1 == 1,
        };
        if keep {
            out.address.push(b.address);
            out.tag.push(b.tag);
            out.size.push(b.size);
            out.pool_type.push(b.pool_type);
            out.allocated.push(b.allocated);
        }
    }

    fn page(&self, page: &[u8], va: u64, out: &mut ScanHits) {
        match &self.finders {
            Some(finders) => {
                let mut offs: Vec<usize> = Vec::new();
                for f in finders {
                    for hit in f.find_iter(page) {
                        if hit >= 4 && (hit - 4) % self.unit == 0 {
                            offs.push(hit - 4);
                        }
                    }
                }
                if finders.len() > 1 {
                    offs.sort_unstable();
                    offs.dedup();
                }
                for off in offs {
                    self.check(page, va, off, out);
                }
            }
            None => {
                let mut off = 0usize;
                while off + self.hsize <= page.len() {
                    self.check(page, va, off, out);
                    off += self.unit;
                }
            }
        }
    }
}

fn scan_page(ctx: &PoolContext, page: &[u8], va: u64, opts: &ScanOptions, out: &mut ScanHits) {
    Scanner::new(*ctx, opts).page(page, va, out);
}

/// Scan `pages` (from [`kernel_pages`]) for pool headers, in parallel; hits sorted by address within
/// the order of `pages`.
pub fn scan_pages(d: &Dump, pages: &[PageRef], opts: &ScanOptions) -> ScanHits {
    let ctx = PoolContext::of(d);
    let parts: Vec<ScanHits> = pages
        .par_chunks(CHUNK_PAGES)
        .map(|chunk| {
            let sc = Scanner::new(ctx, opts);
            let mut h = ScanHits::default();
            let mut buf = [0u8; PAGE_SIZE as usize];
            for &(va, pfn) in chunk {
                if pfn == VIRTUAL_ONLY {
                    if d.read_virt(Va(va), &mut buf).is_ok() {
                        sc.page(&buf, va, &mut h);
                    }
                } else if let Some(p) = d.phys_page(pfn) {
                    sc.page(p, va, &mut h);
                }
            }
            h
        })
        .collect();
    let mut out = ScanHits::default();
    for p in parts {
        out.append(p);
    }
    out
}

/// Scan one page's bytes (fuzzing and tests): `page` is 4 KiB at VA `va`, read for `ctx`'s machine
/// and era.
pub fn scan_bytes(ctx: &PoolContext, page: &[u8], va: u64, opts: &ScanOptions) -> ScanHits {
    let mut h = ScanHits::default();
    scan_page(ctx, page, va, opts, &mut h);
    h
}

/// Touch every byte of `pages` once (sum them), in parallel: the physical limit a scan is compared
/// with in the benchmark. Returns the sum (so the work is not optimised away).
pub fn touch_pages(d: &Dump, pages: &[PageRef]) -> u64 {
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
