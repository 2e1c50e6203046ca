//! Imports of a loaded image, read the way memory holds them (WINDOWS_INTERNALS.md §6.3).
//!
//! In a loaded image the IAT (`FirstThunk`) holds resolved addresses and the names survive only in the ILT
//! (`OriginalFirstThunk`) and the hint/name table, which drivers often keep in the discardable INIT section.
//! So each row is one IAT slot: its VA and current value always, the DLL and function name when the
//! descriptor and ILT are still readable. goblin's import reader is not used: it reads names from the
//! `FirstThunk` array when `OriginalFirstThunk` is 0, which in memory holds addresses, not names, and it
//! does not report the slot values. When the descriptors are gone, the slots are listed from the IAT
//! directory (data directory 12) without names.

use std::collections::HashSet;

use super::exports::MAX_NAME;
use super::headers::Headers;
use super::view::{Budget, View};

/// Most import descriptors read (one per imported DLL).
pub const MAX_DESCRIPTORS: usize = 4096;
/// Most thunks read per descriptor.
pub const MAX_THUNKS: u64 = 1 << 16;
/// Most import rows read in all (also at most one per pointer-sized slot of the image).
pub const MAX_IMPORTS: u64 = 1 << 16;

/// Where an import row came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImportSource {
    /// An import descriptor (data directory 1): the DLL is known; the name when the ILT is readable.
    #[default]
    Descriptor,
    /// The IAT directory (data directory 12) alone: descriptors unreadable, so neither DLL nor name.
    IatDirectory,
}

impl ImportSource {
    /// `"descriptor"` or `"iat directory"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ImportSource::Descriptor => "descriptor",
            ImportSource::IatDirectory => "iat directory",
        }
    }
}

crate::ser::as_str!(ImportSource);

/// One imported function: one IAT slot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Default)]
pub struct Import {
    /// The DLL named by the descriptor (e.g. `ntoskrnl.exe`); None when only the IAT directory was readable.
    pub dll: Option<String>,
    /// The function name from the hint/name table; None for imports by ordinal or when the ILT is gone.
    pub name: Option<String>,
    /// The ordinal, for imports by ordinal.
    pub ordinal: Option<u16>,
    /// The hint (an index into the exporter's name table), when the name was read.
    pub hint: Option<u16>,
    /// RVA of the IAT slot.
    pub iat_rva: u32,
    /// The value now in the slot (a VA once bound); None when the slot's page is missing.
    pub value: Option<u64>,
    /// Which table the row was read from.
    pub source: ImportSource,
}

enum Thunk {
    Name(Option<String>, Option<u16>),
    Ordinal(u16),
    Invalid,
}

fn thunk(v: View<'_>, entry: u64, width: u64) -> Thunk {
    let flag = if width == 8 { 1u64 << 63 } else { 1u64 << 31 };
    if entry & flag != 0 {
        return Thunk::Ordinal(entry as u16);
    }
    let rva = entry & 0x7FFF_FFFF;
    if entry > 0x7FFF_FFFF || rva + 2 >= v.len() {
        return Thunk::Invalid;
    }
    let hint = v.present(rva, 2).then(|| v.u16(rva)).flatten();
    // An empty name is no name (a zeroed or reused hint/name table).
    Thunk::Name(v.cstr(rva + 2, MAX_NAME).filter(|n| !n.is_empty()), hint)
}

/// Parse the imports of the image: one row per IAT slot.
pub(crate) fn parse(
    v: View<'_>,
    h: &Headers,
    budget: &mut Budget,
    warnings: &mut Vec<String>,
) -> Vec<Import> {
    let w = h.thunk_size();
    let mut out = Vec::new();
    let mut complete = true;
    if let Some(dir) = h.directory(1) {
        complete = descriptors(v, u64::from(dir.rva), w, &mut out, budget, warnings);
    }
    if !complete || out.is_empty() {
        if let Some(iat) = h.directory(12) {
            iat_directory(v, iat.rva, iat.size, w, &mut out, warnings);
        }
    }
    out
}

/// Rows from the import descriptors; false when the descriptor array could not be read to its end.
fn descriptors(
    v: View<'_>,
    rva: u64,
    w: u64,
    out: &mut Vec<Import>,
    budget: &mut Budget,
    warnings: &mut Vec<String>,
) -> bool {
    let mut total = 0u64;
    let limit = (v.len() / w).min(MAX_IMPORTS);
    for i in 0..MAX_DESCRIPTORS as u64 {
        let at = rva + 20 * i;
        if !v.present(at, 20) {
            warnings.push(format!(
                "import descriptor {i} at RVA {at:#x} is not readable (past the image or on a missing page)"
            ));
            return false;
        }
        let f = |o: u64| v.u32(at + o).unwrap_or(0);
        let (ilt, name_rva, iat) = (f(0), f(12), f(16));
        if ilt == 0 && f(4) == 0 && f(8) == 0 && name_rva == 0 && iat == 0 {
            return true;
        }
        let dll = v.cstr(u64::from(name_rva), 256);
        if dll.is_none() {
            warnings.push(format!(
                "import descriptor {i}: the DLL name at RVA {name_rva:#x} is not readable"
            ));
        }
        if iat == 0 || u64::from(iat) >= v.len() {
            warnings.push(format!(
                "import descriptor {i} ({}) has FirstThunk {iat:#x} outside the image",
                dll.as_deref().unwrap_or("?")
            ));
            continue;
        }
        // An ILT equal to the IAT is the IAT itself: in memory it holds addresses, not names.
        let ilt = (ilt != 0 && ilt != iat && u64::from(ilt) < v.len()).then_some(u64::from(ilt));
        let (mut gone, mut rows) = (0u64, 0u64);
        for j in 0..MAX_THUNKS {
            let slot = u64::from(iat) + j * w;
            if slot + w > v.len() {
                break;
            }
            let value = v.present(slot, w).then(|| v.uint(slot, w)).flatten();
            let entry = ilt.and_then(|l| {
                let a = l + j * w;
                v.present(a, w).then(|| v.uint(a, w)).flatten()
            });
            // The ILT's terminator is authoritative while the ILT is readable; else the IAT's zero.
            let end = match entry {
                Some(e) => e == 0,
                None => value.is_none_or_zero(),
            };
            if end {
                if entry.is_none() && value.is_none() {
                    warnings.push(format!(
                        "imports of {}: IAT at RVA {slot:#x} is on a missing page and the ILT is unreadable",
                        dll.as_deref().unwrap_or("?")
                    ));
                }
                break;
            }
            let (mut name, mut ordinal, mut hint) = (None, None, None);
            match entry.map(|e| thunk(v, e, w)) {
                Some(Thunk::Name(n, hn)) => (name, hint) = (budget.take(n), hn),
                Some(Thunk::Ordinal(o)) => ordinal = Some(o),
                Some(Thunk::Invalid) => gone += 1,
                None => {
                    // No ILT: an image that was never bound still holds hint/name RVAs in its IAT.
                    // (Only names: an ordinal thunk looks like a kernel address.)
                    match value.map(|x| thunk(v, x, w)) {
                        Some(Thunk::Name(n, hn)) if n.is_some() => {
                            (name, hint) = (budget.take(n), hn)
                        }
                        _ => gone += 1,
                    }
                }
            }
            out.push(Import {
                dll: budget.take(dll.clone()),
                name,
                ordinal,
                hint,
                iat_rva: slot as u32,
                value,
                source: ImportSource::Descriptor,
            });
            rows += 1;
            total += 1;
            // Each slot belongs to one descriptor: more rows than slots means descriptors overlap.
            if total >= limit {
                warnings.push(format!(
                    "{total} import rows, as many as the image has IAT slots (or {MAX_IMPORTS}): the descriptors overlap; the rest are not read"
                ));
                return true;
            }
        }
        if rows == 0 {
            warnings.push(format!(
                "import descriptor {i} ({}) has no readable IAT slot at RVA {iat:#x}",
                dll.as_deref().unwrap_or("?")
            ));
        }
        if gone > 0 {
            warnings.push(format!(
                "imports of {}: {gone} of {rows} names are not readable (ILT or hint/name table discarded or paged out)",
                dll.as_deref().unwrap_or("?")
            ));
        }
    }
    warnings.push(format!(
        "more than {MAX_DESCRIPTORS} import descriptors; the rest are not read"
    ));
    true
}

trait NoneOrZero {
    fn is_none_or_zero(&self) -> bool;
}

impl NoneOrZero for Option<u64> {
    fn is_none_or_zero(&self) -> bool {
        matches!(self, None | Some(0))
    }
}

/// Rows for the IAT directory's slots not already listed (no DLL, no name).
fn iat_directory(
    v: View<'_>,
    rva: u32,
    size: u32,
    w: u64,
    out: &mut Vec<Import>,
    warnings: &mut Vec<String>,
) {
    let seen: HashSet<u32> = out.iter().map(|i| i.iat_rva).collect();
    let start = u64::from(rva);
    let end = (start + u64::from(size)).min(v.len());
    if start >= end {
        warnings.push(format!(
            "IAT directory at RVA {rva:#x} is outside the image"
        ));
        return;
    }
    let (mut added, mut unreadable) = (0usize, 0usize);
    let mut slot = start;
    while slot + w <= end {
        if !seen.contains(&(slot as u32)) {
            match v.present(slot, w).then(|| v.uint(slot, w)).flatten() {
                None => unreadable += 1,
                Some(0) => {}
                value => {
                    out.push(Import {
                        dll: None,
                        name: None,
                        ordinal: None,
                        hint: None,
                        iat_rva: slot as u32,
                        value,
                        source: ImportSource::IatDirectory,
                    });
                    added += 1;
                }
            }
        }
        slot += w;
    }
    if unreadable > 0 {
        warnings.push(format!(
            "{unreadable} IAT slots of the IAT directory are on missing pages"
        ));
    }
    if added > 0 {
        warnings.push(format!(
            "{added} IAT slots listed from the IAT directory without names (import descriptors unreadable)"
        ));
    }
}
