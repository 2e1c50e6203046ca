//! Bindings for in-memory PE images, export symbols, importers.

use std::mem::take;
use std::sync::Arc;

use ntdump_core::pe::{PeImage, PeOptions};
use ntdump_core::symbols::{Nearest, SymbolTable};
use ntdump_core::{Result as CoreResult, Va};

use crate::prelude::*;

/// A PE image read from a dump (private: use `Module.headers`, `.sections()`, `.exports()` …).
#[pyclass(frozen, name = "PeImage", module = "ntdump._native")]
pub struct PyPeImage {
    inner: Arc<PeImage>,
    /// Image base (VA).
    #[pyo3(get)]
    base: u64,
    /// Bytes rebuilt (page-rounded SizeOfImage, capped).
    #[pyo3(get)]
    size: u64,
    /// True for PE32+.
    #[pyo3(get)]
    is64: bool,
    /// RVAs of pages that could not be read (zero-filled).
    #[pyo3(get)]
    missing_pages: Vec<u64>,
    /// What was odd or cut short while reading.
    #[pyo3(get)]
    warnings: Vec<String>,
}

fn opts(goblin: bool) -> PeOptions {
    let d = PeOptions::default();
    PeOptions { goblin, ..d }
}

/// Read or parse an image with the GIL released, and keep it without its bytes.
fn image(py: Python<'_>, f: impl FnOnce() -> CoreResult<PeImage> + Send) -> PyResult<PyPeImage> {
    let mut img = run(py, f)?;
    img.drop_bytes();
    let (base, size, is64) = (img.base.0, img.size, img.is64());
    let (missing_pages, warnings) = (take(&mut img.missing_pages), take(&mut img.warnings));
    let inner = Arc::new(img);
    Ok(PyPeImage {
        inner,
        base,
        size,
        is64,
        missing_pages,
        warnings,
    })
}

/// Rebuild and parse the PE image at VA `base` (GIL released). `size_hint`: the loader's SizeOfImage
/// (bytes). `goblin=False` uses only ntdump's own readers. Raises `PeFormatError`.
#[guarded]
#[pyo3(signature = (dump, base, size_hint=None, *, goblin=true))]
pub fn pe_image(
    py: Python<'_>,
    dump: &PyDump,
    base: u64,
    size_hint: Option<u64>,
    goblin: bool,
) -> PyResult<PyPeImage> {
    image(py, || {
        PeImage::read_with(&dump.inner, Va(base), size_hint, opts(goblin))
    })
}

/// Parse an image already laid out at its RVAs (`data[rva]`), based at VA `base`; `missing_pages` are
/// RVAs of pages to treat as unreadable. Raises `PeFormatError`.
#[guarded]
#[pyo3(signature = (base, data, missing_pages=Vec::new(), *, goblin=true))]
pub fn pe_parse(
    py: Python<'_>,
    base: u64,
    data: Vec<u8>,
    missing_pages: Vec<u64>,
    goblin: bool,
) -> PyResult<PyPeImage> {
    image(py, || {
        PeImage::parse_with(Va(base), data, missing_pages, opts(goblin))
    })
}

#[guarded]
impl PyPeImage {
    /// Which reader parsed each part: {"headers", "sections", "exports", "debug"} -> "goblin" | "own" | None.
    #[getter]
    fn parsers<'py>(&self, py: Python<'py>) -> PyResult<Dict<'py>> {
        record(py, &self.inner.parsers)
    }

    /// The headers: {"e_lfanew", "file": {...}, "optional": {...}, "directories": [(index, name, rva, size)]}.
    fn headers<'py>(&self, py: Python<'py>) -> PyResult<Dict<'py>> {
        record(py, &self.inner.headers)
    }

    /// Sections as columns: name, virtual_address (RVA), virtual_size, raw_size, raw_pointer,
    /// characteristics.
    fn sections<'py>(&self, py: Python<'py>) -> PyResult<Dict<'py>> {
        columns(py, &self.inner.sections)
    }

    /// The export directory: {"dll_name", "time_date_stamp", "ordinal_base", "number_of_functions",
    /// "number_of_names", "columns": {name, ordinal, rva, forwarder}}, or None.
    fn exports<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(e) = &self.inner.exports else {
            return Ok(None);
        };
        let columns = columns(py, &e.entries)?;
        Ok(Some(dict!(record(py, e)?; columns)))
    }

    /// Imports as columns, one row per IAT slot: dll, name, ordinal, hint, iat_rva, iat_slot (VA),
    /// value (None when unreadable), source ("descriptor" | "iat directory").
    fn imports<'py>(&self, py: Python<'py>) -> PyResult<Dict<'py>> {
        let (i, base) = (&self.inner.imports, self.inner.base.0);
        let at = |rva: u32| base.wrapping_add(rva.into());
        let slots: Vec<u64> = i.iter().map(|x| at(x.iat_rva)).collect();
        let iat_slot = slots.into_pyarray(py);
        Ok(dict!(columns(py, i)?; iat_slot))
    }

    /// Debug directory entries as columns: kind, kind_name, time_date_stamp, major_version,
    /// minor_version, size_of_data, address_of_raw_data (RVA), pointer_to_raw_data, characteristics.
    fn debug<'py>(&self, py: Python<'py>) -> PyResult<Dict<'py>> {
        let d = &self.inner.debug;
        let kind_name: Vec<_> = d.iter().map(|x| x.kind_name()).collect();
        Ok(dict!(columns(py, d)?; kind_name))
    }

    /// The CodeView record: {"format": "RSDS"|"NB10", "path", "pdb_name", "age", "guid" (str or None),
    /// "guid_bytes", "signature" (NB10), "key", "store_path"}, or None.
    fn codeview<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let cv = self.inner.codeview.as_ref();
        cv.map(|c| record(py, c)).transpose()
    }
}

/// The export symbols of every module of a dump (private: use `Dump.symbol`, `.symbols`, `.ln`).
#[pyclass(frozen, name = "SymbolTable", module = "ntdump._native")]
pub struct PySymbolTable {
    inner: Arc<SymbolTable>,
}

/// The symbol table of the dump's loaded modules, built on first use (GIL released) and shared.
pub fn symbols_of(py: Python<'_>, d: &PyDump) -> PyResult<Arc<SymbolTable>> {
    run(py, || d.inner.symbols())
}

/// The symbol table of the dump's module list (built once with the GIL released, then shared).
#[guarded]
pub fn symbol_table(py: Python<'_>, dump: &PyDump) -> PyResult<PySymbolTable> {
    let inner = symbols_of(py, dump)?;
    Ok(PySymbolTable { inner })
}

#[guarded]
impl PySymbolTable {
    /// VA of `module!name` (also `module!#ordinal`, `module`, `+offset`). Raises SymbolError.
    fn symbol(&self, expr: &str) -> PyResult<u64> {
        Ok(self.inner.symbol(expr).or_raise()?.0)
    }

    /// kd's `ln` for `va`. Raises SymbolError when no module holds it.
    fn ln(&self, va: u64) -> PyResult<String> {
        self.inner.ln(Va(va)).or_raise()
    }

    /// (module kd name, export name or "#ordinal" or None, export VA or None, offset in bytes) of the
    /// nearest export at or below `va`, or None when no module holds `va`.
    fn nearest(&self, va: u64) -> Option<Nearest<'_>> {
        self.inner.nearest_named(Va(va))
    }

    /// Exports matching `pattern` (`mod_glob!name_glob`) as columns: module, name, address, ordinal,
    /// forwarder.
    fn find<'py>(&self, py: Python<'py>, pattern: &str) -> PyResult<Dict<'py>> {
        columns(py, &self.inner.find_rows(pattern))
    }

    /// The modules as columns: kd_name, file_name, base, size, exports (count), imports (count), error,
    /// warnings (list per module).
    fn modules<'py>(&self, py: Python<'py>) -> PyResult<Dict<'py>> {
        columns(py, &self.inner.modules)
    }

    /// Who imports `expr` (GIL released): columns module, function, iat_slot, how_found, value, note.
    #[pyo3(signature = (dump, expr, aligned=true))]
    fn importers<'py>(
        &self,
        py: Python<'py>,
        dump: &PyDump,
        expr: &str,
        aligned: bool,
    ) -> PyResult<Dict<'py>> {
        let rows = run(py, || self.inner.importers(&dump.inner, expr, aligned))?;
        columns(py, &rows)
    }

    /// Number of exports in the table.
    fn __len__(&self) -> usize {
        self.inner.rows.len()
    }
}
