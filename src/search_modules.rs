//! `!for_each_module s …` in one call: search every loaded module and attribute the hits in Rust.

use ntdump_core::search::{self as core_search, SearchOptions, Target};
use ntdump_guard::guarded;
use numpy::IntoPyArray;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::dump::PyDump;
use crate::errors::PyCoreError;
use crate::kernel::kernel_of;

/// Search every loaded module (`[base, base + size)` of the kernel's module list, in load order)
/// for byte patterns, with the GIL released (private: `Dump.search(..., within=d.modules)`).
///
/// Returns a dict: `address` (uint64 array, sorted), `pattern` (uint32 indices into `patterns`),
/// `module` (int64 index into the module list of the module holding the hit, -1 for none), `offset`
/// (uint64, from that module's base), `pages_searched`, `pages_unreadable` (4 KiB pages) and
/// `truncated`. Modules that run past the top of the address space (flagged `range_ok = False` in
/// the module list) are skipped.
#[guarded(dump)]
#[pyfunction]
#[pyo3(signature = (dump, patterns, *, align=1, limit=None))]
fn search_modules<'py>(
    py: Python<'py>,
    dump: PyRef<'py, PyDump>,
    patterns: Vec<Vec<u8>>,
    align: u64,
    limit: Option<usize>,
) -> PyResult<Bound<'py, PyDict>> {
    let k = kernel_of(py, &dump)?;
    let d = dump.inner.clone();
    let opts = SearchOptions {
        align: align.max(1),
        limit,
        ..SearchOptions::default()
    };
    let space_end = dump.inner.va_top() as u128 + 1;
    let (r, module, offset) = py.detach(move || {
        // A module past the top keeps its index (for attribution) with an empty range.
        let ranges: Vec<(u64, u64)> = k
            .modules
            .iter()
            .map(|m| (m.base, if m.range_fits(space_end) { m.size } else { 0 }))
            .collect();
        let searched: Vec<(u64, u64)> = ranges.iter().copied().filter(|r| r.1 > 0).collect();
        let r = core_search::search(&d, &patterns, Target::Virtual(&searched), &opts)
            .map_err(|e| PyErr::from(PyCoreError(e)))?;
        let owner = core_search::attribute(&r.addresses, &ranges);
        let module: Vec<i64> = owner.iter().map(|o| o.map_or(-1, i64::from)).collect();
        let offset: Vec<u64> = owner
            .iter()
            .zip(&r.addresses)
            .map(|(o, &a)| o.map_or(a, |i| a - ranges[i as usize].0))
            .collect();
        Ok::<_, PyErr>((r, module, offset))
    })?;
    let out = PyDict::new(py);
    out.set_item("address", r.addresses.into_pyarray(py))?;
    out.set_item("pattern", r.patterns.into_pyarray(py))?;
    out.set_item("module", module.into_pyarray(py))?;
    out.set_item("offset", offset.into_pyarray(py))?;
    out.set_item("pages_searched", r.pages_searched)?;
    out.set_item("pages_unreadable", r.pages_unreadable)?;
    out.set_item("truncated", r.truncated)?;
    Ok(out)
}

/// Add this file's functions to the native module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(search_modules, m)?)?;
    Ok(())
}
