//! Windows version profiles: structure layouts per family, as data.
//!
//! Each offset names its source. `[vol2]` = the Volatility 2 type overlays in
//! ../shared/data/layouts/volatility2-vtypes-selected.json (generated from Microsoft PDBs);
//! `[sheet §n]` = WINDOWS_INTERNALS.md section n (facts agreed by two or more sources).

use crate::header::Machine;

/// A Windows release family, chosen from the build number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    /// Windows XP (builds 2600 and below).
    Xp,
    /// Windows Server 2003 / XP x64 (3790).
    Server2003,
    /// Vista, 7, Server 2008 / 2008 R2 (6000–7601).
    Win7,
    /// Windows 8 / 8.1 (9200–9600).
    Win8,
    /// Windows 10 (10240–19045) and Server 2016–2022 (up to 20348).
    Win10,
    /// Windows 11 (22000 and up).
    Win11,
}

impl Family {
    /// The family of an OS build number.
    pub fn from_build(build: u32) -> Family {
        use crate::versions::build::*;
        match build {
            b if b < SERVER_2003_FAMILY => Family::Xp,
            b if b < VISTA_FAMILY => Family::Server2003,
            b if b < WIN8_FAMILY => Family::Win7,
            b if b < WIN10_FAMILY => Family::Win8,
            b if b < WIN11 => Family::Win10,
            _ => Family::Win11,
        }
    }
    /// Lower-case name: `"xp"`, `"2003"`, `"win7"`, `"win8"`, `"win10"`, `"win11"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Xp => "xp",
            Family::Server2003 => "2003",
            Family::Win7 => "win7",
            Family::Win8 => "win8",
            Family::Win10 => "win10",
            Family::Win11 => "win11",
        }
    }
}

/// Offsets (bytes) inside `KLDR_DATA_TABLE_ENTRY` / `LDR_DATA_TABLE_ENTRY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LdrLayout {
    /// Bytes to read per entry (covers every field below).
    pub size: u64,
    /// DllBase (pointer).
    pub dll_base: u64,
    /// EntryPoint (pointer).
    pub entry_point: u64,
    /// SizeOfImage (u32).
    pub size_of_image: u64,
    /// FullDllName (UNICODE_STRING).
    pub full_name: u64,
    /// BaseDllName (UNICODE_STRING).
    pub base_name: u64,
    /// Flags (u32).
    pub flags: u64,
    /// LoadCount (u16).
    pub load_count: u64,
    /// CheckSum (u32).
    pub checksum: u64,
    /// TimeDateStamp (u32), only where the entry has a field of its own (Windows 8 and later).
    /// Before Windows 8 the slot is a union with LoadedImports and holds LoadedImports in a kernel
    /// module list (`[vol2]` xp_sp3_x86 0x44, win2003_sp2_x64 / win7_sp1_x64 0x80: both names at
    /// one offset), so there is no timestamp to read there.
    pub timestamp: Option<u64>,
    /// LoadedImports (pointer-sized; special values and encoding in [`super::modules::LoadedImports`]).
    pub loaded_imports: u64,
}

/// Offsets (bytes) inside an `MmUnloadedDrivers` entry (`UNLOADED_DRIVERS`) [sheet §4.3].
#[derive(Debug, Clone, Copy)]
pub struct UnloadedLayout {
    /// Entry size.
    pub size: u64,
    /// Name (UNICODE_STRING).
    pub name: u64,
    /// StartAddress (pointer).
    pub start: u64,
    /// EndAddress (pointer).
    pub end: u64,
    /// CurrentTime (FILETIME, u64).
    pub time: u64,
}

crate::ser::as_str!(Family);

/// Everything version-dependent that the kernel layer reads.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Profile {
    /// Family.
    pub family: Family,
    /// Architecture.
    #[serde(skip)]
    pub machine: Machine,
    /// Loader entry layout.
    #[serde(skip)]
    pub ldr: LdrLayout,
    /// Where the loader entry layout comes from.
    #[serde(skip)]
    pub ldr_source: &'static str,
    /// Unloaded driver entry layout.
    #[serde(skip)]
    pub unloaded: UnloadedLayout,
    /// KDDEBUGGER_DATA64.Header.Size for this family [sheet §3.3].
    #[serde(skip)]
    pub kdbg_size: u32,
}

// Loader entries. The first nine fields agree from XP to 11 [sheet §4.1]. Before Windows 8 TimeDateStamp
// and LoadedImports share one slot (a union, [vol2] xp_sp3_x86 / win2003_sp2_x64 / win7_sp1_x64); the
// Windows 10 KLDR_DATA_TABLE_ENTRY has both as fields of their own ([vol2] win10_x86/x64_19041).
const LDR_X86_OLD: LdrLayout = LdrLayout {
    size: 0x50,
    dll_base: 0x18,
    entry_point: 0x1C,
    size_of_image: 0x20,
    full_name: 0x24,
    base_name: 0x2C,
    flags: 0x34,
    load_count: 0x38,
    checksum: 0x40,
    timestamp: None,
    loaded_imports: 0x44,
};
const LDR_X86_WIN10: LdrLayout = LdrLayout {
    size: 0x5C,
    timestamp: Some(0x58),
    loaded_imports: 0x4C,
    ..LDR_X86_OLD
};
const LDR_X64_OLD: LdrLayout = LdrLayout {
    size: 0x98,
    dll_base: 0x30,
    entry_point: 0x38,
    size_of_image: 0x40,
    full_name: 0x48,
    base_name: 0x58,
    flags: 0x68,
    load_count: 0x6C,
    checksum: 0x78,
    timestamp: None,
    loaded_imports: 0x80,
};
const LDR_X64_WIN10: LdrLayout = LdrLayout {
    size: 0xA0,
    timestamp: Some(0x9C),
    loaded_imports: 0x88,
    ..LDR_X64_OLD
};

const UNLOADED_X86: UnloadedLayout = UnloadedLayout {
    size: 0x18,
    name: 0,
    start: 0x08,
    end: 0x0C,
    time: 0x10,
};
const UNLOADED_X64: UnloadedLayout = UnloadedLayout {
    size: 0x28,
    name: 0,
    start: 0x10,
    end: 0x18,
    time: 0x20,
};

impl Profile {
    /// The profile for a machine and build.
    pub fn select(machine: Machine, build: u32) -> Profile {
        let family = Family::from_build(build);
        let x86 = machine == Machine::X86;
        let (ldr, ldr_source) = match (x86, family) {
            (true, Family::Xp | Family::Server2003 | Family::Win7) => {
                (LDR_X86_OLD, "[vol2] xp_sp3_x86 _LDR_DATA_TABLE_ENTRY (0x50 bytes)")
            }
            (true, _) => (LDR_X86_WIN10, "[vol2] win10_x86_19041 _KLDR_DATA_TABLE_ENTRY (0x5c bytes); Win8/8.1 assumed alike [?]"),
            (false, Family::Xp | Family::Server2003) => {
                (LDR_X64_OLD, "[vol2] win2003_sp2_x64 _LDR_DATA_TABLE_ENTRY (0x98 bytes)")
            }
            (false, Family::Win7) => (LDR_X64_OLD, "[vol2] win7_sp1_x64 _LDR_DATA_TABLE_ENTRY (TimeDateStamp 0x80)"),
            (false, _) => (LDR_X64_WIN10, "[vol2] win10_x64_19041 _KLDR_DATA_TABLE_ENTRY (0xa0 bytes); Win8/8.1 assumed alike [?]"),
        };
        let kdbg_size = match family {
            Family::Xp => 0x290,
            Family::Server2003 => 0x318,
            Family::Win7 => 0x340,
            Family::Win8 => 0x360,
            // [sheet §3.3]: 8/8.1 0x360, 10 1607–1803 0x368, 1809+ 0x380 (before 1607: the 8.1 size).
            Family::Win10 if build < crate::versions::build::WIN10_1607 => 0x360,
            Family::Win10 if build < crate::versions::build::WIN10_1809 => 0x368,
            _ => 0x380,
        };
        Profile {
            family,
            machine,
            ldr,
            ldr_source,
            unloaded: if x86 { UNLOADED_X86 } else { UNLOADED_X64 },
            kdbg_size,
        }
    }
}
