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
from collections.abc import Mapping

from ._handle import Handle
from ._native import pdb_public_symbols
from .errors import SymbolError
from .modules import Kernel, kd_module_name


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
        guid, age, syms = pdb_public_symbols(os.fspath(path))
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
        self._h.cache.pop("vm", None)
        return len(syms)

    def lookup(self, name: str) -> int | None:
        """A symbol from the loaded maps (``None`` when absent)."""
        return self.symbol_map.get(_norm(name))
