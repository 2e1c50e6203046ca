//! `ntdump._native.Dump`: a frozen handle on an open core dump.

use std::sync::Arc;

use ntdump_core::dump::RawOptions;
use ntdump_core::mmu::EntryKind;
use ntdump_core::{Dump, Machine, Pa, Va};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use crate::columns::record;
use crate::errors::{CoreResult, PyCoreError};
use ntdump_guard::guarded;

/// Bytes above which a read runs with the GIL released.
const DETACH_BYTES: usize = 64 * 1024;

/// An open dump (private: use `ntdump.open`).
#[pyclass(frozen, name = "Dump", module = "ntdump._native")]
pub struct PyDump {
    pub(crate) inner: Arc<Dump>,
    /// The kernel view (KDBG, modules), loaded on first use (again after the loader entry layout
    /// changes: `crate::layouts`); see `crate::kernel::kernel_of`.
    pub(crate) kernel: crate::layouts::Cache<ntdump_core::kernel::Kernel>,
    /// The symbol table of the kernel's module list, built on first use; see `crate::symbols::symbols_of`.
    pub(crate) symbols: crate::layouts::Cache<ntdump_core::symbols::SymbolTable>,
    /// The big pool table found by the default search, once read successfully; see `crate::pool`.
    pub(crate) big: crate::layouts::Cache<ntdump_core::pool::big::BigPool>,
}

fn machine_arg(m: Option<&str>) -> PyResult<Option<Machine>> {
    Ok(match m {
        None => None,
        Some("x86") => Some(Machine::X86),
        Some("x64") | Some("amd64") => Some(Machine::X64),
        Some(o) => {
            return Err(PyValueError::new_err(format!(
                "machine must be 'x86' or 'x64', not {o:?}"
            )))
        }
    })
}

fn kind_str(k: EntryKind) -> &'static str {
    match k {
        EntryKind::Table => "table",
        EntryKind::Page => "page",
        EntryKind::Transition => "transition",
        EntryKind::NotPresent(n) => n.as_str(),
    }
}

impl PyDump {
    /// Read `n` bytes with `f` straight into a new Python `bytes` object (no second copy): the length is
    /// checked against the per-call cap first, a failed allocation is an ntdump `OutOfMemoryError`, and
    /// large reads run with the GIL released.
    fn read_with(
        &self,
        py: Python<'_>,
        what: &str,
        n: u64,
        f: impl Fn(&Dump, &mut [u8]) -> Result<(), ntdump_core::Error> + Send + Sync,
    ) -> PyResult<Py<PyBytes>> {
        let n = crate::guard::check_read_len(what, n)?;
        let d = self.inner.clone();
        let b = PyBytes::new_with(py, n, |buf| {
            let r = if n > DETACH_BYTES {
                py.detach(|| f(&d, buf))
            } else {
                f(&d, buf)
            };
            r.map_err(|e| PyCoreError(e).into())
        })
        .map_err(|e| crate::errors::out_of_memory(py, e, what, n))?;
        Ok(b.unbind())
    }
}

#[pymethods]
impl PyDump {
    /// Open `path`. With `raw=True` the file is a raw physical image; `machine`, `pae` and `dtb` then
    /// describe it (found by searching when omitted).
    #[new]
    #[pyo3(signature = (path, *, raw=false, machine=None, pae=None, dtb=None))]
    #[guarded]
    fn new(
        py: Python<'_>,
        path: std::path::PathBuf,
        raw: bool,
        machine: Option<&str>,
        pae: Option<bool>,
        dtb: Option<u64>,
    ) -> PyResult<Self> {
        let machine = machine_arg(machine)?;
        let d = py.detach(|| -> CoreResult<Dump> {
            Ok(if raw {
                Dump::open_raw(&path, RawOptions { machine, pae, dtb })?
            } else {
                Dump::open(&path)?
            })
        })?;
        Ok(PyDump {
            inner: Arc::new(d),
            kernel: Default::default(),
            symbols: Default::default(),
            big: Default::default(),
        })
    }

    /// Header fields as a dict (addresses are VAs unless named `dtb`; sizes in bytes or pages as named).
    #[guarded(self)]
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = &self.inner;
        let h = &d.header;
        let o = record!(
            py,
            h,
            [
                pae,
                is64,
                build,
                major_version,
                dump_type,
                dtb,
                pfn_database,
                ps_loaded_module_list,
                ps_active_process_head,
                kd_debugger_data_block,
                processors,
                bugcheck_code,
                system_time,
                system_up_time,
                required_dump_space,
                mini_dump_fields,
                product_type,
                suite_mask,
                attributes,
                comment,
                exception_code,
                exception_address,
            ]
        );
        o.set_item("machine", h.machine.as_str())?;
        o.set_item("layout", d.layout.as_str())?;
        o.set_item("bugcheck_params", h.bugcheck_params.to_vec())?;
        o.set_item("header_runs", h.runs.clone())?;
        let runs: Vec<(u64, u64)> = d
            .phys()
            .runs()
            .iter()
            .map(|r| (r.base_pfn, r.pages))
            .collect();
        o.set_item("runs", runs)?;
        let file_runs: Vec<(u64, u64, u64)> = d
            .phys()
            .runs()
            .iter()
            .map(|r| (r.base_pfn, r.pages, r.file_offset))
            .collect();
        o.set_item("file_runs", file_runs)?;
        o.set_item("present_pages", d.phys().present_pages())?;
        o.set_item("missing_pages", d.phys().missing_pages)?;
        o.set_item("file_size", d.file_len())?;
        let ctx = PyDict::new(py);
        for (k, v) in &h.context.registers {
            ctx.set_item(*k, *v)?;
        }
        o.set_item("context", ctx)?;
        o.set_item("warnings", d.warnings.clone())?;
        if let Some(t) = d.triage() {
            let ranges: Vec<(u64, u64, u64)> = t
                .ranges
                .iter()
                .map(|r| (r.va, r.len, r.file_offset))
                .collect();
            o.set_item("triage_ranges", ranges)?;
            o.set_item("triage_data_blocks", t.data_blocks)?;
        }
        Ok(o)
    }

    /// `n` bytes of kernel virtual memory at `va`. With `pad=True` unreadable pages read as zeros.
    #[pyo3(signature = (va, n, pad=false))]
    #[guarded(self)]
    fn read(&self, py: Python<'_>, va: u64, n: u64, pad: bool) -> PyResult<Py<PyBytes>> {
        self.read_with(py, "read", n, move |d, buf| {
            // Even padded, a read may not run past the top of the address space (it would wrap to 0).
            d.check_va_span(Va(va), buf.len())?;
            if pad {
                d.read_virt_padded(Va(va), buf);
                Ok(())
            } else {
                d.read_virt(Va(va), buf)
            }
        })
    }

    /// `n` bytes of physical memory at `pa`. With `pad=True` missing pages read as zeros.
    #[pyo3(signature = (pa, n, pad=false))]
    #[guarded(self)]
    fn read_phys(&self, py: Python<'_>, pa: u64, n: u64, pad: bool) -> PyResult<Py<PyBytes>> {
        self.read_with(py, "read_phys", n, move |d, buf| {
            if !buf.is_empty() && pa.checked_add(buf.len() as u64 - 1).is_none() {
                return Err(ntdump_core::Error::NotInDump {
                    va: None,
                    pa: Pa(pa & !0xFFF),
                });
            }
            if pad {
                d.read_phys_padded(Pa(pa), buf);
                Ok(())
            } else {
                d.read_phys(Pa(pa), buf)
            }
        })
    }

    /// The PA that kernel VA `va` maps to.
    #[guarded(self)]
    fn translate(&self, va: u64) -> PyResult<u64> {
        Ok(self.inner.translate(Va(va)).map_err(PyCoreError)?.0)
    }

    /// Translate many VAs at once (GIL released); unmapped addresses give `None`.
    #[guarded(self)]
    fn translate_many(&self, py: Python<'_>, vas: Vec<u64>) -> Vec<Option<u64>> {
        let d = self.inner.clone();
        py.detach(move || {
            vas.iter()
                .map(|&v| d.translate(Va(v)).ok().map(|p| p.0))
                .collect()
        })
    }

    /// The page-table walk for `va`: a dict with `steps` (list of (level, index, entry_pa, value, kind)),
    /// `pa` and `page_size` (bytes) when it translates, else `error` (the exception it would raise).
    #[pyo3(signature = (va, dtb=None))]
    #[guarded(self)]
    fn walk<'py>(
        &self,
        py: Python<'py>,
        va: u64,
        dtb: Option<u64>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let d = &self.inner;
        let w = d
            .walk_with(Va(va), dtb.unwrap_or(d.dtb()))
            .map_err(PyCoreError)?;
        let o = PyDict::new(py);
        let steps = PyList::empty(py);
        for s in &w.steps {
            steps.append((
                s.level.as_str(),
                s.index,
                s.entry_pa.0,
                s.value,
                kind_str(s.kind),
            ))?;
        }
        o.set_item("va", va)?;
        o.set_item("steps", steps)?;
        match w.result {
            Ok((pa, size)) => {
                o.set_item("pa", pa.0)?;
                o.set_item("page_size", size)?;
                o.set_item("error", py.None())?;
            }
            Err(e) => {
                o.set_item("pa", py.None())?;
                o.set_item("page_size", py.None())?;
                let err: PyErr = PyCoreError(e).into();
                o.set_item("error", err.value(py))?;
            }
        }
        Ok(o)
    }

    /// Raise `DumpFormatError` if the file shrank while open (another process truncated it): the
    /// pages past its new end read as zeros, so answers computed from them are void.
    #[guarded(self)]
    fn check_intact(&self) {}

    /// Paging mode: "x86", "pae", "x64", or None (ARM64).
    #[getter]
    #[guarded(self)]
    fn mode(&self) -> Option<&'static str> {
        self.inner.mode().map(|m| m.as_str())
    }
}
