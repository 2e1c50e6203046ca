//! Symbols without PDBs: the export tables of every loaded module, and who imports a function.
//!
//! [`SymbolTable::build`] reads each module's PE image (in parallel, one image in memory per thread at a
//! time) and keeps its exports and imports. Names follow kd: the kernel is `nt` whatever its file name
//! (ntoskrnl.exe, ntkrnlpa.exe, ntkrnlmp.exe, ntkrpamp.exe), the HAL is `hal`, every other module is its
//! base name without extension; a later module whose name repeats an earlier one gets `_<base in hex>`
//! appended, as dbgeng does. Lookups are case-insensitive where kd's are.
//!
//! [`SymbolTable::importers`] answers "which modules call this function" two independent ways: from the
//! import tables (descriptor, ILT name, IAT slot), and by scanning every module's memory for the function's
//! address as a pointer-sized value (the founding story's `!for_each_module s-d @#Base @#End <addr>`).

mod importers;
mod names;

use std::collections::HashMap;

use rayon::prelude::*;

use crate::addr::Va;
use crate::dump::Dump;
use crate::error::{Error, Result};
use crate::pe::{Import, PeImage};

pub use importers::{HowFound, ImporterRow};
use names::stem;
pub use names::{glob_match, kd_names, HAL_NAMES, KERNEL_NAMES};

/// Deepest chain of forwarders followed.
const MAX_FORWARDS: usize = 8;
/// Most pointer-search hits kept per module by [`SymbolTable::importers`].
pub const MAX_HITS_PER_MODULE: usize = 4096;

/// A loaded module as the symbol table needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleRef {
    /// Base file name as the loader recorded it (e.g. `ntoskrnl.exe`).
    pub name: String,
    /// Image base (VA).
    pub base: u64,
    /// SizeOfImage from the loader (bytes).
    pub size: u64,
}

/// What the table knows about one module.
#[derive(Debug, Clone, serde::Serialize, Default)]
pub struct ModuleSymbols {
    /// kd's name (`nt`, `hal`, `amdppm`, `{GUID}`).
    pub kd_name: String,
    /// Base file name.
    pub file_name: String,
    /// Image base (VA).
    pub base: u64,
    /// Size (bytes) from the module list.
    pub size: u64,
    /// True for the kernel image.
    #[serde(skip)]
    pub is_kernel: bool,
    /// True for the HAL.
    #[serde(skip)]
    pub is_hal: bool,
    /// Every IAT slot of the image.
    #[serde(serialize_with = "crate::ser::len")]
    pub imports: Vec<Import>,
    /// The IAT directory as (RVA, size in bytes), if any.
    #[serde(skip)]
    pub iat_directory: Option<(u32, u32)>,
    /// Number of exports.
    #[serde(rename = "exports")]
    pub export_count: usize,
    /// Why the image could not be read (then it has no exports or imports).
    pub error: Option<String>,
    /// True when the header names an export directory that could not be read (a missing page).
    #[serde(skip)]
    pub exports_unreadable: bool,
    /// Warnings from reading the image.
    pub warnings: Vec<String>,
}

impl From<&crate::kernel::ModuleInfo> for ModuleRef {
    fn from(m: &crate::kernel::ModuleInfo) -> Self {
        ModuleRef {
            name: m.name.clone(),
            base: m.base,
            size: m.size,
        }
    }
}

/// The dump's loaded modules (from [`crate::kernel::Kernel`]) as the symbol table takes them, in load
/// order: the one module list every analysis shares.
pub fn module_refs(k: &crate::kernel::Kernel) -> Vec<ModuleRef> {
    k.modules.iter().map(ModuleRef::from).collect()
}

impl ModuleSymbols {
    /// True when `va` is inside `[base, base + size)`.
    pub fn contains(&self, va: Va) -> bool {
        let va = va.0;
        va >= self.base && va - self.base < self.size
    }
}

/// One export of one module.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Default)]
pub struct SymbolRow {
    /// Index into [`SymbolTable::modules`].
    #[serde(skip)]
    pub module: usize,
    /// Exported name; None for exports by ordinal only.
    pub name: Option<String>,
    /// Exported ordinal.
    pub ordinal: u32,
    /// VA: base + RVA, or for a forwarder the VA it resolves to (None when unresolved).
    pub address: Option<u64>,
    /// `"DLL.Function"` for a forwarder.
    pub forwarder: Option<String>,
}

impl SymbolRow {
    /// The name, or `#ordinal` for an export by ordinal only.
    pub fn label(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("#{}", self.ordinal))
    }
}

/// An export with its module's kd name: one row of [`SymbolTable::find_rows`]'s table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Default)]
pub struct NamedSymbol<'a> {
    /// kd name of the module (`nt`, `hal`, `{GUID}`).
    pub module: &'a str,
    /// Exported name; None for exports by ordinal only.
    pub name: Option<&'a str>,
    /// Exported ordinal.
    pub ordinal: u32,
    /// VA: base + RVA, or for a forwarder the VA it resolves to (None when unresolved).
    pub address: Option<u64>,
    /// `"DLL.Function"` for a forwarder.
    pub forwarder: Option<&'a str>,
}

/// kd's `ln` answer as data: (module kd name, export name or `#ordinal` or None, export VA or None,
/// offset in bytes from the export, or from the module base when there is none).
pub type Nearest<'a> = (&'a str, Option<String>, Option<u64>, u64);

/// The exports of every module of a dump, indexed by name and by address.
#[derive(Debug, Clone, Default)]
pub struct SymbolTable {
    /// Modules in the order given (load order).
    pub modules: Vec<ModuleSymbols>,
    /// Every export, grouped by module, sorted by address within a module (forwarders last).
    pub rows: Vec<SymbolRow>,
    by_name: HashMap<(usize, String), Vec<usize>>,
    by_ordinal: HashMap<(usize, u32), Vec<usize>>,
    by_addr: Vec<Vec<(u64, usize)>>,
    order: Vec<(u64, usize)>,
}

fn parse_int(s: &str) -> Option<u64> {
    let s = s.trim();
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    u64::from_str_radix(&s.replace('`', ""), 16).ok()
}

impl SymbolTable {
    /// Read every module's exports and imports (in parallel). A module whose image cannot be read is kept,
    /// with its [`ModuleSymbols::error`], so that `ln` still names addresses inside it.
    pub fn build(d: &Dump, modules: &[ModuleRef]) -> SymbolTable {
        let names = kd_names(modules);
        let read: Vec<(ModuleSymbols, Vec<crate::pe::Export>)> = modules
            .par_iter()
            .zip(names.par_iter())
            .map(|(m, kd)| {
                let mut ms = ModuleSymbols {
                    kd_name: kd.clone(),
                    file_name: m.name.clone(),
                    base: m.base,
                    size: m.size,
                    is_kernel: kd == "nt",
                    is_hal: kd == "hal",
                    imports: Vec::new(),
                    iat_directory: None,
                    export_count: 0,
                    error: None,
                    exports_unreadable: false,
                    warnings: Vec::new(),
                };
                match PeImage::read(d, Va(m.base), Some(m.size)) {
                    Ok(img) => {
                        ms.imports = img.imports;
                        ms.iat_directory = img.headers.directory(12).map(|x| (x.rva, x.size));
                        ms.exports_unreadable =
                            img.exports.is_none() && img.headers.directory(0).is_some();
                        ms.warnings = img.warnings;
                        let ex = img.exports.map(|e| e.entries).unwrap_or_default();
                        ms.export_count = ex.len();
                        (ms, ex)
                    }
                    Err(e) => {
                        ms.error = Some(e.to_string());
                        (ms, Vec::new())
                    }
                }
            })
            .collect();
        Self::from_parts(read)
    }

    /// Assemble a table from modules and their exports (RVAs), e.g. images parsed elsewhere.
    pub fn from_parts(parts: Vec<(ModuleSymbols, Vec<crate::pe::Export>)>) -> SymbolTable {
        let mut t = SymbolTable::default();
        for (i, (m, exports)) in parts.into_iter().enumerate() {
            for e in exports {
                t.rows.push(SymbolRow {
                    module: i,
                    name: e.name,
                    ordinal: e.ordinal,
                    address: e
                        .forwarder
                        .is_none()
                        .then(|| m.base.wrapping_add(u64::from(e.rva))),
                    forwarder: e.forwarder,
                });
            }
            t.modules.push(m);
        }
        t.rows.sort_by(|a, b| {
            (
                a.module,
                a.forwarder.is_some(),
                a.address,
                a.name.is_none(),
                &a.name,
                a.ordinal,
            )
                .cmp(&(
                    b.module,
                    b.forwarder.is_some(),
                    b.address,
                    b.name.is_none(),
                    &b.name,
                    b.ordinal,
                ))
        });
        for (i, r) in t.rows.iter().enumerate() {
            if let Some(n) = &r.name {
                t.by_name
                    .entry((r.module, n.to_ascii_lowercase()))
                    .or_default()
                    .push(i);
            }
            t.by_ordinal
                .entry((r.module, r.ordinal))
                .or_default()
                .push(i);
        }
        t.resolve_forwarders();
        t.by_addr = vec![Vec::new(); t.modules.len()];
        for (i, r) in t.rows.iter().enumerate() {
            let m = &t.modules[r.module];
            if let (None, Some(a)) = (&r.forwarder, r.address) {
                if m.contains(Va(a)) {
                    t.by_addr[r.module].push((a, i));
                }
            }
        }
        t.order = t
            .modules
            .iter()
            .enumerate()
            .map(|(i, m)| (m.base, i))
            .collect();
        t.order.sort_unstable();
        t
    }

    fn resolve_forwarders(&mut self) {
        let resolved: Vec<(usize, Option<u64>)> = (0..self.rows.len())
            .filter(|&i| self.rows[i].forwarder.is_some())
            .map(|i| (i, self.follow(i, 0)))
            .collect();
        for (i, a) in resolved {
            self.rows[i].address = a;
        }
    }

    fn follow(&self, row: usize, depth: usize) -> Option<u64> {
        let r = &self.rows[row];
        let Some(f) = &r.forwarder else {
            return r.address;
        };
        if depth >= MAX_FORWARDS {
            return None;
        }
        let (dll, func) = f.rsplit_once('.')?;
        let m = self.module_index(dll)?;
        let next = self.lookup_rows(m, func).into_iter().next()?;
        self.follow(next, depth + 1)
    }

    /// The module called `name`: kd's name, the file name or its stem, case-insensitive; any kernel file
    /// name means the kernel and `hal.dll` the HAL.
    pub fn module_index(&self, name: &str) -> Option<usize> {
        let low = name.to_ascii_lowercase();
        if let Some(i) = self.modules.iter().position(|m| {
            m.kd_name.eq_ignore_ascii_case(&low)
                || m.file_name.eq_ignore_ascii_case(&low)
                || stem(&m.file_name).eq_ignore_ascii_case(&low)
        }) {
            return Some(i);
        }
        let with_ext = if low.contains('.') {
            low.clone()
        } else {
            format!("{low}.exe")
        };
        if KERNEL_NAMES.contains(&with_ext.as_str()) {
            return self.modules.iter().position(|m| m.is_kernel);
        }
        let with_dll = if low.contains('.') {
            low
        } else {
            format!("{low}.dll")
        };
        if HAL_NAMES.contains(&with_dll.as_str()) {
            return self.modules.iter().position(|m| m.is_hal);
        }
        None
    }

    /// Rows of module `m` named `name` (`#12` = ordinal 12): exact case first, else case-insensitive.
    fn lookup_rows(&self, m: usize, name: &str) -> Vec<usize> {
        if let Some(ord) = name.strip_prefix('#').and_then(|o| o.parse::<u32>().ok()) {
            return self.by_ordinal.get(&(m, ord)).cloned().unwrap_or_default();
        }
        let all = self
            .by_name
            .get(&(m, name.to_ascii_lowercase()))
            .cloned()
            .unwrap_or_default();
        let exact: Vec<usize> = all
            .iter()
            .copied()
            .filter(|&i| self.rows[i].name.as_deref() == Some(name))
            .collect();
        if exact.is_empty() {
            all
        } else {
            exact
        }
    }

    /// The export a `module!name` expression names: (module index, row index).
    pub fn lookup(&self, expr: &str) -> Result<(usize, usize)> {
        let (module, name) = expr
            .split_once('!')
            .ok_or_else(|| Error::Symbol(format!("{expr:?}: expected module!name")))?;
        let m = self
            .module_index(module.trim())
            .ok_or_else(|| Error::Symbol(format!("{expr}: no loaded module named {module:?}")))?;
        let name = name.trim();
        let row = self
            .lookup_rows(m, name)
            .into_iter()
            .next()
            .ok_or_else(|| {
                let ms = &self.modules[m];
                match &ms.error {
                    Some(e) => Error::Symbol(format!(
                        "{expr}: the exports of {} are not readable ({e})",
                        ms.kd_name
                    )),
                    None if ms.exports_unreadable => Error::Symbol(format!(
                        "{expr}: the export directory of {} is not readable (on a missing page)",
                        ms.kd_name
                    )),
                    None => {
                        Error::Symbol(format!("{expr}: {} does not export {name:?}", ms.kd_name))
                    }
                }
            })?;
        Ok((m, row))
    }

    /// The VA of `module!name`, `module!#ordinal`, or a module alone (its base), each optionally followed by
    /// `+offset` (hex). Forwarders are followed.
    pub fn symbol(&self, expr: &str) -> Result<Va> {
        let (head, off) = match expr.rsplit_once('+') {
            Some((h, o)) if !h.is_empty() => (
                h,
                parse_int(o).ok_or_else(|| Error::Symbol(format!("{expr}: bad offset {o:?}")))?,
            ),
            _ => (expr, 0),
        };
        let head = head.trim();
        if !head.contains('!') {
            let m = self
                .module_index(head)
                .ok_or_else(|| Error::Symbol(format!("{expr}: no loaded module named {head:?}")))?;
            return Ok(Va(self.modules[m].base.wrapping_add(off)));
        }
        let (_, row) = self.lookup(head)?;
        let r = &self.rows[row];
        let a = r.address.ok_or_else(|| {
            Error::Symbol(format!(
                "{head} is forwarded to {}, which does not resolve to a loaded export",
                r.forwarder.as_deref().unwrap_or("?")
            ))
        })?;
        Ok(Va(a.wrapping_add(off)))
    }

    /// Rows matching `pattern` = `module_glob!name_glob` (either side may use `*` and `?`; a pattern without
    /// `!` matches names in every module), case-insensitive. Exports by ordinal only match as `#<ordinal>`.
    pub fn find(&self, pattern: &str) -> Vec<usize> {
        let (mp, np) = pattern.split_once('!').unwrap_or(("*", pattern));
        let mods: Vec<bool> = self
            .modules
            .iter()
            .map(|m| {
                glob_match(mp, &m.kd_name)
                    || glob_match(mp, &m.file_name)
                    || glob_match(mp, stem(&m.file_name))
            })
            .collect();
        self.rows
            .iter()
            .enumerate()
            .filter(|(_, r)| mods[r.module])
            .filter(|(_, r)| match &r.name {
                Some(n) => glob_match(np, n),
                None => glob_match(np, &format!("#{}", r.ordinal)),
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// [`SymbolTable::find`]'s rows with their module's kd name, in table order.
    pub fn find_rows(&self, pattern: &str) -> Vec<NamedSymbol<'_>> {
        let row = |i: usize| {
            let r = &self.rows[i];
            NamedSymbol {
                module: &self.modules[r.module].kd_name,
                name: r.name.as_deref(),
                ordinal: r.ordinal,
                address: r.address,
                forwarder: r.forwarder.as_deref(),
            }
        };
        self.find(pattern).into_iter().map(row).collect()
    }

    /// [`SymbolTable::nearest`] by name: the module's kd name, the export's label and VA.
    pub fn nearest_named(&self, va: Va) -> Option<Nearest<'_>> {
        let (m, row, off) = self.nearest(va)?;
        let row = row.map(|r| &self.rows[r]);
        let (label, address) = (row.map(|r| r.label()), row.and_then(|r| r.address));
        Some((&self.modules[m].kd_name, label, address, off))
    }

    /// The module holding `va` (the highest base at or below it whose range contains it).
    pub fn module_at(&self, va: Va) -> Option<usize> {
        let va = va.0;
        let n = self.order.partition_point(|&(b, _)| b <= va);
        self.order[..n]
            .iter()
            .rev()
            .map(|&(_, i)| i)
            .find(|&i| self.modules[i].contains(Va(va)))
    }

    /// The nearest export at or below `va` inside the module holding it: (module, row, offset in bytes).
    pub fn nearest(&self, va: Va) -> Option<(usize, Option<usize>, u64)> {
        let m = self.module_at(va)?;
        let va = va.0;
        let list = &self.by_addr[m];
        let n = list.partition_point(|&(a, _)| a <= va);
        if n == 0 {
            return Some((m, None, va - self.modules[m].base));
        }
        let addr = list[n - 1].0;
        let first = list.partition_point(|&(a, _)| a < addr);
        Some((m, Some(list[first].1), va - addr))
    }

    /// kd's `ln`: `nt!ExAllocatePool`, `nt!ExAllocatePool+0x10`, `nt!#12+0x4` (ordinal-only export), or
    /// `module+0x1234` when no export lies at or below `va` in its module. Fails with [`Error::Symbol`] when
    /// no module holds `va`.
    pub fn ln(&self, va: Va) -> Result<String> {
        let (m, row, off) = self
            .nearest(va)
            .ok_or_else(|| Error::Symbol(format!("no loaded module holds {:#x}", va.0)))?;
        let mut s = self.modules[m].kd_name.clone();
        if let Some(r) = row {
            let r = &self.rows[r];
            s.push('!');
            s.push_str(&r.label());
        }
        if off != 0 {
            s.push_str(&format!("+{off:#x}"));
        }
        Ok(s)
    }

    /// The modules whose imports from `dll` are imports from module `m` (by file name, stem or kd name; for
    /// the kernel any kernel file name, for the HAL any HAL file name).
    fn dll_is(&self, dll: &str, m: usize) -> bool {
        self.module_index(dll) == Some(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> SymbolTable {
        let ms = |kd: &str, file: &str, base: u64| ModuleSymbols {
            kd_name: kd.into(),
            file_name: file.into(),
            base,
            size: 0x10000,
            is_kernel: kd == "nt",
            is_hal: kd == "hal",
            imports: Vec::new(),
            iat_directory: None,
            export_count: 0,
            error: None,
            exports_unreadable: false,
            warnings: Vec::new(),
        };
        let e = |name: Option<&str>, ordinal: u32, rva: u32, fw: Option<&str>| crate::pe::Export {
            name: name.map(String::from),
            ordinal,
            rva,
            forwarder: fw.map(String::from),
        };
        SymbolTable::from_parts(vec![
            (
                ms("nt", "ntkrnlmp.exe", 0x10_0000),
                vec![
                    e(Some("ExAllocatePool"), 1, 0x1000, None),
                    e(Some("ExAllocatePoolWithTag"), 2, 0x1100, None),
                    e(Some("AliasOfPool"), 3, 0x1000, None),
                    e(None, 4, 0x2000, None),
                    e(
                        Some("KeStall"),
                        5,
                        0x9000,
                        Some("HAL.KeStallExecutionProcessor"),
                    ),
                ],
            ),
            (
                ms("hal", "halmacpi.dll", 0x20_0000),
                vec![e(Some("KeStallExecutionProcessor"), 1, 0x500, None)],
            ),
        ])
    }

    #[test]
    fn lookups() {
        let t = table();
        assert_eq!(t.symbol("nt!ExAllocatePool").unwrap(), Va(0x10_1000));
        assert_eq!(
            t.symbol("ntoskrnl.exe!ExAllocatePool").unwrap(),
            Va(0x10_1000)
        );
        assert_eq!(t.symbol("NTOSKRNL!exallocatepool").unwrap(), Va(0x10_1000));
        assert_eq!(t.symbol("nt!ExAllocatePool+0x10").unwrap(), Va(0x10_1010));
        assert_eq!(t.symbol("nt!#4").unwrap(), Va(0x10_2000));
        assert_eq!(t.symbol("nt").unwrap(), Va(0x10_0000));
        assert_eq!(
            t.symbol("nt!KeStall").unwrap(),
            Va(0x20_0500),
            "forwarder followed"
        );
        assert_eq!(
            t.symbol("hal.dll!KeStallExecutionProcessor").unwrap(),
            Va(0x20_0500)
        );
        assert!(matches!(t.symbol("nt!Nope"), Err(Error::Symbol(_))));
        assert!(matches!(t.symbol("foo!Bar"), Err(Error::Symbol(_))));
        assert_eq!(t.find("nt!ExAlloc*").len(), 2);
        assert_eq!(t.find("*!*Stall*").len(), 2);
        assert_eq!(t.find("nt!#4").len(), 1);
    }

    #[test]
    fn ln_forms() {
        let t = table();
        // Aliases share an address: the alphabetically first name wins, deterministically.
        assert_eq!(t.ln(Va(0x10_1000)).unwrap(), "nt!AliasOfPool");
        assert_eq!(t.ln(Va(0x10_1010)).unwrap(), "nt!AliasOfPool+0x10");
        assert_eq!(t.ln(Va(0x10_1100)).unwrap(), "nt!ExAllocatePoolWithTag");
        assert_eq!(t.ln(Va(0x10_2004)).unwrap(), "nt!#4+0x4");
        assert_eq!(t.ln(Va(0x10_0010)).unwrap(), "nt+0x10");
        assert_eq!(t.ln(Va(0x10_0000)).unwrap(), "nt");
        assert_eq!(
            t.ln(Va(0x20_0600)).unwrap(),
            "hal!KeStallExecutionProcessor+0x100"
        );
        assert!(matches!(t.ln(Va(0x5)), Err(Error::Symbol(_))));
        assert!(matches!(t.ln(Va(0x11_0000)), Err(Error::Symbol(_))));
    }
}
