//! The search engine: takes pieces of memory in address order, scans them on rayon, and finds the hits
//! that straddle a seam between two pieces that are adjacent in the address space but not in the file.
//!
//! * Chunks ([`crate::scan`], the contract every scanner follows): a piece is cut into chunks of
//!   `chunk_size` bytes; a chunk's haystack runs `max_len - 1` bytes past its end (clipped to the piece),
//!   and a hit counts only if it starts inside the chunk.
//! * Seams: where piece *i* starts at the address where piece *i−1* ends, the last `max_len − 1` bytes of
//!   *i−1* and the first `max_len − 1` bytes of the pieces from *i* on are copied into a small buffer; a hit
//!   there counts if it starts in *i−1* and ends in *i* or later. A hit crossing several seams is counted
//!   at the first one only, so every hit is reported once. When piece *i* alone holds the `max_len − 1`
//!   bytes (the usual case: pieces are pages), the rayon task that scans *i* checks the seam right after
//!   scanning *i−1*, while both are in cache; otherwise ([`Seams`]) it is checked in order as pieces
//!   arrive.
//! * Pieces are fed in batches; between batches, with a `limit`, the search stops as soon as the first
//!   `limit` hits by address are known.

use std::collections::VecDeque;
use std::ops::ControlFlow;

use rayon::prelude::*;

use super::matcher::{Hit, Matcher, Window};
use crate::addr::PAGE_SHIFT;

/// A piece of memory: `data` is what lies at `addr` (VA or PA, bytes) onward.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Piece<'a> {
    pub addr: u64,
    pub data: &'a [u8],
}

impl Piece<'_> {
    fn end(&self) -> u128 {
        self.addr as u128 + self.data.len() as u128
    }
}

/// Chunks' worth of bytes gathered before a parallel scan (64 × 16 MiB = 1 GiB by default).
const BATCH_CHUNKS: usize = 64;
/// Pieces gathered before a parallel scan (bounds the piece list's memory).
const BATCH_PIECES: usize = 1 << 16;
/// Chunks smaller than this are grouped into one rayon task, up to this many bytes.
const TASK_BYTES: usize = 1 << 20;

/// Pages (4 KiB) touched by the bytes `[addr, addr + len)`, minus the first one if it is `last_page`.
fn new_pages(addr: u64, len: usize, last_page: &mut Option<u64>) -> u64 {
    if len == 0 {
        return 0;
    }
    let first = addr >> PAGE_SHIFT;
    let last = ((addr as u128 + len as u128 - 1) >> PAGE_SHIFT) as u64;
    let mut n = last - first + 1;
    if *last_page == Some(first) {
        n -= 1;
    }
    *last_page = Some(last);
    n
}

struct Seams<'a> {
    ovl: usize,
    win: VecDeque<Piece<'a>>,
    /// Sequence number of `win[0]`.
    win_base: usize,
    /// Sequence numbers of pieces that begin at a seam and are not checked yet.
    pending: VecDeque<usize>,
    next_seq: usize,
    last_end: Option<u128>,
    buf: Vec<u8>,
}

impl<'a> Seams<'a> {
    fn new(ovl: usize) -> Self {
        Seams {
            ovl,
            win: VecDeque::new(),
            win_base: 0,
            pending: VecDeque::new(),
            next_seq: 0,
            last_end: None,
            buf: Vec::new(),
        }
    }

    /// Take the next piece; with `track`, check the seam at its start here (else a batch task does).
    fn push(&mut self, p: Piece<'a>, track: bool, m: &Matcher, w: Window, out: &mut Vec<Hit>) {
        if self.ovl == 0 {
            return;
        }
        let contiguous = self.last_end == Some(p.addr as u128);
        if !contiguous {
            self.resolve(true, m, w, out);
            self.win.clear();
            self.pending.clear();
            self.win_base = self.next_seq;
        } else if track {
            self.pending.push_back(self.next_seq);
        }
        self.win.push_back(p);
        self.next_seq += 1;
        self.last_end = Some(p.end());
        self.resolve(false, m, w, out);
    }

    /// Check every pending seam whose forward bytes are all here (or all of them with `force`).
    fn resolve(&mut self, force: bool, m: &Matcher, w: Window, out: &mut Vec<Hit>) {
        while let Some(&q) = self.pending.front() {
            let i = q - self.win_base;
            let mut fwd = 0usize;
            for p in self.win.iter().skip(i) {
                fwd += p.data.len();
                if fwd >= self.ovl {
                    break;
                }
            }
            if fwd < self.ovl && !force {
                break;
            }
            let prev = self.win[i - 1];
            let back = &prev.data[prev.data.len() - self.ovl.min(prev.data.len())..];
            self.buf.clear();
            self.buf.extend_from_slice(back);
            for p in self.win.iter().skip(i) {
                let want = self.ovl - (self.buf.len() - back.len());
                if want == 0 {
                    break;
                }
                self.buf
                    .extend_from_slice(&p.data[..want.min(p.data.len())]);
            }
            let seam = Window {
                addr: prev.addr + (prev.data.len() - back.len()) as u64,
                report_len: back.len(),
                min_end: back.len(),
                ..w
            };
            m.find(&self.buf, seam, out);
            self.pending.pop_front();
        }
        let keep_from = self
            .pending
            .front()
            .map(|q| q - 1)
            .unwrap_or(self.next_seq.saturating_sub(1));
        while self.win_base < keep_from && !self.win.is_empty() {
            self.win.pop_front();
            self.win_base += 1;
        }
    }

    /// The lowest address a hit found by a seam check still to come can have.
    fn low_water(&self) -> u64 {
        if self.ovl == 0 {
            return u64::MAX;
        }
        let p = match self.pending.front() {
            Some(&q) => self.win.get(q - 1 - self.win_base),
            None => self.win.back(),
        };
        p.map(|p| (p.end() - self.ovl.min(p.data.len()) as u128) as u64)
            .unwrap_or(u64::MAX)
    }
}

/// Counters kept while searching.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counts {
    pub pages_searched: u64,
    pub bytes_searched: u64,
    pub truncated: bool,
    /// Where the search stopped early (an address no hit at or above was looked for), if it did.
    pub stopped_at: Option<u64>,
}

/// A piece waiting for the parallel scan, with the tail of the piece before it (at most `max_len − 1`
/// bytes) when the seam between them is checked by the scan.
#[derive(Debug, Clone, Copy)]
struct Queued<'a> {
    piece: Piece<'a>,
    back: Option<&'a [u8]>,
}

/// One unit of a rayon task: `data` at `addr`, hits counted when they start in the first `report_len`
/// bytes; `back` as in [`Queued`] for a chunk that starts a piece.
#[derive(Debug, Clone, Copy)]
struct Chunk<'a> {
    piece: Piece<'a>,
    report_len: usize,
    back: Option<&'a [u8]>,
}

impl Chunk<'_> {
    /// The lowest address a hit found in this chunk (or its seam) can have.
    fn floor(&self) -> u64 {
        self.piece.addr - self.back.map_or(0, |b| b.len() as u64)
    }
}

/// Feeds pieces in address order; see the module docs.
pub(crate) struct Engine<'a, 'm> {
    m: &'m Matcher,
    chunk_size: usize,
    window: Window,
    batch: Vec<Queued<'a>>,
    prev: Option<Piece<'a>>,
    batch_bytes: usize,
    seams: Seams<'a>,
    hits: Vec<Hit>,
    /// The caller's limit; `window.limit` is one more, so that a cut is known to drop a hit.
    limit: usize,
    last_page: Option<u64>,
    last_end: Option<u128>,
    pub counts: Counts,
}

impl<'a, 'm> Engine<'a, 'm> {
    pub fn new(m: &'m Matcher, align: u64, limit: Option<usize>, chunk_size: usize) -> Self {
        let window = Window {
            addr: 0,
            report_len: 0,
            min_end: 0,
            align: align.max(1),
            limit: limit.map_or(usize::MAX, |l| l.saturating_add(1)),
        };
        Engine {
            m,
            chunk_size: chunk_size.max(1),
            window,
            batch: Vec::new(),
            prev: None,
            batch_bytes: 0,
            seams: Seams::new(m.max_len() - 1),
            hits: Vec::new(),
            limit: limit.unwrap_or(usize::MAX),
            last_page: None,
            last_end: None,
            counts: Counts::default(),
        }
    }

    /// The end address (exclusive, may be 2^64) of the last piece fed.
    pub fn last_end(&self) -> Option<u128> {
        self.last_end
    }

    /// Feed the next piece; its address must not be below the previous piece's end. `Break` means the
    /// first `limit` hits are known and nothing more needs to be fed.
    pub fn push(&mut self, p: Piece<'a>) -> ControlFlow<()> {
        if p.data.is_empty() {
            return ControlFlow::Continue(());
        }
        debug_assert!(self.last_end.is_none_or(|e| e <= p.addr as u128));
        self.counts.pages_searched += new_pages(p.addr, p.data.len(), &mut self.last_page);
        self.counts.bytes_searched += p.data.len() as u64;
        let ovl = self.m.max_len() - 1;
        let joined = self.last_end == Some(p.addr as u128);
        let back = match self.prev {
            Some(prev) if joined && ovl > 0 && p.data.len() >= ovl => {
                Some(&prev.data[prev.data.len() - ovl.min(prev.data.len())..])
            }
            _ => None,
        };
        self.seams
            .push(p, back.is_none(), self.m, self.window, &mut self.hits);
        self.last_end = Some(p.end());
        self.prev = Some(p);
        self.batch.push(Queued { piece: p, back });
        self.batch_bytes += p.data.len();
        if self.batch_bytes >= self.chunk_size.saturating_mul(BATCH_CHUNKS)
            || self.batch.len() >= BATCH_PIECES
        {
            self.run_batch();
            return self.check_limit();
        }
        ControlFlow::Continue(())
    }

    fn check_limit(&mut self) -> ControlFlow<()> {
        // `keep` = limit + 1 hits below the cutoff prove that the first `limit` are final and that
        // at least one more exists.
        let keep = self.window.limit;
        if keep == usize::MAX || self.hits.len() < keep {
            return ControlFlow::Continue(());
        }
        self.hits.sort_unstable();
        self.hits.truncate(keep);
        let future = self.last_end.unwrap_or(0).min(u64::MAX as u128) as u64;
        let cutoff = self.seams.low_water().min(future);
        if self.hits[keep - 1].0 < cutoff {
            self.counts.truncated = true;
            self.counts.stopped_at = Some(cutoff);
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    fn run_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let ovl = crate::scan::overlap(self.m.max_len());
        let mut tasks: Vec<Vec<Chunk<'a>>> = Vec::new();
        let mut cur: Vec<Chunk<'a>> = Vec::new();
        let mut cur_bytes = 0usize;
        for q in &self.batch {
            let p = q.piece;
            for c in crate::scan::chunks(p.data.len(), self.chunk_size, ovl) {
                cur.push(Chunk {
                    piece: Piece {
                        addr: p.addr + c.start as u64,
                        data: &p.data[c.start..c.hay_end],
                    },
                    report_len: c.report,
                    back: if c.start == 0 { q.back } else { None },
                });
                cur_bytes += c.report;
                if cur_bytes >= TASK_BYTES {
                    tasks.push(std::mem::take(&mut cur));
                    cur_bytes = 0;
                }
            }
        }
        if !cur.is_empty() {
            tasks.push(cur);
        }
        let m = self.m;
        let base = self.window;
        let found: Vec<Vec<Hit>> = tasks
            .par_iter()
            .map(|task| scan_task(m, base, ovl, task))
            .collect();
        for f in found {
            self.hits.extend(f);
        }
        self.batch.clear();
        self.batch_bytes = 0;
    }

    /// Scan what is left and return the hits, sorted by address then pattern, cut to `limit`.
    pub fn finish(mut self) -> (Vec<Hit>, Counts) {
        if !self.counts.truncated {
            self.run_batch();
            self.seams
                .resolve(true, self.m, self.window, &mut self.hits);
        }
        self.hits.sort_unstable();
        self.hits.dedup();
        if crate::scan::keep_first(&mut self.hits, Some(self.limit)) {
            self.counts.truncated = true;
        }
        (self.hits, self.counts)
    }
}

/// Scan a task's chunks in order (each preceded by its seam check, if it carries one). Returns at most
/// `base.limit` hits, the lowest by address, sorted.
fn scan_task(m: &Matcher, base: Window, ovl: usize, task: &[Chunk<'_>]) -> Vec<Hit> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut sorted = true;
    for (i, c) in task.iter().enumerate() {
        let limit = out.len().saturating_add(base.limit);
        if let Some(back) = c.back {
            buf.clear();
            buf.extend_from_slice(back);
            buf.extend_from_slice(&c.piece.data[..ovl.min(c.piece.data.len())]);
            let seam = Window {
                addr: c.floor(),
                report_len: back.len(),
                min_end: back.len(),
                limit,
                ..base
            };
            let before = out.len();
            m.find(&buf, seam, &mut out);
            sorted &= out.len() == before;
        }
        let w = Window {
            addr: c.piece.addr,
            report_len: c.report_len,
            limit,
            ..base
        };
        m.find(c.piece.data, w, &mut out);
        if out.len() >= base.limit {
            out.sort_unstable();
            out.truncate(base.limit);
            sorted = true;
            if task
                .get(i + 1)
                .is_none_or(|n| out[out.len() - 1].0 < n.floor())
            {
                break;
            }
        }
    }
    if !sorted {
        out.sort_unstable();
    }
    out
}
