"""Symbols from export tables, and import analysis: ``Dump.symbol`` / ``symbols`` / ``ln`` /
``importers`` / ``lmi``.

The table of every loaded module's exports is built once per dump (in parallel, GIL released)
and cached in ``Dump._cache["symbols"]``. Module names follow kd: the kernel is ``nt`` whatever
its file name, the HAL is ``hal``, other modules are their base name without extension; lookups
are case-insensitive and also accept file names (``ntoskrnl.exe!ExAllocatePool``). Symbols
loaded from PDBs or mappings (:class:`~ntdump.symbolmap.SymbolMap`) are consulted after
the exports. See docs/symbols.md.
"""

from __future__ import annotations

import bisect
import fnmatch
from typing import TYPE_CHECKING, Any

from . import _schema
from ._handle import Handle
from ._native import SymbolTable, symbol_table
from .errors import PeFormatError, SymbolError
from .modules import Kernel, Module
from .pe import (
    DEBUG_SCHEMA,
    LoadedModuleInfo,
    PeImages,
    debug_frame,
    not_on_disk_reasons,
    pdb_from_codeview,
)
from .symbolmap import SymbolMap

if TYPE_CHECKING:
    import pandas as pd
else:
    from ._lazy import pd  # imported on first use (start-up time)

SYMBOLS_SCHEMA = {
    "module": _schema.LABEL,
    "name": _schema.NAME,
    "address": _schema.NULLABLE_ADDRESS,
    "ordinal": "UInt32",
    "forwarder": _schema.NAME,
    "source": _schema.LABEL,
}
IMPORTERS_SCHEMA = {
    "module": _schema.LABEL,
    "function": _schema.NAME,
    "iat_slot": _schema.ADDRESS,
    "how_found": _schema.LABEL,
    "value": _schema.NULLABLE_ADDRESS,
    "note": _schema.NAME,
}


class Symbols:
    """Feature object of :class:`ntdump.Dump` that resolves names and addresses.

    Takes the dump's handle, its :class:`~ntdump.modules.Kernel` (the module list), its
    :class:`~ntdump.symbolmap.SymbolMap` (PDB / mapped symbols) and its
    :class:`~ntdump.pe.PeImages`."""

    def __init__(self, h: Handle, kernel: Kernel, symbol_map: SymbolMap, images: PeImages) -> None:
        self._h = h
        self._kernel = kernel
        self._map = symbol_map
        self._images = images

    @property
    def path(self) -> str:
        return self._h.path

    @property
    def symbol_map_feature(self) -> SymbolMap:
        """The dump's :class:`~ntdump.symbolmap.SymbolMap` (loaded PDB / mapped symbols)."""
        return self._map

    # -- the table -------------------------------------------------------------------------
    def _symbol_table(self) -> SymbolTable:
        # Built in Rust from the kernel's own module list (the one `modules` shows): no round trip.
        return self._h.cached("symbols", lambda: symbol_table(self._h.native))

    def _mapped(self) -> dict[str, int]:
        return self._map.symbol_map

    def _mapped_sorted(self) -> dict[str, list[tuple[int, str]]]:
        """Loaded (PDB / mapping) symbols per lower-case module name, sorted by address."""
        sm = self._mapped()
        cached = self._h.cache.get("symbols.mapped")
        if cached is not None and cached[0] == len(sm):
            return cached[1]
        per: dict[str, list[tuple[int, str]]] = {}
        for key, va in sm.items():
            mod, _, name = key.partition("!")
            per.setdefault(mod, []).append((va, name))
        for v in per.values():
            v.sort()
        self._h.cache["symbols.mapped"] = (len(sm), per)
        return per

    def symbol_modules(self) -> pd.DataFrame:
        """The modules as the symbol table sees them: kd_name, file_name, base, size, exports and
        imports (counts), error (why the image could not be read), warnings."""
        c = self._symbol_table().modules()
        schema = {"kd_name": _schema.NAME, "file_name": _schema.NAME, "base": _schema.ADDRESS,
                  "size": _schema.BYTES, "exports": _schema.COUNT, "imports": _schema.COUNT,
                  "error": _schema.NAME, "warnings": _schema.OBJECT}
        return _schema.frame(c, schema, dump=self.path)

    # -- lookups ---------------------------------------------------------------------------
    def symbol(self, name: str) -> int:
        """The VA of ``module!name`` (``x nt!ExAllocatePool``).

        ``module`` is kd's name (``nt``, ``hal``, ``amdppm``) or a file name (``ntoskrnl.exe``),
        case-insensitive; ``name`` is an export name (exact case preferred), ``#12`` for an
        ordinal, or a symbol loaded with ``load_pdb`` / ``add_symbols``. ``module`` alone gives the
        base; ``+0x10`` adds an offset. Forwarders are followed. Raises :class:`SymbolError`.
        """
        if "!" in name:
            self._map.autoload(name.split("!", 1)[0].strip())
        try:
            return int(self._symbol_table().symbol(name))
        except SymbolError as e:
            if "!" in name:
                head, plus, off = name.partition("+")
                va = self._map.lookup(head.strip())
                if va is not None:
                    return va + (int(off, 16) if plus else 0)
            raise SymbolError(str(e)) from None

    def symbols(self, pattern: str = "*") -> pd.DataFrame:
        """Exports (and loaded PDB symbols) matching ``module_glob!name_glob`` (``x nt!ExAlloc*``;
        ``*!ExAllocatePool``; no ``!`` = every module), case-insensitive. Columns: module, name,
        address (NA for an unresolved forwarder), ordinal (NA for PDB symbols), forwarder, source
        (``export``, ``pdb``, ``image`` (exports of an image from the symbol path) or ``map``).
        Sorted by module load order, then address."""
        mp, _, np_ = pattern.rpartition("!") if "!" in pattern else ("*", "", pattern)
        if "!" in pattern and not any(ch in mp for ch in "*?"):
            self._map.autoload(mp)
        c: dict[str, Any] = dict(self._symbol_table().find(pattern))
        c["source"] = ["export"] * len(c["name"])
        srcs = self._map.symbol_sources
        extra = [(mod, va, n) for mod, lst in self._mapped_sorted().items()
                 if fnmatch.fnmatchcase(mod, mp.lower()) for va, n in lst
                 if fnmatch.fnmatchcase(n.lower(), np_.lower())]
        if extra:
            have = {(m.lower(), n) for m, n in zip(c["module"], c["name"], strict=True)}
            extra = [e for e in extra if (e[0], e[2]) not in have]
            c["module"] = list(c["module"]) + [e[0] for e in extra]
            c["name"] = list(c["name"]) + [e[2] for e in extra]
            c["address"] = list(c["address"]) + [e[1] for e in extra]
            c["ordinal"] = list(c["ordinal"]) + [None] * len(extra)
            c["forwarder"] = list(c["forwarder"]) + [None] * len(extra)
            c["source"] = c["source"] + [srcs.get(e[0], "map").split(" ", 1)[0] for e in extra]
        return _schema.frame(c, SYMBOLS_SCHEMA, dump=self.path)

    def ln(self, va: int) -> str:
        """kd's ``ln``: the nearest export (or loaded PDB symbol) at or below ``va`` in the module
        holding it, as ``nt!ExAllocatePool+0x10``; ``nt!ExAllocatePool`` for an exact hit;
        ``module+0x1234`` when nothing lies below ``va`` in its module. Raises
        :class:`SymbolError` when no loaded module holds ``va``. PDB names win over exports at the
        same address once loaded; :meth:`ln_source` says which gave the name."""
        return self._ln_full(va)[0]

    def ln_source(self, va: int) -> str | None:
        """Where :meth:`ln`'s name for ``va`` comes from: ``"export"``, ``"pdb <path>"``,
        ``"image <path> (exports)"``, ``"map"``; None when no symbol lies below ``va`` in its
        module (or no module holds it)."""
        try:
            return self._ln_full(va)[1]
        except SymbolError:
            return None

    def _ln_full(self, va: int) -> tuple[str, str | None]:
        t = self._symbol_table()
        near = t.nearest(va)
        if near is None:
            raise SymbolError(f"no loaded module holds {va:#x}")
        module, name, addr, off = near
        source = "export" if name is not None else None
        self._map.autoload(module)
        lst = self._mapped_sorted().get(module.lower())
        if lst:
            # A PDB / map symbol wins when at least as close as the export (PDB names are
            # preferred once loaded, as in WinDbg).
            floor = va - off if addr is None else addr
            i = bisect.bisect_right(lst, (va, "\uffff")) - 1
            while i > 0 and lst[i - 1][0] == lst[i][0]:
                i -= 1  # among names at one address, the alphabetically first
            if i >= 0 and lst[i][0] >= floor:
                name, off = lst[i][1], va - lst[i][0]
                source = self._map.symbol_sources.get(module.lower(), "map")
        text = module if name is None else f"{module}!{name}"
        return (text if off == 0 else f"{text}+{off:#x}"), source

    def ln_or_none(self, va: int) -> str | None:
        """:meth:`ln`, or None when no loaded module holds ``va``."""
        try:
            return self.ln(va)
        except SymbolError:
            return None

    # -- imports ---------------------------------------------------------------------------
    def importers(self, name: str, *, aligned: bool = True) -> pd.DataFrame:
        """Who imports ``module!name``, found two independent ways (``how_found``):

        * ``"import table"``: the module's import descriptors name the function (from the target
          module by any of its file names, e.g. ``ntoskrnl.exe`` for ``nt``);
        * ``"pointer search"``: the function's address occurs as a pointer-sized value in the
          module's image (``!for_each_module s-d @#Base @#End <addr>``; pointer-aligned offsets
          unless ``aligned=False``);
        * ``"both"``.

        Columns: module (kd name), function, iat_slot (VA of the slot or hit), how_found, value
        (the slot's value now; NA if unreadable), note (why the ways disagree: a patched slot, an
        unreadable import name, a pointer outside the IAT). Sorted by load order, then slot.
        """
        c = self._symbol_table().importers(self._h.native, name, aligned)
        return _schema.frame(c, IMPORTERS_SCHEMA, dump=self.path)

    # -- !lmi ------------------------------------------------------------------------------
    def _module_for(self, name_or_va: str | int) -> Module:
        mods = self._kernel.modules
        if isinstance(name_or_va, int):
            m = mods.at(name_or_va)
            if m is None:
                raise SymbolError(f"no loaded module holds {name_or_va:#x}")
            return m
        key = name_or_va
        t = self._symbol_table()
        try:
            base = int(t.symbol(key.split("!")[0]))
        except SymbolError:
            base = None
        if base is not None:
            m = mods.at(base)
            if m is not None:
                return m
        try:
            return mods[key]
        except KeyError:
            raise SymbolError(f"no loaded module named {key!r}") from None

    def lmi(self, name_or_va: str | int) -> LoadedModuleInfo:
        """What ``!lmi`` prints for a module given by name (``"nt"``, ``"amdppm.sys"``) or by an
        address inside it: image name, machine, time stamp, size, checksum, characteristics,
        debug directories, PDB and symbol-store key, and ``not_on_disk_hint`` (reasons to expect
        the file not to be in the driver folder). ``str()`` uses kd's layout."""
        m = self._module_for(name_or_va)
        t = self._symbol_table()
        near = t.nearest(m.base)
        kd = near[0] if near is not None else getattr(m, "kd_name", m.name)
        ptr = self._h.pointer_size
        hint = not_on_disk_reasons(m.name, m.path)
        try:
            img = self._images.image(m.base, m.size or None)
        except PeFormatError as e:
            return LoadedModuleInfo(
                module=kd, base=m.base, size=m.size, image_name=m.name, path=m.path,
                machine=None, timestamp=None, checksum=None, characteristics=None, pdb=None,
                debug=debug_frame_empty(self.path), not_on_disk_hint=hint, error=str(e),
                pointer_size=ptr)
        h = img.headers()
        dbg = next(((r, n) for i, _, r, n in h["directories"] if i == 6 and (r or n)), None)
        return LoadedModuleInfo(
            module=kd, base=m.base, size=m.size, image_name=m.name, path=m.path,
            machine=h["file"]["machine"], timestamp=h["file"]["time_date_stamp"],
            checksum=h["optional"]["checksum"], characteristics=h["file"]["characteristics"],
            pdb=pdb_from_codeview(img.codeview()), debug=debug_frame(img, self.path),
            not_on_disk_hint=hint, missing_pages=list(img.missing_pages), pointer_size=ptr,
            debug_directory=dbg)


def debug_frame_empty(path: str) -> pd.DataFrame:
    """An empty debug-directory frame."""
    return _schema.frame({}, DEBUG_SCHEMA, dump=path)
