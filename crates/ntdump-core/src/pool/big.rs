//! Big pool allocations: `nt!PoolBigPageTable` (entries `_POOL_TRACKER_BIG_PAGES`).
//!
//! Locating the table without a PDB (sheet §5.7): the pair of variables `PoolBigPageTable` (pointer) and
//! `PoolBigPageTableSize` (entry count) sits near `nt!PoolTrackTable` in the kernel's data.
//! 1. First the fixed distances Volatility 2's `bigpagepools.py` uses per version ([`VOL2_DISTANCES`]).
//! 2. Otherwise (Windows 10+, or a kernel where those do not validate) every pointer-aligned slot within
//!    ±[`SEARCH_WINDOW`] bytes of the PoolTrackTable variable holding a page-aligned kernel VA (not the
//!    tracker table) is a table candidate, and every slot within 4 pointers of it holding a plausible
//!    entry count (a power of two, or a multiple of 0x1000, in [16, [`MAX_ENTRIES`]] — MemProcFS accepts
//!    multiples of 0x1000 below 0x1000000) is its size candidate.
//! 3. A (table, size, layout) candidate is scored on its first [`VALIDATE_ENTRIES`] entries: an entry is
//!    a *free slot* (`Va` 0 or 1), *used* or *freed* (`Va` with bit 0 masked is a page-aligned kernel VA
//!    and the key is tag-like; bit 0 set = freed), or invalid. At most 5% invalid, and either at least
//!    one used/freed entry or a majority of `Va == 1` slots (a table as InitializePool leaves it). The
//!    best score wins; ties go to the nearer pair.
//!
//! Free slots (sources: WRK `base/ntos/ex/pool.c` InitializePool and ExInitializePoolDescriptor — the
//! session table —, ReactOS `ntoskrnl/mm/ARM3/expool.c` InitializePool): the kernel zeroes the table
//! and sets every slot's `Va` to `POOL_BIG_TABLE_ENTRY_FREE` (1); ExpAddTagForBigPages takes a slot
//! whose `Va` has bit 0 set; freeing (`ExpFindAndRemoveTagBigPages`) sets bit 0 of the entry's `Va` and
//! leaves Key and size as they were. So `Va` 1 (never used) and 0 (zeroed, e.g. the part of a table
//! that expansion added, or an XP-era table) are slots, never allocations; an odd `Va` above 1 is a
//! freed allocation that kept its tag and size.

use super::layout::{big_candidates, BigPageLayout};
use super::{tag_like, PoolContext, PoolError, PoolResult, PoolTable};
use crate::addr::{Va, PAGE_SIZE};
use crate::dump::Dump;
use crate::header::Machine;
use crate::kernel::{Family, Kernel};

/// Most entries read from a big page table (16 Mi entries; MemProcFS's bound).
pub const MAX_ENTRIES: u64 = 1 << 24;
/// Entries examined per candidate when choosing.
pub const VALIDATE_ENTRIES: u64 = 4096;
/// Bytes searched on each side of the PoolTrackTable variable.
pub const SEARCH_WINDOW: i64 = 0x1800;

/// Volatility 2's distances, kept with the other version data in [`crate::versions`].
pub use crate::versions::{Vol2Distance, VOL2_DISTANCES};

/// Volatility 2's distances for a machine and build, if it has them ([`crate::versions::vol2_distance`]).
pub fn vol2_distance(machine: Machine, build: u32) -> Option<(i64, i64)> {
    crate::versions::vol2_distance(machine != Machine::X86, build)
}

/// Where the big page table is.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BigTableInfo {
    /// VA of the `PoolBigPageTable` variable (0 when the caller gave the table directly).
    pub table_variable: u64,
    /// VA of the `PoolBigPageTableSize` variable (0 when given).
    pub size_variable: u64,
    /// VA of the table.
    pub table: u64,
    /// Entries.
    pub entries: u64,
    /// The entry layout.
    #[serde(serialize_with = "crate::ser::big_name")]
    pub layout: BigPageLayout,
    /// Where the layout comes from: the PDB type (`"pdb nt!_POOL_TRACKER_BIG_PAGES (…)"`) or the
    /// built-in profile (`"profile win10-x64: …"`).
    pub layout_source: String,
    /// How it was found: `"volatility2 distance"`, `"search near PoolTrackTable"` or `"given"`.
    pub how: &'static str,
}

/// Big allocations, in table order (struct of columns). Free slots (`Va` 0 or 1) are left out; freed
/// allocations (odd `Va` above 1) are kept with `freed` set.
#[derive(Debug, Clone, Default)]
pub struct BigPages {
    /// Allocation VA (bit 0 cleared).
    pub va: Vec<u64>,
    /// Tag.
    pub tag: Vec<u32>,
    /// Bytes (NumberOfBytes, or NumberOfPages × 4096; 0 when the layout has neither).
    pub bytes: Vec<u64>,
    /// POOL_TYPE (u32::MAX when the layout has none).
    pub pool_type: Vec<u32>,
    /// True when bit 0 of Va is set (the allocation was freed; the entry keeps its old values).
    pub freed: Vec<bool>,
}

/// One entry of [`BigPages`]: (VA, tag, bytes, pool type, freed).
pub type BigEntry = (u64, u32, u64, u32, bool);

impl BigPages {
    /// Entry `i` (which must be below the number of entries).
    pub fn entry(&self, i: usize) -> BigEntry {
        let p = self;
        (p.va[i], p.tag[i], p.bytes[i], p.pool_type[i], p.freed[i])
    }
}

/// Result of [`read_big`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct BigPool {
    /// The entries.
    #[serde(skip)]
    pub pages: BigPages,
    /// Where the table is.
    #[serde(flatten)]
    pub info: BigTableInfo,
    /// Oddities.
    pub warnings: Vec<String>,
}

fn err_unavail(va: u64, why: impl Into<String>) -> PoolError {
    PoolError::Unavailable {
        table: PoolTable::BigPageTable,
        va,
        why: why.into(),
    }
}

fn plausible_count(n: u64) -> bool {
    (16..=MAX_ENTRIES).contains(&n) && (n.is_power_of_two() || n.is_multiple_of(0x1000))
}

/// `Va` values that mark a free slot: 0 (zeroed) and 1 (`POOL_BIG_TABLE_ENTRY_FREE` as InitializePool
/// writes it). Neither is ever an allocation.
pub fn is_free_slot(va: u64) -> bool {
    va & !1 == 0
}

/// Classify one entry: `Some(true)` used or freed and valid, `Some(false)` a free slot, `None` invalid.
fn entry_valid(ctx: &PoolContext, l: &BigPageLayout, e: &[u8]) -> Option<bool> {
    let va = l.va.get(e);
    if is_free_slot(va) {
        return Some(false);
    }
    let a = va & !1;
    if !a.is_multiple_of(PAGE_SIZE) || !ctx.is_kernel_va(a) || !tag_like(l.key.get(e) as u32, true)
    {
        return None;
    }
    if let Some(f) = l.number_of_bytes {
        let n = f.get(e);
        if n == 0 || n >= 1 << 40 {
            return None;
        }
    }
    Some(true)
}

/// Score a candidate table: `Some(used + freed entries, plus 1 when most slots hold Va == 1)` when at
/// most 5% of the entries are invalid and the table holds an allocation or is mostly `Va == 1` slots.
fn score(ctx: &PoolContext, l: &BigPageLayout, buf: &[u8]) -> Option<u64> {
    let (mut good, mut bad, mut ones, mut n) = (0u64, 0u64, 0u64, 0u64);
    for e in buf.chunks_exact(l.size as usize) {
        n += 1;
        if l.va.get(e) == 1 {
            ones += 1;
        }
        match entry_valid(ctx, l, e) {
            Some(true) => good += 1,
            Some(false) => {}
            None => bad += 1,
        }
    }
    let initialised = ones * 2 > n;
    ((good > 0 || initialised) && bad * 20 <= n).then_some(good + u64::from(initialised))
}

fn try_pair(
    d: &Dump,
    ctx: &PoolContext,
    table: u64,
    n: u64,
    cands: &[BigPageLayout],
) -> Option<(BigPageLayout, u64)> {
    if !ctx.is_kernel_va(table) || !table.is_multiple_of(PAGE_SIZE) || !plausible_count(n) {
        return None;
    }
    let mut best: Option<(BigPageLayout, u64)> = None;
    for l in cands {
        let k = n.min(VALIDATE_ENTRIES);
        let mut buf = vec![0u8; (k * l.size) as usize];
        if d.read_virt_padded(Va(table), &mut buf) == 0 {
            return None;
        }
        if let Some(s) = score(ctx, l, &buf) {
            if best.is_none_or(|(_, b)| s > b) {
                best = Some((*l, s));
            }
        }
    }
    best
}

/// The candidate entry layouts and the source of each: the PDB's alone when the dump has one
/// ([`Dump::layouts`]), else the profile's for the machine and build.
fn candidates(d: &Dump, ctx: &PoolContext) -> (Vec<BigPageLayout>, Option<String>) {
    match d.layouts().big_pages.clone() {
        Some(o) => (vec![o.layout], Some(o.source)),
        None => (
            big_candidates(ctx.machine, ctx.build)
                .into_iter()
                .copied()
                .collect(),
            None,
        ),
    }
}

fn source_of(l: &BigPageLayout, over: &Option<String>) -> String {
    over.clone()
        .unwrap_or_else(|| super::profile_source(l.name, l.source))
}

/// Find the big page table near the PoolTrackTable variable `track_var` (see the module docs).
pub fn locate(d: &Dump, track_var: Va, track_table: Va) -> PoolResult<BigTableInfo> {
    let (track_var, track_table) = (track_var.0, track_table.0);
    let ctx = PoolContext::of(d);
    let (cands, over) = candidates(d, &ctx);
    let ptr = ctx.ptr;
    let rd = |va: u64| d.read_ptr(Va(va)).ok();
    if let Some((d0, d1)) = vol2_distance(ctx.machine, ctx.build) {
        let tv = track_var.wrapping_add_signed(-d0);
        let sv = track_var.wrapping_add_signed(-d1);
        if let (Some(t), Some(n)) = (rd(tv), rd(sv)) {
            if let Some((layout, _)) = try_pair(d, &ctx, t, n, &cands) {
                return Ok(BigTableInfo {
                    table_variable: tv,
                    size_variable: sv,
                    table: t,
                    entries: n,
                    layout_source: source_of(&layout, &over),
                    layout,
                    how: "volatility2 distance",
                });
            }
        }
    }
    let lo = track_var.wrapping_add_signed(-SEARCH_WINDOW) & !(ptr - 1);
    let mut win = vec![0u8; (2 * SEARCH_WINDOW) as usize];
    if d.read_virt_padded(Va(lo), &mut win) == 0 {
        return Err(err_unavail(
            track_var,
            format!(
                "the kernel data around the PoolTrackTable variable {track_var:#x} is not readable"
            ),
        ));
    }
    let nslots = win.len() / ptr as usize;
    let slot = |i: usize| -> u64 {
        let o = i * ptr as usize;
        let mut b = [0u8; 8];
        b[..ptr as usize].copy_from_slice(&win[o..o + ptr as usize]);
        u64::from_le_bytes(b)
    };
    let var_slot = ((track_var - lo) / ptr) as i64;
    let mut best: Option<(u64, i64, BigTableInfo)> = None;
    for i in 0..nslots {
        let t = slot(i);
        if t == track_table || t == 0 || !t.is_multiple_of(PAGE_SIZE) || !ctx.is_kernel_va(t) {
            continue;
        }
        for dj in [-1i64, 1, -2, 2, -3, 3, -4, 4] {
            let j = i as i64 + dj;
            if j < 0 || j as usize >= nslots {
                continue;
            }
            let n = slot(j as usize);
            let Some((layout, s)) = try_pair(d, &ctx, t, n, &cands) else {
                continue;
            };
            let dist = (i as i64 - var_slot).abs();
            let better = match &best {
                None => true,
                Some((bs, bd, _)) => s > *bs || (s == *bs && dist < *bd),
            };
            if better {
                best = Some((
                    s,
                    dist,
                    BigTableInfo {
                        table_variable: lo + i as u64 * ptr,
                        size_variable: lo + j as u64 * ptr,
                        table: t,
                        entries: n,
                        layout_source: source_of(&layout, &over),
                        layout,
                        how: "search near PoolTrackTable",
                    },
                ));
            }
        }
    }
    best.map(|b| b.2).ok_or_else(|| {
        err_unavail(
            track_var,
            format!(
                "no (PoolBigPageTable, PoolBigPageTableSize) pair within {SEARCH_WINDOW:#x} bytes of \
                 the PoolTrackTable variable {track_var:#x} points at entries that validate; pass \
                 the table's VA and entry count from a PDB (nt!PoolBigPageTable, \
                 nt!PoolBigPageTableSize): d.pool.big(table=(va, entries))"
            ),
        )
    })
}

/// Read the whole table (page by page; unreadable pages skipped with a warning), keeping used entries.
pub fn read_table(d: &Dump, info: &BigTableInfo) -> (BigPages, Vec<String>) {
    let l = &info.layout;
    let mut out = BigPages::default();
    let mut warnings = Vec::new();
    let total = info.entries.min(MAX_ENTRIES) * l.size;
    let chunk = 64 * PAGE_SIZE;
    let mut missing = 0u64;
    let mut buf = vec![0u8; chunk as usize];
    let mut carry: Vec<u8> = Vec::new();
    let mut off = 0u64;
    while off < total {
        let n = chunk.min(total - off) as usize;
        let got = d.read_virt_padded(Va(info.table.wrapping_add(off)), &mut buf[..n]);
        missing += (n - got) as u64;
        carry.extend_from_slice(&buf[..n]);
        let whole = carry.len() / l.size as usize * l.size as usize;
        for e in carry[..whole].chunks_exact(l.size as usize) {
            let va = l.va.get(e);
            if is_free_slot(va) {
                continue;
            }
            let bytes = match (l.number_of_bytes, l.number_of_pages) {
                (Some(f), _) => f.get(e),
                (None, Some(f)) => f.get(e).saturating_mul(PAGE_SIZE),
                _ => 0,
            };
            let pt = match (l.pool_type_bits, l.pool_type) {
                (Some(b), _) => b.get(e) as u32,
                (None, Some(f)) => f.get(e) as u32,
                _ => u32::MAX,
            };
            out.va.push(va & !1);
            out.tag.push(l.key.get(e) as u32);
            out.bytes.push(bytes);
            out.pool_type.push(pt);
            out.freed.push(va & 1 != 0);
        }
        carry.drain(..whole);
        off += n as u64;
    }
    if missing > 0 {
        warnings.push(format!(
            "PoolBigPageTable at {:#x}: {missing} of {total} bytes unreadable (skipped)",
            info.table
        ));
    }
    if info.entries > MAX_ENTRIES {
        warnings.push(format!(
            "PoolBigPageTableSize {} is above {MAX_ENTRIES}; read the first {MAX_ENTRIES}",
            info.entries
        ));
    }
    (out, warnings)
}

/// Find and read the big page table. `given` = (table VA, entries, layout name or "") from a PDB.
pub fn read_big(d: &Dump, k: &Kernel, given: Option<(u64, u64, &str)>) -> PoolResult<BigPool> {
    let ctx = PoolContext::of(d);
    let info = match given {
        Some((table, entries, name)) => {
            if entries > MAX_ENTRIES {
                return Err(PoolError::Invalid {
                    table: PoolTable::BigPageTable,
                    va: table,
                    why: format!("{entries} entries is above the bound {MAX_ENTRIES}"),
                });
            }
            // A named built-in layout; else the PDB's when the dump has one, else the profile's
            // expected layout.
            let (layout, layout_source) = if name.is_empty() {
                let (cands, over) = candidates(d, &ctx);
                let Some(l) = cands.first().copied() else {
                    return Err(err_unavail(table, "no big page layout for this machine"));
                };
                (l, source_of(&l, &over))
            } else {
                let l = *super::layout::BIG_LAYOUTS
                    .into_iter()
                    .find(|l| l.name == name)
                    .ok_or_else(|| {
                        PoolError::Core(crate::Error::Argument(format!(
                            "unknown big page layout {name:?}"
                        )))
                    })?;
                (
                    l,
                    format!("given: {}", super::profile_source(l.name, l.source)),
                )
            };
            BigTableInfo {
                table_variable: 0,
                size_variable: 0,
                table,
                entries,
                layout,
                layout_source,
                how: "given",
            }
        }
        None => {
            let var = super::tracker::track_table_variable(k).map_err(|e| match e {
                PoolError::Unavailable { va, why, .. } => err_unavail(va, why),
                o => o,
            })?;
            let track = d.read_ptr(var).map_err(|e| {
                let extra = if d.triage().is_some() {
                    " (a triage dump does not hold the kernel's pool variables)"
                } else {
                    ""
                };
                err_unavail(
                    var.0,
                    format!(
                        "the PoolTrackTable variable at {:#x} cannot be read{extra}: {e}",
                        var.0
                    ),
                )
            })?;
            locate(d, var, Va(track))?
        }
    };
    let (pages, mut warnings) = read_table(d, &info);
    if ctx.family >= Family::Win10 && info.layout.pool_type_bits.is_none() {
        warnings.push("pool types of this layout are not bit fields".into());
    }
    Ok(BigPool {
        pages,
        info,
        warnings,
    })
}

/// The big allocation holding `va` (entry index in `pages`), if any. Freed entries are not matched.
pub fn containing(pages: &BigPages, va: Va) -> Option<usize> {
    let va = va.0;
    (0..pages.va.len()).find(|&i| {
        !pages.freed[i] && va >= pages.va[i] && va - pages.va[i] < pages.bytes[i].max(PAGE_SIZE)
    })
}
