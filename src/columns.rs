//! The one way records cross the boundary. Core records derive `serde::Serialize` (names and shapes:
//! `ntdump_core::ser`); [`record`] turns one into a dict and [`value`] any serialized value into its
//! Python form (`pythonize`: tuples stay tuples, `None` is `None`), [`columns`] turns a slice of records
//! into a dict of columns (one list per field), and [`arrays!`] hands a struct of `Vec` columns to numpy
//! without a copy.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use pythonize::{pythonize, PythonizeError as E};
use serde::ser::{Error as _, Impossible, Serialize, SerializeStruct, Serializer};

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

/// Records as columns: `{field: [its value in each row]}`, in field order. The field names come from
/// `T::default()`, so an empty table still has every column.
pub fn columns<'py, 'a, T: Serialize + Default + 'a>(
    py: Python<'py>,
    rows: impl IntoIterator<Item = &'a T>,
) -> PyResult<Dict<'py>> {
    let mut t = Table {
        py,
        cols: Vec::new(),
        at: None,
    };
    T::default().serialize(&mut t)?;
    for r in rows {
        t.at = Some(0);
        r.serialize(&mut t)?;
    }
    let d = PyDict::new(py);
    for (name, col) in t.cols {
        d.set_item(name, PyList::new(py, col)?)?;
    }
    Ok(d)
}

/// The columns being filled; `at` is the next field of the current row (None: collecting names).
struct Table<'py> {
    py: Python<'py>,
    cols: Vec<(&'static str, Vec<Bound<'py, PyAny>>)>,
    at: Option<usize>,
}

impl SerializeStruct for &mut Table<'_> {
    type Ok = ();
    type Error = E;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, k: &'static str, v: &T) -> Result<(), E> {
        let Some(i) = self.at else {
            self.cols.push((k, Vec::new()));
            return Ok(());
        };
        let col = self.cols.get_mut(i).filter(|c| c.0 == k);
        let col = col.ok_or_else(|| E::custom(format!("column {k} out of order")))?;
        col.1.push(pythonize(self.py, v)?);
        self.at = Some(i + 1);
        Ok(())
    }

    fn end(self) -> Result<(), E> {
        Ok(())
    }
}

type No = Impossible<(), E>;

/// Serializer methods a row never calls (a row is a struct): each is an error.
macro_rules! refuse {
    ($($f:ident $(<$g:ident>)? ($($t:ty),*) -> $r:ty;)*) => {$(
        fn $f$(<$g: Serialize + ?Sized>)?(self, $(_: $t),*) -> Result<$r, E> {
            Err(E::custom("a column table's rows must be structs"))
        }
    )*};
}

impl Serializer for &mut Table<'_> {
    type Ok = ();
    type Error = E;
    type SerializeStruct = Self;
    type SerializeSeq = No;
    type SerializeTuple = No;
    type SerializeTupleStruct = No;
    type SerializeTupleVariant = No;
    type SerializeMap = No;
    type SerializeStructVariant = No;

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, E> {
        Ok(self)
    }

    refuse! {
        serialize_bool(bool) -> (); serialize_i8(i8) -> (); serialize_i16(i16) -> ();
        serialize_i32(i32) -> (); serialize_i64(i64) -> (); serialize_u8(u8) -> ();
        serialize_u16(u16) -> (); serialize_u32(u32) -> (); serialize_u64(u64) -> ();
        serialize_f32(f32) -> (); serialize_f64(f64) -> (); serialize_char(char) -> ();
        serialize_str(&str) -> (); serialize_bytes(&[u8]) -> (); serialize_none() -> ();
        serialize_some<T>(&T) -> (); serialize_unit() -> (); serialize_unit_struct(&'static str) -> ();
        serialize_unit_variant(&'static str, u32, &'static str) -> ();
        serialize_newtype_struct<T>(&'static str, &T) -> ();
        serialize_newtype_variant<T>(&'static str, u32, &'static str, &T) -> ();
        serialize_seq(Option<usize>) -> No; serialize_tuple(usize) -> No;
        serialize_tuple_struct(&'static str, usize) -> No;
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> No;
        serialize_map(Option<usize>) -> No;
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> No;
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
