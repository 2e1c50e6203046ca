//! The one place where core errors become Python exceptions (classes defined in `ntdump/errors.py`).

use ntdump_core::pool::PoolError;
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
pyo3::import_exception!(ntdump.errors, PoolTableError);

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

/// Newtype for the pool's errors, which say which table could not be read and why.
pub struct PyPoolError(pub PoolError);

impl From<PyPoolError> for PyErr {
    fn from(e: PyPoolError) -> PyErr {
        let msg = e.0.to_string();
        match e.0 {
            PoolError::Unavailable { table, va, .. } => {
                PoolTableError::new_err((msg, table.as_str(), va, "unavailable"))
            }
            PoolError::Invalid { table, va, .. } => {
                PoolTableError::new_err((msg, table.as_str(), va, "invalid"))
            }
            PoolError::Core(c) => PyCoreError(c).into(),
            _ => PyValueError::new_err(msg),
        }
    }
}

/// A core error type that becomes a Python exception here.
pub trait ToPyErr {
    /// The Python exception.
    fn to_py(self) -> PyErr;
}

impl ToPyErr for Error {
    fn to_py(self) -> PyErr {
        PyCoreError(self).into()
    }
}

impl ToPyErr for PoolError {
    fn to_py(self) -> PyErr {
        PyPoolError(self).into()
    }
}

/// Run core work with the GIL released and map its error: the one way the bindings call into the core
/// for anything that touches more than a page.
pub fn run<T, E, F>(py: pyo3::Python<'_>, f: F) -> pyo3::PyResult<T>
where
    F: FnOnce() -> Result<T, E> + Send,
    T: Send,
    E: ToPyErr + Send,
{
    py.detach(f).map_err(ToPyErr::to_py)
}

/// Result alias for binding code.
pub type CoreResult<T> = Result<T, PyCoreError>;
