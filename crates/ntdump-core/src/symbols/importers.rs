//! Who imports a function, found two independent ways: the import tables (descriptor, ILT name, IAT
//! slot), and a scan of every module's memory for the function's address as a pointer-sized value (the
//! founding story's `!for_each_module s-d @#Base @#End <addr>`, run under the [`crate::scan`] contract).

use std::collections::{BTreeMap, HashMap};

use rayon::prelude::*;

use super::{SymbolTable, MAX_HITS_PER_MODULE};
use crate::addr::Va;
use crate::dump::Dump;
use crate::error::Result;
use crate::pe::{scan, Import, ImportSource, MAX_IMAGE_SIZE};

/// How [`SymbolTable::importers`] found a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HowFound {
    /// Named by the module's import table only.
    #[default]
    ImportTable,
    /// Found by the pointer search only.
    PointerSearch,
    /// Both.
    Both,
}

crate::ser::as_str!(HowFound);

impl HowFound {
    /// `"import table"`, `"pointer search"` or `"both"`.
    pub fn as_str(self) -> &'static str {
        match self {
            HowFound::ImportTable => "import table",
            HowFound::PointerSearch => "pointer search",
            HowFound::Both => "both",
        }
    }

    /// The same in words, as evidence text says it.
    pub fn in_words(self) -> &'static str {
        match self {
            HowFound::ImportTable => "named in its import table",
            HowFound::PointerSearch => "its address found as a pointer in the image",
            HowFound::Both => {
                "named in its import table and its address found as a pointer in the image"
            }
        }
    }
}

/// One importer of a function: a module and a slot (VA) holding, or meant to hold, its address.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Default)]
pub struct ImporterRow {
    /// Index into [`SymbolTable::modules`].
    #[serde(skip)]
    pub module: usize,
    /// kd name of that module.
    #[serde(rename = "module")]
    pub module_name: String,
    /// The imported name (the target's name when the slot's own name is unknown).
    pub function: String,
    /// VA of the slot.
    #[serde(rename = "iat_slot")]
    pub slot: Va,
    /// How it was found.
    pub how_found: HowFound,
    /// The value in the slot now; None when the slot is not readable.
    pub value: Option<u64>,
    /// Why the two ways disagree, or what the slot is when it is not an import.
    pub note: Option<String>,
}

impl SymbolTable {
    /// Who imports `expr` (`module!name`), found two ways: the import tables, and a scan of every module's
    /// memory (bounded by [`MAX_IMAGE_SIZE`]) for the function's address as a pointer-sized value, at
    /// pointer-aligned offsets when `aligned`. Rows are sorted by module (load order), then slot.
    pub fn importers(&self, d: &Dump, expr: &str, aligned: bool) -> Result<Vec<ImporterRow>> {
        let (tm, row) = self.lookup(expr)?;
        let target = self.symbol(expr)?.0;
        let r = &self.rows[row];
        let tname = r.name.clone().unwrap_or_else(|| format!("#{}", r.ordinal));
        let ordinal = r.ordinal;
        let width = d.pointer_size() as usize;
        let mut rows: BTreeMap<(usize, u64), ImporterRow> = BTreeMap::new();
        for (mi, m) in self.modules.iter().enumerate() {
            for imp in &m.imports {
                let Some(dll) = &imp.dll else { continue };
                let by_name = imp.name.as_deref() == r.name.as_deref() && imp.name.is_some();
                let by_ord = imp.name.is_none() && imp.ordinal.map(u32::from) == Some(ordinal);
                if !(by_name || by_ord) || !self.dll_is(dll, tm) {
                    continue;
                }
                let slot = m.base.wrapping_add(u64::from(imp.iat_rva));
                let note = match imp.value {
                    Some(v) if v == target => None,
                    Some(v) => Some(format!(
                        "the slot holds {v:#x}{}, not {tname}'s {target:#x}: patched or bound elsewhere",
                        self.ln(Va(v)).map(|s| format!(" ({s})")).unwrap_or_default()
                    )),
                    None => Some("the IAT slot is on a missing page".to_string()),
                };
                rows.insert(
                    (mi, slot),
                    ImporterRow {
                        module: mi,
                        module_name: self.modules[mi].kd_name.clone(),
                        function: imp.name.clone().unwrap_or_else(|| tname.clone()),
                        slot: Va(slot),
                        how_found: HowFound::ImportTable,
                        value: imp.value,
                        note,
                    },
                );
            }
        }
        let hits: Vec<Vec<Va>> = self
            .modules
            .par_iter()
            .map(|m| {
                let len = m.size.min(MAX_IMAGE_SIZE);
                scan::find_value(
                    d,
                    Va(m.base),
                    len,
                    target,
                    width,
                    aligned,
                    MAX_HITS_PER_MODULE,
                )
            })
            .collect();
        for (mi, list) in hits.into_iter().enumerate() {
            let full = list.len() >= MAX_HITS_PER_MODULE;
            let by_rva: HashMap<u32, &Import> = if list.is_empty() {
                HashMap::new()
            } else {
                self.modules[mi]
                    .imports
                    .iter()
                    .map(|i| (i.iat_rva, i))
                    .collect()
            };
            let last = list.last().copied();
            for va in list {
                let key = (mi, va.0);
                if let Some(row) = rows.get_mut(&key) {
                    row.how_found = HowFound::Both;
                    if row.value == Some(target) {
                        row.note = None;
                    }
                    continue;
                }
                let (function, mut note) = self.describe_hit(mi, va.0, &tname, &by_rva);
                if full && Some(va) == last {
                    note.push_str(&format!(
                        "; the pointer search stopped after {MAX_HITS_PER_MODULE} hits in this module"
                    ));
                }
                rows.insert(
                    key,
                    ImporterRow {
                        module: mi,
                        module_name: self.modules[mi].kd_name.clone(),
                        function,
                        slot: va,
                        how_found: HowFound::PointerSearch,
                        value: Some(target),
                        note: Some(note),
                    },
                );
            }
        }
        Ok(rows.into_values().collect())
    }

    /// What a pointer-search hit in module `mi` at `va` is, when the import table did not name it.
    fn describe_hit(
        &self,
        mi: usize,
        va: u64,
        tname: &str,
        by_rva: &HashMap<u32, &Import>,
    ) -> (String, String) {
        let m = &self.modules[mi];
        let rva = va - m.base;
        let imp = u32::try_from(rva).ok().and_then(|r| by_rva.get(&r));
        if let Some(imp) = imp {
            return match (&imp.dll, &imp.name, imp.source) {
                (Some(dll), Some(n), _) => (
                    n.clone(),
                    format!("IAT slot importing {dll}!{n}, which resolves to the same address"),
                ),
                (Some(dll), None, _) => (
                    tname.to_string(),
                    format!("IAT slot of {dll}; the import's name is not readable (ILT discarded or paged out)"),
                ),
                (None, _, ImportSource::IatDirectory | ImportSource::Descriptor) => (
                    tname.to_string(),
                    "IAT slot (from the IAT directory; the import descriptors are not readable)".to_string(),
                ),
            };
        }
        if let Some((r, s)) = m.iat_directory {
            if rva >= u64::from(r) && rva < u64::from(r) + u64::from(s) {
                return (
                    tname.to_string(),
                    "inside the IAT directory, but no import descriptor names this slot"
                        .to_string(),
                );
            }
        }
        (
            tname.to_string(),
            "not an IAT slot: a pointer elsewhere in the image".to_string(),
        )
    }
}
