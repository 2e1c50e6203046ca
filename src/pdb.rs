//! Bindings of `ntdump_core::pdb`: a PDB's identity, its public/global symbols and its types.

use std::path::PathBuf;
use std::sync::Arc;

use ntdump_core::pdb::types::{Layout, TypeDesc, TypeTable};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::errors::PyCoreError;

/// (guid: 32 upper-case hex digits, age) of the PDB at `path`, reading no symbol or type.
#[pyfunction]
fn pdb_identity(py: Python<'_>, path: PathBuf) -> PyResult<(String, u32)> {
    py.detach(move || ntdump_core::pdb::types::read_identity(&path))
        .map_err(|e| PyCoreError(e).into())
}

/// (guid, age, [(name, rva, "public"|"global")]) of the PDB at `path`.
#[pyfunction]
#[allow(clippy::type_complexity)]
fn pdb_symbols(
    py: Python<'_>,
    path: PathBuf,
) -> PyResult<(String, u32, Vec<(String, u32, &'static str)>)> {
    let s = py
        .detach(move || ntdump_core::pdb::read_symbols(&path))
        .map_err(PyCoreError)?;
    let rows = s
        .symbols
        .into_iter()
        .map(|(n, r, k)| (n, r, k.as_str()))
        .collect();
    Ok((s.guid, s.age, rows))
}

/// [(name, section (1-based), offset)] of every public of the PDB at `path`, before OMAP.
#[pyfunction]
fn pdb_public_offsets(py: Python<'_>, path: PathBuf) -> PyResult<Vec<(String, u16, u32)>> {
    py.detach(move || ntdump_core::pdb::read_public_offsets(&path))
        .map_err(|e| PyCoreError(e).into())
}

fn desc<'py>(py: Python<'py>, t: &TypeDesc) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("kind", t.kind.as_str())?;
    d.set_item("name", &t.name)?;
    d.set_item("size", t.size)?;
    d.set_item("target", t.target)?;
    d.set_item("count", t.count)?;
    d.set_item("signed", t.signed)?;
    d.set_item("float", t.float)?;
    d.set_item("index", t.index)?;
    Ok(d)
}

fn layout<'py>(py: Python<'py>, l: &Layout) -> PyResult<Bound<'py, PyDict>> {
    let d = desc(py, &l.ty)?;
    let fields = PyList::empty(py);
    for f in &l.fields {
        let fd = PyDict::new(py);
        fd.set_item("name", &f.name)?;
        fd.set_item("offset", f.offset)?;
        fd.set_item("type", desc(py, &f.ty)?)?;
        fd.set_item("bit_position", f.bit_position)?;
        fd.set_item("bit_length", f.bit_length)?;
        fields.append(fd)?;
    }
    d.set_item("fields", fields)?;
    let en: Vec<(String, String)> = l
        .enumerators
        .iter()
        .map(|(n, v)| (n.clone(), v.to_string()))
        .collect();
    d.set_item("enumerators", en)?;
    Ok(d)
}

/// Every type record of one PDB, read once (GIL released). Layouts as dicts: kind, name (WinDbg's
/// form), size (bytes), target, count, signed, float, index, fields [{name, offset (bytes), type,
/// bit_position, bit_length}], enumerators [(name, value as decimal text)].
#[pyclass(name = "PdbTypes", module = "ntdump._native", frozen)]
pub struct PyPdbTypes {
    pub(crate) inner: Arc<TypeTable>,
}

#[pymethods]
impl PyPdbTypes {
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let t = py
            .detach(move || TypeTable::read(&path))
            .map_err(PyCoreError)?;
        Ok(PyPdbTypes { inner: Arc::new(t) })
    }

    /// Pointer size of the PDB's machine (bytes).
    #[getter]
    fn pointer_size(&self) -> u8 {
        self.inner.pointer_size()
    }

    /// The layout of the struct, union or enum `name`. Raises `SymbolError` when undefined.
    fn layout<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyDict>> {
        let l = self.inner.layout(name).map_err(PyCoreError)?;
        layout(py, &l)
    }

    /// The layout of type index `index`.
    fn layout_index<'py>(&self, py: Python<'py>, index: u32) -> PyResult<Bound<'py, PyDict>> {
        layout(py, &self.inner.layout_index(index))
    }

    /// Describe type index `index` (no fields).
    fn describe<'py>(&self, py: Python<'py>, index: u32) -> PyResult<Bound<'py, PyDict>> {
        desc(py, &self.inner.describe(index))
    }

    /// Names of the defined structs, unions and enums, sorted.
    fn names(&self) -> Vec<String> {
        self.inner.names()
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }
}

/// Add this file's functions and classes to the native module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(pdb_identity, m)?)?;
    m.add_function(wrap_pyfunction!(pdb_symbols, m)?)?;
    m.add_function(wrap_pyfunction!(pdb_public_offsets, m)?)?;
    m.add_class::<PyPdbTypes>()?;
    Ok(())
}
