//! Pool structure layouts as data: `_POOL_HEADER`, `_POOL_TRACKER_TABLE`, `_POOL_TRACKER_BIG_PAGES`.
//!
//! Every layout names its source. `[vol2 X]` = the Volatility 2 type overlay for profile X in
//! ../shared/data/layouts/volatility2-vtypes-selected.json (generated from Microsoft PDBs); `[vol3 F]` =
//! the JSON symbol table F shipped inside the `volatility3` package; `[sheet §n]` = WINDOWS_INTERNALS.md.
//! Offsets and sizes are bytes from the start of the structure.

use crate::header::Machine;
use crate::kernel::Family;

/// One unsigned little-endian field: offset and width (bytes; 1, 2, 4 or 8 — the built-in layouts
/// use 4 and 8, a PDB's may use any of the four).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// Offset (bytes) from the start of the structure.
    pub off: u16,
    /// Width in bytes (1, 2, 4 or 8).
    pub width: u8,
}

const fn u32f(off: u16) -> Field {
    Field { off, width: 4 }
}
const fn u64f(off: u16) -> Field {
    Field { off, width: 8 }
}

impl Field {
    /// Read the field from `entry` (zero when the slice is too short: never panics). Widths other
    /// than 1, 2 and 8 read 4 bytes.
    #[inline]
    pub fn get(self, entry: &[u8]) -> u64 {
        let o = self.off as usize;
        match self.width {
            8 => entry
                .get(o..o + 8)
                .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
                .unwrap_or(0),
            2 => entry
                .get(o..o + 2)
                .map(|b| u64::from(u16::from_le_bytes(b.try_into().unwrap_or_default())))
                .unwrap_or(0),
            1 => entry.get(o).map(|&b| u64::from(b)).unwrap_or(0),
            _ => entry
                .get(o..o + 4)
                .map(|b| u64::from(u32::from_le_bytes(b.try_into().unwrap_or_default())))
                .unwrap_or(0),
        }
    }
}

/// A bit field inside a u32: offset (bytes) of the u32, first bit, bit count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BitField {
    /// Offset (bytes) of the containing u32.
    pub off: u16,
    /// First bit (0 = least significant).
    pub start: u8,
    /// Number of bits.
    pub bits: u8,
}

impl BitField {
    /// Extract the field from `entry` (zero when the slice is too short).
    #[inline]
    pub fn get(self, entry: &[u8]) -> u64 {
        let raw = u32f(self.off).get(entry);
        (raw >> self.start) & ((1u64 << self.bits) - 1)
    }
}

// ---------------------------------------------------------------------------------------------
// _POOL_HEADER
// ---------------------------------------------------------------------------------------------

/// `_POOL_HEADER`: where the four small fields and the tag sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolHeaderLayout {
    /// Layout name (`"x86"`, `"x64"`).
    pub name: &'static str,
    /// Header size in bytes (8 on x86, 16 on x64).
    pub size: u64,
    /// Bytes per BlockSize / PreviousSize unit (8 on x86, 16 on x64).
    pub unit: u64,
    /// PreviousSize: bits of the u32 at +0.
    pub previous_size: BitField,
    /// PoolIndex.
    pub pool_index: BitField,
    /// BlockSize (in units).
    pub block_size: BitField,
    /// PoolType as stored (see [`super::page::PoolTypeRule`]).
    pub pool_type: BitField,
    /// PoolTag (u32) offset.
    pub tag: u16,
    /// ProcessBilled pointer offset (x64 only).
    pub process_billed: Option<u16>,
    /// Where the layout comes from.
    pub source: &'static str,
}

/// x86 XP … Win10: PreviousSize bits 0–8, PoolIndex 9–15, BlockSize 16–24, PoolType 25–31, tag @4.
pub const POOL_HEADER_X86: PoolHeaderLayout = PoolHeaderLayout {
    name: "x86",
    size: 8,
    unit: 8,
    previous_size: BitField {
        off: 0,
        start: 0,
        bits: 9,
    },
    pool_index: BitField {
        off: 0,
        start: 9,
        bits: 7,
    },
    block_size: BitField {
        off: 0,
        start: 16,
        bits: 9,
    },
    pool_type: BitField {
        off: 0,
        start: 25,
        bits: 7,
    },
    tag: 4,
    process_billed: None,
    source: "[sheet §5.1] [vol2 xp_sp2/xp_sp3/win10_x86_19041] [vol3 poolheader-x86.json]",
};

/// x64 2003 … Win11: bytes 0/1/2/3 = PreviousSize, PoolIndex, BlockSize, PoolType; tag @4,
/// ProcessBilled @8.
pub const POOL_HEADER_X64: PoolHeaderLayout = PoolHeaderLayout {
    name: "x64",
    size: 16,
    unit: 16,
    previous_size: BitField {
        off: 0,
        start: 0,
        bits: 8,
    },
    pool_index: BitField {
        off: 0,
        start: 8,
        bits: 8,
    },
    block_size: BitField {
        off: 0,
        start: 16,
        bits: 8,
    },
    pool_type: BitField {
        off: 0,
        start: 24,
        bits: 8,
    },
    tag: 4,
    process_billed: Some(8),
    source: "[sheet §5.1] [vol2 win2003_sp2_x64/win7_sp1_x64/win10_x64_19041] \
             [vol3 poolheader-x64.json, poolheader-x64-win7.json]",
};

/// The pool header layout of a machine.
pub fn pool_header(machine: Machine) -> &'static PoolHeaderLayout {
    match machine {
        Machine::X86 => &POOL_HEADER_X86,
        _ => &POOL_HEADER_X64,
    }
}

// ---------------------------------------------------------------------------------------------
// _POOL_TRACKER_TABLE
// ---------------------------------------------------------------------------------------------

/// `_POOL_TRACKER_TABLE`: one tag's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackerLayout {
    /// Layout name, e.g. `"x64-0x38"`.
    pub name: &'static str,
    /// Entry size (bytes): the table's stride.
    pub size: u64,
    /// Key (the tag, u32).
    pub key: Field,
    /// NonPagedAllocs.
    pub nonpaged_allocs: Field,
    /// NonPagedFrees.
    pub nonpaged_frees: Field,
    /// NonPagedBytes (bytes outstanding).
    pub nonpaged_bytes: Field,
    /// PagedAllocs.
    pub paged_allocs: Field,
    /// PagedFrees.
    pub paged_frees: Field,
    /// PagedBytes (bytes outstanding).
    pub paged_bytes: Field,
    /// Where the layout comes from.
    pub source: &'static str,
}

/// x86 XP … (at least) Win8.1: seven u32s.
pub const TRACKER_X86_1C: TrackerLayout = TrackerLayout {
    name: "x86-0x1c",
    size: 0x1C,
    key: u32f(0),
    nonpaged_allocs: u32f(4),
    nonpaged_frees: u32f(8),
    nonpaged_bytes: u32f(0xC),
    paged_allocs: u32f(0x10),
    paged_frees: u32f(0x14),
    paged_bytes: u32f(0x18),
    source: "[sheet §5.5] [vol2 xp_sp2_x86, xp_sp3_x86]",
};

/// x86 Win10 19041: bytes first (u32), then u64 counters.
pub const TRACKER_X86_30: TrackerLayout = TrackerLayout {
    name: "x86-0x30",
    size: 0x30,
    key: u32f(0),
    nonpaged_bytes: u32f(4),
    nonpaged_allocs: u64f(8),
    nonpaged_frees: u64f(0x10),
    paged_bytes: u32f(0x18),
    paged_allocs: u64f(0x20),
    paged_frees: u64f(0x28),
    source: "[vol2 win10_x86_19041]",
};

/// x86 Win10 build 21292: as 0x30 plus AvailableLimit / LimitInfo.
pub const TRACKER_X86_40: TrackerLayout = TrackerLayout {
    name: "x86-0x40",
    size: 0x40,
    key: u32f(0),
    nonpaged_bytes: u32f(4),
    nonpaged_allocs: u64f(8),
    nonpaged_frees: u64f(0x10),
    paged_bytes: u32f(0x18),
    paged_allocs: u64f(0x20),
    paged_frees: u64f(0x28),
    source: "[sheet §5.5] (ntdiff Win10_XXXX_21292/x86)",
};

/// x64 2003 … Win10 1511: u32 counts, u64 bytes.
pub const TRACKER_X64_28: TrackerLayout = TrackerLayout {
    name: "x64-0x28",
    size: 0x28,
    key: u32f(0),
    nonpaged_allocs: u32f(4),
    nonpaged_frees: u32f(8),
    nonpaged_bytes: u64f(0x10),
    paged_allocs: u32f(0x18),
    paged_frees: u32f(0x1C),
    paged_bytes: u64f(0x20),
    source: "[sheet §5.5] [vol2 win2003_sp2_x64, win7_sp1_x64]",
};

/// x64 Win10 (19041 and the 20H1 listings): bytes first, all u64.
pub const TRACKER_X64_38: TrackerLayout = TrackerLayout {
    name: "x64-0x38",
    size: 0x38,
    key: u32f(0),
    nonpaged_bytes: u64f(8),
    nonpaged_allocs: u64f(0x10),
    nonpaged_frees: u64f(0x18),
    paged_bytes: u64f(0x20),
    paged_allocs: u64f(0x28),
    paged_frees: u64f(0x30),
    source: "[sheet §5.5] [vol2 win10_x64_19041]",
};

/// x64 newest (Win11-era listing): as 0x38 plus AvailableLimit / LimitInfo.
pub const TRACKER_X64_50: TrackerLayout = TrackerLayout {
    name: "x64-0x50",
    size: 0x50,
    key: u32f(0),
    nonpaged_bytes: u64f(8),
    nonpaged_allocs: u64f(0x10),
    nonpaged_frees: u64f(0x18),
    paged_bytes: u64f(0x20),
    paged_allocs: u64f(0x28),
    paged_frees: u64f(0x30),
    source: "[sheet §5.5] (Win11-era public header)",
};

/// Every tracker layout, for tests and for callers that choose one by name.
pub const TRACKER_LAYOUTS: [&TrackerLayout; 6] = [
    &TRACKER_X86_1C,
    &TRACKER_X86_30,
    &TRACKER_X86_40,
    &TRACKER_X64_28,
    &TRACKER_X64_38,
    &TRACKER_X64_50,
];

/// Candidate tracker layouts for a machine and build, the expected one first.
///
/// The sheet knows the layout for sure only at a few builds (§5.5: x86 0x1C before Windows 10, 0x30 at
/// 19041 [vol2], 0x40 at 21292; x64 0x28 up to 1511, 0x38 at 19041, 0x50 on Windows 11). Where the switch
/// build is `[?]` (all of Windows 10 and 11), every layout of the machine is a candidate and
/// [`super::tracker`] keeps the one whose entries validate best.
pub fn tracker_candidates(machine: Machine, build: u32) -> Vec<&'static TrackerLayout> {
    let family = Family::from_build(build);
    let x86 = machine == Machine::X86;
    if family < Family::Win10 {
        return vec![if x86 {
            &TRACKER_X86_1C
        } else {
            &TRACKER_X64_28
        }];
    }
    let mut v: Vec<&'static TrackerLayout> = if x86 {
        vec![&TRACKER_X86_1C, &TRACKER_X86_30, &TRACKER_X86_40]
    } else {
        vec![&TRACKER_X64_28, &TRACKER_X64_38, &TRACKER_X64_50]
    };
    use crate::versions::build::{WIN10_1607, WIN10_19H1, WIN11, X86_TRACKER_40};
    let primary = match (x86, build) {
        (true, b) if b >= X86_TRACKER_40 => 2,
        (true, b) if b >= WIN10_19H1 => 1,
        (true, _) => 0,
        (false, b) if b >= WIN11 => 2,
        (false, b) if b >= WIN10_1607 => 1,
        (false, _) => 0,
    };
    let p = v.remove(primary);
    v.insert(0, p);
    v
}

// ---------------------------------------------------------------------------------------------
// _POOL_TRACKER_BIG_PAGES
// ---------------------------------------------------------------------------------------------

/// `_POOL_TRACKER_BIG_PAGES`: one big allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BigPageLayout {
    /// Layout name, e.g. `"win10-x64"`.
    pub name: &'static str,
    /// Entry size (bytes): the table's stride.
    pub size: u64,
    /// Va (pointer; bit 0 = freed).
    pub va: Field,
    /// Key (tag, u32).
    pub key: Field,
    /// PoolType as a whole u32 (Vista … 8.1).
    pub pool_type: Option<Field>,
    /// PoolType as a bit field (Windows 10+: 12 bits at bit 8 of the u32 after Key).
    pub pool_type_bits: Option<BitField>,
    /// NumberOfBytes (bytes).
    pub number_of_bytes: Option<Field>,
    /// NumberOfPages (pages; XP / 2003).
    pub number_of_pages: Option<Field>,
    /// ProcessBilled (Server 2022 / Win11 x64).
    pub process_billed: Option<Field>,
    /// Where the layout comes from.
    pub source: &'static str,
}

const BIG_NONE: BigPageLayout = BigPageLayout {
    name: "",
    size: 0,
    va: u32f(0),
    key: u32f(4),
    pool_type: None,
    pool_type_bits: None,
    number_of_bytes: None,
    number_of_pages: None,
    process_billed: None,
    source: "",
};

/// XP x86, 12 bytes: Va, Key, NumberOfPages.
pub const BIG_XP_X86_12: BigPageLayout = BigPageLayout {
    name: "xp-x86-12",
    size: 12,
    number_of_pages: Some(u32f(8)),
    source: "[vol2 xp_sp2_x86, xp_sp3_x86]",
    ..BIG_NONE
};

/// XP x86, 8 bytes: Va, Key (no size).
pub const BIG_XP_X86_8: BigPageLayout = BigPageLayout {
    name: "xp-x86-8",
    size: 8,
    source: "[vol3 bigpools-x86.json] [sheet §5.7 `[?]`]",
    ..BIG_NONE
};

/// 2003 x86, 16 bytes: Va, Key, NumberOfPages, QuotaObject.
pub const BIG_2003_X86: BigPageLayout = BigPageLayout {
    name: "2003-x86",
    size: 16,
    number_of_pages: Some(u32f(8)),
    source: "[sheet §5.7] (WRK pool.h)",
    ..BIG_NONE
};

/// 2003 x64, 24 bytes: Va, Key @8, NumberOfPages @0xC, QuotaObject @0x10.
pub const BIG_2003_X64: BigPageLayout = BigPageLayout {
    name: "2003-x64",
    size: 24,
    va: u64f(0),
    key: u32f(8),
    number_of_pages: Some(u32f(0xC)),
    source: "[vol2 win2003_sp2_x64] [sheet §5.7]; [vol3 bigpools-x64.json] agrees on Va/Key",
    ..BIG_NONE
};

/// Vista … 8.1 x86, 16 bytes: Va, Key, PoolType u32, NumberOfBytes u32.
pub const BIG_VISTA_X86: BigPageLayout = BigPageLayout {
    name: "vista-x86",
    size: 16,
    pool_type: Some(u32f(8)),
    number_of_bytes: Some(u32f(0xC)),
    source: "[vol3 bigpools-vista-x86.json] [sheet §5.7]",
    ..BIG_NONE
};

/// Vista … 8.1 x64, 24 bytes: Va, Key @8, PoolType @0xC, NumberOfBytes u64 @0x10.
pub const BIG_VISTA_X64: BigPageLayout = BigPageLayout {
    name: "vista-x64",
    size: 24,
    va: u64f(0),
    key: u32f(8),
    pool_type: Some(u32f(0xC)),
    number_of_bytes: Some(u64f(0x10)),
    source: "[vol2 win7_sp1_x64] [vol3 bigpools-vista-x64.json] [sheet §5.7]",
    ..BIG_NONE
};

/// Windows 10 x86, 16 bytes: Va, Key, {Pattern:8, PoolType:12, SlushSize:12}, NumberOfBytes u32.
/// PoolType is 12 bits as the PDB listing says ([vol2 win10_x86_19041]); Volatility 3's JSON says 8.
pub const BIG_WIN10_X86: BigPageLayout = BigPageLayout {
    name: "win10-x86",
    size: 16,
    pool_type_bits: Some(BitField { off: 8, start: 8, bits: 12 }),
    number_of_bytes: Some(u32f(0xC)),
    source: "[vol2 win10_x86_19041] [sheet §5.7]; [vol3 bigpools-win10-x86.json] (PoolType 8 bits there)",
    ..BIG_NONE
};

/// Windows 10 x64, 24 bytes: Va, Key @8, bit field @0xC, NumberOfBytes u64 @0x10.
pub const BIG_WIN10_X64: BigPageLayout = BigPageLayout {
    name: "win10-x64",
    size: 24,
    va: u64f(0),
    key: u32f(8),
    pool_type_bits: Some(BitField { off: 0xC, start: 8, bits: 12 }),
    number_of_bytes: Some(u64f(0x10)),
    source: "[vol2 win10_x64_19041] [sheet §5.7]; [vol3 bigpools-win10-x64.json] (PoolType 8 bits there)",
    ..BIG_NONE
};

/// Server 2022 / Windows 11 x64 (build ≥ 20348), 32 bytes: Windows 10 layout + ProcessBilled @0x18.
pub const BIG_WIN11_X64: BigPageLayout = BigPageLayout {
    name: "win11-x64",
    size: 32,
    process_billed: Some(u64f(0x18)),
    source: "[sheet §5.7] (MemProcFS; `[A]`)",
    ..BIG_WIN10_X64
};

/// Every big-page layout.
pub const BIG_LAYOUTS: [&BigPageLayout; 9] = [
    &BIG_XP_X86_12,
    &BIG_XP_X86_8,
    &BIG_2003_X86,
    &BIG_2003_X64,
    &BIG_VISTA_X86,
    &BIG_VISTA_X64,
    &BIG_WIN10_X86,
    &BIG_WIN10_X64,
    &BIG_WIN11_X64,
];

/// Candidate big-page layouts for a machine and build, the expected one first. XP x86's entry size is
/// `[?]` (8, 12 or 16 bytes, sheet §5.7 / uncertainty #11) and the x64 Win10 → Win11 switch is known
/// only as "build ≥ 20348": those get validated alternatives.
pub fn big_candidates(machine: Machine, build: u32) -> Vec<&'static BigPageLayout> {
    let x86 = machine == Machine::X86;
    match (Family::from_build(build), x86) {
        (Family::Xp, true) => vec![&BIG_XP_X86_12, &BIG_XP_X86_8, &BIG_2003_X86],
        (Family::Xp | Family::Server2003, false) => vec![&BIG_2003_X64],
        (Family::Server2003, true) => vec![&BIG_2003_X86, &BIG_XP_X86_12],
        (Family::Win7 | Family::Win8, true) => vec![&BIG_VISTA_X86],
        (Family::Win7 | Family::Win8, false) => vec![&BIG_VISTA_X64],
        (_, true) => vec![&BIG_WIN10_X86],
        (_, false) if build >= crate::versions::build::SERVER_2022 => {
            vec![&BIG_WIN11_X64, &BIG_WIN10_X64]
        }
        (_, false) => vec![&BIG_WIN10_X64, &BIG_WIN11_X64],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_fit_their_entries() {
        for l in TRACKER_LAYOUTS {
            for f in [
                l.key,
                l.nonpaged_allocs,
                l.nonpaged_frees,
                l.nonpaged_bytes,
                l.paged_allocs,
                l.paged_frees,
                l.paged_bytes,
            ] {
                assert!(
                    u64::from(f.off) + u64::from(f.width) <= l.size,
                    "{}",
                    l.name
                );
            }
        }
        for l in BIG_LAYOUTS {
            assert!(u64::from(l.va.off) + u64::from(l.va.width) <= l.size);
            assert!(u64::from(l.key.off) + 4 <= l.size);
        }
    }

    #[test]
    fn bitfields_decode() {
        let mut e = [0u8; 24];
        e[0xC..0x10].copy_from_slice(&(0xABC0_0000u32 | (0x203 << 8) | 0x5A).to_le_bytes());
        let b = BIG_WIN10_X64.pool_type_bits.unwrap();
        assert_eq!(b.get(&e), 0x203);
        let h = [0x01u8, 0x02, 0x03, 0x04];
        assert_eq!(POOL_HEADER_X64.block_size.get(&h), 3);
        assert_eq!(POOL_HEADER_X64.pool_type.get(&h), 4);
        // x86: PreviousSize 0x1FF, BlockSize 0x100, PoolType 0x7F.
        let v: u32 = 0x1FF | (0x100 << 16) | (0x7F << 25);
        let h = v.to_le_bytes();
        assert_eq!(POOL_HEADER_X86.previous_size.get(&h), 0x1FF);
        assert_eq!(POOL_HEADER_X86.block_size.get(&h), 0x100);
        assert_eq!(POOL_HEADER_X86.pool_type.get(&h), 0x7F);
    }

    #[test]
    fn selection() {
        assert_eq!(tracker_candidates(Machine::X64, 7601)[0].size, 0x28);
        assert_eq!(tracker_candidates(Machine::X64, 19041)[0].size, 0x38);
        assert_eq!(tracker_candidates(Machine::X64, 19041).len(), 3);
        assert_eq!(tracker_candidates(Machine::X86, 19041)[0].size, 0x30);
        assert_eq!(tracker_candidates(Machine::X86, 21292)[0].size, 0x40);
        assert_eq!(tracker_candidates(Machine::X86, 2600)[0].size, 0x1C);
        assert_eq!(big_candidates(Machine::X64, 22621)[0].size, 32);
        assert_eq!(big_candidates(Machine::X64, 19041)[0].size, 24);
        assert_eq!(big_candidates(Machine::X86, 2600)[0].size, 12);
    }
}
