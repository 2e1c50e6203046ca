//! Finding every (overlapping) occurrence of one or many byte patterns in a slice.
//!
//! One pattern uses `memchr::memmem`; several use an `aho_corasick` automaton in overlapping mode. Both
//! report *every* start position, overlapping ones included (`aa` occurs at 0, 1 and 2 in `aaaa`), as
//! kd's `s` does: it tries every address of the range.

use aho_corasick::{AhoCorasick, MatchKind};
use memchr::memmem;

use crate::error::{Error, Result};

/// Longest pattern accepted, in bytes.
pub const MAX_PATTERN_LEN: usize = 1 << 16;
/// Most patterns accepted in one search.
pub const MAX_PATTERNS: usize = 1 << 16;

/// A hit: the address (VA or PA, bytes) where a pattern starts, and the index of the pattern in the
/// list given to [`Matcher::new`].
pub type Hit = (u64, u32);

enum Kind {
    One(Box<memmem::Finder<'static>>),
    Many(AhoCorasick),
}

/// A compiled set of patterns.
pub struct Matcher {
    kind: Kind,
    lens: Vec<usize>,
    max_len: usize,
}

/// Where a haystack sits and which of its hits count.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    /// Address (bytes) of the haystack's first byte.
    pub addr: u64,
    /// Only hits starting before this offset (bytes) count.
    pub report_len: usize,
    /// Only hits ending after this offset (bytes) count (0 = all).
    pub min_end: usize,
    /// Only hits at addresses that are multiples of this count.
    pub align: u64,
    /// Stop once the output holds this many hits.
    pub limit: usize,
}

impl Matcher {
    /// Compile `patterns`: at least one, each 1 to [`MAX_PATTERN_LEN`] bytes, at most [`MAX_PATTERNS`].
    pub fn new<P: AsRef<[u8]>>(patterns: &[P]) -> Result<Matcher> {
        if patterns.is_empty() {
            return Err(Error::Argument("search needs at least one pattern".into()));
        }
        if patterns.len() > MAX_PATTERNS {
            return Err(Error::Argument(format!(
                "at most {MAX_PATTERNS} patterns, not {}",
                patterns.len()
            )));
        }
        let mut lens = Vec::with_capacity(patterns.len());
        for (i, p) in patterns.iter().enumerate() {
            let n = p.as_ref().len();
            if n == 0 || n > MAX_PATTERN_LEN {
                return Err(Error::Argument(format!(
                    "pattern {i} is {n} bytes; patterns must be 1 to {MAX_PATTERN_LEN} bytes"
                )));
            }
            lens.push(n);
        }
        let max_len = lens.iter().copied().max().unwrap_or(1);
        let kind = if patterns.len() == 1 {
            Kind::One(Box::new(
                memmem::Finder::new(patterns[0].as_ref()).into_owned(),
            ))
        } else {
            let ac = AhoCorasick::builder()
                .match_kind(MatchKind::Standard)
                .build(patterns)
                .map_err(|e| Error::Argument(format!("cannot compile the patterns: {e}")))?;
            Kind::Many(ac)
        };
        Ok(Matcher {
            kind,
            lens,
            max_len,
        })
    }

    /// Length in bytes of the longest pattern.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Number of patterns.
    pub fn len(&self) -> usize {
        self.lens.len()
    }

    /// Always false: a matcher holds at least one pattern.
    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    /// Append to `out`, in ascending address order, the hits in `hay` that `w` lets through, until `out`
    /// holds `w.limit` hits.
    pub(crate) fn find(&self, hay: &[u8], w: Window, out: &mut Vec<Hit>) {
        if out.len() >= w.limit {
            return;
        }
        let keep = |s: usize, id: usize| {
            s < w.report_len
                && s + self.lens[id] > w.min_end
                && w.addr.wrapping_add(s as u64).is_multiple_of(w.align)
        };
        match &self.kind {
            Kind::One(f) => {
                let mut pos = 0usize;
                while pos < w.report_len && pos < hay.len() {
                    let Some(i) = f.find(&hay[pos..]) else { break };
                    let s = pos + i;
                    if s >= w.report_len {
                        break;
                    }
                    if keep(s, 0) {
                        out.push((w.addr + s as u64, 0));
                        if out.len() >= w.limit {
                            return;
                        }
                    }
                    pos = s + 1;
                }
            }
            Kind::Many(ac) => {
                // Overlapping matches come in order of their end; sort the new part at the end. With a
                // limit, prune every so often: once `limit` hits start before the earliest start any later
                // match can have, nothing later can enter the first `limit`.
                let first = out.len();
                let budget = w.limit - first;
                let mut prune_at = budget.saturating_mul(2).max(1024);
                for m in ac.find_overlapping_iter(hay) {
                    let s = m.start();
                    if m.end().saturating_sub(self.max_len) >= w.report_len {
                        break;
                    }
                    let id = m.pattern().as_usize();
                    if !keep(s, id) {
                        continue;
                    }
                    out.push((w.addr + s as u64, id as u32));
                    if w.limit != usize::MAX && out.len() - first >= prune_at {
                        out[first..].sort_unstable();
                        out.truncate(first + budget);
                        let floor = w.addr + m.end().saturating_sub(self.max_len) as u64;
                        if out.len() - first == budget && out[out.len() - 1].0 < floor {
                            return;
                        }
                        prune_at = out.len() - first + budget.max(1024);
                    }
                }
                out[first..].sort_unstable();
                if w.limit != usize::MAX {
                    out.truncate(first + budget);
                }
            }
        }
    }
}
