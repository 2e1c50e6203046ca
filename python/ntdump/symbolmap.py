"""Symbols beyond export tables: PDB public symbols and caller-given symbol maps.

Export tables (``d.symbol``) name what a module exports; kernel *variables* such as
``nt!MmPoolFailures``
are not exported and need the module's PDB, as a debugger gets it from a symbol server. ntdump reads
PDB
public symbols itself (:meth:`SymbolMap.load_pdb`, offline, no symbol server) or takes a
mapping of
names to addresses (:meth:`SymbolMap.add_symbols`). Both fill one per-dump table that ``vm()``,
``symbol()`` and ``ln()`` consult.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping

from ._handle import Handle
from ._native import PdbTypes, pdb_symbols, set_kernel_layouts
from .errors import NtdumpWarning, SymbolError
from .modules import Kernel, kd_module_name
from .symbols.types import TypeCatalog

KERNEL_LAYOUT_TYPES = ("_POOL_HEADER", "_POOL_TRACKER_TABLE", "_POOL_TRACKER_BIG_PAGES",
                       "_KLDR_DATA_TABLE_ENTRY")
"""The kernel types whose layouts a loaded ``nt`` PDB gives every reader (pool scan and page walk,
``pool.used()``, ``pool.big()``, the module list) in place of the built-in profiles
(``_LDR_DATA_TABLE_ENTRY`` before Windows 8); see :meth:`SymbolMap.apply_kernel_layouts`."""


def _norm(name: str, default_module: str = "nt") -> str:
    mod, sep, sym = name.partition("!")
    if not sep:
        mod, sym = default_module, name
    return f"{mod.lower()}!{sym}"


class SymbolMap:
    """Feature object of :class:`ntdump.Dump` that loads symbols from PDBs or mappings.

    Takes the dump's handle and its :class:`~ntdump.modules.Kernel` (to place a PDB at a module).
    Loading symbols drops the cached ``!vm`` summary (it reads kernel variables by name)."""

    def __init__(self, h: Handle, kernel: Kernel) -> None:
        self._h = h
        self._kernel = kernel
        self.autoload: Callable[[str], None] = lambda module: None
        """Load a module's symbols along the symbol path, once (set by :class:`ntdump.Dump` to
        :meth:`ntdump._symsrv.SymbolServer.autoload`); features call it before they need a
        module's PDB (``ln``, ``!vm``, the pool tables)."""

    @property
    def symbol_sources(self) -> dict[str, str]:
        """Per kd module name (lower case): where its loaded symbols came from
        (``"pdb /path/amdppm.pdb"``, ``"image /path/amdppm.sys (exports)"``, ``"map"``)."""
        m: dict[str, str] = self._h.cache.setdefault("symbol_sources", {})
        return m

    @property
    def pdb_paths(self) -> dict[str, str]:
        """Per kd module name (lower case): the PDB its symbols were loaded from."""
        m: dict[str, str] = self._h.cache.setdefault("pdb_paths", {})
        return m

    @property
    def symbol_map(self) -> dict[str, int]:
        """Loaded symbols: ``"module!Name"`` (module in kd's lower-case form) -> VA."""
        m: dict[str, int] = self._h.cache.setdefault("symbol_map", {})
        return m

    def add_symbols(self, mapping: Mapping[str, int], *, module: str = "nt") -> int:
        """Add ``{"nt!MmPoolFailures": va, ...}`` (names without ``!`` belong to ``module``).
        Returns how many were added."""
        sm = self.symbol_map
        for name, va in mapping.items():
            sm[_norm(name, module)] = int(va)
        self._h.cache.pop("vm", None)
        return len(mapping)

    def load_pdb(self, path: str | os.PathLike[str], *, module: str | None = None) -> int:
        """Read the public symbols of the PDB at ``path`` and place them at ``module``'s base.

        ``module`` defaults to the loaded module whose CodeView record names this PDB (GUID and
        age), or
        the kernel (``nt``) when the PDB's file name is a kernel's. Returns the number of symbols
        added.
        Raises :class:`SymbolError` when no loaded module matches.
        """
        guid, age, rows = pdb_symbols(os.fspath(path))
        syms = [(n, rva) for n, rva, _kind in rows]  # publics and global variables
        mods = self._kernel.modules
        target = None
        kbase = self._kernel.kernel_base
        if module is not None:
            target = mods.get(module)
            if target is None and not (module.lower() == "nt" and kbase is not None):
                raise SymbolError(f"no loaded module named {module!r}")
        else:
            key = f"{guid}{age:X}"
            for m in mods:
                pdb = getattr(m, "pdb", None)
                try:
                    if pdb is not None and getattr(pdb, "key", "").upper() == key:
                        target = m
                        break
                except Exception:
                    continue
            if target is None and os.path.basename(os.fspath(path)).lower().startswith(
                ("ntkrnl", "ntoskrnl", "ntkrpamp")
            ):
                target = mods.get("nt")
            if target is None:
                raise SymbolError(f"{path}: no loaded module has PDB key {key}; pass module=")
        mod = kd_module_name(target.name, target.index).lower() if target is not None else "nt"
        base = target.base if target is not None else 0
        if mod == "nt" and kbase is not None:
            # nt's base from KDBG.KernBase (or the first module), not the loader list alone: the
            # list may be read with a loader-entry layout this PDB is about to replace.
            base = kbase
        sm = self.symbol_map
        for name, rva in syms:
            sm.setdefault(f"{mod}!{name}", base + rva)
            undecorated = name.lstrip("_@").split("@")[0] if not name.startswith("?") else name
            sm.setdefault(f"{mod}!{undecorated}", base + rva)
        self.pdb_paths[mod] = os.fspath(path)
        self.symbol_sources[mod] = f"pdb {os.fspath(path)}"
        self.pdb_loaded(mod)
        return len(syms)

    def pdb_loaded(self, module: str) -> None:
        """Drop what a newly loaded PDB of ``module`` (kd name, lower case) makes stale; for the
        kernel, hand its struct layouts to every reader (:meth:`apply_kernel_layouts`)."""
        self._h.cache.get("types", {}).pop(module, None)
        self._h.cache.pop("vm", None)
        self._h.cache.pop("symbols.mapped", None)
        if module == "nt":
            self.apply_kernel_layouts()

    @property
    def layout_warnings(self) -> list[str]:
        """Why kernel types of the loaded ``nt`` PDB were not used (the built-in profile kept):
        a field past the entry's end, a size of 0 or too large, a missing field …"""
        r = self._h.cache.get("layouts")
        return list(r["warnings"]) if r else []

    @property
    def layout_sources(self) -> dict[str, str]:
        """The layouts taken from the ``nt`` PDB: structure (``pool_header``, ``tracker``,
        ``big_pages``, ``ldr``) -> source (``"pdb nt!_POOL_TRACKER_TABLE (<pdb path>)"``)."""
        r = self._h.cache.get("layouts")
        return dict(r["sources"]) if r else {}

    def apply_kernel_layouts(self) -> None:
        """Give the dump the layouts of :data:`KERNEL_LAYOUT_TYPES` from nt's PDB, each validated
        in the core (every field inside the entry, sizes of 1, 2, 4 or 8 bytes, a bounded entry
        size, the fields the readers use present); one that fails keeps the built-in profile and
        an :class:`~ntdump.errors.NtdumpWarning` says why. Cached pool results are dropped, and
        when the loader entry layout changes the module list is walked again."""
        pdb = self.pdb_paths.get("nt")
        types, unreadable = None, None
        try:
            types = self.types("nt").native if pdb is not None else None
        except (SymbolError, OSError) as e:  # publics readable, types not: keep the profiles
            unreadable = f"the types of {pdb} are not readable ({e}); built-in layouts kept"
        r = set_kernel_layouts(self._h.native, types, "nt", pdb or "")
        if unreadable is not None:
            r["warnings"].append(unreadable)
        self._h.cache["layouts"] = r
        for k in [k for k in self._h.cache if k.startswith("pool.")]:
            del self._h.cache[k]
        if r["ldr_changed"]:
            for k in ("kernel", "modules", "symbols", "symbols.mapped", "vm"):
                self._h.cache.pop(k, None)
        for w in r["warnings"]:
            warnings.warn(NtdumpWarning(f"{self._h.path}: {w}"), stacklevel=4)

    def types(self, module: str) -> TypeCatalog:
        """The PDB types of ``module`` (kd name): from the PDB its symbols were loaded from,
        loading them along the symbol path first. Raises :class:`SymbolError` without a PDB."""
        key = module.lower()
        cats: dict[str, TypeCatalog] = self._h.cache.setdefault("types", {})
        cat = cats.get(key)
        if cat is None:
            self.autoload(module)
            pdb = self.pdb_paths.get(key)
            if pdb is None:
                raise SymbolError(f"no PDB loaded for {module!r}: give a symbol path "
                                  "(ntdump.open(..., symbols=...)) or load_pdb()")
            cat = TypeCatalog(PdbTypes(os.fspath(pdb)), module, f"pdb {pdb}")
            cats[key] = cat
        return cat

    def lookup(self, name: str) -> int | None:
        """A symbol from the loaded maps (``None`` when absent)."""
        return self.symbol_map.get(_norm(name))
