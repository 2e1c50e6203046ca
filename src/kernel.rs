//! Bindings for kernel structures: KDBG, loaded and unloaded modules.

use std::sync::Arc;

use ntdump_core::kernel::Kernel;
use ntdump_guard::guarded;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::columns::columns;
use crate::dump::PyDump;
use crate::errors::run;

/// The dump's kernel view, loaded once (GIL released) and shared.
pub fn kernel_of(py: Python<'_>, d: &PyDump) -> PyResult<Arc<Kernel>> {
    if let Some(k) = d.kernel.get() {
        return Ok(k.clone());
    }
    let inner = d.inner.clone();
    let k = Arc::new(run(py, move || Kernel::load(&inner))?);
    Ok(d.kernel.get_or_init(|| k).clone())
}

/// Loaded modules as columns, unloaded drivers, KDBG facts and warnings.
#[guarded(dump)]
#[pyfunction]
fn kernel_info<'py>(py: Python<'py>, dump: PyRef<'py, PyDump>) -> PyResult<Bound<'py, PyDict>> {
    let k = kernel_of(py, &dump)?;
    let o = PyDict::new(py);
    // False for a module that runs past the top of the address space (a kernel warning says so).
    let space_end = dump.inner.va_top() as u128 + 1;
    let cols = columns!(py, k.modules, |x| {
        "name" => x.name.clone(),
        "path" => x.path.clone(),
        "base" => x.base,
        "size" => x.size,
        "entry_point" => x.entry_point,
        "timestamp" => x.timestamp,
        "timestamp_source" => x.timestamp_source,
        "loaded_imports_kind" => x.loaded_imports.kind(),
        "loaded_imports" => match &x.loaded_imports {
            ntdump_core::kernel::LoadedImports::Modules(v) => v.clone(),
            _ => Vec::new(),
        },
        "loaded_imports_note" => match &x.loaded_imports {
            ntdump_core::kernel::LoadedImports::Unknown(why) => why.clone(),
            _ => String::new(),
        },
        "loaded_imports_raw" => x.loaded_imports_raw,
        "checksum" => x.checksum,
        "flags" => x.flags,
        "load_count" => x.load_count,
        "ldr_entry" => x.ldr_entry,
        "range_ok" => x.range_fits(space_end),
    });
    // One naming rule for lm, symbols and kd (nt, hal, stem, stem_<base> for repeats).
    let kd = ntdump_core::symbols::kd_names(&ntdump_core::symbols::module_refs(&k));
    cols.set_item("kd_name", kd)?;
    o.set_item("modules", cols)?;
    let ucols = columns!(py, k.unloaded, |x| {
        "name" => x.name.clone(),
        "start" => x.start,
        "end" => x.end,
        "time" => x.time,
    });
    o.set_item("unloaded", ucols)?;
    o.set_item("module_source", k.module_source)?;
    o.set_item("kernel_base", k.kernel_base)?;
    o.set_item("family", k.profile.family.as_str())?;
    o.set_item("ldr_layout_source", &k.ldr_source)?;
    match &k.kdbg {
        Some(g) => {
            let kd = PyDict::new(py);
            kd.set_item("va", g.va)?;
            kd.set_item("size", g.size)?;
            kd.set_item("bytes", pyo3::types::PyBytes::new(py, &g.bytes))?;
            o.set_item("kdbg", kd)?;
        }
        None => o.set_item("kdbg", py.None())?,
    }
    o.set_item("warnings", k.warnings.clone())?;
    Ok(o)
}

/// The `!vm` fields: list of (key, label, pages or count or None, source or reason, is_count).
/// `symbols` maps kernel symbol names (without `nt!`) to VAs, for fields KDBG does not reach.
#[guarded(dump)]
#[pyfunction]
#[allow(clippy::type_complexity)]
fn vm_summary(
    py: Python<'_>,
    dump: PyRef<'_, PyDump>,
    symbols: std::collections::HashMap<String, u64>,
) -> PyResult<Vec<(&'static str, &'static str, Option<u64>, String, bool)>> {
    let k = kernel_of(py, &dump)?;
    let d = dump.inner.clone();
    let s =
        py.detach(move || ntdump_core::vm::vm_summary(&d, &k, &|name| symbols.get(name).copied()));
    Ok(s.fields
        .into_iter()
        .map(|f| (f.key, f.label, f.value, f.source, f.is_count))
        .collect())
}

/// Public symbols of a PDB file: (guid, age, [(name, rva)]).
#[guarded]
#[pyfunction]
#[allow(clippy::type_complexity)]
fn pdb_public_symbols(
    py: Python<'_>,
    path: std::path::PathBuf,
) -> PyResult<(String, u32, Vec<(String, u32)>)> {
    let p = run(py, move || ntdump_core::pdb::read_public_symbols(&path))?;
    Ok((p.guid, p.age, p.symbols))
}

/// Add this file's functions and classes to the native module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(kernel_info, m)?)?;
    m.add_function(wrap_pyfunction!(vm_summary, m)?)?;
    m.add_function(wrap_pyfunction!(pdb_public_symbols, m)?)?;
    Ok(())
}
