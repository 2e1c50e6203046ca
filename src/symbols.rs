//! The dump's symbol table built once from the kernel's module list (no Rust → Python → Rust round trip),
//! and the pool-tag owners that read it.

use std::sync::Arc;

use ntdump_core::pool::owners::tag_owners;
use ntdump_core::symbols::{module_refs, SymbolTable};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::dump::PyDump;
use crate::errors::run;
use crate::kernel::kernel_of;

/// The symbol table of the dump's loaded modules, built on first use (GIL released) and shared.
pub fn symbols_of(py: Python<'_>, d: &PyDump) -> PyResult<Arc<SymbolTable>> {
    if let Some(t) = d.symbols.get() {
        return Ok(t.clone());
    }
    let k = kernel_of(py, d)?;
    let inner = d.inner.clone();
    let t = Arc::new(py.detach(move || SymbolTable::build(&inner, &module_refs(&k))));
    Ok(d.symbols.get_or_init(|| t).clone())
}

/// Owners of one tag: (module kd names, evidence, scores, note).
type OwnerColumns = (Vec<String>, Vec<String>, Vec<f64>, String);

/// Likely owners of each pool tag in `tags` (1 to 4 bytes, space-padded; `b"None"` = untagged pool),
/// best first, from one search over every loaded module's image (GIL released).
#[pyfunction]
fn pool_owners(
    py: Python<'_>,
    dump: PyRef<'_, PyDump>,
    tags: Vec<Vec<u8>>,
) -> PyResult<Vec<OwnerColumns>> {
    let mut fixed = Vec::with_capacity(tags.len());
    for t in &tags {
        if t.is_empty() || t.len() > 4 {
            return Err(PyValueError::new_err(format!(
                "a pool tag has 1 to 4 bytes, not {}",
                t.len()
            )));
        }
        let mut b = [b' '; 4];
        b[..t.len()].copy_from_slice(t);
        fixed.push(b);
    }
    let table = symbols_of(py, &dump)?;
    let d = dump.inner.clone();
    let t = table.clone();
    let owners = run(py, move || tag_owners(&d, &t, &fixed))?;
    Ok(owners
        .into_iter()
        .map(|o| {
            let name = |i: usize| table.modules[i].kd_name.clone();
            (
                o.rows.iter().map(|r| name(r.module)).collect(),
                o.rows.iter().map(|r| r.evidence.clone()).collect(),
                o.rows.iter().map(|r| r.score).collect(),
                o.note,
            )
        })
        .collect())
}

/// Register this file's functions.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(pool_owners, m)?)?;
    Ok(())
}
