//! Bindings for kernel structures: KDBG, loaded and unloaded modules, `!vm`.

use std::collections::HashMap;
use std::sync::Arc;

use ntdump_core::kernel::Kernel;

use crate::prelude::*;

/// The dump's kernel view, loaded once (GIL released) and shared.
pub fn kernel_of(py: Python<'_>, d: &PyDump) -> PyResult<Arc<Kernel>> {
    run(py, || d.inner.kernel())
}

/// Loaded modules as columns, unloaded drivers, KDBG facts and warnings.
#[guarded]
pub fn kernel_info<'py>(py: Python<'py>, dump: &PyDump) -> PyResult<Dict<'py>> {
    let k = kernel_of(py, dump)?;
    let (modules, unloaded) = (columns(py, &k.modules)?, columns(py, &k.unloaded)?);
    Ok(dict!(record(py, &*k)?; modules, unloaded))
}

/// The `!vm` fields: list of (key, label, pages or count or None, source or reason, is_count).
/// `symbols` maps kernel symbol names (without `nt!`) to VAs, for fields KDBG does not reach.
#[guarded]
pub fn vm_summary<'py>(
    py: Python<'py>,
    dump: &PyDump,
    symbols: HashMap<String, u64>,
) -> PyResult<Any<'py>> {
    let k = kernel_of(py, dump)?;
    let symbol = |name: &str| symbols.get(name).copied();
    let s = py.detach(|| ntdump_core::vm::vm_summary(&dump.inner, &k, &symbol));
    value(py, &s.fields)
}
