//! Bindings for kernel structures: KDBG, loaded and unloaded modules.

use std::sync::Arc;

use ntdump_core::kernel::Kernel;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::dump::PyDump;
use crate::errors::PyCoreError;

/// The dump's kernel view, loaded once (GIL released) and shared.
pub fn kernel_of(py: Python<'_>, d: &PyDump) -> PyResult<Arc<Kernel>> {
    if let Some(k) = d.kernel.get() {
        return Ok(k.clone());
    }
    let inner = d.inner.clone();
    let k = Arc::new(
        py.detach(move || Kernel::load(&inner))
            .map_err(PyCoreError)?,
    );
    Ok(d.kernel.get_or_init(|| k).clone())
}

/// Loaded modules as columns, unloaded drivers, KDBG facts and warnings.
#[pyfunction]
fn kernel_info<'py>(py: Python<'py>, dump: PyRef<'py, PyDump>) -> PyResult<Bound<'py, PyDict>> {
    let k = kernel_of(py, &dump)?;
    let o = PyDict::new(py);
    let m = &k.modules;
    let cols = PyDict::new(py);
    cols.set_item("name", m.iter().map(|x| x.name.clone()).collect::<Vec<_>>())?;
    cols.set_item("path", m.iter().map(|x| x.path.clone()).collect::<Vec<_>>())?;
    cols.set_item("base", m.iter().map(|x| x.base).collect::<Vec<_>>())?;
    cols.set_item("size", m.iter().map(|x| x.size).collect::<Vec<_>>())?;
    cols.set_item(
        "entry_point",
        m.iter().map(|x| x.entry_point).collect::<Vec<_>>(),
    )?;
    cols.set_item(
        "timestamp",
        m.iter().map(|x| x.timestamp).collect::<Vec<_>>(),
    )?;
    cols.set_item(
        "timestamp_source",
        m.iter().map(|x| x.timestamp_source).collect::<Vec<_>>(),
    )?;
    cols.set_item(
        "loaded_imports_kind",
        m.iter()
            .map(|x| x.loaded_imports.kind())
            .collect::<Vec<_>>(),
    )?;
    cols.set_item(
        "loaded_imports",
        m.iter()
            .map(|x| match &x.loaded_imports {
                ntdump_core::kernel::LoadedImports::Modules(v) => v.clone(),
                _ => Vec::new(),
            })
            .collect::<Vec<_>>(),
    )?;
    cols.set_item(
        "loaded_imports_note",
        m.iter()
            .map(|x| match &x.loaded_imports {
                ntdump_core::kernel::LoadedImports::Unknown(why) => why.clone(),
                _ => String::new(),
            })
            .collect::<Vec<_>>(),
    )?;
    cols.set_item(
        "loaded_imports_raw",
        m.iter().map(|x| x.loaded_imports_raw).collect::<Vec<_>>(),
    )?;
    cols.set_item("checksum", m.iter().map(|x| x.checksum).collect::<Vec<_>>())?;
    cols.set_item("flags", m.iter().map(|x| x.flags).collect::<Vec<_>>())?;
    cols.set_item(
        "load_count",
        m.iter().map(|x| x.load_count).collect::<Vec<_>>(),
    )?;
    cols.set_item(
        "ldr_entry",
        m.iter().map(|x| x.ldr_entry).collect::<Vec<_>>(),
    )?;
    o.set_item("modules", cols)?;
    let u = &k.unloaded;
    let ucols = PyDict::new(py);
    ucols.set_item("name", u.iter().map(|x| x.name.clone()).collect::<Vec<_>>())?;
    ucols.set_item("start", u.iter().map(|x| x.start).collect::<Vec<_>>())?;
    ucols.set_item("end", u.iter().map(|x| x.end).collect::<Vec<_>>())?;
    ucols.set_item("time", u.iter().map(|x| x.time).collect::<Vec<_>>())?;
    o.set_item("unloaded", ucols)?;
    o.set_item("module_source", k.module_source)?;
    o.set_item("kernel_base", k.kernel_base)?;
    o.set_item("family", k.profile.family.as_str())?;
    o.set_item("ldr_layout_source", k.profile.ldr_source)?;
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
#[pyfunction]
#[allow(clippy::type_complexity)]
fn pdb_public_symbols(
    py: Python<'_>,
    path: std::path::PathBuf,
) -> PyResult<(String, u32, Vec<(String, u32)>)> {
    let p = py
        .detach(move || ntdump_core::pdb::read_public_symbols(&path))
        .map_err(PyCoreError)?;
    Ok((p.guid, p.age, p.symbols))
}

/// Add this file's functions and classes to the native module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(kernel_info, m)?)?;
    m.add_function(wrap_pyfunction!(vm_summary, m)?)?;
    m.add_function(wrap_pyfunction!(pdb_public_symbols, m)?)?;
    Ok(())
}
