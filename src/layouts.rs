//! Bindings of `ntdump_core::layouts`: hand a kernel PDB's struct layouts to a dump, and the
//! per-dump caches that must be rebuilt when they change.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use ntdump_core::layouts::{from_types, LayoutOverrides};
use ntdump_guard::guarded;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::dump::PyDump;
use crate::pdb::PyPdbTypes;

/// A value computed once and shared, which [`Cache::clear`] drops (a `OnceLock` that can be reset:
/// the dump's kernel view, symbol table and big pool table depend on its layouts).
pub struct Cache<T>(RwLock<Option<Arc<T>>>);

impl<T> Default for Cache<T> {
    fn default() -> Self {
        Cache(RwLock::new(None))
    }
}

impl<T> Cache<T> {
    /// The value, if computed.
    pub fn get(&self) -> Option<Arc<T>> {
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The value; `make()`'s when none is stored yet (a value stored meanwhile by another thread
    /// wins, as with `OnceLock::get_or_init`).
    pub fn get_or_init(&self, make: impl FnOnce() -> Arc<T>) -> Arc<T> {
        let mut g = match self.0.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        g.get_or_insert_with(make).clone()
    }

    /// Drop the value.
    pub fn clear(&self) {
        match self.0.write() {
            Ok(mut g) => *g = None,
            Err(p) => *p.into_inner() = None,
        }
    }
}

fn sources(o: &LayoutOverrides) -> HashMap<&'static str, String> {
    let mut m = HashMap::new();
    if let Some(x) = &o.pool_header {
        m.insert("pool_header", x.source.clone());
    }
    if let Some(x) = &o.tracker {
        m.insert("tracker", x.source.clone());
    }
    if let Some(x) = &o.big_pages {
        m.insert("big_pages", x.source.clone());
    }
    if let Some(x) = &o.ldr {
        m.insert("ldr", x.source.clone());
    }
    m
}

/// Take the kernel layouts of `types` (a PDB's types; None: back to the built-in profiles) for
/// this dump. `module` and `label` name the PDB in every result's source
/// (`"pdb nt!_POOL_TRACKER_TABLE (<label>)"`). Returns {"sources": {structure: source} of the
/// layouts taken, "warnings": why types the PDB defines were refused, "missing": the types it
/// does not define, "ldr_changed": the loader entry layout changed (the module list is walked
/// again)}.
#[guarded(dump)]
#[pyfunction]
#[pyo3(signature = (dump, types, module="nt", label=""))]
fn set_kernel_layouts<'py>(
    py: Python<'py>,
    dump: PyRef<'py, PyDump>,
    types: Option<PyRef<'py, PyPdbTypes>>,
    module: &str,
    label: &str,
) -> PyResult<Bound<'py, PyDict>> {
    let machine = dump.inner.header.machine;
    let built = match types {
        Some(t) => {
            let t = t.inner.clone();
            let (module, label) = (module.to_string(), label.to_string());
            py.detach(move || from_types(&t, machine, &module, &label))
        }
        None => Default::default(),
    };
    let new = built.overrides;
    let taken = sources(&new);
    let ldr_new = new.ldr.as_ref().map(|x| x.layout);
    let old = dump.inner.set_layouts(new);
    let ldr_changed = old.ldr.as_ref().map(|x| x.layout) != ldr_new;
    dump.big.clear();
    if ldr_changed {
        dump.kernel.clear();
        dump.symbols.clear();
    }
    let o = PyDict::new(py);
    o.set_item("sources", taken)?;
    o.set_item("warnings", built.warnings)?;
    o.set_item("missing", built.missing)?;
    o.set_item("ldr_changed", ldr_changed)?;
    Ok(o)
}

/// Where each of the dump's layouts comes from now: {"pool_header", "ldr"} always (the PDB type
/// or the built-in profile), {"tracker", "big_pages"} when a PDB overrides them (otherwise the
/// profile's layout is chosen per table by validation and the table's result says which).
#[guarded(dump)]
#[pyfunction]
fn layout_sources(dump: PyRef<'_, PyDump>) -> HashMap<&'static str, String> {
    let d = &dump.inner;
    let o = d.layouts();
    let mut m = sources(&o);
    m.insert("pool_header", ntdump_core::pool::header_source(d));
    m.insert("ldr", ntdump_core::kernel::ldr_layout(d).1);
    m
}

/// Add this file's functions to the native module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(set_kernel_layouts, m)?)?;
    m.add_function(wrap_pyfunction!(layout_sources, m)?)?;
    Ok(())
}
