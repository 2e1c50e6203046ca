//! The one way records cross the boundary: a dict of named fields, or a dict of columns (Python lists,
//! or numpy arrays handed over without a copy). Used by every binding instead of filling dicts by hand.

/// `record!(py, src, [a, b])`: `{"a": src.a, "b": src.b}` (values cloned).
macro_rules! record {
    ($py:expr, $src:expr, [$($f:ident),* $(,)?]) => {{
        let d = pyo3::types::PyDict::new($py);
        $( d.set_item(stringify!($f), $src.$f.clone())?; )*
        d
    }};
}

/// `columns!(py, rows, |x| { "a" => x.a, "b" => f(x) })`: `{"a": [..], "b": [..]}`, one Python list per
/// column, one element per row.
macro_rules! columns {
    ($py:expr, $rows:expr, |$x:ident| { $($name:literal => $e:expr),* $(,)? }) => {{
        let d = pyo3::types::PyDict::new($py);
        $( d.set_item($name, $rows.iter().map(|$x| $e).collect::<Vec<_>>())?; )*
        d
    }};
}

/// `arrays!(py, s, [a, b])`: `{"a": ndarray(s.a), "b": ndarray(s.b)}`, moving each `Vec` field of the
/// struct-of-columns `s` into numpy without a copy.
macro_rules! arrays {
    ($py:expr, $s:expr, [$($f:ident),* $(,)?]) => {{
        let d = pyo3::types::PyDict::new($py);
        $( d.set_item(stringify!($f), numpy::IntoPyArray::into_pyarray($s.$f, $py))?; )*
        d
    }};
}

pub(crate) use {arrays, columns, record};
