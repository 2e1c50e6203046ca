//! DOS/NT headers, data directories and the section table (WINDOWS_INTERNALS.md §6.1–6.2).
//!
//! goblin parses first; when it refuses (e.g. `NumberOfRvaAndSizes` above 16, a section table that runs off
//! the image), a small bounded reader of the same fields takes over and the reason becomes a warning.

use super::view::View;
use super::{guarded, Parser, PeOptions};

/// `IMAGE_FILE_HEADER` (20 bytes at `e_lfanew + 4`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct FileHeader {
    /// Machine (0x14C i386, 0x8664 AMD64, 0xAA64 ARM64, 0x1C4 ARMNT).
    pub machine: u16,
    /// NumberOfSections as stored (the table read may be shorter; see the image's warnings).
    pub number_of_sections: u16,
    /// Link time, seconds since 1970-01-01 UTC (or a hash for reproducible builds).
    pub time_date_stamp: u32,
    /// File offset of the COFF symbol table (0 in images).
    pub pointer_to_symbol_table: u32,
    /// Number of COFF symbols.
    pub number_of_symbols: u32,
    /// Bytes of the optional header; the section table follows it.
    pub size_of_optional_header: u16,
    /// `IMAGE_FILE_*` flags (0x2 executable, 0x20 large address aware, 0x100 32-bit, 0x2000 DLL …).
    pub characteristics: u16,
}

/// `IMAGE_OPTIONAL_HEADER32/64`: the fields `!dh` prints. Sizes are bytes; addresses are RVAs unless named.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct OptionalHeader {
    /// 0x10B (PE32) or 0x20B (PE32+).
    pub magic: u16,
    /// Linker major version.
    pub major_linker_version: u8,
    /// Linker minor version.
    pub minor_linker_version: u8,
    /// Bytes of code.
    pub size_of_code: u32,
    /// Bytes of initialised data.
    pub size_of_initialized_data: u32,
    /// Bytes of uninitialised data.
    pub size_of_uninitialized_data: u32,
    /// Entry point (RVA; 0 for none).
    pub address_of_entry_point: u32,
    /// Start of code (RVA).
    pub base_of_code: u32,
    /// Start of data (RVA; PE32 only).
    pub base_of_data: Option<u32>,
    /// Preferred base (VA) as stored in memory: the loader rewrites it to the actual base.
    pub image_base: u64,
    /// Section alignment in memory (bytes).
    pub section_alignment: u32,
    /// Section alignment in the file (bytes).
    pub file_alignment: u32,
    /// Operating-system version (major).
    pub major_operating_system_version: u16,
    /// Operating-system version (minor).
    pub minor_operating_system_version: u16,
    /// Image version (major).
    pub major_image_version: u16,
    /// Image version (minor).
    pub minor_image_version: u16,
    /// Subsystem version (major).
    pub major_subsystem_version: u16,
    /// Subsystem version (minor).
    pub minor_subsystem_version: u16,
    /// Reserved (0).
    pub win32_version_value: u32,
    /// Bytes of the image in memory, as stored.
    pub size_of_image: u32,
    /// Bytes of the headers.
    pub size_of_headers: u32,
    /// Checksum (the loader's `CheckSum`).
    pub checksum: u32,
    /// Subsystem (1 native for drivers).
    pub subsystem: u16,
    /// `IMAGE_DLLCHARACTERISTICS_*` flags.
    pub dll_characteristics: u16,
    /// Stack reserve (bytes).
    pub size_of_stack_reserve: u64,
    /// Stack commit (bytes).
    pub size_of_stack_commit: u64,
    /// Heap reserve (bytes).
    pub size_of_heap_reserve: u64,
    /// Heap commit (bytes).
    pub size_of_heap_commit: u64,
    /// Reserved (0).
    pub loader_flags: u32,
    /// Number of data directories as stored (only the first 16 are read).
    pub number_of_rva_and_sizes: u32,
}

/// One data directory entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DataDirectory {
    /// Index 0..16 (0 export, 1 import, 6 debug, 12 IAT …; see [`DIRECTORY_NAMES`]).
    pub index: usize,
    /// Start (RVA; for index 4 a file offset).
    pub rva: u32,
    /// Size in bytes.
    pub size: u32,
}

impl serde::Serialize for DataDirectory {
    /// `(index, name, rva, size)`.
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let name = DIRECTORY_NAMES.get(self.index).copied().unwrap_or("?");
        serde::Serialize::serialize(&(self.index, name, self.rva, self.size), s)
    }
}

/// Names of the 16 data directories, as `!dh` labels them.
pub const DIRECTORY_NAMES: [&str; 16] = [
    "Export",
    "Import",
    "Resource",
    "Exception",
    "Security",
    "Base Relocation",
    "Debug",
    "Architecture",
    "Global Pointer",
    "Thread Storage",
    "Load Configuration",
    "Bound Import",
    "Import Address Table",
    "Delay Import",
    "COR20 Header",
    "Reserved",
];

/// The headers of an image.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Headers {
    /// Offset (bytes) of the NT headers from the image base (`IMAGE_DOS_HEADER.e_lfanew`).
    pub e_lfanew: u32,
    /// The file header.
    pub file: FileHeader,
    /// The optional header.
    pub optional: OptionalHeader,
    /// Data directories actually present in the header: `min(NumberOfRvaAndSizes, 16)` entries, zeros included.
    pub directories: Vec<DataDirectory>,
}

impl Headers {
    /// True for PE32+ (64-bit) images.
    pub fn is64(&self) -> bool {
        self.optional.magic == MAGIC64
    }

    /// Bytes per IAT slot / thunk: 8 for PE32+, 4 for PE32.
    pub fn thunk_size(&self) -> u64 {
        if self.is64() {
            8
        } else {
            4
        }
    }

    /// Directory `index` when it is present and non-empty (RVA and size not both zero).
    pub fn directory(&self, index: usize) -> Option<DataDirectory> {
        self.directories
            .get(index)
            .copied()
            .filter(|d| d.rva != 0 || d.size != 0)
    }

    /// RVA of the first section header.
    pub fn section_table_rva(&self) -> u64 {
        u64::from(self.e_lfanew) + 0x18 + u64::from(self.file.size_of_optional_header)
    }
}

/// One `IMAGE_SECTION_HEADER`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Section {
    /// Name (up to 8 bytes, NULs removed, decoded lossily).
    pub name: String,
    /// Bytes in memory (`Misc.VirtualSize`).
    pub virtual_size: u32,
    /// Start (RVA).
    pub virtual_address: u32,
    /// Bytes in the file.
    pub raw_size: u32,
    /// File offset of the data.
    pub raw_pointer: u32,
    /// `IMAGE_SCN_*` flags (0x20 code, 0x02000000 discardable, 0x20000000 execute, 0x80000000 write …).
    pub characteristics: u32,
}

impl Section {
    /// Bytes the section spans in memory: VirtualSize, or SizeOfRawData when VirtualSize is 0.
    pub fn span(&self) -> u32 {
        if self.virtual_size != 0 {
            self.virtual_size
        } else {
            self.raw_size
        }
    }
}

/// PE32 optional-header magic.
pub const MAGIC32: u16 = 0x10B;
/// PE32+ optional-header magic.
pub const MAGIC64: u16 = 0x20B;
/// Largest `e_lfanew` accepted (bytes): the NT headers must sit in the first 64 KiB.
pub const MAX_E_LFANEW: u32 = 0x1_0000;
/// The Windows loader's limit on NumberOfSections; larger tables are cut here with a warning.
pub const MAX_SECTIONS: usize = 96;

/// Just enough of the headers to size the image: `e_lfanew` and SizeOfImage (bytes), from the first bytes.
pub(crate) fn probe(first: &[u8]) -> Result<(u32, u32), String> {
    let v = View {
        bytes: first,
        missing: &[],
    };
    if v.u16(0) != Some(0x5A4D) {
        return Err("no MZ signature at the image base".into());
    }
    let lfanew = v.u32(0x3C).ok_or("DOS header cut short")?;
    if lfanew >= MAX_E_LFANEW {
        return Err(format!(
            "e_lfanew {lfanew:#x} is past the first {MAX_E_LFANEW:#x} bytes"
        ));
    }
    let nt = u64::from(lfanew);
    if v.u32(nt) != Some(0x4550) {
        return Err(format!("no PE signature at e_lfanew {lfanew:#x}"));
    }
    let size = v.u32(nt + 0x18 + 0x38).ok_or("optional header cut short")?;
    Ok((lfanew, size))
}

/// Parse the headers: goblin first, the bounded reader when goblin refuses.
pub(crate) fn parse(
    v: View<'_>,
    opts: &PeOptions,
    warnings: &mut Vec<String>,
) -> Result<(Headers, Parser), String> {
    if opts.goblin {
        match guarded(|| goblin_headers(v.bytes)) {
            Ok(h) => return Ok((h, Parser::Goblin)),
            Err(e) => warnings.push(format!(
                "goblin refused the headers ({e}); read them directly"
            )),
        }
    }
    own_headers(v, warnings).map(|h| (h, Parser::Own))
}

fn goblin_headers(bytes: &[u8]) -> Result<Headers, String> {
    let h = goblin::pe::header::Header::parse(bytes).map_err(|e| e.to_string())?;
    let o = h.optional_header.ok_or("no optional header")?;
    let s = &o.standard_fields;
    let w = &o.windows_fields;
    let directories = (0..(w.number_of_rva_and_sizes as usize).min(16))
        .map(|index| {
            let (rva, size) = o.data_directories.data_directories[index]
                .map(|(_, d)| (d.virtual_address, d.size))
                .unwrap_or((0, 0));
            DataDirectory { index, rva, size }
        })
        .collect();
    let c = &h.coff_header;
    Ok(Headers {
        e_lfanew: h.dos_header.pe_pointer,
        file: FileHeader {
            machine: c.machine,
            number_of_sections: c.number_of_sections,
            time_date_stamp: c.time_date_stamp,
            pointer_to_symbol_table: c.pointer_to_symbol_table,
            number_of_symbols: c.number_of_symbol_table,
            size_of_optional_header: c.size_of_optional_header,
            characteristics: c.characteristics,
        },
        optional: OptionalHeader {
            magic: s.magic,
            major_linker_version: s.major_linker_version,
            minor_linker_version: s.minor_linker_version,
            size_of_code: s.size_of_code as u32,
            size_of_initialized_data: s.size_of_initialized_data as u32,
            size_of_uninitialized_data: s.size_of_uninitialized_data as u32,
            address_of_entry_point: s.address_of_entry_point,
            base_of_code: s.base_of_code as u32,
            base_of_data: (s.magic == MAGIC32).then_some(s.base_of_data),
            image_base: w.image_base,
            section_alignment: w.section_alignment,
            file_alignment: w.file_alignment,
            major_operating_system_version: w.major_operating_system_version,
            minor_operating_system_version: w.minor_operating_system_version,
            major_image_version: w.major_image_version,
            minor_image_version: w.minor_image_version,
            major_subsystem_version: w.major_subsystem_version,
            minor_subsystem_version: w.minor_subsystem_version,
            win32_version_value: w.win32_version_value,
            size_of_image: w.size_of_image,
            size_of_headers: w.size_of_headers,
            checksum: w.check_sum,
            subsystem: w.subsystem,
            dll_characteristics: w.dll_characteristics,
            size_of_stack_reserve: w.size_of_stack_reserve,
            size_of_stack_commit: w.size_of_stack_commit,
            size_of_heap_reserve: w.size_of_heap_reserve,
            size_of_heap_commit: w.size_of_heap_commit,
            loader_flags: w.loader_flags,
            number_of_rva_and_sizes: w.number_of_rva_and_sizes,
        },
        directories,
    })
}

fn own_headers(v: View<'_>, warnings: &mut Vec<String>) -> Result<Headers, String> {
    let (lfanew, _) = probe(v.bytes)?;
    let nt = u64::from(lfanew);
    let f = nt + 4;
    let cut = || "NT headers cut short".to_string();
    let file = FileHeader {
        machine: v.u16(f).ok_or_else(cut)?,
        number_of_sections: v.u16(f + 2).ok_or_else(cut)?,
        time_date_stamp: v.u32(f + 4).ok_or_else(cut)?,
        pointer_to_symbol_table: v.u32(f + 8).ok_or_else(cut)?,
        number_of_symbols: v.u32(f + 12).ok_or_else(cut)?,
        size_of_optional_header: v.u16(f + 16).ok_or_else(cut)?,
        characteristics: v.u16(f + 18).ok_or_else(cut)?,
    };
    let o = nt + 0x18;
    let magic = v.u16(o).ok_or_else(cut)?;
    let is64 = match magic {
        MAGIC32 => false,
        MAGIC64 => true,
        m => {
            return Err(format!(
                "optional header magic {m:#x} is neither PE32 nor PE32+"
            ))
        }
    };
    let wide = |off32: u64, off64: u64| -> Option<u64> {
        if is64 {
            v.u64(o + off64)
        } else {
            v.u32(o + off32).map(u64::from)
        }
    };
    let u8_at = |off: u64| v.slice(o + off, 1).map(|b| b[0]);
    let dd_off = if is64 { 0x70 } else { 0x60 };
    let optional = OptionalHeader {
        magic,
        major_linker_version: u8_at(2).ok_or_else(cut)?,
        minor_linker_version: u8_at(3).ok_or_else(cut)?,
        size_of_code: v.u32(o + 4).ok_or_else(cut)?,
        size_of_initialized_data: v.u32(o + 8).ok_or_else(cut)?,
        size_of_uninitialized_data: v.u32(o + 0xC).ok_or_else(cut)?,
        address_of_entry_point: v.u32(o + 0x10).ok_or_else(cut)?,
        base_of_code: v.u32(o + 0x14).ok_or_else(cut)?,
        base_of_data: if is64 {
            None
        } else {
            Some(v.u32(o + 0x18).ok_or_else(cut)?)
        },
        image_base: wide(0x1C, 0x18).ok_or_else(cut)?,
        section_alignment: v.u32(o + 0x20).ok_or_else(cut)?,
        file_alignment: v.u32(o + 0x24).ok_or_else(cut)?,
        major_operating_system_version: v.u16(o + 0x28).ok_or_else(cut)?,
        minor_operating_system_version: v.u16(o + 0x2A).ok_or_else(cut)?,
        major_image_version: v.u16(o + 0x2C).ok_or_else(cut)?,
        minor_image_version: v.u16(o + 0x2E).ok_or_else(cut)?,
        major_subsystem_version: v.u16(o + 0x30).ok_or_else(cut)?,
        minor_subsystem_version: v.u16(o + 0x32).ok_or_else(cut)?,
        win32_version_value: v.u32(o + 0x34).ok_or_else(cut)?,
        size_of_image: v.u32(o + 0x38).ok_or_else(cut)?,
        size_of_headers: v.u32(o + 0x3C).ok_or_else(cut)?,
        checksum: v.u32(o + 0x40).ok_or_else(cut)?,
        subsystem: v.u16(o + 0x44).ok_or_else(cut)?,
        dll_characteristics: v.u16(o + 0x46).ok_or_else(cut)?,
        size_of_stack_reserve: wide(0x48, 0x48).ok_or_else(cut)?,
        size_of_stack_commit: wide(0x4C, 0x50).ok_or_else(cut)?,
        size_of_heap_reserve: wide(0x50, 0x58).ok_or_else(cut)?,
        size_of_heap_commit: wide(0x54, 0x60).ok_or_else(cut)?,
        loader_flags: v.u32(o + dd_off - 8).ok_or_else(cut)?,
        number_of_rva_and_sizes: v.u32(o + dd_off - 4).ok_or_else(cut)?,
    };
    let n = optional.number_of_rva_and_sizes;
    if n > 16 {
        warnings.push(format!(
            "NumberOfRvaAndSizes is {n:#x}; only the 16 defined directories are read"
        ));
    }
    let mut directories = Vec::new();
    for index in 0..(n as usize).min(16) {
        let at = o + dd_off + 8 * index as u64;
        match (v.u32(at), v.u32(at + 4)) {
            (Some(rva), Some(size)) => directories.push(DataDirectory { index, rva, size }),
            _ => {
                warnings.push(format!("data directories cut short after {index}"));
                break;
            }
        }
    }
    Ok(Headers {
        e_lfanew: lfanew,
        file,
        optional,
        directories,
    })
}

/// Read the section table: goblin first, the bounded reader when goblin refuses. Counts above
/// [`MAX_SECTIONS`] and tables running past the image are cut, with a warning.
pub(crate) fn sections(
    v: View<'_>,
    h: &Headers,
    opts: &PeOptions,
    warnings: &mut Vec<String>,
) -> (Vec<Section>, Parser) {
    let stored = h.file.number_of_sections as usize;
    let start = h.section_table_rva();
    let fits = (v.len().saturating_sub(start) / 40) as usize;
    let n = stored.min(MAX_SECTIONS).min(fits);
    if n < stored {
        warnings.push(format!(
            "NumberOfSections is {stored}; read {n} (the loader's limit is {MAX_SECTIONS}, {fits} fit in the image)"
        ));
    }
    if !v.present(start, 40 * n as u64) {
        warnings.push("part of the section table is on a missing page".into());
    }
    if opts.goblin {
        let mut coff = goblin::pe::header::CoffHeader {
            number_of_sections: n as u16,
            pointer_to_symbol_table: 0,
            number_of_symbol_table: 0,
            ..Default::default()
        };
        coff.size_of_optional_header = h.file.size_of_optional_header;
        let mut off = start as usize;
        match guarded(|| coff.sections(v.bytes, &mut off).map_err(|e| e.to_string())) {
            Ok(t) => {
                let out = t
                    .iter()
                    .map(|s| Section {
                        name: section_name(&s.name),
                        virtual_size: s.virtual_size,
                        virtual_address: s.virtual_address,
                        raw_size: s.size_of_raw_data,
                        raw_pointer: s.pointer_to_raw_data,
                        characteristics: s.characteristics,
                    })
                    .collect();
                return (out, Parser::Goblin);
            }
            Err(e) => warnings.push(format!(
                "goblin refused the section table ({e}); read it directly"
            )),
        }
    }
    let out = (0..n as u64)
        .filter_map(|i| {
            let at = start + 40 * i;
            let raw = v.slice(at, 40)?;
            let u = |o: usize| u32::from_le_bytes([raw[o], raw[o + 1], raw[o + 2], raw[o + 3]]);
            Some(Section {
                name: section_name(&raw[..8]),
                virtual_size: u(8),
                virtual_address: u(12),
                raw_size: u(16),
                raw_pointer: u(20),
                characteristics: u(36),
            })
        })
        .collect();
    (out, Parser::Own)
}

fn section_name(raw: &[u8]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}
