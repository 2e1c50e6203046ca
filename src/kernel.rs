//! Bindings for kernel structures: KDBG, module lists.

use pyo3::prelude::*;

/// Add this file's functions and classes to the native module.
pub fn register(_m: &Bound<'_, PyModule>) -> PyResult<()> {
    Ok(())
}
