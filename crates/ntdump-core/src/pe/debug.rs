//! The debug directory and its CodeView record (WINDOWS_INTERNALS.md §6.4–6.5): what names the PDB.

use super::view::View;
use super::{guarded, Parser, PeOptions};
use crate::pe::headers::Headers;

/// Most debug directory entries read.
pub const MAX_DEBUG_ENTRIES: u32 = 64;
/// `IMAGE_DEBUG_TYPE_CODEVIEW`.
pub const DEBUG_TYPE_CODEVIEW: u32 = 2;

/// One `IMAGE_DEBUG_DIRECTORY` entry (28 bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DebugEntry {
    /// Reserved flags.
    pub characteristics: u32,
    /// Time stamp (seconds since 1970 or a hash).
    pub time_date_stamp: u32,
    /// Format version (major).
    pub major_version: u16,
    /// Format version (minor).
    pub minor_version: u16,
    /// Type: 2 CODEVIEW, 12 VC_FEATURE, 13 POGO, 16 REPRO, 20 EX_DLLCHARACTERISTICS …
    pub kind: u32,
    /// Bytes of the data.
    pub size_of_data: u32,
    /// Data address (RVA; 0 when the data is only in the file).
    pub address_of_raw_data: u32,
    /// Data file offset.
    pub pointer_to_raw_data: u32,
}

impl DebugEntry {
    /// The name `!lmi` / `!dh` give the type.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            1 => "COFF",
            2 => "CODEVIEW",
            3 => "FPO",
            4 => "MISC",
            5 => "EXCEPTION",
            6 => "FIXUP",
            9 => "BORLAND",
            11 => "CLSID",
            12 => "VC_FEATURE",
            13 => "POGO",
            14 => "ILTCG",
            16 => "REPRO",
            20 => "EX_DLLCHARACTERISTICS",
            _ => "UNKNOWN",
        }
    }
}

/// A CodeView record: which PDB the image was built with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeView {
    /// PDB 7.0 ("RSDS").
    Rsds {
        /// The GUID as stored (Data1 u32 LE, Data2 u16 LE, Data3 u16 LE, Data4 8 bytes).
        guid: [u8; 16],
        /// Age.
        age: u32,
        /// The PDB path as stored (often a full build path).
        path: String,
    },
    /// PDB 2.0 ("NB10").
    Nb10 {
        /// The PDB's signature: a time stamp (seconds since 1970).
        signature: u32,
        /// Age.
        age: u32,
        /// The PDB path as stored.
        path: String,
    },
}

impl CodeView {
    /// `"RSDS"` or `"NB10"`.
    pub fn format(&self) -> &'static str {
        match self {
            CodeView::Rsds { .. } => "RSDS",
            CodeView::Nb10 { .. } => "NB10",
        }
    }

    /// The path as stored in the record.
    pub fn path(&self) -> &str {
        match self {
            CodeView::Rsds { path, .. } | CodeView::Nb10 { path, .. } => path,
        }
    }

    /// The PDB file name: the last component of [`CodeView::path`] (either slash).
    pub fn pdb_name(&self) -> &str {
        let p = self.path();
        p.rsplit(['\\', '/']).next().unwrap_or(p)
    }

    /// Age.
    pub fn age(&self) -> u32 {
        match self {
            CodeView::Rsds { age, .. } | CodeView::Nb10 { age, .. } => *age,
        }
    }

    /// The GUID as `{XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX}` (RSDS only).
    pub fn guid_string(&self) -> Option<String> {
        let CodeView::Rsds { guid, .. } = self else {
            return None;
        };
        let (d1, d2, d3) = guid_fields(guid);
        let d4: String = guid[8..].iter().map(|b| format!("{b:02X}")).collect();
        Some(format!(
            "{{{d1:08X}-{d2:04X}-{d3:04X}-{}-{}}}",
            &d4[..4],
            &d4[4..]
        ))
    }

    /// The symbol-store key (§6.5): RSDS = 32 hex digits of the GUID then the age in hex without leading
    /// zeros; NB10 = the signature as 8 hex digits then the age. Upper case.
    pub fn key(&self) -> String {
        match self {
            CodeView::Rsds { guid, age, .. } => {
                let (d1, d2, d3) = guid_fields(guid);
                let d4: String = guid[8..].iter().map(|b| format!("{b:02X}")).collect();
                format!("{d1:08X}{d2:04X}{d3:04X}{d4}{age:X}")
            }
            CodeView::Nb10 { signature, age, .. } => format!("{signature:08X}{age:X}"),
        }
    }

    /// Relative symbol-store path: `<pdb name>/<key>/<pdb name>`.
    pub fn store_path(&self) -> String {
        let n = self.pdb_name();
        format!("{n}/{}/{n}", self.key())
    }
}

impl serde::Serialize for CodeView {
    /// A record: format, path, pdb_name, age, guid (text or None), guid_bytes (RSDS), signature
    /// (NB10), key, store_path.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let (guid, signature) = match self {
            CodeView::Rsds { guid, .. } => (Some(crate::ser::Bytes(guid)), None),
            CodeView::Nb10 { signature, .. } => (None, Some(signature)),
        };
        let mut r = s.serialize_struct("CodeView", 9)?;
        r.serialize_field("format", self.format())?;
        r.serialize_field("path", self.path())?;
        r.serialize_field("pdb_name", self.pdb_name())?;
        r.serialize_field("age", &self.age())?;
        r.serialize_field("guid", &self.guid_string())?;
        r.serialize_field("guid_bytes", &guid)?;
        r.serialize_field("signature", &signature)?;
        r.serialize_field("key", &self.key())?;
        r.serialize_field("store_path", &self.store_path())?;
        r.end()
    }
}

fn guid_fields(g: &[u8; 16]) -> (u32, u16, u16) {
    (
        u32::from_le_bytes([g[0], g[1], g[2], g[3]]),
        u16::from_le_bytes([g[4], g[5]]),
        u16::from_le_bytes([g[6], g[7]]),
    )
}

/// Parse the debug directory and the first readable CodeView record.
pub(crate) fn parse(
    v: View<'_>,
    h: &Headers,
    opts: &PeOptions,
    warnings: &mut Vec<String>,
) -> (Vec<DebugEntry>, Option<CodeView>, Option<Parser>) {
    let Some(dir) = h.directory(6) else {
        return (Vec::new(), None, None);
    };
    let rva = u64::from(dir.rva);
    let stored = dir.size / 28;
    let n = stored.min(MAX_DEBUG_ENTRIES);
    if n < stored {
        warnings.push(format!("debug directory claims {stored} entries; read {n}"));
    }
    if !v.present(rva, 28 * u64::from(n)) {
        warnings.push(format!(
            "debug directory at RVA {rva:#x} is not readable (past the image or on a missing page)"
        ));
        return (Vec::new(), None, None);
    }
    if opts.goblin && n == stored {
        match guarded(|| goblin_debug(v, dir.rva, dir.size)) {
            Ok((entries, cv)) => {
                check_codeview(&entries, &cv, warnings);
                return (entries, cv, Some(Parser::Goblin));
            }
            Err(e) => warnings.push(format!(
                "goblin refused the debug directory ({e}); read it directly"
            )),
        }
    }
    let entries: Vec<DebugEntry> = (0..u64::from(n))
        .filter_map(|i| {
            let b = v.slice(rva + 28 * i, 28)?;
            let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
            let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
            Some(DebugEntry {
                characteristics: u32_at(0),
                time_date_stamp: u32_at(4),
                major_version: u16_at(8),
                minor_version: u16_at(10),
                kind: u32_at(12),
                size_of_data: u32_at(16),
                address_of_raw_data: u32_at(20),
                pointer_to_raw_data: u32_at(24),
            })
        })
        .collect();
    let cv = entries
        .iter()
        .filter(|e| e.kind == DEBUG_TYPE_CODEVIEW)
        .find_map(|e| codeview(v, e));
    check_codeview(&entries, &cv, warnings);
    (entries, cv, Some(Parser::Own))
}

fn check_codeview(entries: &[DebugEntry], cv: &Option<CodeView>, warnings: &mut Vec<String>) {
    if cv.is_some() {
        return;
    }
    if let Some(e) = entries.iter().find(|e| e.kind == DEBUG_TYPE_CODEVIEW) {
        warnings.push(format!(
            "the CodeView record ({:#x} bytes at RVA {:#x}) is not readable or not RSDS/NB10",
            e.size_of_data, e.address_of_raw_data
        ));
    }
}

fn goblin_debug(
    v: View<'_>,
    rva: u32,
    size: u32,
) -> Result<(Vec<DebugEntry>, Option<CodeView>), String> {
    let opts = super::goblin_options();
    let dd = goblin::pe::data_directories::DataDirectory {
        virtual_address: rva,
        size,
    };
    let d = goblin::pe::debug::DebugData::parse_with_opts(v.bytes, dd, &[], 0x200, &opts)
        .map_err(|e| e.to_string())?;
    let entries: Vec<DebugEntry> = d
        .entries()
        .filter_map(|e| e.ok())
        .map(|e| DebugEntry {
            characteristics: e.characteristics,
            time_date_stamp: e.time_date_stamp,
            major_version: e.major_version,
            minor_version: e.minor_version,
            kind: e.data_type,
            size_of_data: e.size_of_data,
            address_of_raw_data: e.address_of_raw_data,
            pointer_to_raw_data: e.pointer_to_raw_data,
        })
        .collect();
    // goblin reads the record of the first CODEVIEW entry only; keep the page check of our own reader.
    let first = entries.iter().find(|e| e.kind == DEBUG_TYPE_CODEVIEW);
    let on_page = first.is_some_and(|e| v.present(u64::from(e.address_of_raw_data), 24));
    let cv = if let (Some(p), true) = (d.codeview_pdb70_debug_info, on_page) {
        Some(CodeView::Rsds {
            guid: p.signature,
            age: p.age,
            path: trim(p.filename),
        })
    } else if let (Some(p), true) = (d.codeview_pdb20_debug_info, on_page) {
        Some(CodeView::Nb10 {
            signature: p.signature,
            age: p.age,
            path: trim(p.filename),
        })
    } else {
        entries
            .iter()
            .filter(|e| e.kind == DEBUG_TYPE_CODEVIEW)
            .find_map(|e| codeview(v, e))
    };
    Ok((entries, cv))
}

fn codeview(v: View<'_>, e: &DebugEntry) -> Option<CodeView> {
    let at = u64::from(e.address_of_raw_data);
    let len = u64::from(e.size_of_data).min(24 + 1024);
    if at == 0 || len < 16 || !v.present(at, len) {
        return None;
    }
    let name = |hdr: u64| {
        v.slice(at + hdr, len.saturating_sub(hdr))
            .map(trim)
            .unwrap_or_default()
    };
    match v.slice(at, 4)? {
        b"RSDS" if len >= 24 => {
            let mut guid = [0u8; 16];
            guid.copy_from_slice(v.slice(at + 4, 16)?);
            Some(CodeView::Rsds {
                guid,
                age: v.u32(at + 20)?,
                path: name(24),
            })
        }
        b"NB10" => Some(CodeView::Nb10 {
            signature: v.u32(at + 8)?,
            age: v.u32(at + 12)?,
            path: name(16),
        }),
        _ => None,
    }
}

fn trim(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}
