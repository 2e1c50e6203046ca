//! Physical memory of a dump: sorted runs of pages, each stored contiguously in the file.

use crate::addr::{Pa, PAGE_SHIFT, PAGE_SIZE};
use crate::error::{Error, Result};

/// Highest page frame number accepted (52-bit physical addresses).
pub const MAX_PFN: u64 = 1 << 40;

/// A run of physical pages stored back-to-back in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhysRun {
    /// First page frame number of the run.
    pub base_pfn: u64,
    /// Number of pages in the run that are present in the file.
    pub pages: u64,
    /// File offset (bytes) of the run's first page.
    pub file_offset: u64,
}

/// The map from page frame numbers to file offsets. Runs are sorted by PFN and do not overlap.
#[derive(Debug, Clone, Default)]
pub struct PhysMap {
    runs: Vec<PhysRun>,
    /// Pages the dump claims but the file is too short to hold.
    pub missing_pages: u64,
}

impl PhysMap {
    /// An empty map (triage dumps).
    pub fn empty() -> Self {
        Self::default()
    }

    /// Build from runs laid out back to back from `first_offset` in the order given (the order of the
    /// dump's table), clipping every page that lies past `file_len`. `runs` are (base PFN, page count) as
    /// the dump declares them; `what` names the table for errors and `at` is its file offset. Runs may come
    /// in any PFN order but must not overlap.
    pub fn from_contiguous_runs(
        runs: &[(u64, u64)],
        first_offset: u64,
        file_len: u64,
        at: u64,
        what: &str,
    ) -> Result<Self> {
        let mut out = Vec::with_capacity(runs.len().min(1 << 16));
        let mut off = first_offset;
        let mut missing = 0u64;
        let mut spans = Vec::with_capacity(runs.len().min(1 << 16));
        for (i, &(base, count)) in runs.iter().enumerate() {
            let end = base
                .checked_add(count)
                .filter(|&e| e <= MAX_PFN)
                .ok_or_else(|| {
                    Error::format(
                        format!("{what} run {i}: {count:#x} pages at PFN {base:#x} overflow"),
                        at,
                    )
                })?;
            if count == 0 {
                continue;
            }
            spans.push((base, end, i));
            let avail = file_len.saturating_sub(off) >> PAGE_SHIFT;
            let present = count.min(avail);
            if present > 0 {
                out.push(PhysRun {
                    base_pfn: base,
                    pages: present,
                    file_offset: off,
                });
            }
            missing += count - present;
            off = count
                .checked_mul(PAGE_SIZE)
                .and_then(|b| off.checked_add(b))
                .ok_or_else(|| {
                    Error::format(format!("{what} run {i}: file offset overflows"), at)
                })?;
        }
        spans.sort_unstable();
        for w in spans.windows(2) {
            if w[1].0 < w[0].1 {
                return Err(Error::format(
                    format!(
                        "{what} run {} at PFN {:#x} overlaps run {} (PFN {:#x}..{:#x})",
                        w[1].2, w[1].0, w[0].2, w[0].0, w[0].1
                    ),
                    at,
                ));
            }
        }
        out.sort_unstable_by_key(|r| r.base_pfn);
        Ok(PhysMap {
            runs: out,
            missing_pages: missing,
        })
    }

    /// Build from runs already placed in the file (bitmap dumps). Runs must be sorted and disjoint.
    pub fn from_placed(runs: Vec<PhysRun>, missing_pages: u64) -> Self {
        PhysMap {
            runs,
            missing_pages,
        }
    }

    /// The runs, sorted by PFN.
    pub fn runs(&self) -> &[PhysRun] {
        &self.runs
    }

    /// Number of pages present in the file.
    pub fn present_pages(&self) -> u64 {
        self.runs.iter().map(|r| r.pages).sum()
    }

    /// File offset (bytes) of the page holding `pa`, or `None` when the page is not in the dump.
    #[inline]
    pub fn page_offset(&self, pfn: u64) -> Option<u64> {
        let i = self.runs.partition_point(|r| r.base_pfn <= pfn);
        if i == 0 {
            return None;
        }
        let r = &self.runs[i - 1];
        let k = pfn - r.base_pfn;
        (k < r.pages).then(|| r.file_offset + (k << PAGE_SHIFT))
    }

    /// Copy `buf.len()` bytes starting at `pa` out of `file`, crossing pages as needed.
    pub fn read(&self, file: &[u8], pa: Pa, buf: &mut [u8]) -> Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let cur =
                pa.0.checked_add(done as u64)
                    .ok_or(Error::NotInDump { va: None, pa })?;
            let off_in = cur & (PAGE_SIZE - 1);
            let n = ((PAGE_SIZE - off_in) as usize).min(buf.len() - done);
            let src = self.page(file, cur >> PAGE_SHIFT).ok_or(Error::NotInDump {
                va: None,
                pa: Pa(cur),
            })?;
            buf[done..done + n].copy_from_slice(&src[off_in as usize..off_in as usize + n]);
            done += n;
        }
        Ok(())
    }

    /// The 4 KiB page `pfn` as a slice of `file`, if present.
    #[inline]
    pub fn page<'a>(&self, file: &'a [u8], pfn: u64) -> Option<&'a [u8]> {
        let off = usize::try_from(self.page_offset(pfn)?).ok()?;
        file.get(off..off.checked_add(PAGE_SIZE as usize)?)
    }
}
