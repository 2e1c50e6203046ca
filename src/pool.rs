//! Bindings for the kernel pool: tracker tables, big pool table, pool pages, tag scan.

use std::sync::Arc;

use ntdump_core::pool::{self as core_pool, PoolFilter, ScanOptions, TagPattern};
use ntdump_core::Dump;
use ntdump_guard::guarded;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::columns::{arrays, record};
use crate::dump::PyDump;
use crate::errors::{run, PyCoreError, PyPoolError};
use crate::kernel::kernel_of;

/// VA of the PoolTrackTable variable (KDBG +0x1B8) and of the KDBG, without reading further.
#[guarded(dump)]
#[pyfunction]
fn pool_track_table_variable(py: Python<'_>, dump: PyRef<'_, PyDump>) -> PyResult<(u64, u64)> {
    let k = kernel_of(py, &dump)?;
    let var = core_pool::tracker::track_table_variable(&k).map_err(PyPoolError)?;
    Ok((var, k.kdbg.as_ref().map(|g| g.va).unwrap_or(0)))
}

/// Sum the tracker tables per tag (GIL released). Returns columns and where the tables are.
#[guarded(dump)]
#[pyfunction]
#[pyo3(signature = (dump, *, per_cpu=None, extra=Vec::new(), only_extra=false, track_entries=None))]
fn pool_used<'py>(
    py: Python<'py>,
    dump: PyRef<'py, PyDump>,
    per_cpu: Option<Vec<u64>>,
    extra: Vec<(u64, u64)>,
    only_extra: bool,
    track_entries: Option<u64>,
) -> PyResult<Bound<'py, PyDict>> {
    let k = kernel_of(py, &dump)?;
    let d = dump.inner.clone();
    let opts = core_pool::tracker::UsedOptions {
        extra,
        per_cpu,
        only_extra,
        track_entries,
    };
    let r = run(py, move || core_pool::tracker::read_used(&d, &k, &opts))?;
    let u = r.usage;
    let c = arrays!(
        py,
        u,
        [
            tag,
            nonpaged_allocs,
            nonpaged_frees,
            nonpaged_bytes,
            paged_allocs,
            paged_frees,
            paged_bytes,
        ]
    );
    let g = &r.global;
    let o = record!(py, g, [variable, table, entries, size_variable]);
    o.set_item("columns", c)?;
    o.set_item("layout", g.layout.name)?;
    o.set_item("layout_source", &g.layout_source)?;
    o.set_item("layout_scores", g.scores.clone())?;
    o.update(record!(py, r, [per_cpu, per_cpu_array, extra, warnings]).as_mapping())?;
    Ok(o)
}

/// The big page table's used entries (GIL released). `table` = (VA, entries, layout name or "").
#[guarded(dump)]
#[pyfunction]
#[pyo3(signature = (dump, table=None))]
fn pool_big<'py>(
    py: Python<'py>,
    dump: PyRef<'py, PyDump>,
    table: Option<(u64, u64, String)>,
) -> PyResult<Bound<'py, PyDict>> {
    let r = match table {
        None => default_big(py, &dump)?,
        Some((a, n, l)) => {
            let k = kernel_of(py, &dump)?;
            let d = dump.inner.clone();
            let r = run(py, move || {
                core_pool::big::read_big(&d, &k, Some((a, n, l.as_str())))
            })?;
            Arc::new(r)
        }
    };
    let p = r.pages.clone();
    let i = &r.info;
    let o = record!(py, i, [table, entries, table_variable, size_variable, how]);
    o.set_item(
        "columns",
        arrays!(py, p, [va, tag, bytes, pool_type, freed]),
    )?;
    o.set_item("layout", i.layout.name)?;
    o.set_item("layout_source", &i.layout_source)?;
    o.set_item("warnings", r.warnings.clone())?;
    Ok(o)
}

/// The big pool table found by the default search, read once (GIL released) and shared.
fn default_big(py: Python<'_>, dump: &PyDump) -> PyResult<Arc<core_pool::big::BigPool>> {
    if let Some(b) = dump.big.get() {
        return Ok(b.clone());
    }
    let k = kernel_of(py, dump)?;
    let d = dump.inner.clone();
    let r = run(py, move || core_pool::big::read_big(&d, &k, None))?;
    Ok(dump.big.get_or_init(|| Arc::new(r)).clone())
}

/// (address, size, previous_size, pool_index, raw_type, pool_type, allocated, tag, contains).
type BlockTuple = (u64, u64, u64, u32, u32, u32, bool, u32, bool);

fn block_tuple(b: &core_pool::PoolBlock) -> BlockTuple {
    (
        b.address,
        b.size,
        b.previous_size,
        b.pool_index,
        b.raw_type,
        b.pool_type,
        b.allocated,
        b.tag,
        b.contains,
    )
}

/// The pool page holding `va` (`!pool`): blocks as tuples (address, size, previous_size, pool_index,
/// raw_type, pool_type, allocated, tag, contains), the walk status, and the nearest header.
#[guarded(dump)]
#[pyfunction]
fn pool_page<'py>(
    py: Python<'py>,
    dump: PyRef<'py, PyDump>,
    va: u64,
) -> PyResult<Bound<'py, PyDict>> {
    let d = dump.inner.clone();
    let p = run(py, move || core_pool::page::pool_page(&d, va))?;
    let o = PyDict::new(py);
    o.set_item("va", p.va)?;
    o.set_item("page", p.page)?;
    o.set_item("header_size", p.header_size)?;
    let blocks = PyList::empty(py);
    for b in &p.blocks {
        blocks.append(block_tuple(b))?;
    }
    o.set_item("blocks", blocks)?;
    let (status, at, why) = match p.status {
        core_pool::page::WalkStatus::Ok => ("ok", None, String::new()),
        core_pool::page::WalkStatus::Corrupt { at, why } => ("corrupt", Some(at), why),
        core_pool::page::WalkStatus::NotWalked(why) => ("not walked", None, why),
    };
    o.set_item("status", status)?;
    o.set_item("corrupt_at", at)?;
    o.set_item("why", why)?;
    o.set_item("nearest", p.nearest.as_ref().map(block_tuple))?;
    // The big allocation holding `va` (pool::big::containing), when the big table can be read.
    let big = default_big(py, &dump).ok().and_then(|b| {
        let g = &b.pages;
        core_pool::big::containing(g, va)
            .map(|i| (g.va[i], g.tag[i], g.bytes[i], g.pool_type[i], g.freed[i]))
    });
    o.set_item("big", big)?;
    Ok(o)
}

fn parse_filter(pool: &str) -> PyResult<PoolFilter> {
    Ok(match pool {
        "all" => PoolFilter::All,
        "nonpaged" => PoolFilter::NonPaged,
        "paged" => PoolFilter::Paged,
        o => {
            return Err(PyValueError::new_err(format!(
                "pool must be 'nonpaged', 'paged' or 'all', not {o:?}"
            )))
        }
    })
}

/// A prepared pool scan: the mapped kernel pages are listed once (GIL released); `run(lo, hi)` scans
/// pages `[lo, hi)` of that list, so Python can show progress between batches.
#[pyclass(frozen, name = "PoolScanner", module = "ntdump._native")]
struct PyPoolScanner {
    dump: Arc<Dump>,
    pages: Vec<(u64, u64)>,
    opts: ScanOptions,
    warnings: Vec<String>,
}

#[pymethods]
impl PyPoolScanner {
    /// `tags`: patterns (`b"Thr*"`, `b"T?re"`) or None for every tag; `pool`: "nonpaged", "paged",
    /// "all"; `ranges`: [start, end) VA pairs (default: all mapped kernel VA); `limit`: most pages.
    #[new]
    #[pyo3(signature = (dump, *, tags=None, pool="all", ranges=None, limit=1usize << 26))]
    #[guarded(dump)]
    fn new(
        py: Python<'_>,
        dump: PyRef<'_, PyDump>,
        tags: Option<Vec<Vec<u8>>>,
        pool: &str,
        ranges: Option<Vec<(u64, u64)>>,
        limit: usize,
    ) -> PyResult<Self> {
        let tags = match tags {
            None => None,
            Some(t) => Some(
                t.iter()
                    .map(|s| TagPattern::parse(s))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(PyCoreError)?,
            ),
        };
        let opts = ScanOptions {
            tags,
            pool: parse_filter(pool)?,
        };
        let d = dump.inner.clone();
        let (pages, warnings) = run(py, || {
            core_pool::scan::kernel_pages(&d, ranges.as_deref(), limit)
        })?;
        Ok(PyPoolScanner {
            dump: d,
            pages,
            opts,
            warnings,
        })
    }

    /// Number of 4 KiB pages to scan.
    #[getter]
    #[guarded(self.dump)]
    fn pages(&self) -> usize {
        self.pages.len()
    }

    /// Warnings from listing the pages.
    #[getter]
    #[guarded(self.dump)]
    fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }

    /// Scan pages `[lo, hi)` (GIL released, rayon); columns address, tag, size, pool_type, allocated.
    #[guarded(self.dump)]
    fn run<'py>(&self, py: Python<'py>, lo: usize, hi: usize) -> PyResult<Bound<'py, PyDict>> {
        let hi = hi.min(self.pages.len());
        let lo = lo.min(hi);
        let r =
            py.detach(|| core_pool::scan::scan_pages(&self.dump, &self.pages[lo..hi], &self.opts));
        Ok(arrays!(py, r, [address, tag, size, pool_type, allocated]))
    }

    /// Touch every byte of pages `[lo, hi)` once (benchmark baseline); returns a checksum.
    #[guarded(self.dump)]
    fn touch(&self, py: Python<'_>, lo: usize, hi: usize) -> u64 {
        let hi = hi.min(self.pages.len());
        let lo = lo.min(hi);
        py.detach(|| core_pool::scan::touch_pages(&self.dump, &self.pages[lo..hi]))
    }
}

/// Every pool layout as data: {"pool_header": [...], "tracker": [...], "big_pages": [...]}, each a
/// dict with name, size, source and fields {name: (offset, width_bytes or (bit start, bit count))}.
#[guarded]
#[pyfunction]
fn pool_layouts(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    use core_pool::layout as l;
    let o = PyDict::new(py);
    let hdrs = PyList::empty(py);
    for h in [&l::POOL_HEADER_X86, &l::POOL_HEADER_X64] {
        let d = PyDict::new(py);
        d.set_item("name", h.name)?;
        d.set_item("size", h.size)?;
        d.set_item("unit", h.unit)?;
        d.set_item("source", h.source)?;
        let f = PyDict::new(py);
        for (n, b) in [
            ("PreviousSize", h.previous_size),
            ("PoolIndex", h.pool_index),
            ("BlockSize", h.block_size),
            ("PoolType", h.pool_type),
        ] {
            f.set_item(n, (b.off, (b.start, b.bits)))?;
        }
        f.set_item("PoolTag", (h.tag, 4))?;
        if let Some(p) = h.process_billed {
            f.set_item("ProcessBilled", (p, 8))?;
        }
        d.set_item("fields", f)?;
        hdrs.append(d)?;
    }
    o.set_item("pool_header", hdrs)?;
    let trk = PyList::empty(py);
    for t in l::TRACKER_LAYOUTS {
        let d = PyDict::new(py);
        d.set_item("name", t.name)?;
        d.set_item("size", t.size)?;
        d.set_item("source", t.source)?;
        let f = PyDict::new(py);
        for (n, x) in [
            ("Key", t.key),
            ("NonPagedAllocs", t.nonpaged_allocs),
            ("NonPagedFrees", t.nonpaged_frees),
            ("NonPagedBytes", t.nonpaged_bytes),
            ("PagedAllocs", t.paged_allocs),
            ("PagedFrees", t.paged_frees),
            ("PagedBytes", t.paged_bytes),
        ] {
            f.set_item(n, (x.off, x.width))?;
        }
        d.set_item("fields", f)?;
        trk.append(d)?;
    }
    o.set_item("tracker", trk)?;
    let big = PyList::empty(py);
    for b in l::BIG_LAYOUTS {
        let d = PyDict::new(py);
        d.set_item("name", b.name)?;
        d.set_item("size", b.size)?;
        d.set_item("source", b.source)?;
        let f = PyDict::new(py);
        f.set_item("Va", (b.va.off, b.va.width))?;
        f.set_item("Key", (b.key.off, b.key.width))?;
        if let Some(x) = b.pool_type {
            f.set_item("PoolType", (x.off, x.width))?;
        }
        if let Some(x) = b.pool_type_bits {
            f.set_item("PoolType", (x.off, (x.start, x.bits)))?;
        }
        if let Some(x) = b.number_of_bytes {
            f.set_item("NumberOfBytes", (x.off, x.width))?;
        }
        if let Some(x) = b.number_of_pages {
            f.set_item("NumberOfPages", (x.off, x.width))?;
        }
        if let Some(x) = b.process_billed {
            f.set_item("ProcessBilled", (x.off, x.width))?;
        }
        d.set_item("fields", f)?;
        big.append(d)?;
    }
    o.set_item("big_pages", big)?;
    Ok(o)
}

/// Add this file's functions and classes to the native module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(pool_track_table_variable, m)?)?;
    m.add_function(wrap_pyfunction!(pool_used, m)?)?;
    m.add_function(wrap_pyfunction!(pool_big, m)?)?;
    m.add_function(wrap_pyfunction!(pool_page, m)?)?;
    m.add_function(wrap_pyfunction!(pool_layouts, m)?)?;
    m.add_class::<PyPoolScanner>()?;
    Ok(())
}
