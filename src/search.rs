//! Bindings for memory search and pointer display.

use ntdump_core::search::{self as core_search, SearchOptions, Target};
use ntdump_guard::guarded;
use numpy::IntoPyArray;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::dump::PyDump;
use crate::errors::{run, PyCoreError};

/// Search a dump for byte patterns, with the GIL released (private: use `Dump.search`).
///
/// `ranges` are `(start, length in bytes)` VA ranges, or PA ranges with `physical=True`; `kernel=True`
/// searches every mapped kernel-half VA instead. `align` keeps hits at addresses that are multiples of
/// it. Returns a dict: `address` (uint64 array, sorted), `pattern` (uint32 array of indices into
/// `patterns`), `pages_searched`, `pages_unreadable` (4 KiB pages) and `truncated`.
#[guarded(dump)]
#[pyfunction]
#[pyo3(signature = (dump, patterns, ranges=None, *, align=1, kernel=false, physical=false, limit=None))]
#[allow(clippy::too_many_arguments)]
fn search<'py>(
    py: Python<'py>,
    dump: PyRef<'py, PyDump>,
    patterns: Vec<Vec<u8>>,
    ranges: Option<Vec<(u64, u64)>>,
    align: u64,
    kernel: bool,
    physical: bool,
    limit: Option<usize>,
) -> PyResult<Bound<'py, PyDict>> {
    let d = dump.inner.clone();
    let opts = SearchOptions {
        align: align.max(1),
        limit,
        ..SearchOptions::default()
    };
    let r = py.detach(move || {
        let target = match (&ranges, kernel, physical) {
            (Some(_), true, _) => {
                return Err(PyValueError::new_err("give either ranges or kernel=True"))
            }
            (_, true, true) => {
                return Err(PyValueError::new_err(
                    "kernel=True searches virtual memory, not physical",
                ))
            }
            (None, true, false) => Target::Kernel,
            (r, false, true) => Target::Physical(r.as_deref()),
            (Some(r), false, false) => Target::Virtual(r),
            (None, false, false) => {
                return Err(PyValueError::new_err(
                    "a virtual search needs ranges or kernel=True",
                ))
            }
        };
        core_search::search(&d, &patterns, target, &opts).map_err(|e| PyErr::from(PyCoreError(e)))
    })?;
    let out = PyDict::new(py);
    out.set_item("address", r.addresses.into_pyarray(py))?;
    out.set_item("pattern", r.patterns.into_pyarray(py))?;
    out.set_item("pages_searched", r.pages_searched)?;
    out.set_item("pages_unreadable", r.pages_unreadable)?;
    out.set_item("truncated", r.truncated)?;
    Ok(out)
}

/// The mapped kernel-half VA ranges as `(start, length in bytes)`, coalesced (GIL released).
#[guarded(dump)]
#[pyfunction]
fn kernel_ranges(py: Python<'_>, dump: PyRef<'_, PyDump>) -> PyResult<Vec<(u64, u64)>> {
    let d = dump.inner.clone();
    run(py, move || core_search::kernel_ranges(&d))
}

/// Add this file's functions and classes to the native module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(search, m)?)?;
    m.add_function(wrap_pyfunction!(kernel_ranges, m)?)?;
    Ok(())
}
