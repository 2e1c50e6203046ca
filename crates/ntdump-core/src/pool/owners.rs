//! Which driver allocates with a pool tag (`findstr /m /l Tag *.sys`, done on the images in the dump).
//!
//! The tag's four bytes are searched in every loaded module's image ([`crate::search`], one pass for
//! every tag). Each hit is classified by the bytes just before it: an opcode that loads a 32-bit
//! immediate scores high (x64 `mov r8d, imm32` — the tag argument of ExAllocatePoolWithTag — 10;
//! `mov edx` 6; x86 `push imm32` 10, …), any other hit scores 1. Modules are ranked by the sum.
//! The untagged pool (`"None"`, allocations by the obsolete `ExAllocatePool`) is owned by the importers
//! of `nt!ExAllocatePool` and `nt!ExAllocatePoolWithQuota` (10 per function), from
//! [`SymbolTable::importers`].
//!
//! Code patterns: the Windows x64 calling convention passes the third argument in r8 and the second
//! in rdx (Microsoft "x64 calling convention"); x86 `__stdcall` pushes arguments (wdm.h declares
//! `ExAllocatePoolWithTag(PoolType, NumberOfBytes, Tag)` and `ExFreePoolWithTag(P, Tag)`). Opcodes
//! from the Intel SDM: `41 B8 id` mov r8d, `BA id` mov edx, `41 B9 id` mov r9d, `B9 id` mov ecx,
//! `C7 44 24 ib id` mov [rsp/esp+disp8], `68 id` push imm32.

use std::collections::HashMap;

use crate::addr::Va;
use crate::dump::Dump;
use crate::error::Result;
use crate::header::Machine;
use crate::search::{search, SearchOptions, Target};
use crate::symbols::SymbolTable;

/// The tag of untagged pool allocations, as `!poolused` shows it.
pub const UNTAGGED: [u8; 4] = *b"None";

/// nt functions that allocate untagged pool (their importers own `"None"`).
const UNTAGGED_FUNCTIONS: [&str; 2] = ["ExAllocatePool", "ExAllocatePoolWithQuota"];

/// Score of a hit that follows no known opcode.
const BYTES_SCORE: f64 = 1.0;

/// (bytes just before the tag, what, score). A pattern starting 0xC7 is `mov [sp+disp8], imm32`: one
/// displacement byte lies between it and the tag, so it is compared with the first three of the four
/// bytes before the hit; every other pattern ends right before the tag.
const X64_CODE: [(&[u8], &str, f64); 5] = [
    (b"\x41\xb8", "mov r8d, imm32", 10.0),
    (b"\xba", "mov edx, imm32", 6.0),
    (b"\x41\xb9", "mov r9d, imm32", 4.0),
    (b"\xb9", "mov ecx, imm32", 3.0),
    (b"\xc7\x44\x24", "mov [rsp+x], imm32", 5.0),
];
const X86_CODE: [(&[u8], &str, f64); 4] = [
    (b"\x68", "push imm32", 10.0),
    (b"\xc7\x44\x24", "mov [esp+x], imm32", 5.0),
    (b"\xba", "mov edx, imm32", 3.0),
    (b"\xb9", "mov ecx, imm32", 3.0),
];

/// One likely owner of a tag.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnerRow {
    /// Index into [`SymbolTable::modules`] (its `kd_name` names the module).
    pub module: usize,
    /// What was found, e.g. `"2x mov r8d, imm32; 1x bytes"` or `"imports nt!ExAllocatePool: named in its import table and …"`.
    pub evidence: String,
    /// Sum of the scores of the evidence.
    pub score: f64,
}

/// The owners of one tag, best first (score descending, then kd name).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Owners {
    /// The rows.
    pub rows: Vec<OwnerRow>,
    /// Why part of the evidence could not be gathered (untagged pool: a function not found), or empty.
    pub note: String,
}

/// [`Owners`] as columns with the modules named: (kd names, evidence, scores, note).
pub type OwnerColumns<'a> = (Vec<&'a str>, Vec<&'a str>, Vec<f64>, &'a str);

impl Owners {
    /// The rows as columns, each module named by its kd name in `table` (the table the rows came from).
    pub fn columns<'a>(&'a self, table: &'a SymbolTable) -> OwnerColumns<'a> {
        let r = &self.rows;
        let kd = r.iter().map(|r| table.modules[r.module].kd_name.as_str());
        let evidence = r.iter().map(|r| r.evidence.as_str()).collect();
        let scores = r.iter().map(|r| r.score).collect();
        (kd.collect(), evidence, scores, &self.note)
    }
}

/// Classify the hit at `va` by the 4 bytes before it: (what, score).
fn classify(d: &Dump, va: u64) -> (&'static str, f64) {
    let table: &[(&[u8], &str, f64)] = if d.header.machine == Machine::X86 {
        &X86_CODE
    } else {
        &X64_CODE
    };
    let mut before = [0u8; 4];
    if d.read_virt(Va(va.wrapping_sub(4)), &mut before).is_err() {
        return ("bytes", BYTES_SCORE);
    }
    for &(ops, what, score) in table {
        let hit = if ops[0] == 0xC7 {
            before[..3] == *ops
        } else {
            before.ends_with(ops)
        };
        if hit {
            return (what, score);
        }
    }
    ("bytes", BYTES_SCORE)
}

/// Per module, per kind of evidence (what, scores), in order of first appearance.
type Evidence = Vec<(usize, Vec<(&'static str, Vec<f64>)>)>;

/// Rank `hits` ((module index, VA), in address order) into owner rows.
fn rank(d: &Dump, table: &SymbolTable, hits: &[(usize, u64)]) -> Vec<OwnerRow> {
    let mut per: Evidence = Vec::new();
    let mut at: HashMap<usize, usize> = HashMap::new();
    for &(m, va) in hits {
        let (what, score) = classify(d, va);
        let i = *at.entry(m).or_insert_with(|| {
            per.push((m, Vec::new()));
            per.len() - 1
        });
        let kinds = &mut per[i].1;
        match kinds.iter_mut().find(|(k, _)| *k == what) {
            Some((_, v)) => v.push(score),
            None => kinds.push((what, vec![score])),
        }
    }
    let mut rows: Vec<OwnerRow> = per
        .into_iter()
        .map(|(m, mut kinds)| {
            let sums: Vec<f64> = kinds.iter().map(|(_, v)| v.iter().sum()).collect();
            let score = sums.iter().sum();
            let mut order: Vec<usize> = (0..kinds.len()).collect();
            order.sort_by(|&a, &b| sums[b].total_cmp(&sums[a])); // stable: ties keep first appearance
            let evidence = order
                .iter()
                .map(|&k| format!("{}x {}", kinds[k].1.len(), kinds[k].0))
                .collect::<Vec<_>>()
                .join("; ");
            kinds.clear();
            OwnerRow {
                module: m,
                evidence,
                score,
            }
        })
        .collect();
    sort_rows(table, &mut rows);
    rows
}

fn sort_rows(table: &SymbolTable, rows: &mut [OwnerRow]) {
    rows.sort_by(|a, b| {
        b.score.total_cmp(&a.score).then_with(|| {
            table.modules[a.module]
                .kd_name
                .cmp(&table.modules[b.module].kd_name)
        })
    });
}

/// Owners of untagged pool: the importers of [`UNTAGGED_FUNCTIONS`], 10 per distinct piece of evidence.
fn untagged(d: &Dump, table: &SymbolTable) -> Owners {
    let mut per: Vec<(usize, Vec<String>)> = Vec::new();
    let mut notes = Vec::new();
    for f in UNTAGGED_FUNCTIONS {
        let expr = format!("nt!{f}");
        match table.importers(d, &expr, true) {
            Ok(rows) => {
                for r in rows {
                    let ev = format!("imports {expr}: {}", r.how_found.in_words());
                    match per.iter_mut().find(|(m, _)| *m == r.module) {
                        Some((_, v)) => {
                            if !v.contains(&ev) {
                                v.push(ev)
                            }
                        }
                        None => per.push((r.module, vec![ev])),
                    }
                }
            }
            Err(e) => notes.push(format!("{expr}: {e}")),
        }
    }
    let mut rows: Vec<OwnerRow> = per
        .into_iter()
        .map(|(module, ev)| OwnerRow {
            module,
            score: 10.0 * ev.len() as f64,
            evidence: ev.join("; "),
        })
        .collect();
    sort_rows(table, &mut rows);
    Owners {
        rows,
        note: notes.join("; "),
    }
}

/// A pool tag of 1 to 4 bytes, space-padded as the pool stores short tags (`b"Ab"` is `b"Ab  "`).
pub fn padded_tag(s: &[u8]) -> Result<[u8; 4]> {
    if s.is_empty() || s.len() > 4 {
        let why = format!("a pool tag has 1 to 4 bytes, not {}", s.len());
        return Err(crate::Error::Argument(why));
    }
    let mut b = [b' '; 4];
    b[..s.len()].copy_from_slice(s);
    Ok(b)
}

/// The likely owners of each of `tags` (four bytes each; [`UNTAGGED`] for untagged pool), in the order
/// given, among the modules of `table`. One search over every module image serves all the tags.
///
/// A hit is attributed to the module whose `[base, base + size)` holds it (the one with the highest
/// base when images overlap). Errors: the search's (an ARM64 dump gives [`crate::Error::Unsupported`],
/// a module range past 2^64 [`crate::Error::Argument`]); with no module at all, every tag has no owner.
pub fn tag_owners(d: &Dump, table: &SymbolTable, tags: &[[u8; 4]]) -> Result<Vec<Owners>> {
    let mut plain: Vec<[u8; 4]> = Vec::new();
    for t in tags {
        if *t != UNTAGGED && !plain.contains(t) {
            plain.push(*t);
        }
    }
    let mut hits: Vec<Vec<(usize, u64)>> = vec![Vec::new(); plain.len()];
    if !plain.is_empty() && !table.modules.is_empty() {
        let ranges: Vec<(u64, u64)> = table.modules.iter().map(|m| (m.base, m.size)).collect();
        let r = search(
            d,
            &plain,
            Target::Virtual(&ranges),
            &SearchOptions::default(),
        )?;
        // Modules by (start, end), load order among equals; a hit belongs to the last one holding it.
        let mut sorted: Vec<usize> = (0..table.modules.len()).collect();
        sorted.sort_by_key(|&i| {
            let m = &table.modules[i];
            (m.base, m.base as u128 + m.size as u128)
        });
        let starts: Vec<u64> = sorted.iter().map(|&i| table.modules[i].base).collect();
        for (&a, &p) in r.addresses.iter().zip(&r.patterns) {
            let upto = starts.partition_point(|&s| s <= a);
            let holder = sorted[..upto].iter().rev().find(|&&i| {
                let m = &table.modules[i];
                (a as u128) < m.base as u128 + m.size as u128
            });
            if let (Some(&m), Some(h)) = (holder, hits.get_mut(p as usize)) {
                h.push((m, a));
            }
        }
    }
    let none = tags.contains(&UNTAGGED).then(|| untagged(d, table));
    Ok(tags
        .iter()
        .map(|t| {
            if *t == UNTAGGED {
                none.clone().unwrap_or_default()
            } else {
                let i = plain.iter().position(|p| p == t).unwrap_or(0);
                Owners {
                    rows: hits.get(i).map(|h| rank(d, table, h)).unwrap_or_default(),
                    note: String::new(),
                }
            }
        })
        .collect())
}
