//! Public symbols from a PDB file (MSF 7.0), through the `pdb` crate: what a symbol server would give for
//! a module, as (name, RVA) pairs, plus the PDB's identity (GUID, age) to match it with an image's RSDS.

use std::fs::File;
use std::path::Path;

use crate::error::{Error, Result};

pub mod types;

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
}
static HOOK: Once = Once::new();

/// Run `f`, turning a panic inside the `pdb` crate into `Error::Symbol`.
///
/// The `pdb` crate 0.8 asserts on some malformed records (an `LF_ARRAY` with bytes after its
/// name, an `LF_POINTER` whose kind or mode is out of range reaches `unreachable!()`); a hostile
/// PDB must not take the interpreter down, so every entry point into it runs here. While `f`
/// runs, the panic hook stays silent on this thread (other panics print as before).
pub(crate) fn guarded<T>(path: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    HOOK.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(|q| q.get()) {
                prev(info);
            }
        }));
    });
    let was = QUIET.with(|q| q.replace(true));
    let r = catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was));
    match r {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".into());
            Err(Error::Symbol(format!(
                "{}: malformed PDB (the pdb reader stopped: {msg})",
                path.display()
            )))
        }
    }
}

/// Most symbols read from one PDB (a full ntoskrnl PDB has ~30,000 publics).
pub const MAX_SYMBOLS: usize = 2_000_000;

fn perr(path: &Path, e: pdb::Error) -> Error {
    Error::Symbol(format!("{}: not a readable PDB: {e}", path.display()))
}

/// Strip the decoration MSVC gives C symbols in publics: a leading `_` (x86 cdecl), `@`/`_…@N` (stdcall,
/// fastcall). C++ names (`?…`) are kept as they are.
pub fn undecorate(name: &str) -> &str {
    if name.starts_with('?') {
        return name;
    }
    let n = name
        .strip_prefix('_')
        .or_else(|| name.strip_prefix('@'))
        .unwrap_or(name);
    match n.rfind('@') {
        Some(i)
            if i > 0
                && n[i + 1..].chars().all(|c| c.is_ascii_digit())
                && !n[i + 1..].is_empty() =>
        {
            &n[..i]
        }
        _ => n,
    }
}

/// Where a [`PdbSymbol`] came from in the PDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SymbolKind {
    /// An `S_PUB32` record of the public symbol stream (functions and data, decorated).
    Public,
    /// An `S_GDATA32` / `S_LDATA32` record of the global symbol stream (a variable, undecorated).
    Global,
}

impl SymbolKind {
    /// `"public"` or `"global"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SymbolKind::Public => "public",
            SymbolKind::Global => "global",
        }
    }
}

crate::ser::as_str!(SymbolKind);

/// A PDB's identity and its public and global data symbols.
#[derive(Debug, Clone)]
pub struct PdbSymbolSet {
    /// GUID as 32 upper-case hex digits in symbol-store order.
    pub guid: String,
    /// Age, as an image's RSDS record carries it.
    pub age: u32,
    /// (name as stored, RVA in bytes, kind), sorted by RVA, then name, then kind.
    pub symbols: Vec<(String, u32, SymbolKind)>,
}

crate::ser::tuple!(PdbSymbolSet: guid, age, symbols);

/// Read the public symbols and the global data symbols (`S_GDATA32`, `S_LDATA32`) of the PDB at
/// `path`. A global whose (name, RVA) repeats a public is kept once, as the public.
pub fn read_symbols(path: &Path) -> Result<PdbSymbolSet> {
    guarded(path, || read_symbols_inner(path))
}

fn read_symbols_inner(path: &Path) -> Result<PdbSymbolSet> {
    use pdb::FallibleIterator;
    let f = File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut pdb = pdb::PDB::open(f).map_err(|e| perr(path, e))?;
    let (guid, age) = types::read_identity_inner(path)?;
    let map = pdb.address_map().map_err(|e| perr(path, e))?;
    let globals = pdb.global_symbols().map_err(|e| perr(path, e))?;
    let mut it = globals.iter();
    let mut symbols = Vec::new();
    while let Some(sym) = it.next().map_err(|e| perr(path, e))? {
        let (name, off, kind) = match sym.parse() {
            Ok(pdb::SymbolData::Public(p)) => (p.name, p.offset, SymbolKind::Public),
            Ok(pdb::SymbolData::Data(d)) => (d.name, d.offset, SymbolKind::Global),
            _ => continue,
        };
        if let Some(rva) = off.to_rva(&map) {
            symbols.push((name.to_string().into_owned(), rva.0, kind));
            if symbols.len() >= MAX_SYMBOLS {
                break;
            }
        }
    }
    symbols.sort_unstable_by(|a, b| {
        a.1.cmp(&b.1)
            .then_with(|| a.0.cmp(&b.0))
            .then_with(|| (a.2 as u8).cmp(&(b.2 as u8)))
    });
    symbols.dedup_by(|b, a| a.0 == b.0 && a.1 == b.1);
    Ok(PdbSymbolSet { guid, age, symbols })
}

/// The public symbols of the PDB at `path` as stored: (name, section number (1-based), offset in
/// bytes within that section), before any address-map (OMAP) translation. For checking a PDB
/// reader against another; [`read_symbols`] gives the RVAs images use.
pub fn read_public_offsets(path: &Path) -> Result<Vec<(String, u16, u32)>> {
    guarded(path, || read_public_offsets_inner(path))
}

fn read_public_offsets_inner(path: &Path) -> Result<Vec<(String, u16, u32)>> {
    use pdb::FallibleIterator;
    let f = File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut pdb = pdb::PDB::open(f).map_err(|e| perr(path, e))?;
    let globals = pdb.global_symbols().map_err(|e| perr(path, e))?;
    let mut it = globals.iter();
    let mut out = Vec::new();
    while let Some(sym) = it.next().map_err(|e| perr(path, e))? {
        if let Ok(pdb::SymbolData::Public(p)) = sym.parse() {
            out.push((
                p.name.to_string().into_owned(),
                p.offset.section,
                p.offset.offset,
            ));
            if out.len() >= MAX_SYMBOLS {
                break;
            }
        }
    }
    Ok(out)
}
