//! Kernel pool: tag statistics (`!poolused`), the big pool table, pool pages (`!pool`) and tag scans
//! (`!poolfind`), without a PDB.
//!
//! * [`layout`]: `_POOL_HEADER`, `_POOL_TRACKER_TABLE`, `_POOL_TRACKER_BIG_PAGES` per version, as data.
//! * [`tracker`]: find `nt!PoolTrackTable` through KDBG and sum its counters per tag.
//! * [`big`]: find `nt!PoolBigPageTable` near the PoolTrackTable variable and list big allocations.
//! * [`page`]: walk the headers of one pool page (legacy pool, builds < 18362).
//! * [`scan`]: find valid pool headers over mapped kernel memory (rayon, sorted output).
//! * [`owners`]: which loaded driver allocates with a tag (tag bytes in the images, by code pattern).
//!
//! Every count, size and pointer read from the dump is bounded; failures are [`PoolError`]s that say
//! which table could not be read and why.

pub mod big;
pub mod layout;
pub mod owners;
pub mod page;
pub mod scan;
pub mod tracker;

use crate::dump::Dump;
use crate::error::Error;
use crate::header::Machine;
use crate::kernel::Family;
use layout::PoolHeaderLayout;

pub use big::{BigPages, BigTableInfo};
pub use page::{PoolBlock, PoolPage};
pub use scan::{PoolFilter, ScanHits, ScanOptions, TagPattern};
pub use tracker::{PoolUsed, TagUsage, TrackerTableInfo};

/// Which pool table a [`PoolError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolTable {
    /// `nt!PoolTrackTable` (tag statistics).
    TrackTable,
    /// `nt!PoolBigPageTable` (big allocations).
    BigPageTable,
    /// A pool page (`!pool`).
    Page,
    /// Memory to scan.
    Memory,
}

impl PoolTable {
    /// Short name used in messages and in the Python exception's `table` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolTable::TrackTable => "PoolTrackTable",
            PoolTable::BigPageTable => "PoolBigPageTable",
            PoolTable::Page => "pool page",
            PoolTable::Memory => "memory",
        }
    }
}

/// Why a pool table could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// The structure is not available in this dump (no KDBG, a triage dump, a missing field).
    #[error("{}: {why}", table.as_str())]
    Unavailable {
        /// Which table.
        table: PoolTable,
        /// VA involved (the variable or the table), 0 when none.
        va: u64,
        /// Why, in words.
        why: String,
    },
    /// A value read from the dump is out of range (absurd size, bad pointer, no layout validates).
    #[error("{}: {why}", table.as_str())]
    Invalid {
        /// Which table.
        table: PoolTable,
        /// VA of the offending value.
        va: u64,
        /// What is wrong, in words.
        why: String,
    },
    /// Any other core error (a translation failure that is not about a table).
    #[error(transparent)]
    Core(#[from] Error),
}

impl PoolError {
    /// (table, VA, `"unavailable"` or `"invalid"`) when the error is about a table; None for
    /// [`PoolError::Core`].
    pub fn table_failure(&self) -> Option<(PoolTable, u64, &'static str)> {
        match *self {
            PoolError::Unavailable { table, va, .. } => Some((table, va, "unavailable")),
            PoolError::Invalid { table, va, .. } => Some((table, va, "invalid")),
            PoolError::Core(_) => None,
        }
    }
}

/// Result with [`PoolError`].
pub type PoolResult<T> = std::result::Result<T, PoolError>;

/// Which era's `PoolType` encoding a header uses (sheet §5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolEra {
    /// XP / 2003: allocated = in-use bit 0x4; stored = (requested + 1) | 4; nonpaged ⇒ odd.
    Xp,
    /// Vista … Windows 10 before 19H1: allocated = in-use bit 0x2; paged ⇒ odd. Headers chain.
    Vista,
    /// Windows 10 19H1 (build 18362) and later: segment heap; the Vista rule for the type byte, but
    /// PreviousSize no longer links neighbours.
    SegmentHeap,
}

impl PoolEra {
    /// The era of an OS build number.
    pub fn from_build(build: u32) -> PoolEra {
        use crate::versions::build::{VISTA, WIN10_19H1};
        match build {
            b if b < VISTA => PoolEra::Xp,
            b if b < WIN10_19H1 => PoolEra::Vista,
            _ => PoolEra::SegmentHeap,
        }
    }

    /// Decode a stored header PoolType: `None` when the value is impossible for this era, else
    /// `(allocated, requested POOL_TYPE)`. A free block decodes to `(false, 0)`.
    ///
    /// Accepted values: XP: 0, or in-use bit 4 with `(v & !4) - 1` made only of base type 1, quota 8,
    /// session 0x20 and a verifier bit 0x40 (its value is `[?]` in the sheet). Vista+: 0, or bit 2 with
    /// `v & !2` made only of 1 (paged), 4 (cache aligned), 8 (quota), 0x20 (session).
    #[inline]
    pub fn decode_type(self, v: u32) -> Option<(bool, u32)> {
        if v == 0 {
            return Some((false, 0));
        }
        match self {
            PoolEra::Xp => {
                let r = v & !4;
                if v & 4 == 0 || r == 0 {
                    return None;
                }
                let t = r - 1;
                // Stored odd = nonpaged: requested base type 0 gives t even.
                (t & !(0x1 | 0x8 | 0x20 | 0x40) == 0).then_some((true, t))
            }
            PoolEra::Vista | PoolEra::SegmentHeap => {
                let t = v & !2;
                (v & 2 != 0 && t & !(0x1 | 0x4 | 0x8 | 0x20) == 0).then_some((true, t))
            }
        }
    }
}

/// Facts about the dump that every pool reader needs.
#[derive(Debug, Clone, Copy)]
pub struct PoolContext {
    /// Architecture.
    pub machine: Machine,
    /// OS build number.
    pub build: u32,
    /// Release family.
    pub family: Family,
    /// Header-type encoding era.
    pub era: PoolEra,
    /// Pointer size in bytes.
    pub ptr: u64,
    /// Processors (from the dump header; at least 1).
    pub processors: u32,
    /// The `_POOL_HEADER` layout: the dump's PDB override ([`Dump::layouts`]) when set, else the
    /// machine's built-in one.
    pub header: PoolHeaderLayout,
}

impl PoolContext {
    /// The context of a dump (with its `_POOL_HEADER` override, if any).
    pub fn of(d: &Dump) -> PoolContext {
        let mut c = PoolContext::new(d.header.machine, d.header.build, d.header.processors);
        if let Some(o) = &d.layouts().pool_header {
            c.header = o.layout;
        }
        c
    }

    /// A context from its parts (tests, fuzzing): machine, OS build number, processor count.
    pub fn new(machine: Machine, build: u32, processors: u32) -> PoolContext {
        PoolContext {
            machine,
            build,
            family: Family::from_build(build),
            era: PoolEra::from_build(build),
            ptr: machine.pointer_size(),
            processors: processors.max(1),
            header: *layout::pool_header(machine),
        }
    }

    /// True before Windows 8, where the tag's top bit may be the "protected" flag (sheet §5.4, §7).
    pub fn masks_protected_bit(&self) -> bool {
        self.family < Family::Win8
    }

    /// The tag as reported: the protected bit 0x80000000 removed before Windows 8.
    #[inline]
    pub fn clean_tag(&self, tag: u32) -> u32 {
        if self.masks_protected_bit() {
            tag & 0x7FFF_FFFF
        } else {
            tag
        }
    }

    /// True when `va` is in the kernel half of the address space (x64 ≥ 0xFFFF8000_00000000, 32-bit
    /// ≥ 0x80000000).
    #[inline]
    pub fn is_kernel_va(&self, va: u64) -> bool {
        match self.machine {
            Machine::X86 => (0x8000_0000..=0xFFFF_FFFF).contains(&va),
            _ => va >= 0xFFFF_8000_0000_0000,
        }
    }
}

/// Where a layout comes from when no PDB overrides it: `"profile x64-0x38: [sheet §5.5] …"`.
pub fn profile_source(name: &str, source: &str) -> String {
    format!("profile {name}: {source}")
}

/// Where the dump's `_POOL_HEADER` layout comes from: the PDB type, or the built-in profile.
pub fn header_source(d: &Dump) -> String {
    match &d.layouts().pool_header {
        Some(o) => o.source.clone(),
        None => {
            let h = layout::pool_header(d.header.machine);
            profile_source(h.name, h.source)
        }
    }
}

/// True when `tag` looks like a pool tag: four bytes of printable ASCII (0x20–0x7E). With
/// `protected`, the last byte may also carry the pre-Windows 8 protected bit 0x80.
#[inline]
pub fn tag_like(tag: u32, protected: bool) -> bool {
    let b = tag.to_le_bytes();
    let ok = |c: u8| (0x20..=0x7E).contains(&c);
    ok(b[0]) && ok(b[1]) && ok(b[2]) && (ok(b[3]) || (protected && ok(b[3] & 0x7F)))
}

/// A tag as text: the four bytes, non-printable ones as `?`.
pub fn tag_str(tag: u32) -> String {
    tag.to_le_bytes()
        .iter()
        .map(|&c| {
            if (0x20..=0x7E).contains(&c) {
                c as char
            } else {
                '?'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_rules() {
        // XP: NonPagedPool (0) → 1|4 = 5; PagedPool (1) → 2|4 = 6; free 0.
        assert_eq!(PoolEra::Xp.decode_type(5), Some((true, 0)));
        assert_eq!(PoolEra::Xp.decode_type(6), Some((true, 1)));
        assert_eq!(PoolEra::Xp.decode_type(0), Some((false, 0)));
        assert_eq!(PoolEra::Xp.decode_type(1), None);
        // Vista+: NonPagedPool → 2, PagedPool → 3, session paged 0x23.
        assert_eq!(PoolEra::Vista.decode_type(2), Some((true, 0)));
        assert_eq!(PoolEra::Vista.decode_type(3), Some((true, 1)));
        assert_eq!(PoolEra::Vista.decode_type(0x23), Some((true, 0x21)));
        assert_eq!(PoolEra::Vista.decode_type(1), None);
        assert_eq!(PoolEra::Vista.decode_type(0x82), None);
    }

    #[test]
    fn tags() {
        assert!(tag_like(u32::from_le_bytes(*b"Thre"), false));
        assert!(!tag_like(u32::from_le_bytes(*b"Thr\xe5"), false));
        assert!(tag_like(u32::from_le_bytes(*b"Thr\xe5"), true));
        assert!(!tag_like(0, true));
        assert_eq!(tag_str(u32::from_le_bytes(*b"Ab\x01 ")), "Ab? ");
    }
}
