//! Bindings for in-memory PE images, export symbols, importers.

use std::sync::Arc;

use ntdump_core::pe::{PeImage, PeOptions, DIRECTORY_NAMES};
use ntdump_core::symbols::{self, ModuleRef, SymbolTable};
use ntdump_core::Va;
use numpy::IntoPyArray;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::dump::PyDump;
use crate::errors::PyCoreError;

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
    let img = py
        .detach(move || PeImage::read_with(&d, Va(base), size_hint, opts(goblin)))
        .map_err(PyCoreError)?;
    Ok(wrap(img))
}

/// Parse an image already laid out at its RVAs (`data[rva]`), based at VA `base`; `missing_pages` are
/// RVAs of pages to treat as unreadable. Raises `PeFormatError`.
#[pyfunction]
#[pyo3(signature = (base, data, missing_pages=Vec::new(), *, goblin=true))]
fn pe_parse(
    py: Python<'_>,
    base: u64,
    data: Vec<u8>,
    missing_pages: Vec<u64>,
    goblin: bool,
) -> PyResult<PyPeImage> {
    let img = py
        .detach(move || PeImage::parse_with(Va(base), data, missing_pages, opts(goblin)))
        .map_err(PyCoreError)?;
    Ok(wrap(img))
}

#[pymethods]
impl PyPeImage {
    /// Image base (VA).
    #[getter]
    fn base(&self) -> u64 {
        self.inner.base.0
    }

    /// Bytes rebuilt (page-rounded SizeOfImage, capped).
    #[getter]
    fn size(&self) -> u64 {
        self.inner.size
    }

    /// True for PE32+.
    #[getter]
    fn is64(&self) -> bool {
        self.inner.is64()
    }

    /// RVAs of pages that could not be read (zero-filled).
    #[getter]
    fn missing_pages(&self) -> Vec<u64> {
        self.inner.missing_pages.clone()
    }

    /// What was odd or cut short while reading.
    #[getter]
    fn warnings(&self) -> Vec<String> {
        self.inner.warnings.clone()
    }

    /// Which reader parsed each part: {"headers", "sections", "exports", "debug"} -> "goblin" | "own" | None.
    #[getter]
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
    fn headers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let h = &self.inner.headers;
        let f = &h.file;
        let file = PyDict::new(py);
        file.set_item("machine", f.machine)?;
        file.set_item("number_of_sections", f.number_of_sections)?;
        file.set_item("time_date_stamp", f.time_date_stamp)?;
        file.set_item("pointer_to_symbol_table", f.pointer_to_symbol_table)?;
        file.set_item("number_of_symbols", f.number_of_symbols)?;
        file.set_item("size_of_optional_header", f.size_of_optional_header)?;
        file.set_item("characteristics", f.characteristics)?;
        let o = &h.optional;
        let opt = PyDict::new(py);
        opt.set_item("magic", o.magic)?;
        opt.set_item("major_linker_version", o.major_linker_version)?;
        opt.set_item("minor_linker_version", o.minor_linker_version)?;
        opt.set_item("size_of_code", o.size_of_code)?;
        opt.set_item("size_of_initialized_data", o.size_of_initialized_data)?;
        opt.set_item("size_of_uninitialized_data", o.size_of_uninitialized_data)?;
        opt.set_item("address_of_entry_point", o.address_of_entry_point)?;
        opt.set_item("base_of_code", o.base_of_code)?;
        opt.set_item("base_of_data", o.base_of_data)?;
        opt.set_item("image_base", o.image_base)?;
        opt.set_item("section_alignment", o.section_alignment)?;
        opt.set_item("file_alignment", o.file_alignment)?;
        opt.set_item(
            "major_operating_system_version",
            o.major_operating_system_version,
        )?;
        opt.set_item(
            "minor_operating_system_version",
            o.minor_operating_system_version,
        )?;
        opt.set_item("major_image_version", o.major_image_version)?;
        opt.set_item("minor_image_version", o.minor_image_version)?;
        opt.set_item("major_subsystem_version", o.major_subsystem_version)?;
        opt.set_item("minor_subsystem_version", o.minor_subsystem_version)?;
        opt.set_item("win32_version_value", o.win32_version_value)?;
        opt.set_item("size_of_image", o.size_of_image)?;
        opt.set_item("size_of_headers", o.size_of_headers)?;
        opt.set_item("checksum", o.checksum)?;
        opt.set_item("subsystem", o.subsystem)?;
        opt.set_item("dll_characteristics", o.dll_characteristics)?;
        opt.set_item("size_of_stack_reserve", o.size_of_stack_reserve)?;
        opt.set_item("size_of_stack_commit", o.size_of_stack_commit)?;
        opt.set_item("size_of_heap_reserve", o.size_of_heap_reserve)?;
        opt.set_item("size_of_heap_commit", o.size_of_heap_commit)?;
        opt.set_item("loader_flags", o.loader_flags)?;
        opt.set_item("number_of_rva_and_sizes", o.number_of_rva_and_sizes)?;
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
    fn sections<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = &self.inner.sections;
        let o = PyDict::new(py);
        o.set_item("name", s.iter().map(|x| x.name.clone()).collect::<Vec<_>>())?;
        o.set_item(
            "virtual_address",
            s.iter().map(|x| x.virtual_address).collect::<Vec<_>>(),
        )?;
        o.set_item(
            "virtual_size",
            s.iter().map(|x| x.virtual_size).collect::<Vec<_>>(),
        )?;
        o.set_item("raw_size", s.iter().map(|x| x.raw_size).collect::<Vec<_>>())?;
        o.set_item(
            "raw_pointer",
            s.iter().map(|x| x.raw_pointer).collect::<Vec<_>>(),
        )?;
        o.set_item(
            "characteristics",
            s.iter().map(|x| x.characteristics).collect::<Vec<_>>(),
        )?;
        Ok(o)
    }

    /// The export directory: {"dll_name", "time_date_stamp", "ordinal_base", "number_of_functions",
    /// "number_of_names", "columns": {name, ordinal, rva, forwarder}}, or None.
    fn exports<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(e) = &self.inner.exports else {
            return Ok(None);
        };
        let o = PyDict::new(py);
        o.set_item("dll_name", &e.dll_name)?;
        o.set_item("time_date_stamp", e.time_date_stamp)?;
        o.set_item("ordinal_base", e.ordinal_base)?;
        o.set_item("number_of_functions", e.number_of_functions)?;
        o.set_item("number_of_names", e.number_of_names)?;
        let c = PyDict::new(py);
        let en = &e.entries;
        c.set_item(
            "name",
            en.iter().map(|x| x.name.clone()).collect::<Vec<_>>(),
        )?;
        c.set_item("ordinal", en.iter().map(|x| x.ordinal).collect::<Vec<_>>())?;
        c.set_item("rva", en.iter().map(|x| x.rva).collect::<Vec<_>>())?;
        c.set_item(
            "forwarder",
            en.iter().map(|x| x.forwarder.clone()).collect::<Vec<_>>(),
        )?;
        o.set_item("columns", c)?;
        Ok(Some(o))
    }

    /// Imports as columns, one row per IAT slot: dll, name, ordinal, hint, iat_rva, iat_slot (VA),
    /// value (None when unreadable), source ("descriptor" | "iat directory").
    fn imports<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let i = &self.inner.imports;
        let base = self.inner.base.0;
        let o = PyDict::new(py);
        o.set_item("dll", i.iter().map(|x| x.dll.clone()).collect::<Vec<_>>())?;
        o.set_item("name", i.iter().map(|x| x.name.clone()).collect::<Vec<_>>())?;
        o.set_item("ordinal", i.iter().map(|x| x.ordinal).collect::<Vec<_>>())?;
        o.set_item("hint", i.iter().map(|x| x.hint).collect::<Vec<_>>())?;
        o.set_item("iat_rva", i.iter().map(|x| x.iat_rva).collect::<Vec<_>>())?;
        o.set_item(
            "iat_slot",
            i.iter()
                .map(|x| base.wrapping_add(u64::from(x.iat_rva)))
                .collect::<Vec<_>>()
                .into_pyarray(py),
        )?;
        o.set_item("value", i.iter().map(|x| x.value).collect::<Vec<_>>())?;
        o.set_item(
            "source",
            i.iter().map(|x| x.source.as_str()).collect::<Vec<_>>(),
        )?;
        Ok(o)
    }

    /// Debug directory entries as columns: kind, kind_name, time_date_stamp, major_version,
    /// minor_version, size_of_data, address_of_raw_data (RVA), pointer_to_raw_data, characteristics.
    fn debug<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = &self.inner.debug;
        let o = PyDict::new(py);
        o.set_item("kind", d.iter().map(|x| x.kind).collect::<Vec<_>>())?;
        o.set_item(
            "kind_name",
            d.iter().map(|x| x.kind_name()).collect::<Vec<_>>(),
        )?;
        o.set_item(
            "time_date_stamp",
            d.iter().map(|x| x.time_date_stamp).collect::<Vec<_>>(),
        )?;
        o.set_item(
            "major_version",
            d.iter().map(|x| x.major_version).collect::<Vec<_>>(),
        )?;
        o.set_item(
            "minor_version",
            d.iter().map(|x| x.minor_version).collect::<Vec<_>>(),
        )?;
        o.set_item(
            "size_of_data",
            d.iter().map(|x| x.size_of_data).collect::<Vec<_>>(),
        )?;
        o.set_item(
            "address_of_raw_data",
            d.iter().map(|x| x.address_of_raw_data).collect::<Vec<_>>(),
        )?;
        o.set_item(
            "pointer_to_raw_data",
            d.iter().map(|x| x.pointer_to_raw_data).collect::<Vec<_>>(),
        )?;
        o.set_item(
            "characteristics",
            d.iter().map(|x| x.characteristics).collect::<Vec<_>>(),
        )?;
        Ok(o)
    }

    /// The CodeView record: {"format": "RSDS"|"NB10", "path", "pdb_name", "age", "guid" (str or None),
    /// "guid_bytes", "signature" (NB10), "key", "store_path"}, or None.
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
        let r = |i: &usize| &t.rows[*i];
        let o = PyDict::new(py);
        o.set_item(
            "module",
            rows.iter()
                .map(|i| t.modules[r(i).module].kd_name.clone())
                .collect::<Vec<_>>(),
        )?;
        o.set_item(
            "name",
            rows.iter().map(|i| r(i).name.clone()).collect::<Vec<_>>(),
        )?;
        o.set_item(
            "address",
            rows.iter().map(|i| r(i).address).collect::<Vec<_>>(),
        )?;
        o.set_item(
            "ordinal",
            rows.iter()
                .map(|i| r(i).ordinal)
                .collect::<Vec<_>>()
                .into_pyarray(py),
        )?;
        o.set_item(
            "forwarder",
            rows.iter()
                .map(|i| r(i).forwarder.clone())
                .collect::<Vec<_>>(),
        )?;
        Ok(o)
    }
}

#[pymethods]
impl PySymbolTable {
    /// VA of `module!name` (also `module!#ordinal`, `module`, `+offset`). Raises SymbolError.
    fn symbol(&self, expr: &str) -> PyResult<u64> {
        Ok(self.inner.symbol(expr).map_err(PyCoreError)?)
    }

    /// kd's `ln` for `va`. Raises SymbolError when no module holds it.
    fn ln(&self, va: u64) -> PyResult<String> {
        Ok(self.inner.ln(va).map_err(PyCoreError)?)
    }

    /// (module kd name, export name or "#ordinal" or None, export VA or None, offset in bytes) of the
    /// nearest export at or below `va`, or None when no module holds `va`.
    fn nearest(&self, va: u64) -> Option<(String, Option<String>, Option<u64>, u64)> {
        let t = &self.inner;
        let (m, row, off) = t.nearest(va)?;
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
    fn find<'py>(&self, py: Python<'py>, pattern: &str) -> PyResult<Bound<'py, PyDict>> {
        let rows = self.inner.find(pattern);
        self.columns(py, &rows)
    }

    /// Every export as columns (see `find`).
    fn rows<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let rows: Vec<usize> = (0..self.inner.rows.len()).collect();
        self.columns(py, &rows)
    }

    /// The modules as columns: kd_name, file_name, base, size, exports (count), imports (count), error,
    /// warnings (list per module).
    fn modules<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let m = &self.inner.modules;
        let o = PyDict::new(py);
        o.set_item(
            "kd_name",
            m.iter().map(|x| x.kd_name.clone()).collect::<Vec<_>>(),
        )?;
        o.set_item(
            "file_name",
            m.iter().map(|x| x.file_name.clone()).collect::<Vec<_>>(),
        )?;
        o.set_item("base", m.iter().map(|x| x.base).collect::<Vec<_>>())?;
        o.set_item("size", m.iter().map(|x| x.size).collect::<Vec<_>>())?;
        o.set_item(
            "exports",
            m.iter().map(|x| x.export_count).collect::<Vec<_>>(),
        )?;
        o.set_item(
            "imports",
            m.iter().map(|x| x.imports.len()).collect::<Vec<_>>(),
        )?;
        o.set_item(
            "error",
            m.iter().map(|x| x.error.clone()).collect::<Vec<_>>(),
        )?;
        o.set_item(
            "warnings",
            m.iter().map(|x| x.warnings.clone()).collect::<Vec<_>>(),
        )?;
        Ok(o)
    }

    /// Who imports `expr` (GIL released): columns module, function, iat_slot, how_found, value, note.
    #[pyo3(signature = (dump, expr, aligned=true))]
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
        let rows = py
            .detach(move || t.importers(&d, &expr, aligned))
            .map_err(PyCoreError)?;
        let t = &self.inner;
        let o = PyDict::new(py);
        o.set_item(
            "module",
            rows.iter()
                .map(|r| t.modules[r.module].kd_name.clone())
                .collect::<Vec<_>>(),
        )?;
        o.set_item(
            "function",
            rows.iter().map(|r| r.function.clone()).collect::<Vec<_>>(),
        )?;
        o.set_item(
            "iat_slot",
            rows.iter()
                .map(|r| r.slot)
                .collect::<Vec<_>>()
                .into_pyarray(py),
        )?;
        o.set_item(
            "how_found",
            rows.iter()
                .map(|r| r.how_found.as_str())
                .collect::<Vec<_>>(),
        )?;
        o.set_item("value", rows.iter().map(|r| r.value).collect::<Vec<_>>())?;
        o.set_item(
            "note",
            rows.iter().map(|r| r.note.clone()).collect::<Vec<_>>(),
        )?;
        Ok(o)
    }

    /// Number of exports in the table.
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
