//! The one place where core errors become Python exceptions (classes defined in `ntdump/errors.py`).

use ntdump_core::Error;
use pyo3::exceptions::{PyFileNotFoundError, PyOSError, PyPermissionError, PyValueError};
use pyo3::PyErr;

pyo3::import_exception!(ntdump.errors, DumpFormatError);
pyo3::import_exception!(ntdump.errors, TranslationError);
pyo3::import_exception!(ntdump.errors, PageNotPresentError);
pyo3::import_exception!(ntdump.errors, PageNotInDumpError);
pyo3::import_exception!(ntdump.errors, PeFormatError);
pyo3::import_exception!(ntdump.errors, SymbolError);
pyo3::import_exception!(ntdump.errors, UnsupportedError);
pyo3::import_exception!(ntdump.errors, InternalError);
pyo3::import_exception!(ntdump.errors, ReadLimitError);
pyo3::import_exception!(ntdump.errors, OutOfMemoryError);

/// Turn a `MemoryError` from allocating a result of `n` bytes into ntdump's `OutOfMemoryError` (also a
/// `MemoryError`); other errors pass through.
pub fn out_of_memory(py: pyo3::Python<'_>, e: PyErr, what: &str, n: usize) -> PyErr {
    if e.is_instance_of::<pyo3::exceptions::PyMemoryError>(py) {
        OutOfMemoryError::new_err(format!(
            "{what}: cannot allocate {n:#x} bytes for the result"
        ))
    } else {
        e
    }
}

/// Newtype so that `From<core::Error> for PyErr` can live here (orphan rule).
pub struct PyCoreError(pub Error);

impl From<Error> for PyCoreError {
    fn from(e: Error) -> Self {
        PyCoreError(e)
    }
}

impl From<PyCoreError> for PyErr {
    fn from(e: PyCoreError) -> PyErr {
        let msg = e.0.to_string();
        match e.0 {
            Error::Io { source, .. } => match source.kind() {
                std::io::ErrorKind::NotFound => PyFileNotFoundError::new_err(msg),
                std::io::ErrorKind::PermissionDenied => PyPermissionError::new_err(msg),
                _ => PyOSError::new_err(msg),
            },
            Error::Format { offset, .. } => DumpFormatError::new_err((msg, offset)),
            Error::NotPresent {
                va,
                level,
                pte,
                kind,
            } => PageNotPresentError::new_err((msg, va.0, level.as_str(), pte, kind.as_str())),
            Error::NotInDump { va, pa } => {
                PageNotInDumpError::new_err((msg, va.map(|v| v.0), pa.0))
            }
            Error::NotCaptured { va, .. } => TranslationError::new_err((msg, va.0)),
            Error::Pe { .. } => PeFormatError::new_err(msg),
            Error::Symbol(_) => SymbolError::new_err(msg),
            Error::Unsupported(_) => UnsupportedError::new_err(msg),
            _ => PyValueError::new_err(msg),
        }
    }
}

/// Result alias for binding code.
pub type CoreResult<T> = Result<T, PyCoreError>;
