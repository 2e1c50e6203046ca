//! The one place where core errors become Python exceptions (classes defined in `ntdump/errors.py`).

use ntdump_core::pool::PoolError;
use ntdump_core::Error;
use pyo3::exceptions::{PyFileNotFoundError, PyOSError, PyPermissionError, PyValueError};
use pyo3::{PyErr, PyResult, Python};

macro_rules! import {
    ($($e:ident),*) => { $(pyo3::import_exception!(ntdump.errors, $e);)* };
}
import! {
    DumpFormatError, TranslationError, PageNotPresentError, PageNotInDumpError, PeFormatError,
    SymbolError, UnsupportedError, InternalError, ReadLimitError, OutOfMemoryError, PoolTableError
}

/// A core error type that becomes a Python exception here.
pub trait ToPyErr {
    /// The Python exception.
    fn to_py(self) -> PyErr;
}

impl ToPyErr for Error {
    fn to_py(self) -> PyErr {
        let msg = self.to_string();
        match self {
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
            Error::ReadLimit { n, max, .. } => ReadLimitError::new_err((msg, n, max)),
            _ => PyValueError::new_err(msg),
        }
    }
}

/// The pool's errors say which table could not be read and why.
impl ToPyErr for PoolError {
    fn to_py(self) -> PyErr {
        match (self.table_failure(), self) {
            (Some((t, va, why)), e) => {
                PoolTableError::new_err((e.to_string(), t.as_str(), va, why))
            }
            (None, PoolError::Core(c)) => c.to_py(),
            (None, e) => PyValueError::new_err(e.to_string()),
        }
    }
}

/// `result.or_raise()?`: a core result with its error as the Python exception.
pub trait OrRaise<T> {
    /// The result, its error mapped.
    fn or_raise(self) -> PyResult<T>;
}

impl<T, E: ToPyErr> OrRaise<T> for Result<T, E> {
    fn or_raise(self) -> PyResult<T> {
        self.map_err(ToPyErr::to_py)
    }
}

/// Run core work with the GIL released and map its error: the one way the bindings call into the core
/// for anything that touches more than a page.
pub fn run<T: Send, E: ToPyErr + Send>(
    py: Python<'_>,
    f: impl FnOnce() -> Result<T, E> + Send,
) -> PyResult<T> {
    py.detach(f).or_raise()
}

/// Turn a `MemoryError` from allocating a result of `n` bytes into ntdump's `OutOfMemoryError` (also a
/// `MemoryError`); other errors pass through.
pub fn out_of_memory(py: Python<'_>, e: PyErr, what: &str, n: usize) -> PyErr {
    if e.is_instance_of::<pyo3::exceptions::PyMemoryError>(py) {
        OutOfMemoryError::new_err(format!(
            "{what}: cannot allocate {n:#x} bytes for the result"
        ))
    } else {
        e
    }
}
