//! Tag statistics (`!poolused`): `nt!PoolTrackTable`, per-processor `ExPoolTagTables`, expansion table.
//!
//! Locating the global table without a PDB (sheet §3.2, §5.6):
//! 1. KDBG +0x1B8 holds the VA of the *variable* `nt!PoolTrackTable`; the variable holds the table's VA.
//! 2. The entry count `nt!PoolTrackTableSize` is read from the pointer-sized slot just before the
//!    variable, as Volatility 2's `pooltracker` does. It must be a power of two, or a power of two plus
//!    one, in [[`MIN_ENTRIES`], [`MAX_ENTRIES`] + 1]: InitializePool allocates 2^n + 1 entries and stores
//!    `PoolTrackTableSize = 2^n + 1`, the last entry being the overflow bucket, with hash mask
//!    `PoolTrackTableSize - 2` (WRK `base/ntos/ex/pool.c`, ReactOS `ntoskrnl/mm/ARM3/expool.c`
//!    InitializePool). Otherwise the slot just after is tried, then an error naming
//!    `UsedOptions::track_entries` (a count from a PDB).
//! 3. The entry layout is chosen per machine and build ([`super::layout::tracker_candidates`]); where
//!    the switch build is `[?]`, every candidate stride is tried on the first [`VALIDATE_ENTRIES`]
//!    entries and the one with the most *valid non-empty* entries wins, provided at most 5% of the
//!    entries it reads are invalid (see [`entry_valid`]). Ties go to the build's expected layout.
//!
//! Per-processor tables (Windows 10+, `[A]`; multiprocessor kernels from 2003 SP1, WRK): see [`find_per_cpu`]. Expansion and session tables need a
//! PDB: callers may pass their (VA, entry count).

use std::collections::{BTreeMap, HashSet};

use super::layout::{tracker_candidates, TrackerLayout};
use super::{tag_like, PoolContext, PoolError, PoolResult, PoolTable};
use crate::addr::Va;
use crate::dump::Dump;
use crate::kernel::kdbg::field;
use crate::kernel::{Family, Kernel};

/// Fewest entries accepted for PoolTrackTableSize.
pub const MIN_ENTRIES: u64 = 16;
/// Most entries accepted for PoolTrackTableSize (bounds the read to 20 MiB at the 0x50 stride, 32 MiB
/// at the largest stride a PDB may give, [`crate::layouts::MAX_TRACKER`]).
pub const MAX_ENTRIES: u64 = 1 << 18;
/// Entries examined per candidate layout when choosing one.
pub const VALIDATE_ENTRIES: u64 = 4096;
/// Slots of ExPoolTagTables searched on each side of the PoolTrackTable variable (bytes).
pub const PER_CPU_WINDOW: u64 = 0x1000;

/// Where the global tracker table is and how it was read.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrackerTableInfo {
    /// VA of the variable `nt!PoolTrackTable` (from KDBG +0x1B8).
    pub variable: u64,
    /// VA of the table (the variable's value).
    pub table: u64,
    /// Entries (PoolTrackTableSize).
    pub entries: u64,
    /// VA the entry count was read from.
    pub size_variable: u64,
    /// The entry layout used.
    #[serde(serialize_with = "crate::ser::tracker_name")]
    pub layout: TrackerLayout,
    /// Where the layout comes from: the PDB type (`"pdb nt!_POOL_TRACKER_TABLE (…)"`) or the
    /// built-in profile (`"profile x64-0x38: …"`).
    pub layout_source: String,
    /// Per candidate layout: (name, valid non-empty entries, invalid entries) seen while choosing.
    #[serde(rename = "layout_scores")]
    pub scores: Vec<(&'static str, u64, u64)>,
    /// False when the PDB's layout was used although more than 5% of the entries it read look
    /// invalid (a PDB layout is used as given; the built-in ones must validate).
    #[serde(skip)]
    pub validated: bool,
}

/// Per-tag sums, one row per tag, sorted by tag (struct of columns).
#[derive(Debug, Clone, Default)]
pub struct TagUsage {
    /// Tag (u32 as read from memory; protected bit removed before Windows 8).
    pub tag: Vec<u32>,
    /// Nonpaged allocations.
    pub nonpaged_allocs: Vec<u64>,
    /// Nonpaged frees.
    pub nonpaged_frees: Vec<u64>,
    /// Nonpaged bytes outstanding.
    pub nonpaged_bytes: Vec<u64>,
    /// Paged allocations.
    pub paged_allocs: Vec<u64>,
    /// Paged frees.
    pub paged_frees: Vec<u64>,
    /// Paged bytes outstanding.
    pub paged_bytes: Vec<u64>,
}

/// `!poolused`'s data: the per-tag sums and where they came from.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PoolUsed {
    /// Sums per tag.
    #[serde(skip)]
    pub usage: TagUsage,
    /// The global table.
    #[serde(flatten)]
    pub global: TrackerTableInfo,
    /// VAs of the per-processor tables summed (same entry count and layout as the global one).
    pub per_cpu: Vec<u64>,
    /// VA of the ExPoolTagTables array when found.
    pub per_cpu_array: Option<u64>,
    /// Extra tables summed (expansion, session …): (VA, entries).
    pub extra: Vec<(u64, u64)>,
    /// Oddities (unreadable pages in a table, tables skipped).
    pub warnings: Vec<String>,
}

/// Options for [`read_used`].
#[derive(Debug, Clone, Default)]
pub struct UsedOptions {
    /// Extra tables to sum, (VA, entries): e.g. PoolTrackTableExpansion from a PDB.
    pub extra: Vec<(u64, u64)>,
    /// Per-processor tables to use instead of searching (VAs); `Some(vec![])` disables them.
    pub per_cpu: Option<Vec<u64>>,
    /// Only the given tables, not the global one (session pool: ExpSessionPoolTrackTable).
    pub only_extra: bool,
    /// Entries of the global table (nt!PoolTrackTableSize from a PDB) instead of reading the slot
    /// next to the PoolTrackTable variable.
    pub track_entries: Option<u64>,
}

/// The counters of one entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Key (tag).
    pub key: u32,
    /// NonPagedAllocs, NonPagedFrees, NonPagedBytes, PagedAllocs, PagedFrees, PagedBytes.
    pub c: [u64; 6],
}

/// Decode one entry.
#[inline]
pub fn decode(l: &TrackerLayout, e: &[u8]) -> Counters {
    Counters {
        key: l.key.get(e) as u32,
        c: [
            l.nonpaged_allocs.get(e),
            l.nonpaged_frees.get(e),
            l.nonpaged_bytes.get(e),
            l.paged_allocs.get(e),
            l.paged_frees.get(e),
            l.paged_bytes.get(e),
        ],
    }
}

/// Validity of one entry: `Some(true)` valid and used, `Some(false)` empty (key 0, counters 0), `None`
/// invalid. Valid: tag-like key (protected bit allowed); counts < 2^40 and bytes < 2^48. With `global`
/// also frees ≤ allocs and "all freed ⇒ 0 bytes" (per-processor tables see frees of other CPUs).
pub fn entry_valid(c: &Counters, protected: bool, global: bool) -> Option<bool> {
    if c.key == 0 {
        return c.c.iter().all(|&x| x == 0).then_some(false);
    }
    if !tag_like(c.key, protected) {
        return None;
    }
    let [na, nf, nb, pa, pf, pb] = c.c;
    let counts_ok = [na, nf, pa, pf].iter().all(|&x| x < 1 << 40);
    let bytes_ok = nb < 1 << 48 && pb < 1 << 48;
    if !counts_ok || !bytes_ok {
        return None;
    }
    if global && (nf > na || pf > pa || (na == nf && nb != 0) || (pa == pf && pb != 0)) {
        return None;
    }
    Some(true)
}

fn unavailable(va: u64, why: impl Into<String>) -> PoolError {
    PoolError::Unavailable {
        table: PoolTable::TrackTable,
        va,
        why: why.into(),
    }
}

fn invalid(va: u64, why: impl Into<String>) -> PoolError {
    PoolError::Invalid {
        table: PoolTable::TrackTable,
        va,
        why: why.into(),
    }
}

/// VA of the `nt!PoolTrackTable` variable, from KDBG +0x1B8.
pub fn track_table_variable(k: &Kernel) -> PoolResult<Va> {
    let kd = k.kdbg.as_ref().ok_or_else(|| {
        unavailable(
            0,
            "no KDBG block in this dump, so the PoolTrackTable variable cannot be found without a PDB",
        )
    })?;
    match kd.get(field::POOL_TRACK_TABLE) {
        Some(0) | None => Err(unavailable(
            kd.va,
            "the KDBG's PoolTrackTable field (+0x1B8) is zero or missing",
        )),
        Some(v) => Ok(Va(v)),
    }
}

/// A plausible PoolTrackTableSize: 2^n or 2^n + 1 (with the overflow entry) in
/// [[`MIN_ENTRIES`], [`MAX_ENTRIES`] + 1].
pub fn plausible_count(n: u64) -> bool {
    (n.is_power_of_two() || (n > 1 && (n - 1).is_power_of_two()))
        && (MIN_ENTRIES..=MAX_ENTRIES + 1).contains(&n)
}

/// Score a layout on `bytes` (the first entries of a table): (valid non-empty, invalid, read).
fn score(l: &TrackerLayout, bytes: &[u8], protected: bool, global: bool) -> (u64, u64, u64) {
    let (mut good, mut bad, mut n) = (0, 0, 0);
    for e in bytes.chunks_exact(l.size as usize) {
        n += 1;
        match entry_valid(&decode(l, e), protected, global) {
            Some(true) => good += 1,
            Some(false) => {}
            None => bad += 1,
        }
    }
    (good, bad, n)
}

/// Find the global table: variable, table VA, entry count, layout.
pub fn locate(d: &Dump, k: &Kernel) -> PoolResult<TrackerTableInfo> {
    locate_with(d, k, None)
}

/// [`locate`], with the entry count given (from a PDB) when `entries` is `Some`.
pub fn locate_with(d: &Dump, k: &Kernel, given: Option<u64>) -> PoolResult<TrackerTableInfo> {
    let ctx = PoolContext::of(d);
    let var = track_table_variable(k)?.0;
    let ptr = ctx.ptr;
    let read = |va: u64, what: &str| {
        d.read_ptr(Va(va)).map_err(|e| {
            let why = if d.triage().is_some() {
                format!(
                    "{what} at {va:#x} is not in this triage dump (a triage dump holds only a few \
                     captured ranges; the pool tables need a kernel or full dump): {e}"
                )
            } else {
                format!("{what} at {va:#x} cannot be read: {e}")
            };
            unavailable(va, why)
        })
    };
    let table = read(var, "the PoolTrackTable variable")?;
    if table == 0 || !ctx.is_kernel_va(table) {
        return Err(invalid(
            var,
            format!("PoolTrackTable holds {table:#x}, not a kernel address"),
        ));
    }
    let before = var.wrapping_sub(ptr);
    let after = var.wrapping_add(ptr);
    let (entries, size_variable) = match given {
        Some(n) if n == 0 || n > MAX_ENTRIES + 1 => {
            return Err(invalid(
                var,
                format!(
                    "given PoolTrackTableSize {n} is outside [1, {:#x}]",
                    MAX_ENTRIES + 1
                ),
            ))
        }
        Some(n) => (n, 0),
        None => match read(before, "PoolTrackTableSize") {
            Ok(n) if plausible_count(n) => (n, before),
            first => match d.read_ptr(Va(after)) {
                Ok(n) if plausible_count(n) => (n, after),
                _ => {
                    let seen = first
                        .map(|n| format!("{n:#x}"))
                        .unwrap_or_else(|e| e.to_string());
                    return Err(invalid(
                        before,
                        format!(
                            "PoolTrackTableSize (the slot before the PoolTrackTable variable) is \
                             {seen}: not a power of two (or one plus it) in [{MIN_ENTRIES}, {:#x}] (nor is the slot \
                             after); pass the entry count from a PDB (nt!PoolTrackTableSize): \
                             d.pool.used(track_entries=n)",
                            MAX_ENTRIES + 1
                        ),
                    ));
                }
            },
        },
    };
    // A PDB's layout is the only candidate; otherwise the profile's, validated.
    let over = d.layouts().tracker.clone();
    let cands: Vec<TrackerLayout> = match &over {
        Some(o) => vec![o.layout],
        None => tracker_candidates(ctx.machine, ctx.build)
            .into_iter()
            .copied()
            .collect(),
    };
    let protected = ctx.masks_protected_bit();
    let mut scores = Vec::new();
    let mut best: Option<(TrackerLayout, u64)> = None;
    let mut validated = true;
    for l in &cands {
        let n = entries.min(VALIDATE_ENTRIES);
        let mut buf = vec![0u8; (n * l.size) as usize];
        let got = d.read_virt_padded(Va(table), &mut buf);
        if got == 0 {
            return Err(unavailable(
                table,
                format!("the PoolTrackTable array at {table:#x} is not readable in this dump"),
            ));
        }
        let (good, bad, read) = score(l, &buf, protected, true);
        scores.push((l.name, good, bad));
        if bad * 20 > read {
            if over.is_none() {
                continue;
            }
            validated = false;
        }
        if best.is_none_or(|(_, g)| good > g) {
            best = Some((*l, good));
        }
    }
    let Some((layout, _)) = best else {
        return Err(invalid(
            table,
            format!(
                "no _POOL_TRACKER_TABLE layout validates on the table at {table:#x} \
                 (valid, invalid entries per layout: {scores:?})"
            ),
        ));
    };
    let layout_source = match over {
        Some(o) => o.source,
        None => super::profile_source(layout.name, layout.source),
    };
    Ok(TrackerTableInfo {
        variable: var,
        table,
        entries,
        size_variable,
        layout,
        layout_source,
        scores,
        validated,
    })
}

/// Read a whole table (padded: unreadable pages read as empty entries). Returns the entries and the
/// number of unreadable bytes.
fn read_table(d: &Dump, l: &TrackerLayout, va: u64, entries: u64) -> (Vec<Counters>, u64) {
    let mut buf = vec![0u8; (entries.min(MAX_ENTRIES + 1) * l.size) as usize];
    let got = d.read_virt_padded(Va(va), &mut buf);
    let missing = buf.len() as u64 - got as u64;
    let v = buf
        .chunks_exact(l.size as usize)
        .map(|e| decode(l, e))
        .collect();
    (v, missing)
}

/// Search for `nt!ExPoolTagTables` near the PoolTrackTable variable (Windows 10+).
///
/// Rule (no public source gives the array's address without a PDB, so this is our heuristic): a
/// pointer-aligned array within ±[`PER_CPU_WINDOW`] bytes of the variable whose first `processors`
/// slots are distinct, non-null kernel pointers other than the global table (slot 0 may be the global
/// table itself, as WRK's InitializePool sets `ExPoolTagTables[0] = PoolTrackTable`; it is then left
/// out of the sums), and whose first table
/// (`entries` entries, same layout) has at least one used entry, at most 5% invalid entries (per-CPU
/// rule: frees may exceed allocs), and only keys that the global table also holds. The nearest array
/// to the variable wins. Returns (array VA, table VAs).
pub fn find_per_cpu(
    d: &Dump,
    info: &TrackerTableInfo,
    global_keys: &HashSet<u32>,
) -> Option<(u64, Vec<u64>)> {
    let ctx = PoolContext::of(d);
    // Windows 10+ (sheet, [A]); and multiprocessor kernels from Server 2003 SP1, where WRK has
    // ExPoolTagTables with slot 0 = PoolTrackTable (a uniprocessor kernel has only the global).
    if ctx.family < Family::Server2003 || (ctx.family < Family::Win10 && ctx.processors < 2) {
        return None;
    }
    let p = ctx.processors.min(0x800) as usize;
    let ptr = ctx.ptr;
    let lo = info.variable.saturating_sub(PER_CPU_WINDOW);
    let span = 2 * PER_CPU_WINDOW + p as u64 * ptr;
    let mut win = vec![0u8; span as usize];
    if d.read_virt_padded(Va(lo), &mut win) == 0 {
        return None;
    }
    let slot = |i: usize| -> u64 {
        let o = i * ptr as usize;
        let mut b = [0u8; 8];
        b[..ptr as usize].copy_from_slice(&win[o..o + ptr as usize]);
        u64::from_le_bytes(b)
    };
    let nslots = (span / ptr) as usize;
    let var_slot = ((info.variable - lo) / ptr) as usize;
    let mut order: Vec<usize> = (0..nslots.saturating_sub(p)).collect();
    order.sort_by_key(|&i| (i as i64 - var_slot as i64).abs());
    let protected = ctx.masks_protected_bit();
    for start in order {
        let mut ptrs: Vec<u64> = (start..start + p).map(slot).collect();
        // WRK (base/ntos/ex/pool.c InitializePool): ExPoolTagTables[0] = PoolTrackTable, the global
        // table is processor 0's. Accept that and sum only the others.
        let slot0_global = ptrs.first() == Some(&info.table);
        if slot0_global {
            ptrs.remove(0);
            if ptrs.is_empty() {
                continue;
            }
        }
        let mut seen = HashSet::new();
        let ok = ptrs.iter().all(|&v| {
            v != 0
                && v != info.table
                && ctx.is_kernel_va(v)
                && v.is_multiple_of(8)
                && seen.insert(v)
        });
        if !ok {
            continue;
        }
        let n = info.entries.min(VALIDATE_ENTRIES);
        let mut buf = vec![0u8; (n * info.layout.size) as usize];
        if d.read_virt_padded(Va(ptrs[0]), &mut buf) == 0 {
            continue;
        }
        let (good, bad, read) = score(&info.layout, &buf, protected, false);
        if good == 0 || bad * 20 > read {
            continue;
        }
        let foreign = buf
            .chunks_exact(info.layout.size as usize)
            .map(|e| decode(&info.layout, e).key)
            .filter(|&k| k != 0 && !global_keys.contains(&k))
            .count() as u64;
        if foreign * 20 > good {
            continue;
        }
        return Some((lo + start as u64 * ptr, ptrs));
    }
    None
}

/// Read and sum the tracker tables (`!poolused`'s numbers).
pub fn read_used(d: &Dump, k: &Kernel, opts: &UsedOptions) -> PoolResult<PoolUsed> {
    let ctx = PoolContext::of(d);
    let info = locate_with(d, k, opts.track_entries)?;
    let mut warnings = Vec::new();
    let mut sums: BTreeMap<u32, [u64; 6]> = BTreeMap::new();
    let mut add = |entries: &[Counters]| {
        for e in entries.iter().filter(|e| e.key != 0) {
            let s = sums.entry(ctx.clean_tag(e.key)).or_default();
            for (a, b) in s.iter_mut().zip(e.c) {
                *a = a.saturating_add(b);
            }
        }
    };
    if !info.validated {
        warnings.push(format!(
            "more than 5% of the PoolTrackTable entries read with {} look invalid (scores {:?}); \
             the PDB's layout was used as given",
            info.layout_source, info.scores
        ));
    }
    let (global, missing) = read_table(d, &info.layout, info.table, info.entries);
    if missing > 0 {
        warnings.push(format!(
            "PoolTrackTable at {:#x}: {missing} bytes unreadable (read as empty entries)",
            info.table
        ));
    }
    if !opts.only_extra {
        add(&global);
    }
    let (per_cpu, per_cpu_array) = match &opts.per_cpu {
        Some(v) => (v.clone(), None),
        None => {
            let keys: HashSet<u32> = global.iter().map(|e| e.key).filter(|&k| k != 0).collect();
            match find_per_cpu(d, &info, &keys) {
                Some((a, v)) => (v, Some(a)),
                None => {
                    if ctx.family >= Family::Win10
                        || (ctx.family >= Family::Server2003 && ctx.processors > 1)
                    {
                        warnings.push(
                            "per-processor tag tables (ExPoolTagTables) not found near the \
                             PoolTrackTable variable: totals are the global table's only; pass \
                             their VAs from a PDB (nt!ExPoolTagTables): \
                             d.pool.used(per_cpu=[va, ...])"
                                .into(),
                        );
                    }
                    (Vec::new(), None)
                }
            }
        }
    };
    if !opts.only_extra {
        for &t in &per_cpu {
            let (v, missing) = read_table(d, &info.layout, t, info.entries);
            if missing > 0 {
                warnings.push(format!(
                    "per-processor tag table at {t:#x}: {missing} bytes unreadable"
                ));
            }
            add(&v);
        }
    }
    for &(va, n) in &opts.extra {
        if !plausible_count(n) && n > MAX_ENTRIES {
            return Err(invalid(
                va,
                format!("extra table at {va:#x}: {n} entries is above {MAX_ENTRIES}"),
            ));
        }
        let (v, missing) = read_table(d, &info.layout, va, n);
        if missing == n * info.layout.size {
            return Err(unavailable(
                va,
                format!("extra tracker table at {va:#x} is not readable"),
            ));
        }
        add(&v);
    }
    let mut u = TagUsage::default();
    for (tag, c) in sums {
        u.tag.push(tag);
        u.nonpaged_allocs.push(c[0]);
        u.nonpaged_frees.push(c[1]);
        u.nonpaged_bytes.push(c[2]);
        u.paged_allocs.push(c[3]);
        u.paged_frees.push(c[4]);
        u.paged_bytes.push(c[5]);
    }
    Ok(PoolUsed {
        usage: u,
        global: info,
        per_cpu,
        per_cpu_array,
        extra: opts.extra.clone(),
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity() {
        let tag = u32::from_le_bytes(*b"Thre");
        let ok = Counters {
            key: tag,
            c: [10, 4, 600, 0, 0, 0],
        };
        assert_eq!(entry_valid(&ok, false, true), Some(true));
        let freed_but_bytes = Counters {
            key: tag,
            c: [4, 4, 64, 0, 0, 0],
        };
        assert_eq!(entry_valid(&freed_but_bytes, false, true), None);
        assert_eq!(entry_valid(&freed_but_bytes, false, false), Some(true));
        assert_eq!(entry_valid(&Counters::default(), false, true), Some(false));
        let junk = Counters {
            key: 0x0102_0304,
            c: [0; 6],
        };
        assert_eq!(entry_valid(&junk, false, true), None);
    }
}
