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
from collections.abc import Callable, Mapping

from ._handle import Handle
from ._native import PdbTypes, pdb_symbols
from .errors import SymbolError
from .modules import Kernel, kd_module_name
from .symbols.types import TypeCatalog


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
        if module is not None:
            target = mods.get(module)
            if target is None:
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
        mod = kd_module_name(target.name, target.index).lower()
        sm = self.symbol_map
        for name, rva in syms:
            sm.setdefault(f"{mod}!{name}", target.base + rva)
            undecorated = name.lstrip("_@").split("@")[0] if not name.startswith("?") else name
            sm.setdefault(f"{mod}!{undecorated}", target.base + rva)
        self.pdb_paths[mod] = os.fspath(path)
        self._h.cache.get("types", {}).pop(mod, None)
        self.symbol_sources[mod] = f"pdb {os.fspath(path)}"
        self._h.cache.pop("vm", None)
        self._h.cache.pop("symbols.mapped", None)
        return len(syms)

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
