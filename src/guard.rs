//! Guards of every Python entry point. `#[guarded]` (the `ntdump-guard` crate) is the one attribute of an
//! entry point: `#[pyfunction]` on a function, `#[pymethods]` on an impl block, with these guards:
//!
//! * A Rust panic never reaches Python as `pyo3_runtime.PanicException` (a `BaseException`): it becomes
//!   `ntdump.errors.InternalError` naming the function and the panic message.
//! * A call that read pages of a dump whose file shrank under its map (see `ntdump_core::mapguard`)
//!   raises `DumpFormatError("file shrank while open …")` instead of answering from zero-filled pages.
//! * Reads are capped at `ntdump_core::dump::MAX_READ_BYTES` per call (`check_read_len`) and allocate
//!   their result as a Python `bytes` object directly, so a failed allocation is a `MemoryError`-derived
//!   ntdump error, never an abort.

use std::any::Any;

use pyo3::prelude::*;

use crate::errors::{InternalError, OrRaise};

/// The error for a panic caught in entry point `name`.
pub fn panicked(name: &str, payload: Box<dyn Any + Send>) -> PyErr {
    let msg = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    InternalError::new_err(format!(
        "internal error in ntdump._native.{name}: {msg} (please report it with the dump)"
    ))
}

/// `Err(DumpFormatError)` when the dump's file shrank while mapped (after a call that read it).
pub fn intact(d: &ntdump_core::Dump) -> PyResult<()> {
    d.check_intact().or_raise()
}

/// For tests only: panics inside a guarded entry point, so that the suite can check that a Rust panic
/// reaches Python as `ntdump.errors.InternalError` and not as `pyo3_runtime.PanicException`.
#[ntdump_guard::guarded]
pub fn panic_selftest(message: &str) -> PyResult<()> {
    panic!("{message}");
}
