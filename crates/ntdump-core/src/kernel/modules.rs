//! Loaded and unloaded kernel modules: `PsLoadedModuleList`, `MmUnloadedDrivers`, and the driver list of
//! triage dumps. Every walk is bounded and cycle-checked; a broken entry ends the walk with a warning and
//! keeps what came before it.

use std::collections::HashSet;

use crate::addr::Va;
use crate::dump::Dump;
use crate::kernel::kdbg::{field, Kdbg};
use crate::kernel::profile::Profile;

/// Most modules a list walk returns (real systems load a few hundred).
pub const MAX_MODULES: usize = 4096;
/// Longest UNICODE_STRING read, in bytes.
pub const MAX_NAME_BYTES: u16 = 1024;

/// A loaded kernel module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleInfo {
    /// Base name (BaseDllName), e.g. `ntoskrnl.exe`.
    pub name: String,
    /// Full path (FullDllName), e.g. `\SystemRoot\system32\ntoskrnl.exe`.
    pub path: String,
    /// Image base (VA).
    pub base: u64,
    /// SizeOfImage in bytes.
    pub size: u64,
    /// Entry point (VA).
    pub entry_point: u64,
    /// TimeDateStamp of the image (seconds since 1970, as the linker wrote it).
    pub timestamp: u32,
    /// CheckSum of the image.
    pub checksum: u32,
    /// Loader flags.
    pub flags: u32,
    /// LoadCount.
    pub load_count: u16,
    /// VA of the loader entry (0 for triage dumps, whose records are copies).
    pub ldr_entry: u64,
}

impl ModuleInfo {
    /// True when `[base, base + size)` lies inside an address space ending at `space_end` (exclusive:
    /// 2^64 on 64-bit, 2^32 on x86). A module that runs past the top cannot be a range to search or scan.
    pub fn range_fits(&self, space_end: u128) -> bool {
        self.base as u128 + self.size as u128 <= space_end
    }
}

/// An entry of `MmUnloadedDrivers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnloadedDriver {
    /// Driver name.
    pub name: String,
    /// First VA the driver occupied.
    pub start: u64,
    /// End VA (exclusive) the driver occupied.
    pub end: u64,
    /// Unload time (FILETIME), 0 when unknown.
    pub time: u64,
}

fn ptr_at(b: &[u8], off: u64, ptr: u64) -> u64 {
    let o = off as usize;
    if ptr == 4 {
        b.get(o..o + 4)
            .map(|s| u32::from_le_bytes(s.try_into().unwrap_or_default()) as u64)
            .unwrap_or(0)
    } else {
        b.get(o..o + 8)
            .map(|s| u64::from_le_bytes(s.try_into().unwrap_or_default()))
            .unwrap_or(0)
    }
}

fn u32_at(b: &[u8], off: u64) -> u32 {
    let o = off as usize;
    b.get(o..o + 4)
        .map(|s| u32::from_le_bytes(s.try_into().unwrap_or_default()))
        .unwrap_or(0)
}

fn u16_at(b: &[u8], off: u64) -> u16 {
    let o = off as usize;
    b.get(o..o + 2)
        .map(|s| u16::from_le_bytes(s.try_into().unwrap_or_default()))
        .unwrap_or(0)
}

/// Read the UNICODE_STRING whose header is at `off` inside `entry`. Lengths above MaximumLength or
/// [`MAX_NAME_BYTES`] are clipped and reported through `warn`.
pub fn read_unicode_string(
    d: &Dump,
    entry: &[u8],
    off: u64,
    warn: &mut dyn FnMut(String),
) -> String {
    let ptr = d.pointer_size();
    let len = u16_at(entry, off);
    let max = u16_at(entry, off + 2);
    let buf = ptr_at(entry, off + if ptr == 4 { 4 } else { 8 }, ptr);
    let mut n = len & !1;
    if len > max || len > MAX_NAME_BYTES {
        warn(format!(
            "UNICODE_STRING with Length {len} (MaximumLength {max}) clipped"
        ));
        n = len.min(max).min(MAX_NAME_BYTES) & !1;
    }
    if n == 0 || buf == 0 {
        return String::new();
    }
    let mut raw = vec![0u8; n as usize];
    if d.read_virt(Va(buf), &mut raw).is_err() {
        warn(format!("name buffer at {buf:#x} is unreadable"));
        return String::new();
    }
    let units: Vec<u16> = raw
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16_lossy(&units)
}

/// Walk the loaded-module list whose head is at `head` (VA).
pub fn walk_module_list(
    d: &Dump,
    profile: &Profile,
    head: u64,
    warnings: &mut Vec<String>,
) -> Vec<ModuleInfo> {
    let ptr = d.pointer_size();
    let l = profile.ldr;
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut cur = match d.read_ptr(Va(head)) {
        Ok(f) => f,
        Err(e) => {
            warnings.push(format!(
                "PsLoadedModuleList head at {head:#x} is unreadable: {e}"
            ));
            return out;
        }
    };
    seen.insert(head);
    let mut entry = vec![0u8; l.size as usize];
    while cur != head {
        if out.len() >= MAX_MODULES {
            warnings.push(format!(
                "module list longer than {MAX_MODULES} entries; stopped"
            ));
            break;
        }
        if !seen.insert(cur) {
            warnings.push(format!(
                "module list loops back to {cur:#x} after {} entries; stopped",
                out.len()
            ));
            break;
        }
        if let Err(e) = d.read_virt(Va(cur), &mut entry) {
            warnings.push(format!(
                "module list entry at {cur:#x} is unreadable ({e}); stopped after {} entries",
                out.len()
            ));
            break;
        }
        let mut warn = |w: String| warnings.push(format!("module entry {cur:#x}: {w}"));
        let name = read_unicode_string(d, &entry, l.base_name, &mut warn);
        let path = read_unicode_string(d, &entry, l.full_name, &mut warn);
        let base = ptr_at(&entry, l.dll_base, ptr);
        let size = u32_at(&entry, l.size_of_image) as u64;
        if size >= 1 << 30 {
            warn(format!("SizeOfImage {size:#x} is implausible"));
        }
        if base & 0xFFF != 0 {
            warn(format!("DllBase {base:#x} is not page-aligned"));
        }
        out.push(ModuleInfo {
            name,
            path,
            base,
            size,
            entry_point: ptr_at(&entry, l.entry_point, ptr),
            timestamp: u32_at(&entry, l.timestamp),
            checksum: u32_at(&entry, l.checksum),
            flags: u32_at(&entry, l.flags),
            load_count: u16_at(&entry, l.load_count),
            ldr_entry: cur,
        });
        cur = ptr_at(&entry, 0, ptr);
    }
    out
}

/// Read `MmUnloadedDrivers` through the KDBG (a pointer variable to an array of 50 entries).
pub fn unloaded_from_kdbg(
    d: &Dump,
    profile: &Profile,
    kdbg: &Kdbg,
    warnings: &mut Vec<String>,
) -> Vec<UnloadedDriver> {
    let Some(array) = kdbg
        .deref_ptr(d, field::MM_UNLOADED_DRIVERS)
        .filter(|&a| a != 0)
    else {
        return Vec::new();
    };
    let u = profile.unloaded;
    let ptr = d.pointer_size();
    let mut out = Vec::new();
    let mut e = vec![0u8; u.size as usize];
    for i in 0..50u64 {
        if d.read_virt(Va(array + i * u.size), &mut e).is_err() {
            warnings.push(format!(
                "MmUnloadedDrivers entry {i} at {:#x} is unreadable",
                array + i * u.size
            ));
            break;
        }
        let start = ptr_at(&e, u.start, ptr);
        let name_buf = ptr_at(&e, u.name + if ptr == 4 { 4 } else { 8 }, ptr);
        if start == 0 && name_buf == 0 {
            continue;
        }
        let mut warn = |w: String| warnings.push(format!("unloaded driver {i}: {w}"));
        let name = read_unicode_string(d, &e, u.name, &mut warn);
        out.push(UnloadedDriver {
            name,
            start,
            end: ptr_at(&e, u.end, ptr),
            time: u64::from_le_bytes(
                e[u.time as usize..u.time as usize + 8]
                    .try_into()
                    .unwrap_or_default(),
            ),
        });
    }
    out
}
