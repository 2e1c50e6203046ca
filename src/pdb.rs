//! Bindings of `ntdump_core::pdb`: a PDB's identity, its public/global symbols and its types.

use std::path::PathBuf;
use std::sync::Arc;

use ntdump_core::pdb::types::TypeTable;

use crate::prelude::*;

/// (guid: 32 upper-case hex digits, age) of the PDB at `path`, reading no symbol or type.
#[guarded]
pub fn pdb_identity(py: Python<'_>, path: PathBuf) -> PyResult<(String, u32)> {
    run(py, move || ntdump_core::pdb::types::read_identity(&path))
}

/// (guid, age, [(name, rva, "public"|"global")]) of the PDB at `path`.
#[guarded]
pub fn pdb_symbols(py: Python<'_>, path: PathBuf) -> PyResult<Any<'_>> {
    let s = run(py, move || ntdump_core::pdb::read_symbols(&path))?;
    value(py, &s)
}

/// [(name, section (1-based), offset)] of every public of the PDB at `path`, before OMAP.
#[guarded]
pub fn pdb_public_offsets(py: Python<'_>, path: PathBuf) -> PyResult<Vec<(String, u16, u32)>> {
    run(py, move || ntdump_core::pdb::read_public_offsets(&path))
}

/// Every type record of one PDB, read once (GIL released). Layouts as dicts: kind, name (WinDbg's
/// form), size (bytes), target, count, signed, float, index, fields [{name, offset (bytes), type,
/// bit_position, bit_length}], enumerators [(name, value as decimal text)].
#[pyclass(name = "PdbTypes", module = "ntdump._native", frozen)]
pub struct PyPdbTypes {
    pub(crate) inner: Arc<TypeTable>,
}

#[guarded]
impl PyPdbTypes {
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let t = run(py, move || TypeTable::read(&path))?;
        Ok(PyPdbTypes { inner: Arc::new(t) })
    }

    /// Pointer size of the PDB's machine (bytes).
    #[getter]
    fn pointer_size(&self) -> u8 {
        self.inner.pointer_size()
    }

    /// The layout of the struct, union or enum `name`. Raises `SymbolError` when undefined.
    fn layout<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Dict<'py>> {
        record(py, &self.inner.layout(name).or_raise()?)
    }

    /// The layout of type index `index`.
    fn layout_index<'py>(&self, py: Python<'py>, index: u32) -> PyResult<Dict<'py>> {
        record(py, &self.inner.layout_index(index))
    }

    /// Describe type index `index` (no fields).
    fn describe<'py>(&self, py: Python<'py>, index: u32) -> PyResult<Dict<'py>> {
        record(py, &self.inner.describe(index))
    }

    /// Names of the defined structs, unions and enums, sorted.
    fn names(&self) -> Vec<String> {
        self.inner.names()
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }
}
