//! An open dump and the views derived from it once: the kernel view (KDBG, module lists), the export
//! symbol table of the loaded modules and the big pool table. Front ends (the Python binding, tools)
//! hold a [`Session`] instead of recomputing these per call; it derefs to its [`Dump`].
//!
//! The views depend on the dump's struct layouts: [`Session::set_layouts`] replaces the layouts and
//! drops the views they invalidate.

use std::collections::BTreeMap;
use std::ops::Deref;
use std::sync::{Arc, RwLock};

use crate::addr::Va;
use crate::dump::Dump;
use crate::error::Result;
use crate::kernel::Kernel;
use crate::layouts::LayoutOverrides;
use crate::pool::big::{containing, read_big, BigPool};
use crate::pool::page::{pool_page, PoolPage};
use crate::pool::PoolResult;
use crate::symbols::{module_refs, SymbolTable};

/// A value computed once and shared, which [`Cache::clear`] drops (a `OnceLock` that can be reset).
/// The value is computed outside the lock: two threads may both compute it, and the first stored wins.
pub struct Cache<T>(RwLock<Option<Arc<T>>>);

impl<T> Default for Cache<T> {
    fn default() -> Self {
        Cache(RwLock::new(None))
    }
}

impl<T> Cache<T> {
    /// The value, computing it with `make` when none is stored (an error is returned, not stored).
    pub fn get_or_try<E>(
        &self,
        make: impl FnOnce() -> std::result::Result<T, E>,
    ) -> std::result::Result<Arc<T>, E> {
        if let Some(v) = self.0.read().unwrap_or_else(|p| p.into_inner()).clone() {
            return Ok(v);
        }
        let v = Arc::new(make()?);
        let mut g = self.0.write().unwrap_or_else(|p| p.into_inner());
        Ok(g.get_or_insert(v).clone())
    }

    /// Drop the value.
    pub fn clear(&self) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// An open dump and its views, each computed on first use and shared between threads.
pub struct Session {
    dump: Arc<Dump>,
    kernel: Cache<Kernel>,
    symbols: Cache<SymbolTable>,
    big: Cache<BigPool>,
}

impl Deref for Session {
    type Target = Dump;

    fn deref(&self) -> &Dump {
        &self.dump
    }
}

impl Session {
    /// A session on `dump`; nothing is read until a view is asked for.
    pub fn new(dump: Dump) -> Session {
        Session {
            dump: Arc::new(dump),
            kernel: Cache::default(),
            symbols: Cache::default(),
            big: Cache::default(),
        }
    }

    /// The dump, shared (for work that outlives a borrow, e.g. a prepared scan).
    pub fn dump(&self) -> &Arc<Dump> {
        &self.dump
    }

    /// The kernel view ([`Kernel::load`]), loaded once.
    pub fn kernel(&self) -> Result<Arc<Kernel>> {
        self.kernel.get_or_try(|| Kernel::load(&self.dump))
    }

    /// The export symbols of the kernel's module list ([`SymbolTable::build`]), built once.
    pub fn symbols(&self) -> Result<Arc<SymbolTable>> {
        let k = self.kernel()?;
        self.symbols
            .get_or_try(|| Ok(SymbolTable::build(&self.dump, &module_refs(&k))))
    }

    /// The big pool table found by the default search ([`read_big`]), read once it reads
    /// successfully (a failure is returned each time, not stored).
    pub fn big_pool(&self) -> PoolResult<Arc<BigPool>> {
        let k = self.kernel()?;
        self.big.get_or_try(|| read_big(&self.dump, &k, None))
    }

    /// The pool page holding `va` (`!pool`, [`pool_page`]) with the big-pool allocation holding
    /// `va` ([`containing`]) when the big pool table can be read.
    pub fn pool_page(&self, va: Va) -> Result<PoolPage> {
        let mut p = pool_page(&self.dump, va)?;
        let big = self.big_pool().ok();
        p.big = big.and_then(|b| containing(&b.pages, va).map(|i| b.pages.entry(i)));
        Ok(p)
    }

    /// Where each of the dump's layouts comes from now: `pool_header` and `ldr` always (a PDB type or
    /// the built-in profile), `tracker` and `big_pages` when a PDB overrides them (otherwise the
    /// profile's layout is chosen per table by validation, and each table's result says which).
    pub fn layout_sources(&self) -> BTreeMap<&'static str, String> {
        let d = &self.dump;
        let mut m = d.layouts().sources();
        m.insert("pool_header", crate::pool::header_source(d));
        m.insert("ldr", crate::kernel::ldr_layout(d).1);
        m
    }

    /// Replace the dump's layout overrides ([`Dump::set_layouts`]) and drop the views they change:
    /// the big pool table always; the kernel view and the symbol table when the loader entry layout
    /// changed (the module list is walked again). Returns whether it changed.
    pub fn set_layouts(&self, l: LayoutOverrides) -> bool {
        let ldr = l.ldr.as_ref().map(|x| x.layout);
        let old = self.dump.set_layouts(l);
        let ldr_changed = old.ldr.as_ref().map(|x| x.layout) != ldr;
        self.big.clear();
        if ldr_changed {
            self.kernel.clear();
            self.symbols.clear();
        }
        ldr_changed
    }
}
