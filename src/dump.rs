//! `ntdump._native.Dump`: a frozen handle on an open core dump.

use std::sync::Arc;

use ntdump_core::dump::RawOptions;
use ntdump_core::{Dump, Machine, Pa, Session, Va};
use pyo3::types::PyBytes;

use crate::errors::ToPyErr;
use crate::prelude::*;

/// Bytes above which a read runs with the GIL released.
const DETACH_BYTES: usize = 64 * 1024;

/// An open dump (private: use `ntdump.open`), with the views computed from it once (kernel, symbols,
/// big pool table: `ntdump_core::Session`).
#[pyclass(frozen, name = "Dump", module = "ntdump._native")]
pub struct PyDump {
    pub(crate) inner: Arc<Session>,
}

impl PyDump {
    /// Read `n` bytes with `f` straight into a new Python `bytes` object (no second copy): the length is
    /// checked against the per-call cap first, a failed allocation is an ntdump `OutOfMemoryError`, and
    /// large reads run with the GIL released.
    fn read_with(
        &self,
        py: Python<'_>,
        what: &'static str,
        n: u64,
        f: impl Fn(&Dump, &mut [u8]) -> ntdump_core::Result<()> + Send + Sync,
    ) -> PyResult<Py<PyBytes>> {
        let n = ntdump_core::dump::check_read_len(what, n).or_raise()?;
        let d = &self.inner;
        let b = PyBytes::new_with(py, n, |buf| {
            let r = if n > DETACH_BYTES {
                py.detach(|| f(d, buf))
            } else {
                f(d, buf)
            };
            r.or_raise()
        })
        .map_err(|e| crate::errors::out_of_memory(py, e, what, n))?;
        Ok(b.unbind())
    }
}

#[guarded(self.inner)]
impl PyDump {
    /// Open `path`. With `raw=True` the file is a raw physical image; `machine`, `pae` and `dtb` then
    /// describe it (found by searching when omitted).
    #[new]
    #[pyo3(signature = (path, *, raw=false, machine=None, pae=None, dtb=None))]
    fn new(
        py: Python<'_>,
        path: std::path::PathBuf,
        raw: bool,
        machine: Option<&str>,
        pae: Option<bool>,
        dtb: Option<u64>,
    ) -> PyResult<Self> {
        let machine = machine.map(Machine::parse).transpose().or_raise()?;
        let d = py.detach(|| match raw {
            true => Dump::open_raw(&path, RawOptions { machine, pae, dtb }),
            false => Dump::open(&path),
        });
        let inner = Arc::new(Session::new(d.or_raise()?));
        Ok(PyDump { inner })
    }

    /// Header fields as a dict (addresses are VAs unless named `dtb`; sizes in bytes or pages as named).
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Dict<'py>> {
        record(py, &self.inner.info())
    }

    /// `n` bytes of kernel virtual memory at `va`. With `pad=True` unreadable pages read as zeros.
    #[pyo3(signature = (va, n, pad=false))]
    fn read(&self, py: Python<'_>, va: u64, n: u64, pad: bool) -> PyResult<Py<PyBytes>> {
        self.read_with(py, "read", n, |d, buf| d.read_virt_pad(Va(va), buf, pad))
    }

    /// `n` bytes of physical memory at `pa`. With `pad=True` missing pages read as zeros.
    #[pyo3(signature = (pa, n, pad=false))]
    fn read_phys(&self, py: Python<'_>, pa: u64, n: u64, pad: bool) -> PyResult<Py<PyBytes>> {
        self.read_with(py, "read_phys", n, |d, buf| {
            d.read_phys_pad(Pa(pa), buf, pad)
        })
    }

    /// The PA that kernel VA `va` maps to.
    fn translate(&self, va: u64) -> PyResult<u64> {
        Ok(self.inner.translate(Va(va)).or_raise()?.0)
    }

    /// The page-table walk for `va`: a dict with `steps` (list of (level, index, entry_pa, value, kind)),
    /// `pa` and `page_size` (bytes) when it translates, else `error` (the exception it would raise).
    #[pyo3(signature = (va, dtb=None))]
    fn walk<'py>(&self, py: Python<'py>, va: u64, dtb: Option<u64>) -> PyResult<Dict<'py>> {
        let d = &self.inner;
        let w = d.walk_with(Va(va), Pa(dtb.unwrap_or(d.dtb()))).or_raise()?;
        let (pa, page_size, error) = match w.result {
            Ok((pa, size)) => (Some(pa.0), Some(size), None),
            Err(e) => (None, None, Some(e.to_py().into_value(py))),
        };
        let steps = value(py, &w.steps)?;
        Ok(dict!(PyDict::new(py); va, steps, pa, page_size, error))
    }

    /// Raise `DumpFormatError` if the file shrank while open (another process truncated it): the
    /// pages past its new end read as zeros, so answers computed from them are void.
    fn check_intact(&self) {}

    /// Paging mode: "x86", "pae", "x64", or None (ARM64).
    #[getter]
    fn mode(&self) -> Option<&'static str> {
        self.inner.mode().map(|m| m.as_str())
    }
}
