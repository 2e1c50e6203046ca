//! Bindings for kernel structures: KDBG, loaded and unloaded modules, `!vm`.

use std::collections::HashMap;
use std::sync::Arc;

use ntdump_core::kernel::{Kernel, LoadedImports};
use ntdump_core::symbols::{kd_names, module_refs};

use crate::prelude::*;

/// The dump's kernel view, loaded once (GIL released) and shared.
pub fn kernel_of(py: Python<'_>, d: &PyDump) -> PyResult<Arc<Kernel>> {
    if let Some(k) = d.kernel.get() {
        return Ok(k.clone());
    }
    let k = Arc::new(run(py, || Kernel::load(&d.inner))?);
    Ok(d.kernel.get_or_init(|| k).clone())
}

/// Loaded modules as columns, unloaded drivers, KDBG facts and warnings.
#[guarded]
pub fn kernel_info<'py>(py: Python<'py>, dump: &PyDump) -> PyResult<Dict<'py>> {
    let k = kernel_of(py, dump)?;
    let m = &k.modules;
    // LoadedImports as three columns: its kind, the imported modules, why it is unknown.
    let imports = |x: &LoadedImports| match x {
        LoadedImports::Modules(v) => (v.clone(), String::new()),
        LoadedImports::Unknown(why) => (Vec::new(), why.clone()),
        _ => (Vec::new(), String::new()),
    };
    let loaded_imports_kind: Vec<_> = m.iter().map(|x| x.loaded_imports.kind()).collect();
    let (loaded_imports, loaded_imports_note): (Vec<_>, Vec<_>) =
        m.iter().map(|x| imports(&x.loaded_imports)).unzip();
    // False for a module that runs past the top of the address space (a kernel warning says so).
    let space_end = dump.inner.va_top() as u128 + 1;
    let range_ok: Vec<_> = m.iter().map(|x| x.range_fits(space_end)).collect();
    // One naming rule for lm, symbols and kd (nt, hal, stem, stem_<base> for repeats).
    let kd_name = kd_names(&module_refs(&k));
    let modules = dict!(columns(py, m)?; loaded_imports_kind, loaded_imports, loaded_imports_note,
        range_ok, kd_name);
    let unloaded = columns(py, &k.unloaded)?;
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
