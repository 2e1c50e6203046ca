//! Bindings for the kernel pool: tracker tables, big pool table, pool pages, tag scan, tag owners.

use std::sync::Arc;

use ntdump_core::pool::big::read_big;
use ntdump_core::pool::owners::padded_tag;
use ntdump_core::pool::scan::PreparedScan;
use ntdump_core::pool::{self as core_pool, ScanOptions};
use ntdump_core::Va;

use crate::prelude::*;

/// VA of the PoolTrackTable variable (KDBG +0x1B8), without reading further.
#[guarded]
pub fn pool_track_table_variable(py: Python<'_>, dump: &PyDump) -> PyResult<u64> {
    Ok(
        core_pool::tracker::track_table_variable(&*kernel_of(py, dump)?)
            .or_raise()?
            .0,
    )
}

/// Sum the tracker tables per tag (GIL released). Returns columns and where the tables are.
#[guarded]
#[pyo3(signature = (dump, *, per_cpu=None, extra=Vec::new(), only_extra=false, track_entries=None))]
pub fn pool_used<'py>(
    py: Python<'py>,
    dump: &PyDump,
    per_cpu: Option<Vec<u64>>,
    extra: Vec<(u64, u64)>,
    only_extra: bool,
    track_entries: Option<u64>,
) -> PyResult<Dict<'py>> {
    let k = kernel_of(py, dump)?;
    let opts = core_pool::tracker::UsedOptions {
        extra,
        per_cpu,
        only_extra,
        track_entries,
    };
    let r = run(py, || core_pool::tracker::read_used(&dump.inner, &k, &opts))?;
    let o = record(py, &r)?;
    let u = r.usage;
    let columns = arrays!(py, u; tag, nonpaged_allocs, nonpaged_frees, nonpaged_bytes,
        paged_allocs, paged_frees, paged_bytes);
    Ok(dict!(o; columns))
}

/// The big page table's used entries (GIL released). `table` = (VA, entries, layout name or "").
#[guarded]
#[pyo3(signature = (dump, table=None))]
pub fn pool_big<'py>(
    py: Python<'py>,
    dump: &PyDump,
    table: Option<(u64, u64, String)>,
) -> PyResult<Dict<'py>> {
    let r = match table {
        None => run(py, || dump.inner.big_pool())?,
        Some((a, n, l)) => {
            let k = kernel_of(py, dump)?;
            Arc::new(run(py, || read_big(&dump.inner, &k, Some((a, n, &l))))?)
        }
    };
    let o = record(py, &*r)?;
    let p = r.pages.clone();
    let columns = arrays!(py, p; va, tag, bytes, pool_type, freed);
    Ok(dict!(o; columns))
}

/// The pool page holding `va` (`!pool`): blocks as tuples (address, size, previous_size, pool_index,
/// raw_type, pool_type, allocated, tag, contains), the walk status, the nearest header, and `big`:
/// the big allocation holding `va` (`ntdump_core::Session::pool_page`).
#[guarded]
pub fn pool_page<'py>(py: Python<'py>, dump: &PyDump, va: u64) -> PyResult<Dict<'py>> {
    record(py, &run(py, || dump.inner.pool_page(Va(va)))?)
}

/// A prepared pool scan (`ntdump_core::pool::scan::PreparedScan`): the mapped kernel pages are listed
/// once (GIL released); `run(lo, hi)` scans pages `[lo, hi)` of that list, so Python can show progress
/// between batches.
#[pyclass(frozen, name = "PoolScanner", module = "ntdump._native")]
pub struct PyPoolScanner {
    inner: PreparedScan,
    /// Number of 4 KiB pages to scan.
    #[pyo3(get)]
    pages: usize,
    /// Warnings from listing the pages.
    #[pyo3(get)]
    warnings: Vec<String>,
}

#[guarded(self.inner.dump())]
impl PyPoolScanner {
    /// `tags`: patterns (`b"Thr*"`, `b"T?re"`) or None for every tag; `pool`: "nonpaged", "paged",
    /// "all"; `ranges`: [start, end) VA pairs (default: all mapped kernel VA); `limit`: most pages.
    #[new]
    #[pyo3(signature = (dump, *, tags=None, pool="all", ranges=None, limit=1usize << 26))]
    fn new(
        py: Python<'_>,
        dump: &PyDump,
        tags: Option<Vec<Vec<u8>>>,
        pool: &str,
        ranges: Option<Vec<(u64, u64)>>,
        limit: usize,
    ) -> PyResult<Self> {
        let opts = ScanOptions::parse(tags.as_deref(), pool).or_raise()?;
        let d = dump.inner.dump().clone();
        let mut inner = run(py, || PreparedScan::new(d, ranges.as_deref(), limit, opts))?;
        let (pages, warnings) = (inner.pages.len(), std::mem::take(&mut inner.warnings));
        Ok(PyPoolScanner {
            inner,
            pages,
            warnings,
        })
    }

    /// Scan pages `[lo, hi)` (GIL released, rayon); columns address, tag, size, pool_type, allocated.
    fn run<'py>(&self, py: Python<'py>, lo: usize, hi: usize) -> PyResult<Dict<'py>> {
        let r = py.detach(|| self.inner.run(lo, hi));
        Ok(arrays!(py, r; address, tag, size, pool_type, allocated))
    }

    /// Touch every byte of pages `[lo, hi)` once (benchmark baseline); returns a checksum.
    fn touch(&self, py: Python<'_>, lo: usize, hi: usize) -> u64 {
        py.detach(|| self.inner.touch(lo, hi))
    }
}

/// Likely owners of each pool tag in `tags` (1 to 4 bytes, space-padded; `b"None"` = untagged pool),
/// best first, from one search over every loaded module's image (GIL released): per tag (module kd
/// names, evidence, scores, note).
#[guarded]
pub fn pool_owners<'py>(py: Python<'py>, dump: &PyDump, tags: Vec<Vec<u8>>) -> PyResult<Any<'py>> {
    let fixed: Result<Vec<_>, _> = tags.iter().map(|t| padded_tag(t)).collect();
    let fixed = fixed.or_raise()?;
    let t = crate::pe::symbols_of(py, dump)?;
    let owners = run(py, || {
        core_pool::owners::tag_owners(&dump.inner, &t, &fixed)
    })?;
    let rows: Vec<_> = owners.iter().map(|o| o.columns(&t)).collect();
    value(py, &rows)
}

/// Every pool layout as data: {"pool_header": [...], "tracker": [...], "big_pages": [...]}, each a
/// dict with name, size, source and fields {name: (offset, width_bytes or (bit start, bit count))}.
#[guarded]
pub fn pool_layouts(py: Python<'_>) -> PyResult<Dict<'_>> {
    use core_pool::layout::{BIG_LAYOUTS, POOL_HEADER_X64, POOL_HEADER_X86, TRACKER_LAYOUTS};
    let pool_header = value(py, &[&POOL_HEADER_X86, &POOL_HEADER_X64][..])?;
    let tracker = value(py, &TRACKER_LAYOUTS[..])?;
    let big_pages = value(py, &BIG_LAYOUTS[..])?;
    Ok(dict!(PyDict::new(py); pool_header, tracker, big_pages))
}
