//! Struct layouts taken from a PDB in place of the built-in profiles.
//!
//! The built-in layouts ([`crate::pool::layout`], [`crate::kernel::profile`]) are chosen by build
//! number and, where the sheet is unsure, by validating candidates. A kernel PDB says exactly how its
//! kernel lays out `_POOL_HEADER`, `_POOL_TRACKER_TABLE`, `_POOL_TRACKER_BIG_PAGES` and the loader
//! entry (`_KLDR_DATA_TABLE_ENTRY`, or before Windows 8 `_LDR_DATA_TABLE_ENTRY`): [`from_types`]
//! turns those types into owned layout values, [`crate::Dump::set_layouts`] hands them to every reader
//! (pool scan and page walk, `pool_used`, the big page table, the module list), and each result's
//! source then names the PDB type instead of the profile.
//!
//! A PDB is untrusted input. A layout is taken only when it passes [`validate`]-style checks: the
//! entry size is non-zero and bounded per structure ([`MAX_POOL_HEADER`] …), every field the readers
//! use is present, lies inside the entry and has a width of 1, 2, 4 or 8 bytes (pointers the dump's
//! pointer size, names a `UNICODE_STRING` of two pointers), bit fields lie inside their storage.
//! Otherwise the built-in layout stays in use and a warning says why. Nothing is ever allocated from a
//! size the PDB gives beyond those bounds.

use std::collections::{BTreeMap, HashMap};

use crate::header::Machine;
use crate::kernel::profile::LdrLayout;
use crate::pdb::types::{Kind, Layout, TypeTable};
use crate::pool::layout::{
    BigPageLayout, BitField, Field, PoolHeaderLayout, TrackerLayout, BIG_LAYOUTS, POOL_HEADER_X64,
    POOL_HEADER_X86, TRACKER_LAYOUTS,
};

/// Largest `_POOL_TRACKER_TABLE` taken from a PDB (bytes; real ones are 0x1C … 0x50). Bounds the
/// tracker reads at (2^18 + 1) × 0x80 = 32 MiB.
pub const MAX_TRACKER: u64 = 0x80;
/// Largest `_POOL_TRACKER_BIG_PAGES` taken from a PDB (bytes; real ones are 8 … 0x20).
pub const MAX_BIG_PAGES: u64 = 0x40;
/// Largest loader entry taken from a PDB (bytes; real ones are 0x50 … 0x110).
pub const MAX_LDR: u64 = 0x400;
/// `_POOL_HEADER` sizes accepted: the header is one pool block (ReactOS `miarm.h`:
/// `C_ASSERT(sizeof(POOL_HEADER) == POOL_BLOCK_SIZE)`), 8 bytes on x86 and 16 on x64.
pub const MAX_POOL_HEADER: u64 = 16;

/// A layout and where it comes from (`"pdb nt!_POOL_TRACKER_TABLE (/sym/ntkrnlmp.pdb)"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sourced<T> {
    /// The layout.
    pub layout: T,
    /// Where it comes from, in words.
    pub source: String,
}

/// Layouts that replace the built-in profiles for one dump ([`crate::Dump::set_layouts`]). `None`:
/// the built-in profile is used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayoutOverrides {
    /// `_POOL_HEADER` (pool scan, `!pool`).
    pub pool_header: Option<Sourced<PoolHeaderLayout>>,
    /// `_POOL_TRACKER_TABLE` (`!poolused`).
    pub tracker: Option<Sourced<TrackerLayout>>,
    /// `_POOL_TRACKER_BIG_PAGES` (big pool).
    pub big_pages: Option<Sourced<BigPageLayout>>,
    /// The loader entry (`PsLoadedModuleList`).
    pub ldr: Option<Sourced<LdrLayout>>,
}

impl LayoutOverrides {
    /// Where each overridden layout comes from, by structure (`"pool_header"`, `"tracker"`,
    /// `"big_pages"`, `"ldr"`).
    pub fn sources(&self) -> BTreeMap<&'static str, String> {
        let all = [
            ("pool_header", self.pool_header.as_ref().map(|x| &x.source)),
            ("tracker", self.tracker.as_ref().map(|x| &x.source)),
            ("big_pages", self.big_pages.as_ref().map(|x| &x.source)),
            ("ldr", self.ldr.as_ref().map(|x| &x.source)),
        ];
        all.into_iter()
            .filter_map(|(k, s)| Some((k, s?.clone())))
            .collect()
    }

    /// True when no layout is overridden.
    pub fn is_empty(&self) -> bool {
        self.pool_header.is_none()
            && self.tracker.is_none()
            && self.big_pages.is_none()
            && self.ldr.is_none()
    }
}

/// One field of a [`RawStruct`]: what a PDB says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawField {
    /// Name.
    pub name: String,
    /// Offset in bytes from the start of the struct.
    pub offset: u64,
    /// Size in bytes (for a bit field: of its storage unit).
    pub size: u64,
    /// Bit field: (first bit, bit count) within the storage unit.
    pub bits: Option<(u8, u8)>,
}

/// A struct as a PDB describes it, in a neutral form ([`RawStruct::from_pdb`]; tests build them by
/// hand).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawStruct {
    /// Type name (`_POOL_TRACKER_TABLE`).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Fields in declaration order (anonymous unions flattened, as MSVC writes them).
    pub fields: Vec<RawField>,
}

impl RawStruct {
    /// The neutral form of a PDB layout.
    pub fn from_pdb(l: &Layout) -> RawStruct {
        RawStruct {
            name: l.ty.name.clone(),
            size: l.ty.size,
            fields: l
                .fields
                .iter()
                .map(|f| RawField {
                    name: f.name.clone(),
                    offset: f.offset,
                    size: f.ty.size,
                    bits: f.bit_position.zip(f.bit_length),
                })
                .collect(),
        }
    }

    fn field(&self, name: &str) -> Option<&RawField> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The entry size, checked against `max`.
    fn checked_size(&self, max: u64) -> Result<u64, String> {
        match self.size {
            0 => Err(format!("{} has size 0", self.name)),
            n if n > max => Err(format!(
                "{} is {n:#x} bytes, above the {max:#x} ntdump accepts for it",
                self.name
            )),
            n => Ok(n),
        }
    }

    /// Field `name`: present, a whole value (no bit field) of one of `widths` bytes, inside the
    /// entry.
    fn scalar(&self, name: &str, widths: &[u64]) -> Result<(u64, u64), String> {
        let f = self
            .field(name)
            .ok_or_else(|| format!("{} has no field {name}", self.name))?;
        if f.bits.is_some() {
            return Err(format!("{}.{name} is a bit field", self.name));
        }
        if !widths.contains(&f.size) {
            return Err(format!(
                "{}.{name} is {} bytes (expected {})",
                self.name,
                f.size,
                widths
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(" or ")
            ));
        }
        self.inside(name, f.offset, f.size)?;
        Ok((f.offset, f.size))
    }

    fn inside(&self, name: &str, offset: u64, size: u64) -> Result<(), String> {
        match offset.checked_add(size) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(format!(
                "{}.{name} at {offset:#x} ({size} bytes) runs past the {:#x}-byte entry",
                self.name, self.size
            )),
        }
    }

    /// A scalar field as a [`Field`] (offset fits u16 because the entry size is bounded).
    fn field_of(&self, name: &str, widths: &[u64]) -> Result<Field, String> {
        let (off, w) = self.scalar(name, widths)?;
        Ok(Field {
            off: off as u16,
            width: w as u8,
        })
    }

    /// A bit field (or a whole 1-, 2- or 4-byte value) as the bits of a u32 inside the entry.
    fn bits_of(&self, name: &str) -> Result<BitField, String> {
        let f = self
            .field(name)
            .ok_or_else(|| format!("{} has no field {name}", self.name))?;
        if ![1, 2, 4, 8].contains(&f.size) {
            return Err(format!(
                "{}.{name} has a {}-byte storage unit",
                self.name, f.size
            ));
        }
        self.inside(name, f.offset, f.size)?;
        let (pos, len) = f.bits.unwrap_or((0, (f.size * 8).min(32) as u8));
        if len == 0 || u64::from(pos) + u64::from(len) > f.size * 8 {
            return Err(format!(
                "{}.{name}: bits {pos}..{} do not fit its {}-byte storage",
                self.name,
                u64::from(pos) + u64::from(len),
                f.size
            ));
        }
        // Absolute bit range from the field's offset; choose the u32 inside the entry that holds it.
        let first = f.offset * 8 + u64::from(pos);
        let last = first + u64::from(len); // exclusive
        if self.size < 4 {
            return Err(format!("{} is smaller than 4 bytes", self.name));
        }
        // The field's own offset when its u32 fits in the entry (as the built-in layouts write
        // it), else the u32 starting at the field's first byte, else the entry's last u32.
        let fits = |off: u64| off + 4 <= self.size && off * 8 <= first && last <= (off + 4) * 8;
        let Some(off) = [f.offset, first / 8, self.size - 4]
            .into_iter()
            .find(|&o| fits(o))
        else {
            return Err(format!(
                "{}.{name}: bits {first}..{last} of the entry do not fit in one 32-bit word",
                self.name
            ));
        };
        Ok(BitField {
            off: off as u16,
            start: (first - off * 8) as u8,
            bits: len,
        })
    }
}

fn source(module: &str, ty: &str, label: &str) -> String {
    format!("pdb {module}!{ty} ({label})")
}

/// `_POOL_HEADER` from a PDB: PreviousSize, PoolIndex, BlockSize and PoolType (bit fields or bytes)
/// in the header's first 4 bytes (the pool scanner decodes them from one u32), PoolTag (4 bytes)
/// inside the header, ProcessBilled (a pointer) when present. The header is one pool block, so its
/// size is the BlockSize unit: 8 (x86) or 16 (x64) bytes, the dump's pointer size × 2.
pub fn pool_header(s: &RawStruct, machine: Machine) -> Result<PoolHeaderLayout, String> {
    let size = s.checked_size(MAX_POOL_HEADER)?;
    let want = 2 * machine.pointer_size();
    if size != want {
        return Err(format!(
            "{} is {size} bytes; a pool header of this machine is one {want}-byte pool block",
            s.name
        ));
    }
    let word0 = |name: &str| -> Result<BitField, String> {
        let b = s.bits_of(name)?;
        let abs = u32::from(b.off) * 8 + u32::from(b.start);
        if abs + u32::from(b.bits) > 32 {
            return Err(format!(
                "{}.{name} lies outside the header's first 4 bytes",
                s.name
            ));
        }
        Ok(BitField {
            off: 0,
            start: abs as u8,
            bits: b.bits,
        })
    };
    let tag = s.scalar("PoolTag", &[4])?.0 as u16;
    let process_billed = match s.field("ProcessBilled") {
        Some(_) if machine != Machine::X86 => {
            Some(s.scalar("ProcessBilled", &[machine.pointer_size()])?.0 as u16)
        }
        _ => None,
    };
    let mut l = PoolHeaderLayout {
        name: "pdb",
        size,
        unit: size,
        previous_size: word0("PreviousSize")?,
        pool_index: word0("PoolIndex")?,
        block_size: word0("BlockSize")?,
        pool_type: word0("PoolType")?,
        tag,
        process_billed,
        source: "pdb",
    };
    for b in [&POOL_HEADER_X86, &POOL_HEADER_X64] {
        let same = PoolHeaderLayout {
            name: b.name,
            source: b.source,
            ..l
        };
        if same == *b {
            l.name = b.name;
        }
    }
    Ok(l)
}

/// `_POOL_TRACKER_TABLE` from a PDB: Key (4 bytes) and the six counters (4 or 8 bytes each).
pub fn tracker(s: &RawStruct) -> Result<TrackerLayout, String> {
    let size = s.checked_size(MAX_TRACKER)?;
    let c = |n: &str| s.field_of(n, &[4, 8]);
    let mut l = TrackerLayout {
        name: "pdb",
        size,
        key: s.field_of("Key", &[4])?,
        nonpaged_allocs: c("NonPagedAllocs")?,
        nonpaged_frees: c("NonPagedFrees")?,
        nonpaged_bytes: c("NonPagedBytes")?,
        paged_allocs: c("PagedAllocs")?,
        paged_frees: c("PagedFrees")?,
        paged_bytes: c("PagedBytes")?,
        source: "pdb",
    };
    if let Some(b) = TRACKER_LAYOUTS.iter().find(|b| {
        ***b == TrackerLayout {
            name: b.name,
            source: b.source,
            ..l
        }
    }) {
        l.name = b.name;
    }
    Ok(l)
}

/// `_POOL_TRACKER_BIG_PAGES` from a PDB: Va (a pointer-sized value), Key (4 bytes), PoolType (a
/// 4-byte value, or a bit field as on Windows 10), NumberOfBytes (4 or 8) or NumberOfPages (4)
/// when present, ProcessBilled (a pointer) when present.
pub fn big_pages(s: &RawStruct, machine: Machine) -> Result<BigPageLayout, String> {
    let size = s.checked_size(MAX_BIG_PAGES)?;
    let ptr = machine.pointer_size();
    let opt = |name: &str, widths: &[u64]| -> Result<Option<Field>, String> {
        match s.field(name) {
            None => Ok(None),
            Some(_) => s.field_of(name, widths).map(Some),
        }
    };
    let (pool_type, pool_type_bits) = match s.field("PoolType") {
        None => (None, None),
        Some(f) if f.bits.is_some() => (None, Some(s.bits_of("PoolType")?)),
        Some(_) => (Some(s.field_of("PoolType", &[4])?), None),
    };
    let mut l = BigPageLayout {
        name: "pdb",
        size,
        va: s.field_of("Va", &[ptr])?,
        key: s.field_of("Key", &[4])?,
        pool_type,
        pool_type_bits,
        number_of_bytes: opt("NumberOfBytes", &[4, 8])?,
        number_of_pages: opt("NumberOfPages", &[4])?,
        process_billed: opt("ProcessBilled", &[ptr])?,
        source: "pdb",
    };
    if let Some(b) = BIG_LAYOUTS.iter().find(|b| {
        ***b == BigPageLayout {
            name: b.name,
            source: b.source,
            ..l
        }
    }) {
        l.name = b.name;
    }
    Ok(l)
}

/// The loader entry from a PDB: InLoadOrderLinks at offset 0 (the list's Flinks point at the entry
/// start), DllBase and EntryPoint (pointers), SizeOfImage (4), FullDllName and BaseDllName
/// (`UNICODE_STRING`s: two pointers' size), Flags (4), LoadCount (2), CheckSum (4), LoadedImports (a
/// pointer), TimeDateStamp (4) when it has a slot of its own (before Windows 8 it shares one with
/// LoadedImports and a kernel list holds LoadedImports there).
pub fn ldr(s: &RawStruct, machine: Machine) -> Result<LdrLayout, String> {
    let size = s.checked_size(MAX_LDR)?;
    let ptr = machine.pointer_size();
    let (links, links_size) = s
        .field("InLoadOrderLinks")
        .map(|f| (f.offset, f.size))
        .ok_or_else(|| format!("{} has no field InLoadOrderLinks", s.name))?;
    if links != 0 || links_size != 2 * ptr {
        return Err(format!(
            "{}.InLoadOrderLinks is at {links:#x} ({links_size} bytes); the list walk needs a \
             {}-byte LIST_ENTRY at offset 0",
            s.name,
            2 * ptr
        ));
    }
    let at = |name: &str, widths: &[u64]| s.scalar(name, widths).map(|(o, _)| o);
    let name_at = |name: &str| -> Result<u64, String> {
        let f = s
            .field(name)
            .ok_or_else(|| format!("{} has no field {name}", s.name))?;
        if f.size != 2 * ptr || f.bits.is_some() {
            return Err(format!(
                "{}.{name} is {} bytes, not a {}-byte UNICODE_STRING",
                s.name,
                f.size,
                2 * ptr
            ));
        }
        s.inside(name, f.offset, f.size)?;
        Ok(f.offset)
    };
    let loaded_imports = at("LoadedImports", &[ptr])?;
    let timestamp = match s.field("TimeDateStamp") {
        Some(f) if f.offset == loaded_imports => None,
        Some(_) => Some(at("TimeDateStamp", &[4])?),
        None => None,
    };
    Ok(LdrLayout {
        size,
        dll_base: at("DllBase", &[ptr])?,
        entry_point: at("EntryPoint", &[ptr])?,
        size_of_image: at("SizeOfImage", &[4])?,
        full_name: name_at("FullDllName")?,
        base_name: name_at("BaseDllName")?,
        flags: at("Flags", &[4])?,
        load_count: at("LoadCount", &[2])?,
        checksum: at("CheckSum", &[4])?,
        timestamp,
        loaded_imports,
    })
}

/// What [`from_structs`] and [`from_types`] produce: the overrides taken and, for each structure
/// not taken, why.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Built {
    /// The layouts that passed validation (serialized as their sources: `"sources"`).
    #[serde(rename = "sources", serialize_with = "crate::ser::layout_sources")]
    pub overrides: LayoutOverrides,
    /// One sentence per structure the PDB defines but that was refused (the built-in profile
    /// stays in use for it).
    pub warnings: Vec<String>,
    /// Structures the PDB does not define (the built-in profile stays in use; not an error: a
    /// PDB made for something else, or a stripped one).
    pub missing: Vec<String>,
}

/// Build the overrides from structs looked up by name (`get`). `module` and `label` name the PDB in
/// the sources (`"pdb nt!_POOL_HEADER (/sym/ntkrnlmp.pdb)"`); `ptr_size` is the PDB's pointer size,
/// which must be the dump's.
pub fn from_structs(
    get: &dyn Fn(&str) -> Option<RawStruct>,
    machine: Machine,
    ptr_size: u64,
    module: &str,
    label: &str,
) -> Built {
    let mut b = Built::default();
    const KERNEL_TYPES: [&str; 5] = [
        "_POOL_HEADER",
        "_POOL_TRACKER_TABLE",
        "_POOL_TRACKER_BIG_PAGES",
        "_KLDR_DATA_TABLE_ENTRY",
        "_LDR_DATA_TABLE_ENTRY",
    ];
    if !KERNEL_TYPES.iter().any(|t| get(t).is_some()) {
        // Not a kernel PDB (or a stripped one): nothing to take, nothing to warn about.
        b.missing = KERNEL_TYPES[..4].iter().map(|t| t.to_string()).collect();
        return b;
    }
    if machine == Machine::Arm64 {
        b.warnings.push(
            "PDB layouts are not used on ARM64 dumps (the pool and module readers are x86/x64 \
             only)"
                .into(),
        );
        return b;
    }
    if ptr_size != machine.pointer_size() {
        b.warnings.push(format!(
            "the PDB {label} is for {ptr_size}-byte pointers but the dump's are {}: its layouts \
             are not used",
            machine.pointer_size()
        ));
        return b;
    }
    let mut warnings = Vec::new();
    let mut warn = |ty: &str, why: String| {
        warnings.push(format!(
            "{ty} from {label} not used (built-in layout kept): {why}"
        ));
    };
    match get("_POOL_HEADER").map(|s| pool_header(&s, machine)) {
        Some(Ok(l)) => {
            b.overrides.pool_header = Some(Sourced {
                layout: l,
                source: source(module, "_POOL_HEADER", label),
            })
        }
        Some(Err(why)) => warn("_POOL_HEADER", why),
        None => b.missing.push("_POOL_HEADER".into()),
    }
    match get("_POOL_TRACKER_TABLE").map(|s| tracker(&s)) {
        Some(Ok(l)) => {
            b.overrides.tracker = Some(Sourced {
                layout: l,
                source: source(module, "_POOL_TRACKER_TABLE", label),
            })
        }
        Some(Err(why)) => warn("_POOL_TRACKER_TABLE", why),
        None => b.missing.push("_POOL_TRACKER_TABLE".into()),
    }
    match get("_POOL_TRACKER_BIG_PAGES").map(|s| big_pages(&s, machine)) {
        Some(Ok(l)) => {
            b.overrides.big_pages = Some(Sourced {
                layout: l,
                source: source(module, "_POOL_TRACKER_BIG_PAGES", label),
            })
        }
        Some(Err(why)) => warn("_POOL_TRACKER_BIG_PAGES", why),
        None => b.missing.push("_POOL_TRACKER_BIG_PAGES".into()),
    }
    // The kernel's own entry type from Windows 8 on; before, the kernel list used
    // _LDR_DATA_TABLE_ENTRY ([vol2] xp_sp3_x86, win2003_sp2_x64, win7_sp1_x64). A PDB whose
    // _LDR_DATA_TABLE_ENTRY is the user-mode form only (no LoadedImports: ntdiff/headers
    // Win8/x64 ntoskrnl.exe) does not describe the kernel list and is not used.
    let (ty, found) = match get("_KLDR_DATA_TABLE_ENTRY") {
        Some(s) => ("_KLDR_DATA_TABLE_ENTRY", Some(s)),
        None => ("_LDR_DATA_TABLE_ENTRY", get("_LDR_DATA_TABLE_ENTRY")),
    };
    match found.map(|s| ldr(&s, machine)) {
        Some(Ok(l)) => {
            b.overrides.ldr = Some(Sourced {
                layout: l,
                source: source(module, ty, label),
            })
        }
        Some(Err(why)) => warn(ty, why),
        None => b.missing.push("_KLDR_DATA_TABLE_ENTRY".into()),
    }
    b.warnings = warnings;
    b
}

/// [`from_structs`] over a PDB's type table.
pub fn from_types(types: &TypeTable, machine: Machine, module: &str, label: &str) -> Built {
    let get = |name: &str| -> Option<RawStruct> {
        let l = types.layout(name).ok()?;
        matches!(l.ty.kind, Kind::Struct | Kind::Union).then(|| RawStruct::from_pdb(&l))
    };
    from_structs(
        &get,
        machine,
        u64::from(types.pointer_size()),
        module,
        label,
    )
}

/// [`from_structs`] over a map of structs (tests, and callers that hold layouts already).
pub fn from_map(
    structs: &HashMap<String, RawStruct>,
    machine: Machine,
    module: &str,
    label: &str,
) -> Built {
    from_structs(
        &|n| structs.get(n).cloned(),
        machine,
        machine.pointer_size(),
        module,
        label,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str, offset: u64, size: u64) -> RawField {
        RawField {
            name: name.into(),
            offset,
            size,
            bits: None,
        }
    }
    fn bf(name: &str, offset: u64, size: u64, pos: u8, len: u8) -> RawField {
        RawField {
            bits: Some((pos, len)),
            ..f(name, offset, size)
        }
    }
    fn st(name: &str, size: u64, fields: Vec<RawField>) -> RawStruct {
        RawStruct {
            name: name.into(),
            size,
            fields,
        }
    }

    /// [vol2 win10_x64_19041] _POOL_TRACKER_TABLE: 0x38 bytes, bytes first.
    fn tracker_19041() -> RawStruct {
        st(
            "_POOL_TRACKER_TABLE",
            0x38,
            vec![
                f("Key", 0, 4),
                f("NonPagedBytes", 8, 8),
                f("NonPagedAllocs", 0x10, 8),
                f("NonPagedFrees", 0x18, 8),
                f("PagedBytes", 0x20, 8),
                f("PagedAllocs", 0x28, 8),
                f("PagedFrees", 0x30, 8),
            ],
        )
    }

    /// [vol2 win10_x64_19041] _POOL_HEADER: USHORT bit fields at 0 and 2, PoolTag @4.
    fn header_x64() -> RawStruct {
        st(
            "_POOL_HEADER",
            16,
            vec![
                bf("PreviousSize", 0, 2, 0, 8),
                bf("PoolIndex", 0, 2, 8, 8),
                bf("BlockSize", 2, 2, 0, 8),
                bf("PoolType", 2, 2, 8, 8),
                f("Ulong1", 0, 4),
                f("PoolTag", 4, 4),
                f("ProcessBilled", 8, 8),
                f("AllocatorBackTraceIndex", 8, 2),
                f("PoolTagHash", 10, 2),
            ],
        )
    }

    /// [ntdiff Win10_XXXX_21292/x86] _POOL_TRACKER_BIG_PAGES: 0x14 bytes, ProcessBilled @0x10.
    fn big_21292_x86() -> RawStruct {
        st(
            "_POOL_TRACKER_BIG_PAGES",
            0x14,
            vec![
                f("Va", 0, 4),
                f("Key", 4, 4),
                bf("Pattern", 8, 4, 0, 8),
                bf("PoolType", 8, 4, 8, 12),
                bf("SlushSize", 8, 4, 20, 12),
                f("NumberOfBytes", 0xC, 4),
                f("ProcessBilled", 0x10, 4),
            ],
        )
    }

    #[test]
    fn equal_layouts_take_the_builtin_name() {
        assert_eq!(tracker(&tracker_19041()).unwrap().name, "x64-0x38");
        let h = pool_header(&header_x64(), Machine::X64).unwrap();
        assert_eq!(h.name, "x64");
        assert_eq!(h.block_size, POOL_HEADER_X64.block_size);
        let l = big_pages(&big_21292_x86(), Machine::X86).unwrap();
        assert_eq!(l.name, "pdb");
        assert_eq!(l.size, 0x14);
        assert_eq!(
            l.pool_type_bits,
            Some(BitField {
                off: 8,
                start: 8,
                bits: 12
            })
        );
        assert_eq!(
            l.process_billed,
            Some(Field {
                off: 0x10,
                width: 4
            })
        );
    }

    #[test]
    fn hostile_layouts_are_refused() {
        let mut t = tracker_19041();
        t.fields[6].offset = 0x34; // PagedFrees runs past the end
        assert!(tracker(&t).unwrap_err().contains("runs past"));
        let mut t = tracker_19041();
        t.size = 0;
        assert!(tracker(&t).unwrap_err().contains("size 0"));
        let mut t = tracker_19041();
        t.size = u64::MAX;
        assert!(tracker(&t).unwrap_err().contains("above"));
        let mut t = tracker_19041();
        t.fields.retain(|f| f.name != "NonPagedFrees");
        assert!(tracker(&t).unwrap_err().contains("no field NonPagedFrees"));
        let mut t = tracker_19041();
        t.fields[1].size = 3;
        assert!(tracker(&t).unwrap_err().contains("3 bytes"));
        let mut t = tracker_19041();
        t.fields[1].offset = u64::MAX - 2; // offset + size overflows
        assert!(tracker(&t).unwrap_err().contains("runs past"));
        let mut h = header_x64();
        h.fields[3] = bf("PoolType", 4, 2, 8, 8); // outside the first word
        assert!(pool_header(&h, Machine::X64).is_err());
        let mut h = header_x64();
        h.fields[2] = bf("BlockSize", 2, 2, 12, 8); // bits past the storage
        assert!(pool_header(&h, Machine::X64)
            .unwrap_err()
            .contains("do not fit"));
        assert!(pool_header(&header_x64(), Machine::X86).is_err()); // 16 bytes on x86
    }

    /// [vol2 win7_sp1_x64] _LDR_DATA_TABLE_ENTRY (the kernel list's entry before Windows 8):
    /// TimeDateStamp and LoadedImports share 0x80.
    fn ldr_win7_x64() -> RawStruct {
        st(
            "_LDR_DATA_TABLE_ENTRY",
            0xE0,
            vec![
                f("InLoadOrderLinks", 0, 16),
                f("InMemoryOrderLinks", 0x10, 16),
                f("DllBase", 0x30, 8),
                f("EntryPoint", 0x38, 8),
                f("SizeOfImage", 0x40, 4),
                f("FullDllName", 0x48, 16),
                f("BaseDllName", 0x58, 16),
                f("Flags", 0x68, 4),
                f("LoadCount", 0x6C, 2),
                f("CheckSum", 0x78, 4),
                f("TimeDateStamp", 0x80, 4),
                f("LoadedImports", 0x80, 8),
            ],
        )
    }

    #[test]
    fn loader_entries() {
        let l = ldr(&ldr_win7_x64(), Machine::X64).unwrap();
        let p = crate::kernel::Profile::select(Machine::X64, 7601).ldr;
        assert_eq!((l.timestamp, l.loaded_imports), (None, 0x80));
        assert_eq!(
            (l.dll_base, l.base_name, l.checksum),
            (p.dll_base, p.base_name, p.checksum)
        );
        // The user-mode form (ntdiff Win8/x64 ntoskrnl.exe _LDR_DATA_TABLE_ENTRY: no
        // LoadedImports) does not describe the kernel list.
        let mut um = ldr_win7_x64();
        um.fields.retain(|f| f.name != "LoadedImports");
        assert!(ldr(&um, Machine::X64)
            .unwrap_err()
            .contains("LoadedImports"));
        let mut m = HashMap::new();
        m.insert("_LDR_DATA_TABLE_ENTRY".to_string(), um);
        let b = from_map(&m, Machine::X64, "nt", "x.pdb");
        assert!(b.overrides.ldr.is_none());
        assert!(b.warnings[0].starts_with("_LDR_DATA_TABLE_ENTRY from x.pdb not used"));
        // InLoadOrderLinks elsewhere than 0, a name that is not a UNICODE_STRING.
        let mut odd = ldr_win7_x64();
        odd.fields[0].offset = 0x10;
        assert!(ldr(&odd, Machine::X64).is_err());
        let mut odd = ldr_win7_x64();
        odd.fields[5].size = 8;
        assert!(ldr(&odd, Machine::X64)
            .unwrap_err()
            .contains("UNICODE_STRING"));
        assert!(ldr(&ldr_win7_x64(), Machine::X86).is_err());
    }

    /// Random structs (sizes, offsets, widths, bit fields, missing names) through every validator;
    /// whatever is accepted is used to decode random bytes and scan a random page. No panic, and
    /// every accepted field lies inside its entry.
    #[test]
    fn random_structs_never_panic() {
        use crate::pool::scan::{scan_bytes, ScanOptions};
        use crate::pool::PoolContext;
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut rnd = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n.max(1)
        };
        let names = [
            "PreviousSize",
            "PoolIndex",
            "BlockSize",
            "PoolType",
            "PoolTag",
            "ProcessBilled",
            "Key",
            "NonPagedAllocs",
            "NonPagedFrees",
            "NonPagedBytes",
            "PagedAllocs",
            "PagedFrees",
            "PagedBytes",
            "Va",
            "NumberOfBytes",
            "NumberOfPages",
            "InLoadOrderLinks",
            "DllBase",
            "EntryPoint",
            "SizeOfImage",
            "FullDllName",
            "BaseDllName",
            "Flags",
            "LoadCount",
            "CheckSum",
            "TimeDateStamp",
            "LoadedImports",
        ];
        let page: Vec<u8> = (0..PAGE).map(|_| rnd(256) as u8).collect();
        let inside = |fl: Field, size: u64| u64::from(fl.off) + u64::from(fl.width) <= size;
        // Per validator (tracker, big pages, pool header, loader entry): accepted, refused.
        let mut seen = [[0u32; 2]; 4];
        let bases = [
            tracker_19041(),
            header_x64(),
            ldr_win7_x64(),
            big_21292_x86(),
        ];
        for i in 0..20_000 {
            // A real layout with 0 to 3 mutations: a size, an offset, a width, a bit range, a
            // removed field, or a field of random values added.
            let mut s = bases[rnd(4) as usize].clone();
            for _ in 0..rnd(4) {
                let n = s.fields.len() as u64;
                let k = rnd(n) as usize;
                match rnd(6) {
                    0 => {
                        s.size = match rnd(3) {
                            0 => rnd(0x40),
                            1 => rnd(0x1000),
                            _ => u64::MAX - rnd(8),
                        }
                    }
                    1 => {
                        s.fields[k].offset = match rnd(3) {
                            0 => rnd(0x100),
                            1 => s.size.wrapping_sub(rnd(4)),
                            _ => u64::MAX - rnd(8),
                        }
                    }
                    2 => s.fields[k].size = [0, 1, 2, 3, 4, 8, 16, 1 << 40][rnd(8) as usize],
                    3 => s.fields[k].bits = Some((rnd(80) as u8, rnd(80) as u8)),
                    4 => {
                        s.fields.remove(k);
                    }
                    _ => s.fields.push(RawField {
                        name: names[rnd(names.len() as u64) as usize].into(),
                        offset: rnd(0x100),
                        size: [1, 2, 4, 8][rnd(4) as usize],
                        bits: None,
                    }),
                }
            }
            let machine = if i % 2 == 0 {
                Machine::X64
            } else {
                Machine::X86
            };
            let e: Vec<u8> = (0..s.size.min(0x400)).map(|_| rnd(256) as u8).collect();
            let t = tracker(&s);
            seen[0][usize::from(t.is_err())] += 1;
            if let Ok(l) = t {
                for fl in [l.key, l.nonpaged_allocs, l.paged_bytes, l.paged_frees] {
                    assert!(inside(fl, l.size));
                }
                let _ = crate::pool::tracker::decode(&l, &e);
            }
            let b = big_pages(&s, machine);
            seen[1][usize::from(b.is_err())] += 1;
            if let Ok(l) = b {
                assert!(inside(l.va, l.size) && inside(l.key, l.size));
                let _ = (l.va.get(&e), l.key.get(&e));
                if let Some(b) = l.pool_type_bits {
                    assert!(u64::from(b.off) + 4 <= l.size && b.start + b.bits <= 32);
                    let _ = b.get(&e);
                }
            }
            let h = pool_header(&s, machine);
            seen[2][usize::from(h.is_err())] += 1;
            if let Ok(h) = h {
                let mut ctx = PoolContext::new(machine, 19041, 1);
                ctx.header = h;
                let _ = scan_bytes(
                    &ctx,
                    &page,
                    crate::Va(0xFFFF_C000_0000_0000),
                    &ScanOptions::default(),
                );
                let _ = crate::pool::page::walk_page(&ctx, &page, crate::Va(0xFFFF_C000_0000_0040));
            }
            let r = ldr(&s, machine);
            seen[3][usize::from(r.is_err())] += 1;
            if let Ok(l) = r {
                assert!(l.size <= MAX_LDR && l.loaded_imports + machine.pointer_size() <= l.size);
            }
        }
        // Each validator accepted some mutants and refused others.
        assert!(
            seen.iter().all(|&[ok, bad]| ok > 100 && bad > 100),
            "{seen:?}"
        );
    }

    const PAGE: u64 = crate::addr::PAGE_SIZE;

    #[test]
    fn wrong_pointer_size_uses_nothing() {
        let mut m = HashMap::new();
        m.insert("_POOL_TRACKER_TABLE".to_string(), tracker_19041());
        let b = from_structs(&|n| m.get(n).cloned(), Machine::X64, 4, "nt", "x.pdb");
        assert!(b.overrides.is_empty());
        assert_eq!(b.warnings.len(), 1);
        // A PDB without any kernel type (a driver's) gives nothing and warns about nothing.
        let b = from_structs(&|_| None, Machine::X64, 4, "nt", "x.pdb");
        assert!(b.overrides.is_empty() && b.warnings.is_empty());
        assert_eq!(b.missing.len(), 4);
        let b = from_map(&m, Machine::X64, "nt", "x.pdb");
        assert_eq!(
            b.overrides.tracker.as_ref().unwrap().source,
            "pdb nt!_POOL_TRACKER_TABLE (x.pdb)"
        );
        // The other three are missing: noted, not warned about.
        assert!(b.warnings.is_empty());
        assert_eq!(b.missing.len(), 3);
    }
}
