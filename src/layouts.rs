//! Bindings of `ntdump_core::layouts`: hand a kernel PDB's struct layouts to a dump.

use std::collections::BTreeMap;

use ntdump_core::layouts::{from_types, Built};

use crate::pdb::PyPdbTypes;
use crate::prelude::*;

/// Take the kernel layouts of `types` (a PDB's types; None: back to the built-in profiles) for
/// this dump. `module` and `label` name the PDB in every result's source
/// (`"pdb nt!_POOL_TRACKER_TABLE (<label>)"`). Returns {"sources": {structure: source} of the
/// layouts taken, "warnings": why types the PDB defines were refused, "missing": the types it
/// does not define, "ldr_changed": the loader entry layout changed (the module list is walked
/// again)}.
#[guarded]
#[pyo3(signature = (dump, types, module="nt", label=""))]
pub fn set_kernel_layouts<'py>(
    py: Python<'py>,
    dump: &PyDump,
    types: Option<&PyPdbTypes>,
    module: &str,
    label: &str,
) -> PyResult<Dict<'py>> {
    let machine = dump.inner.header.machine;
    let built = match types {
        Some(t) => py.detach(|| from_types(&t.inner, machine, module, label)),
        None => Built::default(),
    };
    let o = record(py, &built)?;
    let ldr_changed = dump.inner.set_layouts(built.overrides);
    Ok(dict!(o; ldr_changed))
}

/// Where each of the dump's layouts comes from now (`ntdump_core::Session::layout_sources`):
/// {"pool_header", "ldr"} always, {"tracker", "big_pages"} when a PDB overrides them.
#[guarded]
pub fn layout_sources(dump: &PyDump) -> BTreeMap<&'static str, String> {
    dump.inner.layout_sources()
}
