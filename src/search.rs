//! Bindings for memory search: ranges, the kernel half, physical memory, or every loaded module.

use ntdump_core::search::{self as core_search, SearchOptions, SearchResult, Target};

use crate::prelude::*;

/// `{address, pattern}` (numpy) and the record's `pages_searched`, `pages_unreadable`, `truncated`.
fn hits<'py>(py: Python<'py>, r: SearchResult) -> PyResult<Dict<'py>> {
    let o = record(py, &r)?;
    let (address, pattern) = (r.addresses.into_pyarray(py), r.patterns.into_pyarray(py));
    Ok(dict!(o; address, pattern))
}

/// Search a dump for byte patterns, with the GIL released (private: use `Dump.search`).
///
/// `ranges` are `(start, length in bytes)` VA ranges, or PA ranges with `physical=True`; `kernel=True`
/// searches every mapped kernel-half VA instead. `align` keeps hits at addresses that are multiples of
/// it. Returns a dict: `address` (uint64 array, sorted), `pattern` (uint32 array of indices into
/// `patterns`), `pages_searched`, `pages_unreadable` (4 KiB pages) and `truncated`.
#[guarded]
#[pyo3(signature = (dump, patterns, ranges=None, *, align=1, kernel=false, physical=false, limit=None))]
#[allow(clippy::too_many_arguments)]
pub fn search<'py>(
    py: Python<'py>,
    dump: &PyDump,
    patterns: Vec<Vec<u8>>,
    ranges: Option<Vec<(u64, u64)>>,
    align: u64,
    kernel: bool,
    physical: bool,
    limit: Option<usize>,
) -> PyResult<Dict<'py>> {
    let target = Target::choose(ranges.as_deref(), kernel, physical).or_raise()?;
    let opts = SearchOptions::new(align, limit);
    hits(
        py,
        run(py, || {
            core_search::search(&dump.inner, &patterns, target, &opts)
        })?,
    )
}

/// Search every loaded module (`[base, base + size)` of the kernel's module list, in load order)
/// for byte patterns, with the GIL released (private: `Dump.search(..., within=d.modules)`).
///
/// Returns `search`'s dict and `module` (int64 index into the module list of the module holding the
/// hit, -1 for none) and `offset` (uint64, from that module's base). Modules that run past the top
/// of the address space (flagged `range_ok = False` in the module list) are skipped.
#[guarded]
#[pyo3(signature = (dump, patterns, *, align=1, limit=None))]
pub fn search_modules<'py>(
    py: Python<'py>,
    dump: &PyDump,
    patterns: Vec<Vec<u8>>,
    align: u64,
    limit: Option<usize>,
) -> PyResult<Dict<'py>> {
    let (m, opts) = (
        &kernel_of(py, dump)?.modules,
        SearchOptions::new(align, limit),
    );
    let r = run(py, || {
        core_search::search_modules(&dump.inner, m, &patterns, &opts)
    })?;
    let (module, offset) = (r.module.into_pyarray(py), r.offset.into_pyarray(py));
    Ok(dict!(hits(py, r.result)?; module, offset))
}

/// The mapped kernel-half VA ranges as `(start, length in bytes)`, coalesced (GIL released).
#[guarded]
pub fn kernel_ranges(py: Python<'_>, dump: &PyDump) -> PyResult<Vec<(u64, u64)>> {
    run(py, || core_search::kernel_ranges(&dump.inner))
}
