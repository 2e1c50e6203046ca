//! The one way records cross the boundary. Core records derive `serde::Serialize` (names and shapes:
//! `ntdump_core::ser`); [`record`] turns one into a dict and [`value`] any serialized value into its
//! Python form (`pythonize`: tuples stay tuples, `None` is `None`), [`columns`] a slice of records into
//! a dict of columns (one list per field), and [`arrays!`] hands a struct of `Vec` columns to numpy
//! without a copy.

use std::borrow::Borrow;

use crate::errors::InternalError;
use ntdump_core::ser;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use pythonize::pythonize;
use serde::Serialize;

/// A dict (a record, or columns).
pub type Dict<'py> = Bound<'py, PyDict>;
/// Any Python value (a tuple, a list of records …).
pub type Any<'py> = Bound<'py, PyAny>;

/// A record (a struct) as a dict of its serialized fields.
pub fn record<'py, T: Serialize + ?Sized>(py: Python<'py>, v: &T) -> PyResult<Dict<'py>> {
    Ok(value(py, v)?.cast_into::<PyDict>()?)
}

/// Any serialized value: a tuple, a list of records, a number ….
pub fn value<'py, T: Serialize + ?Sized>(py: Python<'py>, v: &T) -> PyResult<Any<'py>> {
    Ok(pythonize(py, v)?)
}

/// Records as columns: `{field: [its value in each row]}`, in field order, every column present even
/// for no rows (`ntdump_core::ser::columns`); `rows` are records or references to them.
pub fn columns<'py, R: Serialize + Default, B: Borrow<R>>(
    py: Python<'py>,
    rows: &[B],
) -> PyResult<Dict<'py>> {
    let cols = ser::columns::<R, B, _>(rows, &mut Py3(py)).map_err(InternalError::new_err)?;
    let d = PyDict::new(py);
    for (name, col) in cols {
        d.set_item(name, PyList::new(py, col)?)?;
    }
    Ok(d)
}

/// Cells as Python objects.
struct Py3<'py>(Python<'py>);

impl<'py> ser::Cells for Py3<'py> {
    type Cell = Any<'py>;
    type Error = pythonize::PythonizeError;
    fn cell<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<Any<'py>, Self::Error> {
        pythonize(self.0, v)
    }
}

/// `arrays!(py, s; a, b)`: `{"a": ndarray(s.a), "b": ndarray(s.b)}`, moving each `Vec` field of the
/// struct of columns `s` into numpy without a copy.
macro_rules! arrays {
    ($py:expr, $s:expr; $($f:ident),* $(,)?) => {{
        let d = pyo3::types::PyDict::new($py);
        $( d.set_item(stringify!($f), numpy::IntoPyArray::into_pyarray($s.$f, $py))?; )*
        d
    }};
}

/// `dict!(d; a, b)`: dict `d` with `d["a"] = a`, `d["b"] = b`, for values a binding computes (error
/// objects, numpy arrays, columns no core record holds).
macro_rules! dict {
    ($d:expr; $($k:ident),* $(,)?) => {{
        let d = $d;
        $( d.set_item(stringify!($k), $k)?; )*
        d
    }};
}

pub(crate) use {arrays, dict};
