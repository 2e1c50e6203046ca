//! Triage (mini) dumps, DumpType 4: a `TRIAGE_DUMP` header after the main header, then captured pieces
//! of kernel memory addressed by VA (WINDOWS_INTERNALS.md §1.9; DDK ntiodump.h, Ghidra, rizin agree).

use crate::addr::Va;
use crate::bytes::LeBytes;
use crate::error::{Error, Result};
use crate::header::DumpHeader;

/// A captured range of virtual memory stored verbatim in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VaRange {
    /// First VA of the range.
    pub va: u64,
    /// Length in bytes.
    pub len: u64,
    /// File offset (bytes) of the first byte.
    pub file_offset: u64,
    /// Where the range came from.
    pub source: RangeSource,
}

/// The part of a triage dump a captured range comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSource {
    /// An entry of the data-block table.
    DataBlock,
    /// The copy of the faulting thread's stack.
    Stack,
    /// The extra data page.
    DataPage,
    /// The copy of the KDBG block.
    DebuggerData,
}

/// A driver record of a triage dump's driver list (`DUMP_DRIVER_ENTRY`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriageDriver {
    /// Name from the string pool (the full path as Windows wrote it).
    pub name: String,
    /// Image base (VA).
    pub base: u64,
    /// SizeOfImage in bytes.
    pub size: u64,
    /// Entry point (VA).
    pub entry_point: u64,
    /// Checksum (0: the triage record's field is not verified to be the image CheckSum).
    pub checksum: u32,
    /// TimeDateStamp from the embedded loader entry.
    pub timestamp: u32,
}

/// Parsed triage dump contents.
#[derive(Debug, Clone)]
pub struct Triage {
    /// Disjoint captured ranges, sorted by VA.
    pub ranges: Vec<VaRange>,
    /// Number of data blocks the table declares.
    pub data_blocks: u64,
    /// The driver list, in file order.
    pub drivers: Vec<TriageDriver>,
    /// File offset and size (bytes) of the `DUMP_MM_STORAGE` record, if present.
    pub mm_storage: Option<(u64, u64)>,
    /// File offset and size (bytes) of the KDBG copy, if present.
    pub debugger_data: Option<(u64, u64)>,
    /// File offset of the unloaded-drivers section, if present.
    pub unloaded_drivers_offset: Option<u64>,
}

/// Upper bound on records read from any triage table; real dumps hold a few thousand.
const MAX_RECORDS: u64 = 1 << 20;

fn in_file(len: u64, off: u64, n: u64) -> bool {
    off.checked_add(n).is_some_and(|e| e <= len)
}

impl Triage {
    /// Parse the triage header of `data`, whose main header is `hdr`.
    pub fn parse(data: &[u8], hdr: &DumpHeader, warnings: &mut Vec<String>) -> Result<Triage> {
        let len = data.len() as u64;
        let t = hdr.header_size;
        let w64 = hdr.is64;
        // Field offsets inside TRIAGE_DUMP32 / TRIAGE_DUMP64.
        let ptr = |off32: u64, off64: u64, what: &str| -> Result<u64> {
            if w64 {
                data.u64_at(t + off64, what)
            } else {
                Ok(data.u32_at(t + off32, what)? as u64)
            }
        };
        let u32f = |off32: u64, off64: u64, what: &str| -> Result<u64> {
            Ok(data.u32_at(t + if w64 { off64 } else { off32 }, what)? as u64)
        };
        let valid_off = u32f(0x08, 0x08, "TRIAGE_DUMP.ValidOffset")?;
        if data.field(valid_off, 4, "TRIAGE_DUMP valid marker").ok() != Some(b"TRGD") {
            warnings.push(format!(
                "triage dump has no \"TRGD\" marker at ValidOffset {valid_off:#x}"
            ));
        }
        let mut ranges = Vec::new();
        let mut add = |va: u64,
                       n: u64,
                       off: u64,
                       source: RangeSource,
                       warnings: &mut Vec<String>| {
            if n == 0 || va == 0 {
                return;
            }
            if !in_file(len, off, n) {
                warnings.push(format!("triage {source:?} at {va:#x}: {n} bytes at file offset {off:#x} are past the end of the file"));
                return;
            }
            if va.checked_add(n).is_none() {
                warnings.push(format!(
                    "triage {source:?} at {va:#x}: length {n} overflows the address space"
                ));
                return;
            }
            ranges.push(VaRange {
                va,
                len: n,
                file_offset: off,
                source,
            });
        };
        // The call stack copy starts at TopOfStack (lowest VA) and is SizeOfCallStack bytes.
        let stack_off = u32f(0x28, 0x28, "CallStackOffset")?;
        let stack_size = u32f(0x2C, 0x2C, "SizeOfCallStack")?;
        let top = ptr(0x48, 0x48, "TopOfStack")?;
        if stack_off != 0 {
            add(top, stack_size, stack_off, RangeSource::Stack, warnings);
        }
        let dp_va = ptr(0x4C, 0x60, "DataPageAddress")?;
        let dp_off = u32f(0x50, 0x68, "DataPageOffset")?;
        let dp_size = u32f(0x54, 0x6C, "DataPageSize")?;
        if dp_off != 0 {
            add(dp_va, dp_size, dp_off, RangeSource::DataPage, warnings);
        }
        let dd_off = u32f(0x58, 0x70, "DebuggerDataOffset")?;
        let dd_size = u32f(0x5C, 0x74, "DebuggerDataSize")?;
        let debugger_data =
            (dd_off != 0 && in_file(len, dd_off, dd_size)).then_some((dd_off, dd_size));
        if let Some((o, s)) = debugger_data {
            add(
                hdr.kd_debugger_data_block,
                s,
                o,
                RangeSource::DebuggerData,
                warnings,
            );
        }
        let db_off = u32f(0x60, 0x78, "DataBlocksOffset")?;
        let db_count = u32f(0x64, 0x7C, "DataBlocksCount")?;
        if db_off != 0 && db_count != 0 {
            let fit = len.saturating_sub(db_off) / 16;
            let n = db_count.min(fit).min(MAX_RECORDS);
            if n < db_count {
                warnings.push(format!(
                    "triage data-block table declares {db_count} entries; {n} fit in the file"
                ));
            }
            for i in 0..n {
                let e = db_off + 16 * i;
                let va = data.u64_at(e, "TRIAGE_DATA_BLOCK.Address")?;
                let off = data.u32_at(e + 8, "TRIAGE_DATA_BLOCK.Offset")? as u64;
                let size = data.u32_at(e + 12, "TRIAGE_DATA_BLOCK.Size")? as u64;
                let va = if w64 { va } else { va & 0xFFFF_FFFF };
                add(va, size, off, RangeSource::DataBlock, warnings);
            }
        }
        let ranges = disjoint(ranges);
        let mm_off = u32f(0x14, 0x14, "MmOffset")?;
        let mm_size = if w64 { 0x50 } else { 0x34 };
        let mm_storage =
            (mm_off != 0 && in_file(len, mm_off, mm_size)).then_some((mm_off, mm_size));
        let ud = u32f(0x18, 0x18, "UnloadedDriversOffset")?;
        let drivers = parse_drivers(data, hdr, t, warnings).unwrap_or_else(|e| {
            warnings.push(format!("triage driver list unreadable: {e}"));
            Vec::new()
        });
        Ok(Triage {
            ranges,
            data_blocks: db_count,
            drivers,
            mm_storage,
            debugger_data,
            unloaded_drivers_offset: (ud != 0 && ud < len).then_some(ud),
        })
    }

    /// The captured range holding `va`, if any.
    pub fn find(&self, va: Va) -> Option<&VaRange> {
        let i = self.ranges.partition_point(|r| r.va <= va.0);
        let r = self.ranges.get(i.checked_sub(1)?)?;
        (va.0 - r.va < r.len).then_some(r)
    }

    /// Copy `buf.len()` bytes at `va` from the captured ranges, or fail naming the first gap.
    pub fn read(&self, file: &[u8], va: Va, buf: &mut [u8]) -> Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let cur = Va(va.0.wrapping_add(done as u64));
            let r = self.find(cur).ok_or(Error::NotCaptured {
                va: cur,
                why: "not in any range a triage dump captured",
            })?;
            let k = cur.0 - r.va;
            let n = ((r.len - k) as usize).min(buf.len() - done);
            let s = (r.file_offset + k) as usize;
            buf[done..done + n].copy_from_slice(&file[s..s + n]);
            done += n;
        }
        Ok(())
    }
}

/// Make ranges disjoint: sort by VA (longer first on ties) and trim what an earlier range already covers.
fn disjoint(mut v: Vec<VaRange>) -> Vec<VaRange> {
    v.sort_unstable_by(|a, b| a.va.cmp(&b.va).then(b.len.cmp(&a.len)));
    let mut out: Vec<VaRange> = Vec::with_capacity(v.len());
    let mut covered = 0u64; // exclusive end of coverage so far
    for mut r in v {
        if !out.is_empty() && r.va < covered {
            let skip = covered - r.va;
            if skip >= r.len {
                continue;
            }
            r.va += skip;
            r.file_offset += skip;
            r.len -= skip;
        }
        covered = r.va + r.len;
        out.push(r);
    }
    out
}

fn read_dump_string(data: &[u8], off: u64) -> Option<String> {
    // DUMP_STRING: u32 length, then NUL-terminated UTF-16; read up to the NUL (length units are disputed).
    let start = off.checked_add(4)? as usize;
    let max = data.len().min(start.saturating_add(2 * 1024));
    let mut units = Vec::new();
    let mut i = start;
    while i + 1 < max {
        let u = u16::from_le_bytes([data[i], data[i + 1]]);
        if u == 0 {
            break;
        }
        units.push(u);
        i += 2;
    }
    Some(String::from_utf16_lossy(&units))
}

fn parse_drivers(
    data: &[u8],
    hdr: &DumpHeader,
    t: u64,
    warnings: &mut Vec<String>,
) -> Result<Vec<TriageDriver>> {
    let len = data.len() as u64;
    let off = data.u32_at(t + 0x30, "DriverListOffset")? as u64;
    let count = data.u32_at(t + 0x34, "DriverCount")? as u64;
    let sp_off = data.u32_at(t + 0x38, "StringPoolOffset")? as u64;
    if off == 0 || count == 0 {
        return Ok(Vec::new());
    }
    // DUMP_DRIVER_ENTRY: u32 name offset, then a fixed (Windows 7-era) KLDR_DATA_TABLE_ENTRY. x64: stride
    // 0x90, DllBase +0x38, EntryPoint +0x40, SizeOfImage +0x48, TimeDateStamp +0x88 -- read off the real
    // Windows 10 19041 triage dump (amdppm.sys: 0x3b000 bytes, timestamp 0xc9c03000). The u32 at +0x80
    // (where the Win7 entry has CheckSum) does NOT equal the files' PE CheckSum, so it is not reported.
    // x86: the same entry at +4 (stride 0x4C) by analogy; when the string pool follows the list, the
    // stride is derived from it instead.
    let (stride, base_at, entry_at, size_at, ts_at) = if hdr.is64 {
        (0x90u64, 0x38u64, 0x40u64, 0x48u64, 0x88u64)
    } else {
        (0x4C, 0x1C, 0x20, 0x24, 0x48)
    };
    let stride =
        if sp_off > off && (sp_off - off).is_multiple_of(count) && (sp_off - off) / count >= 0x40 {
            (sp_off - off) / count
        } else {
            stride
        };
    let n = count.min(len.saturating_sub(off) / stride).min(MAX_RECORDS);
    if n < count {
        warnings.push(format!(
            "triage driver list declares {count} drivers; {n} fit in the file"
        ));
    }
    let ptr = |o: u64, what: &str| -> Result<u64> {
        if hdr.is64 {
            data.u64_at(o, what)
        } else {
            Ok(data.u32_at(o, what)? as u64)
        }
    };
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n {
        let r = off + i * stride;
        let name_off = data.u32_at(r, "DUMP_DRIVER_ENTRY.DriverNameOffset")? as u64;
        let name = if name_off != 0 {
            read_dump_string(data, name_off).unwrap_or_default()
        } else {
            String::new()
        };
        out.push(TriageDriver {
            name,
            base: ptr(r + base_at, "DllBase")?,
            entry_point: ptr(r + entry_at, "EntryPoint")?,
            size: data.u32_at(r + size_at, "SizeOfImage")? as u64,
            checksum: 0, // the record's CheckSum slot is unverified: see above
            timestamp: data.u32_at(r + ts_at, "TimeDateStamp").unwrap_or(0),
        });
    }
    Ok(out)
}
