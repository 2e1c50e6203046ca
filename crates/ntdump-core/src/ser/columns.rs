//! Records as columns: a table of struct records becomes `[(field, [its value in each row])]`, the
//! shape pandas builds a DataFrame from without a per-row dict. Format-agnostic: a front end says how
//! one value becomes one of its cells ([`Cells`]: the Python binding makes a Python object of each,
//! a JSON writer a `serde_json::Value`), and [`columns`] does the rest in one pass over each row.

use std::borrow::Borrow;
use std::fmt::Display;

use serde::ser::{Impossible, Serialize, SerializeStruct, Serializer};

/// How one serialized value becomes a cell of the front end's table.
pub trait Cells {
    /// A cell (e.g. a Python object).
    type Cell;
    /// Why a value could not become a cell.
    type Error: Display;
    /// The cell of `v`.
    fn cell<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<Self::Cell, Self::Error>;
}

/// A column: its field name and one cell per row.
pub type Column<C> = (&'static str, Vec<C>);

/// `rows` (struct records of type `R`, or references to them) as columns in field order, each value
/// made a cell by `cells`. The column names come from `R::default()`, so an empty table still has
/// every column. A row that is not a struct with those fields in that order is an error naming what
/// is wrong, not a panic.
pub fn columns<R, B, C>(rows: &[B], cells: &mut C) -> Result<Vec<Column<C::Cell>>, String>
where
    R: Serialize + Default,
    B: Borrow<R>,
    C: Cells,
{
    let mut t = Table {
        cells,
        cols: Vec::new(),
        at: None,
    };
    R::default().serialize(&mut t).map_err(|e| e.0)?;
    for c in &mut t.cols {
        c.1.reserve_exact(rows.len());
    }
    for r in rows {
        t.at = Some(0);
        r.borrow().serialize(&mut t).map_err(|e| e.0)?;
        if t.at != Some(t.cols.len()) {
            return Err(format!("a row has {:?} of {} fields", t.at, t.cols.len()));
        }
    }
    Ok(t.cols)
}

/// The columns being filled; `at` is the next field of the current row (None: collecting names).
struct Table<'c, C: Cells> {
    cells: &'c mut C,
    cols: Vec<Column<C::Cell>>,
    at: Option<usize>,
}

/// Why a row could not be taken apart.
#[derive(Debug)]
struct Bad(String);

impl Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Bad {}

impl serde::ser::Error for Bad {
    fn custom<T: Display>(msg: T) -> Self {
        Bad(msg.to_string())
    }
}

impl<C: Cells> SerializeStruct for &mut Table<'_, C> {
    type Ok = ();
    type Error = Bad;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        k: &'static str,
        v: &T,
    ) -> Result<(), Bad> {
        let Some(i) = self.at else {
            self.cols.push((k, Vec::new()));
            return Ok(());
        };
        let col = self.cols.get_mut(i).filter(|c| c.0 == k);
        let col = col.ok_or_else(|| Bad(format!("column {k} out of order")))?;
        col.1.push(
            self.cells
                .cell(v)
                .map_err(|e| Bad(format!("column {k}: {e}")))?,
        );
        self.at = Some(i + 1);
        Ok(())
    }

    fn end(self) -> Result<(), Bad> {
        Ok(())
    }
}

type No = Impossible<(), Bad>;

/// Serializer methods a row never calls (a row is a struct): each is an error.
macro_rules! refuse {
    ($($f:ident $(<$g:ident>)? ($($t:ty),*) -> $r:ty;)*) => {$(
        fn $f$(<$g: Serialize + ?Sized>)?(self, $(_: $t),*) -> Result<$r, Bad> {
            Err(Bad("a column table's rows must be structs".into()))
        }
    )*};
}

impl<C: Cells> Serializer for &mut Table<'_, C> {
    type Ok = ();
    type Error = Bad;
    type SerializeStruct = Self;
    type SerializeSeq = No;
    type SerializeTuple = No;
    type SerializeTupleStruct = No;
    type SerializeTupleVariant = No;
    type SerializeMap = No;
    type SerializeStructVariant = No;

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, Bad> {
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

#[cfg(test)]
mod tests {
    use serde::Serialize;
    use serde_json::{json, Value};

    use super::{columns, Cells};

    /// Cells as JSON values.
    struct Json;

    impl Cells for Json {
        type Cell = Value;
        type Error = serde_json::Error;
        fn cell<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<Value, Self::Error> {
            serde_json::to_value(v)
        }
    }

    fn table<R: Serialize + Default, B: std::borrow::Borrow<R>>(
        rows: &[B],
    ) -> Result<Value, String> {
        let cols = columns::<R, B, _>(rows, &mut Json)?;
        Ok(Value::Object(
            cols.into_iter()
                .map(|(k, v)| (k.into(), Value::Array(v)))
                .collect(),
        ))
    }

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
        let want = json!({"a": [1, 3], "b_name": [null, "x"], "c": [[2, true], [4, false]]});
        assert_eq!(table::<Row, _>(&rows).unwrap(), want);
        let names: Vec<_> = columns::<Row, _, _>(&rows, &mut Json).unwrap();
        let names: Vec<_> = names.iter().map(|c| c.0).collect();
        assert_eq!(names, ["a", "b_name", "c"]);
        // References to rows, and an empty table, which still names every column.
        let refs: Vec<&Row> = rows.iter().rev().collect();
        assert_eq!(table::<Row, _>(&refs).unwrap()["a"], json!([3, 1]));
        let empty = table::<Row, Row>(&[]).unwrap();
        assert_eq!(empty, json!({"a": [], "b_name": [], "c": []}));
    }

    #[test]
    fn rows_that_are_not_structs_of_the_fields_are_errors() {
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
        let e = table::<Odd, _>(&[Odd(true)]).unwrap_err();
        assert!(e.contains("must be structs"), "{e}");
        // Fewer fields than the default row, or a field out of order.
        #[derive(Default)]
        struct Short(u8);
        impl Serialize for Short {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeStruct;
                let mut st = s.serialize_struct("Short", 2)?;
                match self.0 {
                    0 => {
                        st.serialize_field("a", &1)?;
                        st.serialize_field("b", &2)?;
                    }
                    1 => st.serialize_field("a", &1)?,
                    _ => st.serialize_field("b", &2)?,
                }
                st.end()
            }
        }
        assert!(table::<Short, _>(&[Short(1)])
            .unwrap_err()
            .contains("of 2 fields"));
        assert!(table::<Short, _>(&[Short(2)])
            .unwrap_err()
            .contains("b out of order"));
    }
}
