//! The scanner contract every scan of a dump follows: the pattern search ([`crate::search`]), the pool
//! tag scan ([`crate::pool::scan`]) and the PE value scans ([`crate::pe::scan`]).
//!
//! * **Chunks.** Work is cut into chunks of [`CHUNK_BYTES`] (16 MiB; [`CHUNK_PAGES`] 4 KiB pages) that run
//!   on rayon's global pool (`RAYON_NUM_THREADS`; rayon and `fork` do not mix).
//! * **Seams.** A chunk's haystack runs [`overlap`]`(max_len)` = `max_len − 1` bytes past its end, and a
//!   hit counts only when it starts inside the chunk ([`Chunk::owns`]; the volatility3 scanner contract),
//!   so a match is reported exactly once whichever chunks it straddles. The pool scan's "pattern" never
//!   crosses a page (a small pool block lies inside one page), so its chunks need no overlap.
//! * **Order.** Hits are sorted by address (then pattern), so output never depends on the thread count.
//! * **Limits.** A scan keeps the first `limit` hits by address ([`keep_first`]) and may stop early once
//!   they are known; the pool scan bounds the pages it lists. Unreadable memory is skipped, never an error.

use crate::addr::PAGE_SIZE;

/// Bytes per parallel chunk: 16 MiB.
pub const CHUNK_BYTES: usize = 16 << 20;

/// 4 KiB pages per parallel chunk ([`CHUNK_BYTES`] / [`PAGE_SIZE`]).
pub const CHUNK_PAGES: usize = CHUNK_BYTES / PAGE_SIZE as usize;

/// Bytes a chunk's haystack must run past its end so that a match of up to `max_len` bytes that starts in
/// the chunk is seen whole: `max_len − 1` (0 for an empty pattern).
#[inline]
pub fn overlap(max_len: usize) -> usize {
    max_len.saturating_sub(1)
}

/// One chunk of a piece of `len` bytes: hits are reported for starts in `[start, start + report)`, and
/// the haystack is `[start, hay_end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// Offset (bytes) of the chunk in the piece.
    pub start: usize,
    /// Bytes whose hits this chunk reports.
    pub report: usize,
    /// End (bytes, exclusive) of the haystack: `start + report + overlap`, clipped to the piece.
    pub hay_end: usize,
}

impl Chunk {
    /// True when a hit at piece offset `at` belongs to this chunk (it starts inside the chunk).
    #[inline]
    pub fn owns(&self, at: usize) -> bool {
        at >= self.start && at - self.start < self.report
    }
}

/// Cut a piece of `len` bytes into chunks of `chunk` bytes (at least 1) whose haystacks overlap by
/// `overlap` bytes, in order. Every offset of the piece is reported by exactly one chunk.
pub fn chunks(len: usize, chunk: usize, overlap: usize) -> impl Iterator<Item = Chunk> {
    let chunk = chunk.max(1);
    (0..len.div_ceil(chunk)).map(move |i| {
        let start = i * chunk;
        let report = chunk.min(len - start);
        Chunk {
            start,
            report,
            hay_end: (start + report).saturating_add(overlap).min(len),
        }
    })
}

/// Keep the first `limit` of `hits` (sorted by address); returns true when some were dropped.
pub fn keep_first<T>(hits: &mut Vec<T>, limit: Option<usize>) -> bool {
    match limit {
        Some(l) if hits.len() > l => {
            hits.truncate(l);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_offset_is_owned_once_and_seams_are_covered() {
        for (len, chunk, ovl) in [(0, 4, 3), (10, 4, 3), (12, 4, 0), (5, 16, 7), (9, 1, 2)] {
            let cs: Vec<Chunk> = chunks(len, chunk, ovl).collect();
            for at in 0..len {
                assert_eq!(
                    cs.iter().filter(|c| c.owns(at)).count(),
                    1,
                    "{len} {chunk} {at}"
                );
            }
            for c in &cs {
                // A match of ovl + 1 bytes starting at the chunk's last offset fits in its haystack,
                // unless the piece ends first.
                assert_eq!(c.hay_end, (c.start + c.report + ovl).min(len));
            }
        }
        assert_eq!(chunks(10, 0, 0).count(), 10); // chunk 0 is taken as 1
    }

    #[test]
    fn limits() {
        let mut v = vec![1, 2, 3];
        assert!(!keep_first(&mut v, None));
        assert!(!keep_first(&mut v, Some(3)));
        assert!(keep_first(&mut v, Some(2)));
        assert_eq!(v, [1, 2]);
        assert_eq!(CHUNK_PAGES * PAGE_SIZE as usize, CHUNK_BYTES);
        assert_eq!((overlap(0), overlap(1), overlap(8)), (0, 0, 7));
    }
}
