//! Records as columns: a table of struct records serializes as `{field: [its value in each row]}`, the
//! shape pandas builds a DataFrame from without a per-row dict. Format-agnostic (serde): the Python
//! binding turns it into a dict of lists, `serde_json` into an object of arrays.
//!
//! Each column is written by serializing every row again and keeping only that column's field
//! (`Pick`), so no row is copied or buffered; a row with f fields costs f passes over its field list,
//! each a few comparisons for the fields passed over.

use std::borrow::Borrow;
use std::marker::PhantomData;

use serde::ser::{
    Error as _, Impossible, Serialize, SerializeMap, SerializeSeq, SerializeStruct, Serializer,
};

/// `rows` (struct records of type `R`) serialized as columns, in field order. The column names come
/// from `R::default()`, so an empty table still has every column. A row that serializes as anything
/// but a struct with the same fields in the same order is a serialization error, not a panic.
pub struct Columns<'a, R, B = R> {
    rows: &'a [B],
    row: PhantomData<R>,
}

impl<'a, R, B: Borrow<R>> Columns<'a, R, B> {
    /// The table of `rows` (records, or references to them).
    pub fn new(rows: &'a [B]) -> Self {
        Columns {
            rows,
            row: PhantomData,
        }
    }
}

impl<R: Serialize + Default, B: Borrow<R>> Serialize for Columns<'_, R, B> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut names = Pick::<S>::new(None, None);
        R::default().serialize(&mut names)?;
        let mut m = s.serialize_map(Some(names.names.len()))?;
        for (i, name) in names.names.iter().enumerate() {
            let col = Column::<R, B> {
                rows: self.rows,
                field: (i, name),
                row: PhantomData,
            };
            m.serialize_entry(name, &col)?;
        }
        m.end()
    }
}

/// Field `field` (index, name) of every row, as a sequence.
struct Column<'a, R, B> {
    rows: &'a [B],
    field: (usize, &'static str),
    row: PhantomData<R>,
}

impl<R: Serialize, B: Borrow<R>> Serialize for Column<'_, R, B> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.rows.len()))?;
        for r in self.rows {
            seq.serialize_element(&Cell {
                row: r.borrow(),
                field: self.field,
            })?;
        }
        seq.end()
    }
}

/// Field `field` (index, name) of one row.
struct Cell<'a, R> {
    row: &'a R,
    field: (usize, &'static str),
}

impl<R: Serialize> Serialize for Cell<'_, R> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut p = Pick::new(Some(self.field), Some(s));
        self.row.serialize(&mut p)?;
        let missing = || S::Error::custom(format!("a row has no field {}", self.field.1));
        p.out.ok_or_else(missing)?
    }
}

/// Serializes a struct by handing field `want` (index, name) to `inner` (its result kept in `out`);
/// with `want` None, it only collects the field names.
struct Pick<S: Serializer> {
    want: Option<(usize, &'static str)>,
    at: usize,
    names: Vec<&'static str>,
    inner: Option<S>,
    out: Option<Result<S::Ok, S::Error>>,
}

impl<S: Serializer> Pick<S> {
    fn new(want: Option<(usize, &'static str)>, inner: Option<S>) -> Self {
        let (at, names, out) = (0, Vec::new(), None);
        Pick {
            want,
            at,
            names,
            inner,
            out,
        }
    }
}

impl<S: Serializer> SerializeStruct for &mut Pick<S> {
    type Ok = ();
    type Error = S::Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        k: &'static str,
        v: &T,
    ) -> Result<(), S::Error> {
        match self.want {
            None => self.names.push(k),
            Some((i, name)) if i == self.at && name != k => {
                return Err(S::Error::custom(format!(
                    "column {name} out of order (row has {k})"
                )))
            }
            Some((i, _)) if i == self.at => {
                let inner = self
                    .inner
                    .take()
                    .ok_or_else(|| S::Error::custom("field picked twice"))?;
                self.out = Some(v.serialize(inner));
            }
            Some(_) => {}
        }
        self.at += 1;
        Ok(())
    }

    fn end(self) -> Result<(), S::Error> {
        Ok(())
    }
}

type No<E> = Impossible<(), E>;

/// Serializer methods a row never calls (a row is a struct): each is an error.
macro_rules! refuse {
    ($($f:ident $(<$g:ident>)? ($($t:ty),*) -> $r:ty;)*) => {$(
        fn $f$(<$g: Serialize + ?Sized>)?(self, $(_: $t),*) -> Result<$r, S::Error> {
            Err(S::Error::custom("a column table's rows must be structs"))
        }
    )*};
}

impl<S: Serializer> Serializer for &mut Pick<S> {
    type Ok = ();
    type Error = S::Error;
    type SerializeStruct = Self;
    type SerializeSeq = No<S::Error>;
    type SerializeTuple = No<S::Error>;
    type SerializeTupleStruct = No<S::Error>;
    type SerializeTupleVariant = No<S::Error>;
    type SerializeMap = No<S::Error>;
    type SerializeStructVariant = No<S::Error>;

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, S::Error> {
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
        serialize_seq(Option<usize>) -> No<S::Error>; serialize_tuple(usize) -> No<S::Error>;
        serialize_tuple_struct(&'static str, usize) -> No<S::Error>;
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> No<S::Error>;
        serialize_map(Option<usize>) -> No<S::Error>;
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> No<S::Error>;
    }
}

#[cfg(test)]
mod tests {
    use serde::Serialize;
    use serde_json::{json, to_value};

    use super::Columns;

    #[derive(Serialize, Default)]
    struct Row {
        a: u32,
        #[serde(rename = "b_name")]
        b: Option<String>,
        c: (u8, bool),
    }

    #[test]
    fn rows_become_columns_in_field_order() {
        let rows = [
            Row {
                a: 1,
                b: None,
                c: (2, true),
            },
            Row {
                a: 3,
                b: Some("x".into()),
                c: (4, false),
            },
        ];
        let v = to_value(Columns::<Row>::new(&rows)).unwrap();
        let want = json!({"a": [1, 3], "b_name": [null, "x"], "c": [[2, true], [4, false]]});
        assert_eq!(v, want);
        let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys.len(), 3);
        // References to rows, and an empty table, which still names every column.
        let refs: Vec<&Row> = rows.iter().rev().collect();
        assert_eq!(
            to_value(Columns::<Row, _>::new(&refs)).unwrap()["a"],
            json!([3, 1])
        );
        let empty = to_value(Columns::<Row>::new(&[])).unwrap();
        assert_eq!(empty, json!({"a": [], "b_name": [], "c": []}));
    }

    #[test]
    fn rows_that_are_not_structs_are_errors() {
        #[derive(Default)]
        struct Odd(bool);
        impl Serialize for Odd {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self.0 {
                    false => Row::default().serialize(s),
                    true => s.serialize_u8(1),
                }
            }
        }
        let e = to_value(Columns::<Odd>::new(&[Odd(true)])).unwrap_err();
        assert!(e.to_string().contains("must be structs"), "{e}");
        // Fewer fields than the default row: the missing cell is an error too.
        #[derive(Default)]
        struct Short(bool);
        impl Serialize for Short {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeStruct;
                let mut st = s.serialize_struct("Short", 2)?;
                st.serialize_field("a", &1)?;
                if !self.0 {
                    st.serialize_field("b", &2)?;
                }
                st.end()
            }
        }
        let e = to_value(Columns::<Short>::new(&[Short(true)])).unwrap_err();
        assert!(e.to_string().contains("no field b"), "{e}");
    }
}
