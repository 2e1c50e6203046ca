//! Bindings for in-memory PE images, export symbols, importers.

use std::sync::Arc;

use ntdump_core::pe::{PeImage, PeOptions, DIRECTORY_NAMES};
use ntdump_core::symbols::{self, ModuleRef, SymbolTable};
use ntdump_core::Va;
use ntdump_guard::guarded;
use numpy::IntoPyArray;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::columns::{columns, record};
use crate::dump::PyDump;
use crate::errors::{run, PyCoreError};

/// A PE image read from a dump (private: use `Module.headers`, `.sections()`, `.exports()` …).
#[pyclass(frozen, name = "PeImage", module = "ntdump._native")]
pub struct PyPeImage {
    inner: Arc<PeImage>,
}

fn opts(goblin: bool) -> PeOptions {
    PeOptions {
        goblin,
        ..PeOptions::default()
    }
}

fn wrap(mut img: PeImage) -> PyPeImage {
    img.drop_bytes();
    PyPeImage {
        inner: Arc::new(img),
    }
}

/// Rebuild and parse the PE image at VA `base` (GIL released). `size_hint`: the loader's SizeOfImage
/// (bytes). `goblin=False` uses only ntdump's own readers. Raises `PeFormatError`.
#[guarded(dump)]
#[pyfunction]
#[pyo3(signature = (dump, base, size_hint=None, *, goblin=true))]
fn pe_image(
    py: Python<'_>,
    dump: PyRef<'_, PyDump>,
    base: u64,
    size_hint: Option<u64>,
    goblin: bool,
) -> PyResult<PyPeImage> {
    let d = dump.inner.clone();
    let img = run(py, move || {
        PeImage::read_with(&d, Va(base), size_hint, opts(goblin))
    })?;
    Ok(wrap(img))
}

/// Parse an image already laid out at its RVAs (`data[rva]`), based at VA `base`; `missing_pages` are
/// RVAs of pages to treat as unreadable. Raises `PeFormatError`.
#[guarded]
#[pyfunction]
#[pyo3(signature = (base, data, missing_pages=Vec::new(), *, goblin=true))]
fn pe_parse(
    py: Python<'_>,
    base: u64,
    data: Vec<u8>,
    missing_pages: Vec<u64>,
    goblin: bool,
) -> PyResult<PyPeImage> {
    let img = run(py, move || {
        PeImage::parse_with(Va(base), data, missing_pages, opts(goblin))
    })?;
    Ok(wrap(img))
}

#[pymethods]
impl PyPeImage {
    /// Image base (VA).
    #[getter]
    #[guarded]
    fn base(&self) -> u64 {
        self.inner.base.0
    }

    /// Bytes rebuilt (page-rounded SizeOfImage, capped).
    #[getter]
    #[guarded]
    fn size(&self) -> u64 {
        self.inner.size
    }

    /// True for PE32+.
    #[getter]
    #[guarded]
    fn is64(&self) -> bool {
        self.inner.is64()
    }

    /// RVAs of pages that could not be read (zero-filled).
    #[getter]
    #[guarded]
    fn missing_pages(&self) -> Vec<u64> {
        self.inner.missing_pages.clone()
    }

    /// What was odd or cut short while reading.
    #[getter]
    #[guarded]
    fn warnings(&self) -> Vec<String> {
        self.inner.warnings.clone()
    }

    /// Which reader parsed each part: {"headers", "sections", "exports", "debug"} -> "goblin" | "own" | None.
    #[getter]
    #[guarded]
    fn parsers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let p = &self.inner.parsers;
        let o = PyDict::new(py);
        o.set_item("headers", p.headers.as_str())?;
        o.set_item("sections", p.sections.as_str())?;
        o.set_item("exports", p.exports.map(|x| x.as_str()))?;
        o.set_item("debug", p.debug.map(|x| x.as_str()))?;
        Ok(o)
    }

    /// The headers: {"e_lfanew", "file": {...}, "optional": {...}, "directories": [(index, name, rva, size)]}.
    #[guarded]
    fn headers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let h = &self.inner.headers;
        let file = record!(
            py,
            h.file,
            [
                machine,
                number_of_sections,
                time_date_stamp,
                pointer_to_symbol_table,
                number_of_symbols,
                size_of_optional_header,
                characteristics,
            ]
        );
        let opt = record!(
            py,
            h.optional,
            [
                magic,
                major_linker_version,
                minor_linker_version,
                size_of_code,
                size_of_initialized_data,
                size_of_uninitialized_data,
                address_of_entry_point,
                base_of_code,
                base_of_data,
                image_base,
                section_alignment,
                file_alignment,
                major_operating_system_version,
                minor_operating_system_version,
                major_image_version,
                minor_image_version,
                major_subsystem_version,
                minor_subsystem_version,
                win32_version_value,
                size_of_image,
                size_of_headers,
                checksum,
                subsystem,
                dll_characteristics,
                size_of_stack_reserve,
                size_of_stack_commit,
                size_of_heap_reserve,
                size_of_heap_commit,
                loader_flags,
                number_of_rva_and_sizes,
            ]
        );
        let dirs = PyList::empty(py);
        for d in &h.directories {
            dirs.append((d.index, DIRECTORY_NAMES[d.index], d.rva, d.size))?;
        }
        let out = PyDict::new(py);
        out.set_item("e_lfanew", h.e_lfanew)?;
        out.set_item("file", file)?;
        out.set_item("optional", opt)?;
        out.set_item("directories", dirs)?;
        Ok(out)
    }

    /// Sections as columns: name, virtual_address (RVA), virtual_size, raw_size, raw_pointer,
    /// characteristics.
    #[guarded]
    fn sections<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = &self.inner.sections;
        Ok(columns!(py, s, |x| {
            "name" => x.name.clone(),
            "virtual_address" => x.virtual_address,
            "virtual_size" => x.virtual_size,
            "raw_size" => x.raw_size,
            "raw_pointer" => x.raw_pointer,
            "characteristics" => x.characteristics,
        }))
    }

    /// The export directory: {"dll_name", "time_date_stamp", "ordinal_base", "number_of_functions",
    /// "number_of_names", "columns": {name, ordinal, rva, forwarder}}, or None.
    #[guarded]
    fn exports<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(e) = &self.inner.exports else {
            return Ok(None);
        };
        let o = record!(
            py,
            e,
            [
                dll_name,
                time_date_stamp,
                ordinal_base,
                number_of_functions,
                number_of_names,
            ]
        );
        let c = columns!(py, e.entries, |x| {
            "name" => x.name.clone(),
            "ordinal" => x.ordinal,
            "rva" => x.rva,
            "forwarder" => x.forwarder.clone(),
        });
        o.set_item("columns", c)?;
        Ok(Some(o))
    }

    /// Imports as columns, one row per IAT slot: dll, name, ordinal, hint, iat_rva, iat_slot (VA),
    /// value (None when unreadable), source ("descriptor" | "iat directory").
    #[guarded]
    fn imports<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let i = &self.inner.imports;
        let base = self.inner.base.0;
        let o = columns!(py, i, |x| {
            "dll" => x.dll.clone(),
            "name" => x.name.clone(),
            "ordinal" => x.ordinal,
            "hint" => x.hint,
            "iat_rva" => x.iat_rva,
            "value" => x.value,
            "source" => x.source.as_str(),
        });
        let slots: Vec<u64> = i
            .iter()
            .map(|x| base.wrapping_add(u64::from(x.iat_rva)))
            .collect();
        o.set_item("iat_slot", slots.into_pyarray(py))?;
        Ok(o)
    }

    /// Debug directory entries as columns: kind, kind_name, time_date_stamp, major_version,
    /// minor_version, size_of_data, address_of_raw_data (RVA), pointer_to_raw_data, characteristics.
    #[guarded]
    fn debug<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = &self.inner.debug;
        Ok(columns!(py, d, |x| {
            "kind" => x.kind,
            "kind_name" => x.kind_name(),
            "time_date_stamp" => x.time_date_stamp,
            "major_version" => x.major_version,
            "minor_version" => x.minor_version,
            "size_of_data" => x.size_of_data,
            "address_of_raw_data" => x.address_of_raw_data,
            "pointer_to_raw_data" => x.pointer_to_raw_data,
            "characteristics" => x.characteristics,
        }))
    }

    /// The CodeView record: {"format": "RSDS"|"NB10", "path", "pdb_name", "age", "guid" (str or None),
    /// "guid_bytes", "signature" (NB10), "key", "store_path"}, or None.
    #[guarded]
    fn codeview<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        use ntdump_core::pe::CodeView;
        let Some(cv) = &self.inner.codeview else {
            return Ok(None);
        };
        let o = PyDict::new(py);
        o.set_item("format", cv.format())?;
        o.set_item("path", cv.path())?;
        o.set_item("pdb_name", cv.pdb_name())?;
        o.set_item("age", cv.age())?;
        o.set_item("guid", cv.guid_string())?;
        match cv {
            CodeView::Rsds { guid, .. } => {
                o.set_item("guid_bytes", pyo3::types::PyBytes::new(py, guid))?;
                o.set_item("signature", py.None())?;
            }
            CodeView::Nb10 { signature, .. } => {
                o.set_item("guid_bytes", py.None())?;
                o.set_item("signature", *signature)?;
            }
        }
        o.set_item("key", cv.key())?;
        o.set_item("store_path", cv.store_path())?;
        Ok(Some(o))
    }
}

/// The export symbols of every module of a dump (private: use `Dump.symbol`, `.symbols`, `.ln`).
#[pyclass(frozen, name = "SymbolTable", module = "ntdump._native")]
pub struct PySymbolTable {
    pub(crate) inner: Arc<SymbolTable>,
}

fn refs(modules: Vec<(String, u64, u64)>) -> Vec<ModuleRef> {
    modules
        .into_iter()
        .map(|(name, base, size)| ModuleRef { name, base, size })
        .collect()
}

/// The symbol table of the dump's own module list (built once, shared), or of `modules` =
/// [(file name, base VA, size in bytes)] in load order; images are read in parallel with the GIL
/// released.
#[guarded(dump)]
#[pyfunction]
#[pyo3(signature = (dump, modules=None))]
fn symbol_table(
    py: Python<'_>,
    dump: PyRef<'_, PyDump>,
    modules: Option<Vec<(String, u64, u64)>>,
) -> PyResult<PySymbolTable> {
    let inner = match modules {
        None => crate::symbols::symbols_of(py, &dump)?,
        Some(modules) => {
            let d = dump.inner.clone();
            let refs = refs(modules);
            Arc::new(py.detach(move || SymbolTable::build(&d, &refs)))
        }
    };
    Ok(PySymbolTable { inner })
}

impl PySymbolTable {
    fn columns<'py>(&self, py: Python<'py>, rows: &[usize]) -> PyResult<Bound<'py, PyDict>> {
        let t = &self.inner;
        let rows: Vec<&symbols::SymbolRow> = rows.iter().map(|&i| &t.rows[i]).collect();
        let o = columns!(py, rows, |r| {
            "module" => t.modules[r.module].kd_name.clone(),
            "name" => r.name.clone(),
            "address" => r.address,
            "forwarder" => r.forwarder.clone(),
        });
        let ordinals: Vec<u32> = rows.iter().map(|r| r.ordinal).collect();
        o.set_item("ordinal", ordinals.into_pyarray(py))?;
        Ok(o)
    }
}

#[pymethods]
impl PySymbolTable {
    /// VA of `module!name` (also `module!#ordinal`, `module`, `+offset`). Raises SymbolError.
    #[guarded]
    fn symbol(&self, expr: &str) -> PyResult<u64> {
        Ok(self.inner.symbol(expr).map_err(PyCoreError)?.0)
    }

    /// kd's `ln` for `va`. Raises SymbolError when no module holds it.
    #[guarded]
    fn ln(&self, va: u64) -> PyResult<String> {
        Ok(self.inner.ln(Va(va)).map_err(PyCoreError)?)
    }

    /// (module kd name, export name or "#ordinal" or None, export VA or None, offset in bytes) of the
    /// nearest export at or below `va`, or None when no module holds `va`.
    #[guarded]
    fn nearest(&self, va: u64) -> Option<(String, Option<String>, Option<u64>, u64)> {
        let t = &self.inner;
        let (m, row, off) = t.nearest(Va(va))?;
        let (name, addr) = match row {
            Some(r) => {
                let r = &t.rows[r];
                (
                    Some(r.name.clone().unwrap_or_else(|| format!("#{}", r.ordinal))),
                    r.address,
                )
            }
            None => (None, None),
        };
        Some((t.modules[m].kd_name.clone(), name, addr, off))
    }

    /// Exports matching `pattern` (`mod_glob!name_glob`) as columns: module, name, address, ordinal,
    /// forwarder.
    #[guarded]
    fn find<'py>(&self, py: Python<'py>, pattern: &str) -> PyResult<Bound<'py, PyDict>> {
        let rows = self.inner.find(pattern);
        self.columns(py, &rows)
    }

    /// Every export as columns (see `find`).
    #[guarded]
    fn rows<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let rows: Vec<usize> = (0..self.inner.rows.len()).collect();
        self.columns(py, &rows)
    }

    /// The modules as columns: kd_name, file_name, base, size, exports (count), imports (count), error,
    /// warnings (list per module).
    #[guarded]
    fn modules<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let m = &self.inner.modules;
        Ok(columns!(py, m, |x| {
            "kd_name" => x.kd_name.clone(),
            "file_name" => x.file_name.clone(),
            "base" => x.base,
            "size" => x.size,
            "exports" => x.export_count,
            "imports" => x.imports.len(),
            "error" => x.error.clone(),
            "warnings" => x.warnings.clone(),
        }))
    }

    /// Who imports `expr` (GIL released): columns module, function, iat_slot, how_found, value, note.
    #[pyo3(signature = (dump, expr, aligned=true))]
    #[guarded(dump)]
    fn importers<'py>(
        &self,
        py: Python<'py>,
        dump: PyRef<'py, PyDump>,
        expr: &str,
        aligned: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let d = dump.inner.clone();
        let t = self.inner.clone();
        let expr = expr.to_string();
        let rows = run(py, move || t.importers(&d, &expr, aligned))?;
        let t = &self.inner;
        let o = columns!(py, rows, |r| {
            "module" => t.modules[r.module].kd_name.clone(),
            "function" => r.function.clone(),
            "how_found" => r.how_found.as_str(),
            "value" => r.value,
            "note" => r.note.clone(),
        });
        let slots: Vec<u64> = rows.iter().map(|r| r.slot.0).collect();
        o.set_item("iat_slot", slots.into_pyarray(py))?;
        Ok(o)
    }

    /// Number of exports in the table.
    #[guarded]
    fn __len__(&self) -> usize {
        self.inner.rows.len()
    }
}

/// Add this file's functions and classes to the native module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyPeImage>()?;
    m.add_class::<PySymbolTable>()?;
    m.add_function(wrap_pyfunction!(pe_image, m)?)?;
    m.add_function(wrap_pyfunction!(pe_parse, m)?)?;
    m.add_function(wrap_pyfunction!(symbol_table, m)?)?;
    Ok(())
}
