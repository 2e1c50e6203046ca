//! Windows version knowledge in one place: every OS build number at which something this crate reads
//! changes, each with its source, and the per-version distances that locate tables. The readers
//! ([`crate::kernel::profile`], [`crate::pool`]) take their thresholds from here; `docs/versions.md`
//! ("adding a Windows version") names every file to touch, including the forge's own tables (the forge
//! follows Windows from its sources, not from this module, so that tests compare two readings).
//!
//! Source tags: `[sheet §n]` = WINDOWS_INTERNALS.md; `[vol2 profile]` = Volatility 2's overlays and
//! profiles; `[vol3 file]` = Volatility 3's symbol tables; `[ntdiff …]` = the ntdiff PDB listings.

/// Build numbers named in the readers.
pub mod build {
    /// Windows XP (x86) RTM build; family boundary: below [`SERVER_2003_FAMILY`] is XP.
    pub const XP: u32 = 2600;
    /// First build treated as the Server 2003 / XP x64 family (2003 is 3790).
    pub const SERVER_2003_FAMILY: u32 = 3000;
    /// Server 2003 SP1/SP2 and XP x64.
    pub const SERVER_2003: u32 = 3790;
    /// First build treated as the Vista / 7 family.
    pub const VISTA_FAMILY: u32 = 4000;
    /// Vista RTM: the pool header's PoolType encoding changes (in-use bit 0x2) [sheet §5.3].
    pub const VISTA: u32 = 6000;
    /// Vista SP2 (last Vista build in Volatility 2's distance table).
    pub const VISTA_SP2: u32 = 6002;
    /// Windows 7 RTM.
    pub const WIN7: u32 = 7600;
    /// Windows 7 SP1.
    pub const WIN7_SP1: u32 = 7601;
    /// First build treated as the Windows 8 family.
    pub const WIN8_FAMILY: u32 = 8000;
    /// Windows 8.
    pub const WIN8: u32 = 9200;
    /// Windows 8.1.
    pub const WIN81: u32 = 9600;
    /// Windows 8.1 Update (Volatility 2 has its own distances).
    pub const WIN81_UPDATE: u32 = 9601;
    /// First build treated as the Windows 10 family.
    pub const WIN10_FAMILY: u32 = 10000;
    /// Windows 10 1607 (RS1): KDBG grows to 0x368 (PteBase) [sheet §3.2–3.3]; x64 tracker entries are
    /// 0x38 bytes from here (expected first; others still validated) [sheet §5.5].
    pub const WIN10_1607: u32 = 14393;
    /// Windows 10 1809 (RS5): KDBG grows to 0x380 (retpoline fields) [sheet §3.3].
    pub const WIN10_1809: u32 = 17763;
    /// Windows 10 1903 (19H1): segment-heap pool — PreviousSize no longer chains headers, the page walk
    /// of `!pool` stops [sheet §5.3–5.4]; x86 tracker entries are 0x30 bytes [vol2 win10_x86_19041].
    pub const WIN10_19H1: u32 = 18362;
    /// Server 2022: x64 `_POOL_TRACKER_BIG_PAGES` gains ProcessBilled (32 bytes) [sheet §5.7].
    pub const SERVER_2022: u32 = 20348;
    /// Insider build 21292: x86 tracker entries are 0x40 bytes [ntdiff Win10_XXXX_21292/x86].
    pub const X86_TRACKER_40: u32 = 21292;
    /// Windows 11: its own family; x64 tracker entries are 0x50 bytes [sheet §5.5].
    pub const WIN11: u32 = 22000;
}

/// One threshold, for documentation and the check that docs/versions.md lists every one.
#[derive(Debug, Clone, Copy)]
pub struct Threshold {
    /// First build (inclusive) where the change applies.
    pub build: u32,
    /// What changes.
    pub what: &'static str,
    /// Where that is known from.
    pub source: &'static str,
    /// The reader that uses it (file under crates/ntdump-core/src).
    pub used_in: &'static str,
}

/// Every build threshold the readers use.
pub const THRESHOLDS: &[Threshold] = &[
    Threshold {
        build: build::SERVER_2003_FAMILY,
        what: "family Server 2003 (LDR/KDBG/big-page layouts of 2003)",
        source: "Microsoft release build numbers (2003 is 3790); boundary between releases",
        used_in: "kernel/profile.rs Family::from_build",
    },
    Threshold {
        build: build::VISTA_FAMILY,
        what: "family Vista/7",
        source: "Microsoft release build numbers (Vista 6000-6002, 7 7600-7601)",
        used_in: "kernel/profile.rs Family::from_build",
    },
    Threshold {
        build: build::VISTA,
        what: "pool header PoolType encoding: in-use bit 0x2 instead of 0x4",
        source: "[sheet §5.3] (WRK pool.c for 2003; ReactOS for the later rule)",
        used_in: "pool/mod.rs PoolEra::from_build",
    },
    Threshold {
        build: build::WIN8_FAMILY,
        what: "family Windows 8: the pool tag's protected bit is gone",
        source: "[sheet §5.4, §7]",
        used_in: "kernel/profile.rs Family::from_build, pool/mod.rs masks_protected_bit",
    },
    Threshold {
        build: build::WIN10_FAMILY,
        what: "family Windows 10: KLDR layout of 19041, per-processor tracker tables, \
               several tracker layouts validated",
        source: "[vol2 win10_x64_19041] [sheet §5.5]",
        used_in: "kernel/profile.rs, pool/layout.rs tracker_candidates",
    },
    Threshold {
        build: build::WIN10_1607,
        what: "KDBG Header.Size 0x368; x64 tracker entry 0x38 expected first",
        source: "[sheet §3.3] [sheet §5.5]",
        used_in: "kernel/profile.rs kdbg_size, pool/layout.rs tracker_candidates",
    },
    Threshold {
        build: build::WIN10_1809,
        what: "KDBG Header.Size 0x380",
        source: "[sheet §3.3]",
        used_in: "kernel/profile.rs kdbg_size",
    },
    Threshold {
        build: build::WIN10_19H1,
        what: "segment-heap pool (no header chain); x86 tracker entry 0x30 expected first",
        source: "[sheet §5.3–5.5] [vol2 win10_x86_19041]",
        used_in: "pool/mod.rs PoolEra::from_build, pool/layout.rs tracker_candidates",
    },
    Threshold {
        build: build::SERVER_2022,
        what: "x64 big-page entry 32 bytes (ProcessBilled) expected first",
        source: "[sheet §5.7]",
        used_in: "pool/layout.rs big_candidates",
    },
    Threshold {
        build: build::X86_TRACKER_40,
        what: "x86 tracker entry 0x40 expected first",
        source: "[ntdiff Win10_XXXX_21292/x86] [sheet §5.5]",
        used_in: "pool/layout.rs tracker_candidates",
    },
    Threshold {
        build: build::WIN11,
        what: "family Windows 11; x64 tracker entry 0x50 expected first",
        source: "Microsoft release build numbers (11 is 22000) [sheet §5.5]",
        used_in: "kernel/profile.rs Family::from_build, pool/layout.rs tracker_candidates",
    },
];

/// A Volatility 2 distance entry: ((major, minor, 64-bit), (d0, d1) in bytes).
pub type Vol2Distance = ((u32, u32, bool), (i64, i64));

/// Volatility 2's distances (bytes): PoolBigPageTable = PoolTrackTable − d0, PoolBigPageTableSize =
/// PoolTrackTable − d1, by (major, minor, 64-bit) — `bigpagepools.py` `BigPageTableMagic`. 8.1 x64 has
/// two builds: 9600 (−5200, −5176) and 9601 (−5192, −5200) (see [`vol2_distance`]).
pub const VOL2_DISTANCES: [Vol2Distance; 10] = [
    ((5, 1, false), (8, 12)),
    ((5, 2, false), (24, 28)),
    ((5, 2, true), (48, 56)),
    ((6, 0, false), (20, 24)),
    ((6, 0, true), (40, 48)),
    ((6, 1, false), (20, 24)),
    ((6, 1, true), (40, 48)),
    ((6, 2, false), (92, 88)),
    ((6, 2, true), (-5200, -5224)),
    ((6, 3, false), (116, 120)),
];

/// Volatility 2's distances (bytes) from the PoolTrackTable variable to the big page table's variables,
/// for a machine (`x64` = 64-bit) and build, if it has them (`bigpagepools.py`).
pub fn vol2_distance(x64: bool, b: u32) -> Option<(i64, i64)> {
    use build::*;
    let ver = match b {
        XP => (5, 1),
        SERVER_2003 => (5, 2),
        VISTA..=VISTA_SP2 => (6, 0),
        WIN7..=WIN7_SP1 => (6, 1),
        WIN8 => (6, 2),
        WIN81 if x64 => return Some((-5200, -5176)),
        WIN81_UPDATE if x64 => return Some((-5192, -5200)),
        WIN81 | WIN81_UPDATE => (6, 3),
        _ => return None,
    };
    VOL2_DISTANCES
        .iter()
        .find(|(k, _)| *k == (ver.0, ver.1, x64))
        .map(|(_, v)| *v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/versions.md is the checklist: it must name every threshold the readers use.
    #[test]
    fn the_guide_names_every_threshold() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/versions.md");
        let doc = std::fs::read_to_string(path).expect("docs/versions.md exists");
        for t in THRESHOLDS {
            assert!(
                doc.contains(&t.build.to_string()),
                "docs/versions.md does not mention build {} ({})",
                t.build,
                t.what
            );
        }
        for f in [
            "kernel/profile.rs",
            "pool/layout.rs",
            "pool/mod.rs",
            "versions.rs",
            "forge/kernel.py",
            "forge/pool.py",
        ] {
            assert!(doc.contains(f), "docs/versions.md does not name {f}");
        }
    }

    #[test]
    fn thresholds_are_sorted_and_distances_known() {
        assert!(THRESHOLDS.windows(2).all(|w| w[0].build < w[1].build));
        assert_eq!(vol2_distance(true, build::WIN81), Some((-5200, -5176)));
        assert_eq!(vol2_distance(false, build::WIN81), Some((116, 120)));
        assert_eq!(vol2_distance(false, build::WIN7_SP1), Some((20, 24)));
        assert_eq!(vol2_distance(true, 19041), None);
    }
}
