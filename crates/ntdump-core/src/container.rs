//! Dump containers: from a file's bytes to physical memory (or, for triage dumps, to captured VA ranges).
//!
//! Layouts: WINDOWS_INTERNALS.md §1.5 (full), §1.6 (bitmap), §1.7 (range, after kdmp-parser), §1.8 (legacy
//! summary), §1.9 (triage). Every count and offset read from the file is checked against the file length
//! before use, and no allocation is sized by a field of the file alone.

use crate::addr::{PAGE_SHIFT, PAGE_SIZE};
use crate::bytes::LeBytes;
use crate::error::{Error, Result};
use crate::header::{DumpHeader, SIG_DUMP};
use crate::phys::{PhysMap, PhysRun, MAX_PFN};
use crate::triage::Triage;

/// How the dump stores its memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// DumpType 1: runs from the header, stored back to back.
    Full,
    /// DumpType 2 (legacy summary), 5 (`FDMP`) or 6 (`SDMP`): a bitmap of stored pages.
    Bitmap,
    /// DumpType 8, 9, 0xA (`RDMP`): a table of PFN ranges.
    Range,
    /// DumpType 4: triage (mini) dump; only captured VA ranges.
    Triage,
    /// A raw physical image: file offset == physical address.
    Raw,
    /// DumpType 3: header only.
    HeaderOnly,
}

impl Layout {
    /// Lower-case name (`"full"`, `"bitmap"`, `"range"`, `"triage"`, `"raw"`, `"header"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::Full => "full",
            Layout::Bitmap => "bitmap",
            Layout::Range => "range",
            Layout::Triage => "triage",
            Layout::Raw => "raw",
            Layout::HeaderOnly => "header",
        }
    }
}

crate::ser::as_str!(Layout);

/// The memory part of a container, parsed.
#[derive(Debug)]
pub struct Body {
    /// Layout of the file.
    pub layout: Layout,
    /// Physical pages (empty for triage dumps).
    pub phys: PhysMap,
    /// Triage-dump contents (captured VA ranges, driver list …).
    pub triage: Option<Triage>,
    /// Things that are odd but do not stop reading (truncation, count mismatches).
    pub warnings: Vec<String>,
}

/// DUMP_FILE_ATTRIBUTES bit 8: page data is encrypted.
const ATTR_ENCRYPTED: u32 = 1 << 8;

/// Parse the body of a dump whose header is `hdr`.
pub fn parse_body(data: &[u8], hdr: &DumpHeader) -> Result<Body> {
    let len = data.len() as u64;
    if hdr.attributes & ATTR_ENCRYPTED != 0 {
        let at = if hdr.is64 { 0x1050 } else { 0x8A0 };
        return Err(Error::format(
            "dump page data is encrypted (DUMP_FILE_ATTRIBUTES.EncryptedDumpData)",
            at,
        ));
    }
    let mut warnings = Vec::new();
    let (layout, phys, triage) = match hdr.dump_type {
        1 => {
            let at = if hdr.is64 { 0x88 } else { 0x64 };
            let runs = hdr.runs.as_ref().ok_or_else(|| {
                Error::format("full dump without a physical memory descriptor", at)
            })?;
            let phys = PhysMap::from_contiguous_runs(
                runs,
                hdr.header_size,
                len,
                at,
                "PhysicalMemoryBlock",
            )?;
            (Layout::Full, phys, None)
        }
        2 => (
            Layout::Bitmap,
            parse_summary_legacy(data, hdr, &mut warnings)?,
            None,
        ),
        5 | 6 => (Layout::Bitmap, parse_bitmap(data, hdr)?, None),
        8..=0xA => (Layout::Range, parse_range(data, hdr, &mut warnings)?, None),
        4 => (
            Layout::Triage,
            PhysMap::empty(),
            Some(Triage::parse(data, hdr, &mut warnings)?),
        ),
        3 => (Layout::HeaderOnly, PhysMap::empty(), None),
        t => {
            let at = if hdr.is64 { 0xF98 } else { 0xF88 };
            return Err(Error::format(format!("unsupported DumpType {t:#x}"), at));
        }
    };
    if phys.missing_pages > 0 {
        warnings.push(format!(
            "file is truncated: {} pages ({} bytes) the dump declares are past the end of the file",
            phys.missing_pages,
            phys.missing_pages.saturating_mul(PAGE_SIZE)
        ));
    }
    if hdr.required_dump_space != 0 && hdr.required_dump_space > len && layout != Layout::Triage {
        warnings.push(format!(
            "file is {len} bytes but the header's RequiredDumpSpace is {} bytes",
            hdr.required_dump_space
        ));
    }
    Ok(Body {
        layout,
        phys,
        triage,
        warnings,
    })
}

/// Append `pages` pages at PFN `pfn`, stored at file offset `off`, to `runs`: grow the last run when
/// both the PFNs and the file offsets continue it, else start a new run.
fn extend_runs(runs: &mut Vec<PhysRun>, pfn: u64, pages: u64, off: u64) {
    match runs.last_mut() {
        Some(r)
            if r.base_pfn + r.pages == pfn && r.file_offset + (r.pages << PAGE_SHIFT) == off =>
        {
            r.pages += pages
        }
        _ => runs.push(PhysRun {
            base_pfn: pfn,
            pages,
            file_offset: off,
        }),
    }
}

/// Turn a bitmap (bit i set ⇔ PFN i stored) into placed runs. Pages are stored in PFN order from
/// `first_page`. Runs are clipped at the end of the file, so their number is bounded by the file size.
fn runs_from_bitmap(
    bitmap: &[u8],
    bits: u64,
    first_page: u64,
    file_len: u64,
) -> (Vec<PhysRun>, u64, u64) {
    let mut runs: Vec<PhysRun> = Vec::new();
    let mut off = first_page;
    let mut stored = 0u64; // set bits seen
    let mut missing = 0u64;
    let push = |pfn: u64, off: u64, runs: &mut Vec<PhysRun>| {
        if off.saturating_add(PAGE_SIZE) > file_len {
            return false;
        }
        extend_runs(runs, pfn, 1, off);
        true
    };
    let words = bitmap.chunks(8);
    for (wi, chunk) in words.enumerate() {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        let mut word = u64::from_le_bytes(w);
        let base = (wi as u64) * 64;
        if base >= bits {
            break;
        }
        if bits - base < 64 {
            word &= (1u64 << (bits - base)) - 1;
        }
        if word == 0 {
            continue;
        }
        // Fast path: a full word of pages, contiguous in the file.
        if word == u64::MAX && off.saturating_add(64 * PAGE_SIZE) <= file_len {
            extend_runs(&mut runs, base, 64, off);
            off += 64 * PAGE_SIZE;
            stored += 64;
            continue;
        }
        while word != 0 {
            let bit = word.trailing_zeros() as u64;
            word &= word - 1;
            if !push(base + bit, off, &mut runs) {
                missing += 1;
            }
            off = off.saturating_add(PAGE_SIZE);
            stored += 1;
        }
    }
    (runs, stored, missing)
}

fn parse_bitmap(data: &[u8], hdr: &DumpHeader) -> Result<PhysMap> {
    let len = data.len() as u64;
    let at = hdr.header_size;
    let sig = data.field(at, 4, "bitmap sub-header signature")?;
    if sig != b"SDMP" && sig != b"FDMP" {
        return Err(Error::format(
            format!("bitmap dump sub-header signature {sig:02x?} is not SDMP/FDMP"),
            at,
        ));
    }
    if data.u32_at(at + 4, "bitmap sub-header ValidDump")? != SIG_DUMP {
        return Err(Error::format(
            "bitmap dump sub-header ValidDump is not \"DUMP\"",
            at + 4,
        ));
    }
    let first_page = data.u64_at(at + 0x20, "bitmap HeaderSize (first page offset)")?;
    let pages = data.u64_at(at + 0x28, "bitmap Pages")?;
    let bits = data.u64_at(at + 0x30, "bitmap BitmapSize")?;
    let bm_at = at + 0x38;
    if bits > MAX_PFN {
        return Err(Error::format(
            format!("BitmapSize {bits:#x} bits is beyond any physical memory"),
            at + 0x30,
        ));
    }
    let bm_bytes = bits.div_ceil(8);
    if bm_at.checked_add(bm_bytes).is_none_or(|e| e > len) {
        return Err(Error::format(
            format!(
                "bitmap of {bits:#x} bits ({bm_bytes} bytes) is larger than the file ({len} bytes)"
            ),
            at + 0x30,
        ));
    }
    if first_page < bm_at + bm_bytes {
        return Err(Error::format(
            format!("first page offset {first_page:#x} lies inside the header or bitmap"),
            at + 0x20,
        ));
    }
    let bitmap = &data[bm_at as usize..(bm_at + bm_bytes) as usize];
    let (runs, stored, missing) = runs_from_bitmap(bitmap, bits, first_page, len);
    let _ = (stored, pages); // Pages may differ from the set bits: writers round the bitmap up.
    Ok(PhysMap::from_placed(runs, missing))
}

fn parse_summary_legacy(
    data: &[u8],
    hdr: &DumpHeader,
    warnings: &mut Vec<String>,
) -> Result<PhysMap> {
    // SUMMARY_DUMP32 at 0x1000 (u32 fields; bitmap at +0x20). The 64-bit variant is declared with its bitmap
    // at +0x28; WINDOWS_INTERNALS §1.8 marks it unverified.
    let len = data.len() as u64;
    let at = hdr.header_size;
    let sig = data.field(at, 4, "summary sub-header signature")?;
    if sig != b"SDMP" {
        return Err(Error::format(
            format!("summary dump sub-header signature {sig:02x?} is not SDMP"),
            at,
        ));
    }
    let first_page = data.u32_at(at + 0xC, "summary HeaderSize")? as u64;
    let bits = data.u32_at(at + 0x10, "summary BitmapSize")? as u64;
    let bm_at = at + if hdr.is64 { 0x28 } else { 0x20 };
    let bm_bytes = bits.div_ceil(8);
    if bm_at + bm_bytes > len {
        return Err(Error::format(
            format!("summary bitmap of {bits:#x} bits is larger than the file"),
            at + 0x10,
        ));
    }
    if first_page < bm_at + bm_bytes {
        return Err(Error::format(
            "summary first page offset lies inside the bitmap",
            at + 0xC,
        ));
    }
    if hdr.is64 {
        warnings.push(
            "64-bit legacy summary dump (DumpType 2): layout taken from public headers only".into(),
        );
    }
    let bitmap = &data[bm_at as usize..(bm_at + bm_bytes) as usize];
    let (runs, _, missing) = runs_from_bitmap(bitmap, bits, first_page, len);
    Ok(PhysMap::from_placed(runs, missing))
}

fn parse_range(data: &[u8], hdr: &DumpHeader, warnings: &mut Vec<String>) -> Result<PhysMap> {
    let len = data.len() as u64;
    let at = hdr.header_size;
    if !hdr.is64 {
        return Err(Error::format(
            "range (RDMP) dumps exist only in 64-bit form",
            at,
        ));
    }
    if data.field(at + 4, 4, "RDMP signature")? != b"RDMP" {
        return Err(Error::format(
            "range dump without the \"RDMP\" sub-header",
            at + 4,
        ));
    }
    let meta = data.u64_at(at + 0x10, "RDMP MetadataSize")?;
    let first = data.u64_at(at + 0x18, "RDMP FirstPageOffset")?;
    let total = if hdr.dump_type == 0xA {
        Some(data.u64_at(at + 0x28, "RDMP TotalNumberOfPages")?)
    } else {
        None
    };
    let table = at + 0x30;
    if table.checked_add(meta).is_none_or(|e| e > len) {
        return Err(Error::format(
            format!("RDMP range table of {meta} bytes is larger than the file"),
            at + 0x10,
        ));
    }
    let mut runs = Vec::new();
    let mut seen = 0u64;
    let mut i = 0u64;
    let mut clipped = 0u64;
    while i * 16 + 16 <= meta {
        let pfn = data.u64_at(table + i * 16, "RDMP range PFN")?;
        let count = data.u64_at(table + i * 16 + 8, "RDMP range page count")?;
        i += 1;
        if pfn == 0 {
            break;
        }
        // Validate the count as declared, before TotalNumberOfPages clips it: a range that claims more
        // pages than any physical memory holds is corrupt whatever the total says (as for DumpType 8).
        if pfn.checked_add(count).is_none_or(|e| e > MAX_PFN) {
            return Err(Error::format(
                format!(
                    "RDMP range {}: {count:#x} pages at PFN {pfn:#x} run past any physical memory",
                    i - 1
                ),
                table + (i - 1) * 16 + 8,
            ));
        }
        let count = match total {
            Some(t) => {
                let c = count.min(t.saturating_sub(seen));
                clipped += count - c;
                c
            }
            None => count,
        };
        runs.push((pfn, count));
        seen = seen.saturating_add(count);
        if total.is_some_and(|t| seen >= t) {
            break;
        }
    }
    // The pages follow the header and the range table, as in the bitmap reader.
    let table_end = table + i * 16;
    if first < table_end {
        return Err(Error::format(
            format!(
                "RDMP FirstPageOffset {first:#x} lies inside the header or range table \
                 (which end at {table_end:#x})"
            ),
            at + 0x18,
        ));
    }
    if clipped > 0 {
        warnings.push(format!(
            "RDMP ranges declare {clipped} pages more than TotalNumberOfPages ({}); the excess is ignored",
            total.unwrap_or(0)
        ));
    }
    if let Some(t) = total {
        if seen < t {
            warnings.push(format!(
                "RDMP TotalNumberOfPages is {t} but the ranges hold {seen} pages"
            ));
        }
    }
    PhysMap::from_contiguous_runs(&runs, first, len, table, "RDMP range table")
}

/// Build a physical map for a raw image: file offset == PA, one run covering the whole file.
pub fn raw_body(len: u64) -> Body {
    let pages = len >> PAGE_SHIFT;
    let runs = if pages > 0 {
        vec![PhysRun {
            base_pfn: 0,
            pages,
            file_offset: 0,
        }]
    } else {
        vec![]
    };
    Body {
        layout: Layout::Raw,
        phys: PhysMap::from_placed(runs, 0),
        triage: None,
        warnings: vec![],
    }
}
