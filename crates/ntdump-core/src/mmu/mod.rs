//! Virtual-to-physical translation for x86 (non-PAE), x86 PAE and x64 4-level paging.
//!
//! The three modes are data ([`ModeSpec`]); one walker serves them all (WINDOWS_INTERNALS.md §2.1–2.3:
//! Intel SDM layouts as used by Volatility 3, MemProcFS and Rekall). Windows transition PTEs (valid clear,
//! transition set, prototype clear) are followed: the page is still in RAM.
//!
//! One page-table model: an entry's bits are interpreted by [`decode`] (what it is) and [`leaf_frame`]
//! (where a leaf's page starts, and its size) only. [`walk`]/[`translate`] follow one VA down through
//! them; [`Leaves`] enumerates every leaf over a VA range with the same two functions (search, the pool
//! scan, the mapped-range listing).

mod leaves;

pub use leaves::{kernel_start, va_end, Leaf, Leaves};

use crate::addr::{Pa, Va, PAGE_SIZE};
use crate::error::{Error, NotPresentKind, PtLevel, Result};

/// Paging mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 32-bit two-level paging, 4-byte entries, 4 KiB and 4 MiB pages.
    X86,
    /// 32-bit PAE three-level paging, 8-byte entries, 4 KiB and 2 MiB pages.
    Pae,
    /// x64 four-level paging, 4 KiB, 2 MiB and 1 GiB pages.
    X64,
}

/// One level of a paging mode.
#[derive(Debug, Clone, Copy)]
pub struct LevelSpec {
    /// Which entry this level holds.
    pub level: PtLevel,
    /// VA bit where this level's index starts.
    pub shift: u32,
    /// Number of index bits.
    pub bits: u32,
    /// Page size (bytes) mapped when the entry's PS bit (7) is set, or 0 when PS is not legal here.
    pub large: u64,
}

/// A paging mode as data.
#[derive(Debug, Clone, Copy)]
pub struct ModeSpec {
    /// Levels from the top.
    pub levels: &'static [LevelSpec],
    /// Size in bytes of one entry.
    pub entry_size: u64,
    /// Mask applied to the DTB to find the top-level table (a PA).
    pub root_mask: u64,
    /// Mask of the frame-address bits of an entry.
    pub frame_mask: u64,
    /// Number of implemented VA bits (32 or 48).
    pub va_bits: u32,
}

const fn lv(level: PtLevel, shift: u32, bits: u32, large: u64) -> LevelSpec {
    LevelSpec {
        level,
        shift,
        bits,
        large,
    }
}

static X86_LEVELS: [LevelSpec; 2] = [
    lv(PtLevel::Pde, 22, 10, 0x40_0000),
    lv(PtLevel::Pte, 12, 10, 0),
];
static PAE_LEVELS: [LevelSpec; 3] = [
    lv(PtLevel::Pdpte, 30, 2, 0),
    lv(PtLevel::Pde, 21, 9, 0x20_0000),
    lv(PtLevel::Pte, 12, 9, 0),
];
static X64_LEVELS: [LevelSpec; 4] = [
    lv(PtLevel::Pml4e, 39, 9, 0),
    lv(PtLevel::Pdpte, 30, 9, 0x4000_0000),
    lv(PtLevel::Pde, 21, 9, 0x20_0000),
    lv(PtLevel::Pte, 12, 9, 0),
];

impl Mode {
    /// The mode's table of levels and masks.
    pub fn spec(self) -> ModeSpec {
        match self {
            Mode::X86 => ModeSpec {
                levels: &X86_LEVELS,
                entry_size: 4,
                root_mask: 0xFFFF_F000,
                frame_mask: 0xFFFF_F000,
                va_bits: 32,
            },
            Mode::Pae => ModeSpec {
                levels: &PAE_LEVELS,
                entry_size: 8,
                root_mask: 0xFFFF_FFE0,
                frame_mask: 0x000F_FFFF_FFFF_F000,
                va_bits: 32,
            },
            Mode::X64 => ModeSpec {
                levels: &X64_LEVELS,
                entry_size: 8,
                root_mask: 0x000F_FFFF_FFFF_F000,
                frame_mask: 0x000F_FFFF_FFFF_F000,
                va_bits: 48,
            },
        }
    }

    /// `"x86"`, `"pae"` or `"x64"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::X86 => "x86",
            Mode::Pae => "pae",
            Mode::X64 => "x64",
        }
    }

    /// Pointer size in bytes.
    pub fn pointer_size(self) -> u64 {
        if self == Mode::X64 {
            8
        } else {
            4
        }
    }
}

/// How an entry seen during a walk was interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// Valid, points to the next table.
    Table,
    /// Valid large page (PS set) or valid final PTE: the walk ends here.
    Page,
    /// Transition entry (page still in RAM), followed like a valid one.
    Transition,
    /// Not present: the walk stops.
    NotPresent(NotPresentKind),
}

crate::ser::as_str!(EntryKind);

impl EntryKind {
    /// `"table"`, `"page"`, `"transition"` or the not-present kind's name.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Table => "table",
            EntryKind::Page => "page",
            EntryKind::Transition => "transition",
            EntryKind::NotPresent(n) => n.as_str(),
        }
    }
}

/// One step of a walk, as `!pte` shows it.
#[derive(Debug, Clone, Copy)]
pub struct WalkStep {
    /// Which level.
    pub level: PtLevel,
    /// Index inside the table.
    pub index: u64,
    /// PA of the entry.
    pub entry_pa: Pa,
    /// Raw entry value.
    pub value: u64,
    /// Interpretation.
    pub kind: EntryKind,
}

crate::ser::tuple!(WalkStep: level, index, entry_pa, value, kind);

/// The result of a walk: every step read, and the final PA with the page size (bytes), or the error.
#[derive(Debug)]
pub struct Walk {
    /// Steps from the top level down.
    pub steps: Vec<WalkStep>,
    /// Final translation, or why there is none.
    pub result: Result<(Pa, u64)>,
}

/// Classify a not-present entry per Windows' software PTE formats (§2.3).
pub fn classify_invalid(mode: Mode, e: u64) -> EntryKind {
    if e == 0 {
        return EntryKind::NotPresent(NotPresentKind::Unmapped);
    }
    if e & 0xC00 == 0x800 {
        return EntryKind::Transition;
    }
    if e & 0x400 != 0 {
        return EntryKind::NotPresent(NotPresentKind::Prototype);
    }
    let page_file_high = match mode {
        Mode::X86 => e >> 12,
        _ => e >> 32,
    };
    if page_file_high != 0 {
        EntryKind::NotPresent(NotPresentKind::PagedOut)
    } else {
        EntryKind::NotPresent(NotPresentKind::DemandZero)
    }
}

/// Decode an entry `value` read at level `depth` (0 = the top) of `mode`: the one place where the bits of
/// a page-table entry are interpreted (valid bit 0, PS bit 7 where the level allows large pages, the
/// software formats of [`classify_invalid`]). A PS bit in an x64 PML4E is reserved: reported invalid.
/// A transition entry above the last level is followed as a table by every reader.
#[inline]
pub fn decode(mode: Mode, depth: usize, value: u64) -> EntryKind {
    let spec = mode.spec();
    let Some(l) = spec.levels.get(depth) else {
        return EntryKind::NotPresent(NotPresentKind::Invalid);
    };
    let last = depth + 1 == spec.levels.len();
    if value & 1 == 0 {
        return classify_invalid(mode, value);
    }
    if last || (l.large != 0 && value & 0x80 != 0) {
        EntryKind::Page
    } else if l.level == PtLevel::Pml4e && value & 0x80 != 0 {
        EntryKind::NotPresent(NotPresentKind::Invalid)
    } else {
        EntryKind::Table
    }
}

/// For an entry [`decode`] calls a page (or a transition entry at the last level), read at level `depth`:
/// the PA where the mapped page starts and the page's size in bytes (4 KiB, 2/4 MiB or 1 GiB).
#[inline]
pub fn leaf_frame(mode: Mode, depth: usize, value: u64) -> (Pa, u64) {
    let spec = mode.spec();
    let last = depth + 1 >= spec.levels.len();
    let large = spec.levels.get(depth).map_or(0, |l| l.large);
    if last || large == 0 {
        (Pa(value & spec.frame_mask), PAGE_SIZE)
    } else if mode == Mode::X86 {
        // 4 MiB page: PA[31:22] from the entry, PA[35:32] from PDE bits 16:13 (PSE-36).
        (
            Pa((value & 0xFFC0_0000) | (((value >> 13) & 0xF) << 32)),
            large,
        )
    } else {
        // 2 MiB / 1 GiB page: clear bit 12 (PAT) and the low bits.
        (Pa(value & spec.frame_mask & !(large - 1)), large)
    }
}

/// Translate `va` with the tables rooted at `dtb`, reading entries through `read_entry(pa) -> Result<u64>`.
/// Records every step. The walk is at most four reads; it cannot loop.
pub fn walk<F>(mode: Mode, dtb: u64, va: Va, read_entry: F) -> Walk
where
    F: FnMut(Pa) -> Result<u64>,
{
    walk_inner(mode, dtb, va, read_entry, true)
}

/// Like [`walk`] but records no steps (no allocation): the translation only.
pub fn translate<F>(mode: Mode, dtb: u64, va: Va, read_entry: F) -> Result<(Pa, u64)>
where
    F: FnMut(Pa) -> Result<u64>,
{
    walk_inner(mode, dtb, va, read_entry, false).result
}

fn walk_inner<F>(mode: Mode, dtb: u64, va: Va, mut read_entry: F, record: bool) -> Walk
where
    F: FnMut(Pa) -> Result<u64>,
{
    let spec = mode.spec();
    let mut steps = if record {
        Vec::with_capacity(spec.levels.len())
    } else {
        Vec::new()
    };
    if spec.va_bits == 32 && va.0 > 0xFFFF_FFFF {
        let result = Err(Error::NotCaptured {
            va,
            why: "above 4 GiB on a 32-bit machine",
        });
        return Walk { steps, result };
    }
    if spec.va_bits == 48 {
        let top = va.0 >> 47;
        if top != 0 && top != 0x1_FFFF {
            let result = Err(Error::NotCaptured {
                va,
                why: "non-canonical x64 address",
            });
            return Walk { steps, result };
        }
    }
    let mut table = dtb & spec.root_mask;
    for (i, l) in spec.levels.iter().enumerate() {
        let index = (va.0 >> l.shift) & ((1u64 << l.bits) - 1);
        let entry_pa = Pa(table + index * spec.entry_size);
        let value = match read_entry(entry_pa) {
            Ok(v) => v,
            Err(e) => {
                let result = Err(match e {
                    Error::NotInDump { pa, .. } => Error::NotInDump { va: Some(va), pa },
                    other => other,
                });
                return Walk { steps, result };
            }
        };
        let last = i + 1 == spec.levels.len();
        let kind = decode(mode, i, value);
        if record {
            steps.push(WalkStep {
                level: l.level,
                index,
                entry_pa,
                value,
                kind,
            });
        }
        match kind {
            EntryKind::Table => table = value & spec.frame_mask,
            EntryKind::Transition if !last => table = value & spec.frame_mask,
            EntryKind::Transition => {
                let pa = Pa(leaf_frame(mode, i, value).0 .0 | va.page_offset());
                return Walk {
                    steps,
                    result: Ok((pa, PAGE_SIZE)),
                };
            }
            EntryKind::Page => {
                let (frame, size) = leaf_frame(mode, i, value);
                let pa = Pa(frame.0 | (va.0 & (size - 1)));
                return Walk {
                    steps,
                    result: Ok((pa, size)),
                };
            }
            EntryKind::NotPresent(kind) => {
                return Walk {
                    steps,
                    result: Err(Error::NotPresent {
                        va,
                        level: l.level,
                        pte: value,
                        kind,
                    }),
                };
            }
        }
    }
    // Unreachable in practice: the last level always returns. Keep a typed error rather than a panic.
    Walk {
        steps,
        result: Err(Error::NotCaptured {
            va,
            why: "page walk ended without a page",
        }),
    }
}
