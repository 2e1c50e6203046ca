//! How records serialize (serde, no format chosen here): the names and shapes every front end sees.
//!
//! Record structs derive `Serialize`; enums with an `as_str` name serialize as that name; byte blobs as
//! bytes; a few fields as a count or a list. The Python binding turns a serialized record into a dict
//! (tuples stay tuples), and a slice of records into a dict of columns ([`columns`]).

use serde::{Serialize, Serializer};

pub mod columns;
pub use columns::{columns, Cells};

/// `impl Serialize` as `self.as_str()` for each type.
macro_rules! as_str {
    ($($t:ty),* $(,)?) => {$(
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    )*};
}
/// `impl Serialize` as the tuple of the listed fields, for records that travel as rows (`!pool` blocks,
/// page-walk steps, unwind codes).
macro_rules! tuple {
    ($t:ty: $($f:ident),* $(,)?) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                serde::Serialize::serialize(&($(&self.$f,)*), s)
            }
        }
    };
}

pub(crate) use {as_str, tuple};

/// A byte blob as bytes (serde's default is a list of numbers).
pub fn bytes<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(b)
}

/// A byte slice that serializes as bytes.
pub struct Bytes<'a>(pub &'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// A fixed-size array as a list (serde's default is a tuple).
pub fn list<T: Serialize, S: Serializer>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v)
}

/// A list as its length.
pub fn len<T, S: Serializer>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(v.len() as u64)
}

/// `(name, value)` pairs as a map.
pub fn map<K: Serialize, V: Serialize, S: Serializer>(
    v: &[(K, V)],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(v.iter().map(|(k, v)| (k, v)))
}

/// `(name, value)` pairs with the value as decimal text (values beyond 64 bits stay exact).
pub fn text_values<V: std::fmt::Display, S: Serializer>(
    v: &[(String, V)],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|(n, x)| (n, x.to_string())))
}

/// LoadedImports as (kind, [(entry VA, module index or None)], why it is unknown or "").
impl Serialize for crate::kernel::LoadedImports {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use crate::kernel::LoadedImports::{Modules, Unknown};
        let entries: &[_] = match self {
            Modules(v) => v,
            _ => &[],
        };
        let why = match self {
            Unknown(w) => w.as_str(),
            _ => "",
        };
        (self.kind(), entries, why).serialize(s)
    }
}

// Pool layouts as data (`pool::layout`): {name, size, [unit,] source, fields: {Windows field name:
// (offset, width in bytes) or (offset, (first bit, bit count))}}.

use crate::pool::layout::{BigPageLayout, BitField, Field, PoolHeaderLayout, TrackerLayout};

tuple!(Field: off, width);

/// A tracker layout by its name.
pub fn tracker_name<S: Serializer>(l: &TrackerLayout, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(l.name)
}

/// Layout overrides as the source of each, by structure.
pub fn layout_sources<S: Serializer>(
    o: &crate::layouts::LayoutOverrides,
    s: S,
) -> Result<S::Ok, S::Error> {
    o.sources().serialize(s)
}

/// A big-page layout by its name.
pub fn big_name<S: Serializer>(l: &BigPageLayout, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(l.name)
}

impl Serialize for BitField {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.off, (self.start, self.bits)).serialize(s)
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum At {
    Bytes(Field),
    Bits(BitField),
}

#[derive(Serialize)]
struct LayoutRecord {
    name: &'static str,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    unit: Option<u64>,
    source: &'static str,
    #[serde(serialize_with = "map")]
    fields: Vec<(&'static str, At)>,
}

/// A layout's record: its name, size (bytes), block unit (bytes, pool headers only), source, fields.
fn layout_record(
    name: &'static str,
    size: u64,
    unit: Option<u64>,
    source: &'static str,
    fields: Vec<(&'static str, At)>,
) -> LayoutRecord {
    LayoutRecord {
        name,
        size,
        unit,
        source,
        fields,
    }
}

impl Serialize for PoolHeaderLayout {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut fields = vec![
            ("PreviousSize", At::Bits(self.previous_size)),
            ("PoolIndex", At::Bits(self.pool_index)),
            ("BlockSize", At::Bits(self.block_size)),
            ("PoolType", At::Bits(self.pool_type)),
            (
                "PoolTag",
                At::Bytes(Field {
                    off: self.tag,
                    width: 4,
                }),
            ),
        ];
        let billed = self.process_billed.map(|off| Field { off, width: 8 });
        fields.extend(billed.map(|f| ("ProcessBilled", At::Bytes(f))));
        layout_record(self.name, self.size, Some(self.unit), self.source, fields).serialize(s)
    }
}

impl Serialize for TrackerLayout {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let fields = vec![
            ("Key", At::Bytes(self.key)),
            ("NonPagedAllocs", At::Bytes(self.nonpaged_allocs)),
            ("NonPagedFrees", At::Bytes(self.nonpaged_frees)),
            ("NonPagedBytes", At::Bytes(self.nonpaged_bytes)),
            ("PagedAllocs", At::Bytes(self.paged_allocs)),
            ("PagedFrees", At::Bytes(self.paged_frees)),
            ("PagedBytes", At::Bytes(self.paged_bytes)),
        ];
        layout_record(self.name, self.size, None, self.source, fields).serialize(s)
    }
}

impl Serialize for BigPageLayout {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let optional = [
            ("PoolType", self.pool_type.map(At::Bytes)),
            ("PoolType", self.pool_type_bits.map(At::Bits)),
            ("NumberOfBytes", self.number_of_bytes.map(At::Bytes)),
            ("NumberOfPages", self.number_of_pages.map(At::Bytes)),
            ("ProcessBilled", self.process_billed.map(At::Bytes)),
        ];
        let mut fields = vec![("Va", At::Bytes(self.va)), ("Key", At::Bytes(self.key))];
        fields.extend(optional.into_iter().filter_map(|(n, f)| Some((n, f?))));
        layout_record(self.name, self.size, None, self.source, fields).serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, to_value};

    use crate::pool::layout::{BIG_WIN10_X64, POOL_HEADER_X64};
    use crate::pool::page::{PoolBlock, PoolPage, WalkStatus};
    use crate::{Machine, Va};

    #[test]
    fn names_tuples_and_layouts() {
        assert_eq!(to_value(Machine::X64).unwrap(), json!("x64"));
        assert_eq!(to_value(Va(5)).unwrap(), json!(5));
        let b = PoolBlock {
            address: 1,
            size: 2,
            previous_size: 3,
            pool_index: 4,
            raw_type: 5,
            pool_type: 6,
            allocated: true,
            tag: 7,
            contains: false,
        };
        assert_eq!(
            to_value(b).unwrap(),
            json!([1, 2, 3, 4, 5, 6, true, 7, false])
        );
        let status = WalkStatus::Corrupt {
            at: 9,
            why: "bad".into(),
        };
        let p = PoolPage {
            va: 1,
            page: 0,
            header_size: 16,
            blocks: vec![],
            status,
            nearest: None,
            big: Some((0x1000, 7, 0x2000, 0, false)),
        };
        let want = json!({"va": 1, "page": 0, "header_size": 16, "blocks": [], "status": "corrupt",
                          "corrupt_at": 9, "why": "bad", "nearest": null,
                          "big": [0x1000, 7, 0x2000, 0, false]});
        assert_eq!(to_value(p).unwrap(), want);
        let h = to_value(POOL_HEADER_X64).unwrap();
        assert_eq!(h["unit"], json!(16));
        assert_eq!(h["fields"]["BlockSize"], json!([0, [16, 8]]));
        assert_eq!(h["fields"]["PoolTag"], json!([4, 4]));
        let big = to_value(BIG_WIN10_X64).unwrap();
        assert!(big.get("unit").is_none());
        assert_eq!(big["fields"]["PoolType"], json!([0xC, [8, 12]]));
    }

    #[test]
    fn user_names_parse_or_name_the_choices() {
        assert_eq!(Machine::parse("amd64").unwrap(), Machine::X64);
        assert!(Machine::parse("arm")
            .unwrap_err()
            .to_string()
            .contains("'x86' or 'x64'"));
        let f = crate::pool::PoolFilter::parse("paged").unwrap();
        assert_eq!(f, crate::pool::PoolFilter::Paged);
        assert!(crate::pool::PoolFilter::parse("x").is_err());
        assert_eq!(crate::pool::owners::padded_tag(b"Ab").unwrap(), *b"Ab  ");
        assert!(crate::pool::owners::padded_tag(b"").is_err());
        assert!(crate::pool::owners::padded_tag(b"ABCDE").is_err());
    }
}
