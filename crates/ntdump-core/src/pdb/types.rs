//! Type records of a PDB (the TPI stream), read once into an owned table, and the layouts that
//! `dt` and `type_info` print: each field's offset (bytes), type, size (bytes) and bit field.
//!
//! Record kinds follow Microsoft's `cvinfo.h` (LF_CLASS/LF_STRUCTURE, LF_UNION, LF_ENUM,
//! LF_POINTER, LF_MODIFIER, LF_ARRAY, LF_BITFIELD, LF_FIELDLIST, LF_MEMBER, LF_BCLASS) as the
//! `pdb` crate parses them; primitive type indices (below 0x1000) are decoded here from the same
//! header (`T_INT4` = 0x74 …, mode bits 8–11 for pointers). Type names are WinDbg's (`Uint4B`,
//! `Ptr64 _LIST_ENTRY`, `[16] UChar`).
//!
//! A PDB is untrusted input: the table holds at most [`MAX_TYPES`] records, field lists are
//! followed through at most [`MAX_FIELD_LISTS`] continuations with a visited set, modifier and
//! base-class chains at most [`MAX_DEPTH`] deep, and a layout has at most [`MAX_FIELDS`] fields.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::Path;

use pdb::FallibleIterator;

use crate::error::{Error, Result};

/// Most type records read from one PDB (a Windows 11 kernel PDB has about 200,000).
pub const MAX_TYPES: usize = 4_000_000;
/// Most continuation records followed for one field list.
pub const MAX_FIELD_LISTS: usize = 4096;
/// Most fields in one layout (base classes flattened).
pub const MAX_FIELDS: usize = 65_536;
/// Deepest chain of modifiers, typedef-like indirections or base classes followed.
pub const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone)]
enum Member {
    Data { name: String, offset: u64, ty: u32 },
    Base { ty: u32, offset: u64 },
    Enumerate { name: String, value: i128 },
}

#[derive(Debug, Clone)]
enum Rec {
    Udt {
        name: String,
        size: u64,
        fields: Option<u32>,
        forward: bool,
        union: bool,
    },
    Enum {
        name: String,
        underlying: u32,
        fields: u32,
        forward: bool,
    },
    Pointer {
        target: u32,
        size: u8,
    },
    Modifier {
        target: u32,
    },
    Array {
        elem: u32,
        size: u32,
    },
    Bitfield {
        base: u32,
        pos: u8,
        len: u8,
    },
    FieldList {
        members: Vec<Member>,
        cont: Option<u32>,
    },
    Procedure,
    Other,
}

/// What kind of type a [`TypeDesc`] describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An integer, character, boolean or floating-point value (`signed`, `float` say which).
    Primitive,
    /// `void` (size 0).
    Void,
    /// A pointer (`size` 4 or 8 bytes; `target` the pointee).
    Pointer,
    /// An array (`count` elements of `target`).
    Array,
    /// A struct or class.
    Struct,
    /// A union.
    Union,
    /// An enum (`target` the underlying integer type).
    Enum,
    /// A function type (only pointed to).
    Function,
    /// A record ntdump does not describe.
    Unknown,
}

impl Kind {
    /// Lower-case name (`"struct"`, `"pointer"` …).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Primitive => "primitive",
            Kind::Void => "void",
            Kind::Pointer => "pointer",
            Kind::Array => "array",
            Kind::Struct => "struct",
            Kind::Union => "union",
            Kind::Enum => "enum",
            Kind::Function => "function",
            Kind::Unknown => "unknown",
        }
    }
}

crate::ser::as_str!(Kind);

/// One type, resolved through modifiers and forward references.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TypeDesc {
    /// The kind.
    pub kind: Kind,
    /// WinDbg's name: `Uint4B`, `Ptr64 _LIST_ENTRY`, `[4] Uint8B`, `_POOL_HEADER`.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Pointee (pointer), element (array), underlying type (enum): a type index.
    pub target: Option<u32>,
    /// Array element count.
    pub count: u64,
    /// Primitive: signed integer.
    pub signed: bool,
    /// Primitive: floating point.
    pub float: bool,
    /// The resolved type index (complete definition for a struct, union or enum).
    pub index: u32,
}

/// One field of a layout.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Field {
    /// Field name.
    pub name: String,
    /// Byte offset from the start of the outermost type.
    pub offset: u64,
    /// The field's type (for a bit field: the storage type).
    #[serde(rename = "type")]
    pub ty: TypeDesc,
    /// Bit field: first bit within the storage unit.
    pub bit_position: Option<u8>,
    /// Bit field: number of bits.
    pub bit_length: Option<u8>,
}

/// The layout of a struct, union or enum.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Layout {
    /// The type itself.
    #[serde(flatten)]
    pub ty: TypeDesc,
    /// Fields in declaration order (base classes first), offsets in bytes.
    pub fields: Vec<Field>,
    /// Enumerators (enum only): name and value.
    #[serde(serialize_with = "crate::ser::text_values")]
    pub enumerators: Vec<(String, i128)>,
}

/// Every type record of one PDB, owned.
pub struct TypeTable {
    recs: Vec<Rec>,
    by_name: HashMap<String, u32>,
    ptr_size: u8,
}

const FIRST: u32 = 0x1000;

fn perr(path: &Path, e: pdb::Error) -> Error {
    Error::Symbol(format!("{}: not a readable PDB: {e}", path.display()))
}

fn variant(v: &pdb::Variant) -> i128 {
    match *v {
        pdb::Variant::U8(x) => x.into(),
        pdb::Variant::U16(x) => x.into(),
        pdb::Variant::U32(x) => x.into(),
        pdb::Variant::U64(x) => x.into(),
        pdb::Variant::I8(x) => x.into(),
        pdb::Variant::I16(x) => x.into(),
        pdb::Variant::I32(x) => x.into(),
        pdb::Variant::I64(x) => x.into(),
    }
}

fn member(d: &pdb::TypeData<'_>) -> Option<Member> {
    Some(match d {
        pdb::TypeData::Member(m) => Member::Data {
            name: m.name.to_string().into_owned(),
            offset: m.offset,
            ty: m.field_type.0,
        },
        pdb::TypeData::BaseClass(b) => Member::Base {
            ty: b.base_class.0,
            offset: b.offset.into(),
        },
        pdb::TypeData::Enumerate(e) => Member::Enumerate {
            name: e.name.to_string().into_owned(),
            value: variant(&e.value),
        },
        _ => return None,
    })
}

fn record(d: pdb::TypeData<'_>) -> Rec {
    use pdb::TypeData as T;
    match d {
        T::Class(c) => Rec::Udt {
            name: c.name.to_string().into_owned(),
            size: c.size,
            fields: c.fields.map(|f| f.0),
            forward: c.properties.forward_reference(),
            union: false,
        },
        T::Union(u) => Rec::Udt {
            name: u.name.to_string().into_owned(),
            size: u.size,
            fields: Some(u.fields.0),
            forward: u.properties.forward_reference(),
            union: true,
        },
        T::Enumeration(e) => Rec::Enum {
            name: e.name.to_string().into_owned(),
            underlying: e.underlying_type.0,
            fields: e.fields.0,
            forward: e.properties.forward_reference(),
        },
        T::Pointer(p) => Rec::Pointer {
            target: p.underlying_type.0,
            size: p.attributes.size(),
        },
        T::Modifier(m) => Rec::Modifier {
            target: m.underlying_type.0,
        },
        T::Array(a) => Rec::Array {
            elem: a.element_type.0,
            size: a.dimensions.last().copied().unwrap_or(0),
        },
        T::Bitfield(b) => Rec::Bitfield {
            base: b.underlying_type.0,
            pos: b.position,
            len: b.length,
        },
        T::FieldList(f) => Rec::FieldList {
            members: f.fields.iter().filter_map(member).collect(),
            cont: f.continuation.map(|c| c.0),
        },
        T::Procedure(_) | T::MemberFunction(_) => Rec::Procedure,
        _ => Rec::Other,
    }
}

/// A primitive type index (below 0x1000, `cvinfo.h`): (WinDbg name, size, signed, float); None for
/// `void` and unknown kinds.
fn primitive(kind: u32) -> Option<(&'static str, u64, bool, bool)> {
    Some(match kind {
        0x10 | 0x70 | 0x68 => ("Char", 1, true, false),
        0x20 | 0x69 => ("UChar", 1, false, false),
        0x30 => ("Bool", 1, false, false),
        0x71 => ("Wchar", 2, false, false),
        0x7a => ("Char16", 2, false, false),
        0x7b => ("Char32", 4, false, false),
        0x11 | 0x72 => ("Int2B", 2, true, false),
        0x21 | 0x73 | 0x31 => ("Uint2B", 2, false, false),
        0x12 | 0x74 => ("Int4B", 4, true, false),
        0x22 | 0x75 | 0x32 => ("Uint4B", 4, false, false),
        0x08 => ("HRESULT", 4, true, false),
        0x13 | 0x76 => ("Int8B", 8, true, false),
        0x23 | 0x77 | 0x33 => ("Uint8B", 8, false, false),
        0x14 | 0x78 => ("Int16B", 16, true, false),
        0x24 | 0x79 => ("Uint16B", 16, false, false),
        0x46 => ("Float16", 2, false, true),
        0x40 => ("Float", 4, false, true),
        0x41 => ("Double", 8, false, true),
        0x42 => ("Float80", 10, false, true),
        0x43 => ("Float128", 16, false, true),
        _ => return None,
    })
}

impl TypeTable {
    /// Read every type record of the PDB at `path`.
    pub fn read(path: &Path) -> Result<TypeTable> {
        super::guarded(path, || Self::read_inner(path))
    }

    fn read_inner(path: &Path) -> Result<TypeTable> {
        let f = File::open(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut pdb = pdb::PDB::open(f).map_err(|e| perr(path, e))?;
        let ptr_size = match pdb.debug_information().ok().map(|d| d.machine_type()) {
            Some(Ok(pdb::MachineType::X86)) => 4,
            _ => 8,
        };
        let tpi = pdb.type_information().map_err(|e| perr(path, e))?;
        let mut recs = Vec::new();
        let mut it = tpi.iter();
        while let Some(t) = it.next().map_err(|e| perr(path, e))? {
            if recs.len() >= MAX_TYPES {
                return Err(Error::Symbol(format!(
                    "{}: more than {MAX_TYPES} type records",
                    path.display()
                )));
            }
            debug_assert_eq!(t.index().0 as usize, FIRST as usize + recs.len());
            // One malformed record (the pdb crate panics on a few, see `guarded`) is `Other`,
            // not the end of the table.
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                t.parse().map(record).unwrap_or(Rec::Other)
            }));
            recs.push(r.unwrap_or(Rec::Other));
        }
        let mut by_name = HashMap::new();
        for (i, r) in recs.iter().enumerate() {
            let (name, forward) = match r {
                Rec::Udt { name, forward, .. } | Rec::Enum { name, forward, .. } => {
                    (name, *forward)
                }
                _ => continue,
            };
            if !forward {
                by_name.entry(name.clone()).or_insert(FIRST + i as u32);
            }
        }
        Ok(TypeTable {
            recs,
            by_name,
            ptr_size,
        })
    }

    /// Number of type records.
    pub fn len(&self) -> usize {
        self.recs.len()
    }

    /// True when the PDB has no type records.
    pub fn is_empty(&self) -> bool {
        self.recs.is_empty()
    }

    /// Pointer size of the PDB's machine, bytes.
    pub fn pointer_size(&self) -> u8 {
        self.ptr_size
    }

    fn rec(&self, idx: u32) -> Option<&Rec> {
        idx.checked_sub(FIRST)
            .and_then(|i| self.recs.get(i as usize))
    }

    /// Names of the struct, union and enum types that have a definition, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.by_name.keys().cloned().collect();
        v.sort();
        v
    }

    /// The type index of the definition of `name` (a struct, union or enum).
    pub fn find(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    /// Describe type index `idx`, following modifiers and forward references.
    pub fn describe(&self, idx: u32) -> TypeDesc {
        self.describe_depth(idx, 0)
    }

    fn unknown(idx: u32) -> TypeDesc {
        TypeDesc {
            kind: Kind::Unknown,
            name: format!("<type {idx:#x}>"),
            size: 0,
            target: None,
            count: 0,
            signed: false,
            float: false,
            index: idx,
        }
    }

    fn describe_depth(&self, idx: u32, depth: usize) -> TypeDesc {
        if depth > MAX_DEPTH {
            return Self::unknown(idx);
        }
        let mut d = Self::unknown(idx);
        if idx < FIRST {
            let mode = (idx >> 8) & 0xF;
            let kind = idx & 0xFF;
            if mode != 0 {
                let size: u64 = match mode {
                    4 => 4,
                    6 => 8,
                    7 => 16,
                    5 => 6,
                    _ => 2,
                };
                let pointee = self.describe_depth(kind, depth + 1);
                d.kind = Kind::Pointer;
                d.name = format!("Ptr{} {}", size * 8, pointee.name);
                d.size = size;
                d.target = Some(kind);
                return d;
            }
            if kind == 0x03 {
                d.kind = Kind::Void;
                d.name = "Void".into();
                return d;
            }
            if let Some((n, size, signed, float)) = primitive(kind) {
                d.kind = Kind::Primitive;
                d.name = n.into();
                d.size = size;
                d.signed = signed;
                d.float = float;
            }
            return d;
        }
        match self.rec(idx) {
            Some(Rec::Udt {
                name,
                size,
                forward,
                union,
                ..
            }) => {
                if *forward {
                    if let Some(def) = self.find(name) {
                        if def != idx {
                            return self.describe_depth(def, depth + 1);
                        }
                    }
                }
                d.kind = if *union { Kind::Union } else { Kind::Struct };
                d.name = name.clone();
                d.size = *size;
            }
            Some(Rec::Enum {
                name,
                underlying,
                forward,
                ..
            }) => {
                let def = if *forward { self.find(name) } else { None };
                if let Some(def) = def.filter(|&x| x != idx) {
                    return self.describe_depth(def, depth + 1);
                }
                let u = self.describe_depth(*underlying, depth + 1);
                d.kind = Kind::Enum;
                d.name = name.clone();
                d.size = u.size;
                d.signed = u.signed;
                d.target = Some(*underlying);
            }
            Some(Rec::Pointer { target, size }) => {
                let size = if *size == 0 {
                    self.ptr_size.into()
                } else {
                    u64::from(*size)
                };
                let t = self.describe_depth(*target, depth + 1);
                d.kind = Kind::Pointer;
                d.name = format!("Ptr{} {}", size * 8, t.name);
                d.size = size;
                d.target = Some(*target);
            }
            Some(Rec::Modifier { target }) => return self.describe_depth(*target, depth + 1),
            Some(Rec::Array { elem, size }) => {
                let e = self.describe_depth(*elem, depth + 1);
                d.kind = Kind::Array;
                d.size = u64::from(*size);
                d.count = d.size.checked_div(e.size).unwrap_or(0);
                d.name = format!("[{}] {}", d.count, e.name);
                d.target = Some(*elem);
            }
            Some(Rec::Bitfield { base, .. }) => return self.describe_depth(*base, depth + 1),
            Some(Rec::Procedure) => {
                d.kind = Kind::Function;
                d.name = "Void".into(); // WinDbg prints function pointers as "Ptr64 Void"
            }
            _ => {}
        }
        d
    }

    /// The members of field list `idx` and its continuations.
    fn members(&self, idx: u32) -> Vec<&Member> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut cur = Some(idx);
        while let Some(i) = cur {
            if !seen.insert(i) || seen.len() > MAX_FIELD_LISTS {
                break;
            }
            match self.rec(i) {
                Some(Rec::FieldList { members, cont }) => {
                    out.extend(members.iter());
                    cur = *cont;
                }
                _ => break,
            }
        }
        out
    }

    fn collect(&self, udt: u32, base: u64, depth: usize, out: &mut Vec<Field>) {
        if depth > MAX_DEPTH {
            return;
        }
        let Some(Rec::Udt {
            fields: Some(fl), ..
        }) = self.rec(udt)
        else {
            return;
        };
        for m in self.members(*fl) {
            if out.len() >= MAX_FIELDS {
                return;
            }
            match m {
                Member::Base { ty, offset } => {
                    let def = self.describe(*ty).index;
                    self.collect(def, base.saturating_add(*offset), depth + 1, out);
                }
                Member::Data { name, offset, ty } => {
                    let (bp, bl) = match self.rec(*ty) {
                        Some(Rec::Bitfield { pos, len, .. }) => (Some(*pos), Some(*len)),
                        _ => (None, None),
                    };
                    out.push(Field {
                        name: name.clone(),
                        offset: base.saturating_add(*offset),
                        ty: self.describe(*ty),
                        bit_position: bp,
                        bit_length: bl,
                    });
                }
                Member::Enumerate { .. } => {}
            }
        }
    }

    /// The layout of type index `idx` (a struct, union or enum; other kinds give no fields).
    pub fn layout_index(&self, idx: u32) -> Layout {
        let ty = self.describe(idx);
        let mut fields = Vec::new();
        let mut enumerators = Vec::new();
        match self.rec(ty.index) {
            Some(Rec::Udt { .. }) => self.collect(ty.index, 0, 0, &mut fields),
            Some(Rec::Enum { fields: fl, .. }) => {
                for m in self.members(*fl) {
                    if let Member::Enumerate { name, value } = m {
                        enumerators.push((name.clone(), *value));
                        if enumerators.len() >= MAX_FIELDS {
                            break;
                        }
                    }
                }
            }
            _ => {}
        }
        Layout {
            ty,
            fields,
            enumerators,
        }
    }

    /// The layout of the struct, union or enum named `name`; `Error::Symbol` when the PDB has no
    /// definition of it.
    pub fn layout(&self, name: &str) -> Result<Layout> {
        let idx = self
            .find(name)
            .ok_or_else(|| Error::Symbol(format!("type {name} is not defined in this PDB")))?;
        Ok(self.layout_index(idx))
    }
}

/// A PDB's identity: the GUID (32 upper-case hex digits, symbol-store order) and the age an
/// image's RSDS record carries (the DBI stream's), without reading any symbol or type.
pub fn read_identity(path: &Path) -> Result<(String, u32)> {
    super::guarded(path, || read_identity_inner(path))
}

pub(crate) fn read_identity_inner(path: &Path) -> Result<(String, u32)> {
    let f = File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut pdb = pdb::PDB::open(f).map_err(|e| perr(path, e))?;
    let info = pdb.pdb_information().map_err(|e| perr(path, e))?;
    let guid: String = info
        .guid
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    let age = pdb
        .debug_information()
        .ok()
        .and_then(|d| d.age())
        .unwrap_or(info.age);
    Ok((guid, age))
}
