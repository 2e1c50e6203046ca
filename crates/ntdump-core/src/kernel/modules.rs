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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Default)]
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
    /// TimeDateStamp of the image (seconds since 1970, as the linker wrote it): the in-memory PE
    /// header's `FileHeader.TimeDateStamp` (what `lm v` shows); see `timestamp_source`.
    pub timestamp: u32,
    /// Where `timestamp` comes from: `"pe header"`, `"loader entry"` (the header is unreadable and the
    /// entry has a real TimeDateStamp field: Windows 8 and later), `"triage driver list"`, or
    /// `"unavailable"` (0: header unreadable and the entry's slot is LoadedImports).
    pub timestamp_source: &'static str,
    /// The entry's LoadedImports, decoded (see [`LoadedImports`]; serialized as the tuple
    /// (kind, [(entry VA, module index or None)], why unknown or "")).
    pub loaded_imports: LoadedImports,
    /// The raw pointer-sized LoadedImports value (0 for triage dumps).
    pub loaded_imports_raw: u64,
    /// CheckSum of the image.
    pub checksum: u32,
    /// Loader flags.
    pub flags: u32,
    /// LoadCount.
    pub load_count: u16,
    /// VA of the loader entry (0 for triage dumps, whose records are copies).
    pub ldr_entry: u64,
    /// kd's name for the module (`nt`, `hal`, the file stem, `stem_<base>` for repeats): one naming
    /// rule for `lm`, symbols and kd ([`crate::symbols::kd_names`]), set by [`super::Kernel::load`].
    pub kd_name: String,
    /// False when the module runs past the top of the address space ([`ModuleInfo::range_fits`]; a
    /// kernel warning says so), set by [`super::Kernel::load`].
    pub range_ok: bool,
}

impl ModuleInfo {
    /// True when `[base, base + size)` lies inside an address space ending at `space_end` (exclusive:
    /// 2^64 on 64-bit, 2^32 on x86). A module that runs past the top cannot be a range to search or scan.
    pub fn range_fits(&self, space_end: u128) -> bool {
        self.base as u128 + self.size as u128 <= space_end
    }
}

/// Most imported modules read from one LOAD_IMPORTS array.
pub const MAX_IMPORTS: u64 = 1024;

/// A loader entry's `LoadedImports`, as the memory manager keeps it (WRK `base/ntos/mm/sysload.c`,
/// ReactOS `ntoskrnl/mm/ARM3/sysldr.c` MiBuildImportsForBootDrivers / MiResolveImageReferences, and
/// `ntoskrnl/mm/ARM3/miarm.h`): `(ULONG_PTR)-1` = MM_SYSLDR_BOOT_LOADED (the kernel and the HAL, or
/// an import list that was cleared), `(ULONG_PTR)-2` = MM_SYSLDR_NO_IMPORTS (no import besides the
/// kernel and the HAL, which are never listed), an entry pointer with bit 0 set
/// (MM_SYSLDR_SINGLE_ENTRY) = one imported module, else a pointer to `LOAD_IMPORTS { SIZE_T Count;
/// PLDR_DATA_TABLE_ENTRY Entry[Count]; }`. 0 is NT 5.0's LOADED_AT_BOOT ("loaded at boot and the
/// import information never filled in").
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LoadedImports {
    /// MM_SYSLDR_BOOT_LOADED (or 0, LOADED_AT_BOOT).
    BootLoaded,
    /// MM_SYSLDR_NO_IMPORTS.
    NoImports,
    /// The loader entries (VAs) of the imported modules, with their index in the module list when
    /// they are in it.
    Modules(Vec<(u64, Option<usize>)>),
    /// Not readable or not decodable (the reason).
    Unknown(String),
    /// Not in this kind of dump (triage driver records carry no LoadedImports).
    #[default]
    NotRecorded,
}

impl LoadedImports {
    /// Short name of the kind: `"boot loaded"`, `"no imports"`, `"modules"`, `"unknown"`,
    /// `"not recorded"`.
    pub fn kind(&self) -> &'static str {
        match self {
            LoadedImports::BootLoaded => "boot loaded",
            LoadedImports::NoImports => "no imports",
            LoadedImports::Modules(_) => "modules",
            LoadedImports::Unknown(_) => "unknown",
            LoadedImports::NotRecorded => "not recorded",
        }
    }
}

/// Decode a LoadedImports value (entry indices are resolved later by [`resolve_imports`]).
fn decode_loaded_imports(d: &Dump, raw: u64) -> LoadedImports {
    let ptr = d.pointer_size();
    let all = if ptr == 4 { 0xFFFF_FFFF } else { u64::MAX };
    if raw == all || raw == 0 {
        return LoadedImports::BootLoaded;
    }
    if raw == all - 1 {
        return LoadedImports::NoImports;
    }
    if raw & 1 == 1 {
        return LoadedImports::Modules(vec![(raw & !1, None)]);
    }
    let count = match d.read_ptr(Va(raw)) {
        Ok(c) => c,
        Err(e) => {
            return LoadedImports::Unknown(format!("LOAD_IMPORTS at {raw:#x} is unreadable: {e}"))
        }
    };
    if count == 0 || count > MAX_IMPORTS {
        return LoadedImports::Unknown(format!(
            "LOAD_IMPORTS at {raw:#x} has Count {count} (expected 1..={MAX_IMPORTS})"
        ));
    }
    let mut buf = vec![0u8; (count * ptr) as usize];
    if let Err(e) = d.read_virt(Va(raw + ptr), &mut buf) {
        return LoadedImports::Unknown(format!(
            "LOAD_IMPORTS entries at {:#x} are unreadable: {e}",
            raw + ptr
        ));
    }
    LoadedImports::Modules(
        (0..count)
            .map(|i| (ptr_at(&buf, i * ptr, ptr), None))
            .collect(),
    )
}

/// Fill in the module-list index of every imported loader entry.
fn resolve_imports(modules: &mut [ModuleInfo]) {
    let by_entry: std::collections::HashMap<u64, usize> = modules
        .iter()
        .enumerate()
        .map(|(i, m)| (m.ldr_entry, i))
        .collect();
    for m in modules.iter_mut() {
        if let LoadedImports::Modules(v) = &mut m.loaded_imports {
            for (va, idx) in v.iter_mut() {
                *idx = by_entry.get(va).copied();
            }
        }
    }
}

/// The image's `FileHeader.TimeDateStamp` from its in-memory PE header at `base`, if readable.
pub fn pe_header_timestamp(d: &Dump, base: Va) -> Option<u32> {
    let mut dos = [0u8; 0x40];
    d.read_virt(base, &mut dos).ok()?;
    if &dos[..2] != b"MZ" {
        return None;
    }
    let lfanew = u32_at(&dos, 0x3C) as u64;
    if !(0x40..0x1000).contains(&lfanew) {
        return None;
    }
    let mut nt = [0u8; 12];
    d.read_virt(Va(base.0.wrapping_add(lfanew)), &mut nt).ok()?;
    (&nt[..4] == b"PE\0\0").then(|| u32_at(&nt, 8))
}

/// An entry of `MmUnloadedDrivers`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Default)]
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
        let (timestamp, timestamp_source) = match pe_header_timestamp(d, Va(base)) {
            Some(t) => (t, "pe header"),
            None => match l.timestamp {
                Some(off) => (u32_at(&entry, off), "loader entry"),
                None => (0, "unavailable"),
            },
        };
        let raw_imports = ptr_at(&entry, l.loaded_imports, ptr);
        out.push(ModuleInfo {
            name,
            path,
            base,
            size,
            entry_point: ptr_at(&entry, l.entry_point, ptr),
            timestamp,
            timestamp_source,
            loaded_imports: decode_loaded_imports(d, raw_imports),
            loaded_imports_raw: raw_imports,
            checksum: u32_at(&entry, l.checksum),
            flags: u32_at(&entry, l.flags),
            load_count: u16_at(&entry, l.load_count),
            ldr_entry: cur,
            kd_name: String::new(),
            range_ok: true,
        });
        cur = ptr_at(&entry, 0, ptr);
    }
    resolve_imports(&mut out);
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
