"""Symbol files for an open dump: the symbol path, ``.reload``, PDB symbols and types, and the
downloaded images (exports and bytes for the stack walker).

``ntdump.open(path, symbols="srv*CACHE*URL")`` (or a :class:`~ntdump.symbols.SymbolPath`, or
``_NT_SYMBOL_PATH`` when no argument is given) sets the path. With a path, the first lookup that
needs a module's symbols (``ln``, ``symbol``, ``dps``, ``dt``, triage) fetches its PDB — by the
in-memory RSDS record, or through the image by time stamp and size when the dump lacks the image's
header — once per module, as WinDbg's deferred symbol loading does. ``reload()`` does it for every
module at once. Nothing is fetched without a path, and nothing online unless the path names a
server.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from . import _native, _schema
from .errors import PeFormatError, SymbolError, TranslationError
from .symbols.path import SymbolPath
from .symbols.resolve import ModuleFiles, Resolver
from .symbols.types import TypeCatalog, TypedValue, decode

if TYPE_CHECKING:
    from .modules import Module, ModuleList

RELOAD_SCHEMA = {
    "module": _schema.LABEL,
    "pdb": _schema.NAME,
    "image": _schema.NAME,
    "how": _schema.LABEL,
    "symbols": _schema.COUNT,
    "error": _schema.NAME,
}


class SymsrvMixin:
    """Methods of :class:`ntdump.Dump` that use the symbol path."""

    _cache: dict[str, Any]
    path: str
    _symbol_path: SymbolPath

    if TYPE_CHECKING:

        @property
        def _d(self) -> _native.Dump: ...

        @property
        def modules(self) -> ModuleList: ...

        @property
        def symbol_map(self) -> dict[str, int]: ...

        def read(self, va: int, n: int, *, pad: bool = False) -> bytes: ...

    # -- the path --------------------------------------------------------------------------
    @property
    def symbol_path(self) -> SymbolPath:
        """The symbol path in use (empty when none was given and ``_NT_SYMBOL_PATH`` is unset)."""
        return self._symbol_path

    def set_symbol_path(self, value: str | SymbolPath | None, *, offline: bool | None = None
                        ) -> SymbolPath:
        """Replace the symbol path (kd ``.sympath``); modules are looked up again on next use."""
        sp = SymbolPath.coerce(value)
        if offline is not None:
            sp.offline = offline
        self._symbol_path = sp
        self._cache.pop("symsrv", None)
        return sp

    def _resolver(self) -> Resolver:
        r = self._cache.get("symsrv")
        if r is None or r.path is not self._symbol_path:
            r = Resolver(self._symbol_path)
            self._cache["symsrv"] = r
        return r

    @property
    def symbol_sources(self) -> dict[str, str]:
        """Per kd module name (lower case): where its loaded symbols came from
        (``"pdb /path/amdppm.pdb"``, ``"image /path/amdppm.sys (exports)"``, ``"map"``)."""
        return self._cache.setdefault("symbol_sources", {})

    # -- per module ------------------------------------------------------------------------
    def _module(self, module: str | Module) -> Module:
        if not isinstance(module, str):
            return module
        m = self.modules.get(module)
        if m is None:
            raise SymbolError(f"no loaded module named {module!r}")
        return m

    def module_files(self, module: str | Module, *, want_image: bool = False) -> ModuleFiles:
        """Find (and fetch, where the path names a server) the PDB of a loaded module and, with
        ``want_image``, its image file; see :mod:`ntdump.symbols.resolve`."""
        m = self._module(module)
        cv = None
        try:
            img = _native.pe_image(self._d, m.base, m.size or None)  # type: ignore[attr-defined]
            cv = img.codeview()
        except (PeFormatError, TranslationError):
            cv = None
        return self._resolver().module(m.kd_name, m.name, m.timestamp, m.size, cv,
                                       want_image=want_image)

    def _load_module(self, m: Module, *, want_image: bool = False) -> ModuleFiles:
        key = m.kd_name.lower()
        loaded = self._cache.setdefault("symsrv.loaded", {})
        mf = loaded.get(key)
        if mf is not None and (mf.image is not None or not want_image or mf.error):
            return mf
        mf = self.module_files(m, want_image=want_image)
        loaded[key] = mf
        if mf.pdb is not None and key not in self._cache.setdefault("pdb_paths", {}):
            self._add_pdb(m, mf.pdb)
        if mf.image is not None:
            self._add_image_exports(m, mf.image)
        return mf

    def _add_pdb(self, m: Module, pdb: Path) -> int:
        _guid, _age, syms = _native.pdb_symbols(str(pdb))  # type: ignore[attr-defined]
        key = m.kd_name.lower()
        sm = self.symbol_map
        for name, rva, _kind in syms:
            va = m.base + rva
            sm[f"{key}!{name}"] = va
            if not name.startswith("?"):
                und = _undecorate(name)
                if und != name:
                    sm.setdefault(f"{key}!{und}", va)
        self._cache.setdefault("pdb_paths", {})[key] = pdb
        self.symbol_sources[key] = f"pdb {pdb}"
        self._cache.pop("vm", None)
        self._cache.pop("symbols.mapped", None)
        return len(syms)

    def _add_image_exports(self, m: Module, image: Path) -> None:
        """Exports of a downloaded image, placed at the module's base (``x`` on a triage dump)."""
        key = m.kd_name.lower()
        if self.symbol_sources.get(key, "").startswith("pdb"):
            self._cache.setdefault("image_paths", {})[key] = image
            return
        from .symbols.image import layout

        data, _ = layout(image.read_bytes())
        img = _native.pe_parse(m.base, data)  # type: ignore[attr-defined]
        ex = img.exports()
        sm = self.symbol_map
        if ex:
            c = ex["columns"]
            for name, rva, fwd in zip(c["name"], c["rva"], c["forwarder"], strict=True):
                if name and rva and not fwd:
                    sm.setdefault(f"{key}!{name}", m.base + int(rva))
            self._cache.pop("symbols.mapped", None)
        self._cache.setdefault("image_paths", {})[key] = image
        self.symbol_sources.setdefault(key, f"image {image} (exports)")

    def _autoload(self, kd_name: str) -> None:
        """Load a module's symbols along the path, once, silently (errors stay in ``reload()``)."""
        if not self._symbol_path:
            return
        m = self.modules.get(kd_name)
        if m is None:
            return
        try:
            self._load_module(m)
        except (SymbolError, PeFormatError, OSError) as e:  # never let a lookup fail for this
            self._cache.setdefault("symsrv.loaded", {})[kd_name.lower()] = ModuleFiles(
                m.kd_name, error=str(e))

    def reload(self, module: str | None = None, *, images: bool = False) -> pd.DataFrame:
        """kd ``.reload``: look up every module's PDB (or only ``module``'s) along the symbol
        path and load what is found. ``images=True`` also fetches every image file. Columns:
        module, pdb (path), image (path), how, symbols (count loaded), error."""
        loaded = self._cache.setdefault("symsrv.loaded", {})
        mods = [self._module(module)] if module else list(self.modules)
        rows: dict[str, list[Any]] = {k: [] for k in RELOAD_SCHEMA}
        for m in mods:
            if module:
                loaded.pop(m.kd_name.lower(), None)
                self._cache.get("pdb_paths", {}).pop(m.kd_name.lower(), None)
            try:
                mf = self._load_module(m, want_image=images)
            except (SymbolError, PeFormatError, OSError) as e:
                mf = ModuleFiles(m.kd_name, error=str(e))
            n = sum(1 for k in self.symbol_map if k.startswith(f"{m.kd_name.lower()}!"))
            rows["module"].append(m.kd_name)
            rows["pdb"].append(str(mf.pdb) if mf.pdb else None)
            rows["image"].append(str(mf.image) if mf.image else None)
            rows["how"].append(mf.how or None)
            rows["symbols"].append(n)
            rows["error"].append(mf.error)
        return _schema.frame(rows, RELOAD_SCHEMA, dump=self.path)

    # -- files for other features ----------------------------------------------------------
    def pdb_file(self, module: str | Module) -> Path | None:
        """The PDB loaded (or found along the path) for ``module``, or None."""
        m = self._module(module)
        p = self._cache.get("pdb_paths", {}).get(m.kd_name.lower())
        if p is None and self._symbol_path:
            p = self._load_module(m).pdb
        return p

    def image_file(self, module: str | Module) -> Path | None:
        """The image file of ``module`` from the symbol path (fetched by name, TimeDateStamp and
        SizeOfImage), or None."""
        m = self._module(module)
        p = self._cache.get("image_paths", {}).get(m.kd_name.lower())
        if p is None and self._symbol_path:
            p = self._load_module(m, want_image=True).image
        return p

    def image_bytes(self, module: str | Module, *, mapped: bool = True) -> bytes | None:
        """The image of ``module`` from the symbol path: laid out at its RVAs as the loader maps
        it (``mapped=True``: ``SizeOfImage`` bytes, ``.pdata``/``.xdata`` where the stack
        walker expects them) or the file's bytes; None when the path has no copy."""
        p = self.image_file(module)
        if p is None:
            return None
        data = p.read_bytes()
        if not mapped:
            return data
        from .symbols.image import layout

        return layout(data)[0]

    # -- types -----------------------------------------------------------------------------
    def load_types(self, module: str, pdb: str | os.PathLike[str] | None = None) -> TypeCatalog:
        """The PDB types of ``module`` (from ``pdb`` or the module's PDB along the path)."""
        cats = self._cache.setdefault("types", {})
        key = module.lower()
        if pdb is None and key in cats:
            return cats[key]
        if pdb is None:
            pdb = self._cache.get("pdb_paths", {}).get(key)
            if pdb is None:
                m = self.modules.get(module)
                if m is not None and self._symbol_path:
                    pdb = self._load_module(m).pdb
        if pdb is None:
            raise SymbolError(f"no PDB for {module!r}: give a symbol path (ntdump.open(..., "
                              "symbols=...)) or load_pdb()")
        cat = TypeCatalog(_native.PdbTypes(os.fspath(pdb)), module, f"pdb {pdb}")  # type: ignore[attr-defined]
        cats[key] = cat
        return cat

    def _split_type(self, name: str) -> tuple[TypeCatalog, str]:
        mod, sep, t = name.partition("!")
        if not sep:
            mod, t = "nt", name
        return self.load_types(mod), t

    def type_info(self, name: str) -> pd.DataFrame:
        """The layout of ``module!Type`` from the module's PDB: offset (bytes), name, type
        (WinDbg's form), size (bytes), bit_position, bit_length. ``attrs``: type, size,
        source."""
        cat, t = self._split_type(name)
        return cat.frame(t, dump=self.path)

    def dt(self, name: str, va: int | None = None) -> TypedValue | str:
        """kd's ``dt``: with ``va``, the :class:`~ntdump.symbols.TypedValue` of ``module!Type``
        read at ``va``; without, the layout as WinDbg prints it."""
        cat, t = self._split_type(name)
        if va is None:
            return cat.layout_text(t)
        lay = cat.layout(t)
        size = int(lay["size"])
        if size > 16 << 20:
            raise SymbolError(f"{name} is {size} bytes, over the 16 MiB dt limit")
        data = self.read(va, size)
        ptr = 4 if self._d.info()["machine"] == "x86" else 8
        return decode(cat, lay, data, 0, va, ptr)


def _undecorate(name: str) -> str:
    n = name[1:] if name[:1] in ("_", "@") else name
    head, at, tail = n.rpartition("@")
    if at and head and tail.isdigit():
        return head
    return n


def sympath_text(d: Any, args: str, *, append: bool = False) -> str:
    """kd ``.sympath [path]`` / ``.sympath+ path``: set (or extend) and print the symbol path."""
    args = args.strip()
    if args:
        cur = d.symbol_path
        text = f"{cur.text};{args}" if append and cur.text else args
        new = SymbolPath(text, offline=cur.offline)
        new.http = cur.http
        d.set_symbol_path(new)
    sp = d.symbol_path
    out = [f"Symbol search path is: {sp.text or '<empty>'}",
           f"Expanded Symbol search path is: {_expanded(sp) or '<empty>'}"]
    out += [f"warning: {w}" for w in sp.warnings]
    if sp.offline:
        out.append("offline: no symbol server will be contacted")
    return "\n".join(out)


def _expanded(sp: SymbolPath) -> str:
    parts = []
    for e in sp.elements:
        if e.kind == "srv":
            stores = [str(sp.default_store) if s == "" else s for s in e.stores]
            if len(stores) == 1 and stores[0].lower().startswith(("http://", "https://")):
                stores = [str(sp.default_store), *stores]
            parts.append("srv*" + "*".join(stores))
        elif e.kind == "cache":
            parts.append(f"cache*{e.stores[0] or sp.default_store}")
        else:
            parts.append(e.text)
    return ";".join(parts)


def reload_text(d: Any, args: str) -> str:
    """kd ``.reload [/f] [module]``: look up the PDBs along the symbol path and say per module
    what was loaded."""
    words = [w for w in args.split() if not w.startswith("/")]
    mod = words[0] if words else None
    if mod is not None:
        mod = mod.split("=")[0]
        m = d.modules.get(mod)
        if m is None:
            return f"Unable to find module '{mod}'"
        mod = m.kd_name
    df = d.reload(mod)
    if not d.symbol_path:
        return "Symbol search path is: <empty>\n(no symbols to load; set one with .sympath)"
    out = []
    for r in df.itertuples(index=False):
        if r.pdb is not None and r.pdb is not pd.NA:
            out.append(f"{r.module:<20} {r.symbols} symbols from {r.pdb} ({r.how})")
        else:
            out.append(f"{r.module:<20} *** no symbols: {r.error}")
    return "\n".join(out)
