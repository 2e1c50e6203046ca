//! The export directory (WINDOWS_INTERNALS.md §6.3): every exported function or variable, named or by
//! ordinal only, with forwarders.
//!
//! goblin reads the three tables (addresses, name pointers, name ordinals); when it refuses, or the counts
//! are larger than the image could hold, a bounded reader takes over. Names and forwarder strings are read
//! here in both cases, so that an unreadable name (a missing page) is reported per entry.

use super::view::{Budget, View};
use super::{guarded, Parser, PeOptions};
use crate::pe::headers::Headers;

/// Most entries read from one export address table (ntoskrnl.exe has about 3,000; name ordinals are
/// 16-bit, so no name can reach past 65,536).
pub const MAX_EXPORTS: u32 = 1 << 16;
/// Longest export name or forwarder string read (bytes).
pub const MAX_NAME: usize = 4096;

/// One export.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Default)]
pub struct Export {
    /// The exported name; None for exports by ordinal only (or a name on a missing page).
    pub name: Option<String>,
    /// The exported ordinal (`Base` + index into the address table).
    pub ordinal: u32,
    /// The function's RVA as stored; for a forwarder, the RVA of the forwarder string.
    pub rva: u32,
    /// `"DLL.Function"` or `"DLL.#12"` when the entry forwards to another module.
    pub forwarder: Option<String>,
}

/// The export directory of an image.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Exports {
    /// The DLL name stored in the directory (e.g. `ntoskrnl.exe`).
    pub dll_name: Option<String>,
    /// The directory's TimeDateStamp.
    pub time_date_stamp: u32,
    /// Ordinal of the first address-table entry.
    pub ordinal_base: u32,
    /// NumberOfFunctions as stored.
    pub number_of_functions: u32,
    /// NumberOfNames as stored.
    pub number_of_names: u32,
    /// Entries sorted by ordinal, then name; a function with several names appears once per name.
    #[serde(skip)]
    pub entries: Vec<Export>,
}

struct Tables {
    dll_name_rva: u32,
    time_date_stamp: u32,
    base: u32,
    nfun: u32,
    nnames: u32,
    /// RVA per address-table index; None where the slot is unreadable.
    functions: Vec<Option<u32>>,
    /// (name RVA, address-table index) per name, in name-pointer order; None where unreadable.
    names: Vec<Option<(u32, u16)>>,
}

/// Parse the export directory, if the image has one.
pub(crate) fn parse(
    v: View<'_>,
    h: &Headers,
    opts: &PeOptions,
    budget: &mut Budget,
    warnings: &mut Vec<String>,
) -> (Option<Exports>, Option<Parser>) {
    let Some(dir) = h.directory(0) else {
        return (None, None);
    };
    let rva = u64::from(dir.rva);
    if !v.present(rva, 40) {
        warnings.push(format!(
            "export directory at RVA {rva:#x} is not readable (past the image or on a missing page)"
        ));
        return (None, None);
    }
    let (Some(nfun), Some(nnames), Some(funcs), Some(names), Some(ords)) = (
        v.u32(rva + 0x14),
        v.u32(rva + 0x18),
        v.u32(rva + 0x1C),
        v.u32(rva + 0x20),
        v.u32(rva + 0x24),
    ) else {
        return (None, None);
    };
    // Entries that fit in the image from their table's start: the bound for both readers.
    let fit = |start: u32, width: u64| (v.len().saturating_sub(u64::from(start)) / width) as u32;
    let nfun_ok = nfun.min(MAX_EXPORTS).min(fit(funcs, 4));
    let nnames_ok = nnames.min(MAX_EXPORTS).min(fit(names, 4)).min(fit(ords, 2));
    if nfun_ok < nfun || nnames_ok < nnames {
        warnings.push(format!(
            "export directory claims {nfun:#x} functions and {nnames:#x} names; read {nfun_ok:#x} and {nnames_ok:#x}"
        ));
    }
    let mut tables = None;
    let mut parser = Parser::Own;
    if opts.goblin && nfun_ok == nfun && nnames_ok == nnames {
        match guarded(|| goblin_tables(v, dir)) {
            Ok(t) => {
                tables = Some(t);
                parser = Parser::Goblin;
            }
            Err(e) => warnings.push(format!(
                "goblin refused the export directory ({e}); read it directly"
            )),
        }
    }
    let t = tables.unwrap_or_else(|| own_tables(v, rva, nfun_ok, nnames_ok, funcs, names, ords));
    (
        Some(build(v, dir.rva, dir.size, t, budget, warnings)),
        Some(parser),
    )
}

fn goblin_tables(v: View<'_>, dir: super::headers::DataDirectory) -> Result<Tables, String> {
    use goblin::pe::export::{ExportAddressTableEntry, ExportData};
    let opts = super::goblin_options();
    let dd = goblin::pe::data_directories::DataDirectory {
        virtual_address: dir.rva,
        size: dir.size,
    };
    let e =
        ExportData::parse_with_opts(v.bytes, dd, &[], 0x200, &opts).map_err(|e| e.to_string())?;
    let d = &e.export_directory_table;
    let readable = |start: u32, i: usize, w: u64| v.present(u64::from(start) + i as u64 * w, w);
    let functions = e
        .export_address_table
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let r = match a {
                ExportAddressTableEntry::ExportRVA(r)
                | ExportAddressTableEntry::ForwarderRVA(r) => *r,
            };
            readable(d.export_address_table_rva, i, 4).then_some(r)
        })
        .collect();
    let names = e
        .export_name_pointer_table
        .iter()
        .zip(e.export_ordinal_table.iter())
        .enumerate()
        .map(|(i, (&n, &o))| {
            (readable(d.name_pointer_rva, i, 4) && readable(d.ordinal_table_rva, i, 2))
                .then_some((n, o))
        })
        .collect();
    Ok(Tables {
        dll_name_rva: d.name_rva,
        time_date_stamp: d.time_date_stamp,
        base: d.ordinal_base,
        nfun: d.address_table_entries,
        nnames: d.number_of_name_pointers,
        functions,
        names,
    })
}

fn own_tables(
    v: View<'_>,
    rva: u64,
    nfun: u32,
    nnames: u32,
    funcs: u32,
    names: u32,
    ords: u32,
) -> Tables {
    let at = |start: u32, i: u32, w: u64| u64::from(start) + u64::from(i) * w;
    Tables {
        dll_name_rva: v.u32(rva + 0xC).unwrap_or(0),
        time_date_stamp: v.u32(rva + 4).unwrap_or(0),
        base: v.u32(rva + 0x10).unwrap_or(0),
        nfun: v.u32(rva + 0x14).unwrap_or(0),
        nnames: v.u32(rva + 0x18).unwrap_or(0),
        functions: (0..nfun)
            .map(|i| {
                let a = at(funcs, i, 4);
                v.present(a, 4).then(|| v.u32(a)).flatten()
            })
            .collect(),
        names: (0..nnames)
            .map(|i| {
                let (n, o) = (at(names, i, 4), at(ords, i, 2));
                if v.present(n, 4) && v.present(o, 2) {
                    Some((v.u32(n)?, v.u16(o)?))
                } else {
                    None
                }
            })
            .collect(),
    }
}

fn build(
    v: View<'_>,
    dir_rva: u32,
    dir_size: u32,
    t: Tables,
    budget: &mut Budget,
    warnings: &mut Vec<String>,
) -> Exports {
    let in_dir = |r: u32| r >= dir_rva && u64::from(r) < u64::from(dir_rva) + u64::from(dir_size);
    let forwarder = |r: u32, b: &mut Budget| {
        b.take(in_dir(r).then(|| v.cstr(u64::from(r), MAX_NAME)).flatten())
    };
    let mut named = vec![false; t.functions.len()];
    let mut entries = Vec::with_capacity(t.functions.len() + t.names.len());
    let (mut unreadable, mut out_of_range) = (0usize, 0usize);
    for n in &t.names {
        let Some((name_rva, idx)) = *n else {
            unreadable += 1;
            continue;
        };
        let Some(Some(rva)) = t.functions.get(idx as usize).copied() else {
            if (idx as usize) < t.functions.len() {
                unreadable += 1;
            } else {
                out_of_range += 1;
            }
            continue;
        };
        named[idx as usize] = true;
        entries.push(Export {
            name: budget.take(v.cstr(u64::from(name_rva), MAX_NAME)),
            ordinal: t.base.wrapping_add(u32::from(idx)),
            rva,
            forwarder: forwarder(rva, budget),
        });
    }
    for (idx, f) in t.functions.iter().enumerate() {
        match f {
            Some(rva) if !named[idx] && *rva != 0 => entries.push(Export {
                name: None,
                ordinal: t.base.wrapping_add(idx as u32),
                rva: *rva,
                forwarder: forwarder(*rva, budget),
            }),
            None => unreadable += 1,
            _ => {}
        }
    }
    if unreadable > 0 {
        warnings.push(format!(
            "{unreadable} export table entries are on missing pages"
        ));
    }
    if out_of_range > 0 {
        warnings.push(format!(
            "{out_of_range} export names point past the address table"
        ));
    }
    entries.sort_by(|a, b| (a.ordinal, &a.name).cmp(&(b.ordinal, &b.name)));
    Exports {
        dll_name: budget.take(v.cstr(u64::from(t.dll_name_rva), 256)),
        time_date_stamp: t.time_date_stamp,
        ordinal_base: t.base,
        number_of_functions: t.nfun,
        number_of_names: t.nnames,
        entries,
    }
}
