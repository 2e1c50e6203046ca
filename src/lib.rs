//! Python bindings of ntdump (`ntdump._native`): argument conversion, GIL release and error mapping only.
//! All logic lives in `ntdump-core`.

mod columns;
mod dump;
mod errors;
mod guard;
mod kernel;
mod layouts;
mod pdb;
mod pe;
mod pool;
mod search;
mod search_modules;
mod stack;
mod symbols;

use pyo3::prelude::*;

/// The private native module behind the `ntdump` package.
#[pymodule(gil_used = false)]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<dump::PyDump>()?;
    m.add_function(wrap_pyfunction!(guard::panic_selftest, m)?)?;
    kernel::register(m)?;
    layouts::register(m)?;
    pdb::register(m)?;
    pe::register(m)?;
    pool::register(m)?;
    search::register(m)?;
    symbols::register(m)?;
    search_modules::register(m)?;
    stack::register(m)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
