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

from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _schema
from ._handle import Handle
from ._native import pdb_symbols, pe_parse
from .errors import PeFormatError, SymbolError, TranslationError
from .modules import Kernel, Module
from .pe import PeImages
from .symbolmap import SymbolMap
from .symbols.image import layout
from .symbols.path import SymbolPath
from .symbols.resolve import ModuleFiles, Resolver
from .symbols.types import TypeCatalog, TypedValue, decode

if TYPE_CHECKING:
    import pandas as pd
else:
    from ._lazy import pd  # imported on first use (start-up time)

RELOAD_SCHEMA = {
    "module": _schema.LABEL,
    "pdb": _schema.NAME,
    "image": _schema.NAME,
    "how": _schema.LABEL,
    "symbols": _schema.COUNT,
    "error": _schema.NAME,
}


class SymbolServer:
    """Feature object of :class:`ntdump.Dump`: the symbol path and the files fetched along it.

    Takes the dump's handle, its :class:`~ntdump.modules.Kernel` (the module list), its
    :class:`~ntdump.symbolmap.SymbolMap` (where loaded symbols go; the Dump points
    ``SymbolMap.autoload`` at :meth:`autoload`) and its :class:`~ntdump.pe.PeImages` (the
    in-memory CodeView records)."""

    def __init__(self, h: Handle, kernel: Kernel, symbol_map: SymbolMap, images: PeImages,
                 path: SymbolPath) -> None:
        self._h = h
        self._kernel = kernel
        self._map = symbol_map
        self._images = images
        self._path = path
        self._resolver = Resolver(path)
        self._loaded: dict[str, ModuleFiles] = {}
        self._image_paths: dict[str, Path] = {}

    # -- the path --------------------------------------------------------------------------
    @property
    def symbol_path(self) -> SymbolPath:
        """The symbol path in use (empty when none was given and ``_NT_SYMBOL_PATH`` is unset)."""
        return self._path

    def set_symbol_path(self, value: str | SymbolPath | None, *, offline: bool | None = None
                        ) -> SymbolPath:
        """Replace the symbol path (kd ``.sympath``); modules are looked up again on next use."""
        sp = SymbolPath.coerce(value)
        if offline is not None:
            sp.offline = offline
        self._path = sp
        self._resolver = Resolver(sp)
        self._loaded.clear()
        return sp

    # -- per module ------------------------------------------------------------------------
    def _module(self, module: str | Module) -> Module:
        if not isinstance(module, str):
            return module
        m = self._kernel.modules.get(module)
        if m is None:
            raise SymbolError(f"no loaded module named {module!r}")
        return m

    def module_files(self, module: str | Module, *, want_image: bool = False) -> ModuleFiles:
        """Find (and fetch, where the path names a server) the PDB of a loaded module and, with
        ``want_image``, its image file; see :mod:`ntdump.symbols.resolve`."""
        m = self._module(module)
        try:
            cv = self._images.image(m.base, m.size or None).codeview()
        except (PeFormatError, TranslationError):
            cv = None
        return self._resolver.module(m.kd_name, m.name, m.timestamp, m.size,
                                     dict(cv) if cv is not None else None,
                                     want_image=want_image)

    def _load_module(self, m: Module, *, want_image: bool = False) -> ModuleFiles:
        key = m.kd_name.lower()
        mf = self._loaded.get(key)
        if mf is not None and (mf.image is not None or not want_image or mf.error):
            return mf
        mf = self.module_files(m, want_image=want_image)
        self._loaded[key] = mf
        if mf.pdb is not None and key not in self._map.pdb_paths:
            self._add_pdb(m, mf.pdb)
        if mf.image is not None:
            self._add_image_exports(m, mf.image)
        return mf

    def _add_pdb(self, m: Module, pdb: Path) -> int:
        _guid, _age, syms = pdb_symbols(str(pdb))
        key = m.kd_name.lower()
        sm = self._map.symbol_map
        for name, rva, _kind in syms:
            va = m.base + rva
            sm[f"{key}!{name}"] = va
            if not name.startswith("?"):
                und = _undecorate(name)
                if und != name:
                    sm.setdefault(f"{key}!{und}", va)
        self._map.pdb_paths[key] = str(pdb)
        self._map.symbol_sources[key] = f"pdb {pdb}"
        self._map.pdb_loaded(key)
        return len(syms)

    def _add_image_exports(self, m: Module, image: Path) -> None:
        """Exports of a downloaded image, placed at the module's base (``x`` on a triage dump)."""
        key = m.kd_name.lower()
        self._image_paths[key] = image
        if self._map.symbol_sources.get(key, "").startswith("pdb"):
            return
        data, _ = layout(image.read_bytes())
        ex = pe_parse(m.base, data).exports()
        sm = self._map.symbol_map
        if ex:
            c = ex["columns"]
            for name, rva, fwd in zip(c["name"], c["rva"], c["forwarder"], strict=True):
                if name and rva and not fwd:
                    sm.setdefault(f"{key}!{name}", m.base + int(rva))
            self._h.cache.pop("symbols.mapped", None)
        self._map.symbol_sources.setdefault(key, f"image {image} (exports)")

    def autoload(self, kd_name: str) -> None:
        """Load a module's symbols along the path, once, silently (errors stay in
        :meth:`reload`'s table). Does nothing without a path."""
        if not self._path:
            return
        m = self._kernel.modules.get(kd_name)
        if m is None or m.kd_name.lower() in self._loaded:
            return
        try:
            self._load_module(m)
        except (SymbolError, PeFormatError, OSError) as e:  # never let a lookup fail for this
            self._loaded[m.kd_name.lower()] = ModuleFiles(m.kd_name, error=str(e))

    def reload(self, module: str | None = None, *, images: bool = False) -> pd.DataFrame:
        """kd ``.reload``: look up every module's PDB (or only ``module``'s) along the symbol
        path and load what is found. ``images=True`` also fetches every image file. Columns:
        module, pdb (path), image (path), how, symbols (count loaded), error."""
        mods = [self._module(module)] if module else list(self._kernel.modules)
        rows: dict[str, list[Any]] = {k: [] for k in RELOAD_SCHEMA}
        for m in mods:
            if module:
                self._loaded.pop(m.kd_name.lower(), None)
                self._resolver.done.pop(m.kd_name, None)
            try:
                mf = self._load_module(m, want_image=images)
            except (SymbolError, PeFormatError, OSError) as e:
                mf = ModuleFiles(m.kd_name, error=str(e))
            pre = f"{m.kd_name.lower()}!"
            n = sum(1 for k in self._map.symbol_map if k.startswith(pre))
            rows["module"].append(m.kd_name)
            rows["pdb"].append(str(mf.pdb) if mf.pdb else None)
            rows["image"].append(str(mf.image) if mf.image else None)
            rows["how"].append(mf.how or None)
            rows["symbols"].append(n)
            rows["error"].append(mf.error)
        return _schema.frame(rows, RELOAD_SCHEMA, dump=self._h.path)

    # -- files for other features ----------------------------------------------------------
    def pdb_file(self, module: str | Module) -> Path | None:
        """The PDB loaded (or found along the path) for ``module``, or None."""
        m = self._module(module)
        p = self._map.pdb_paths.get(m.kd_name.lower())
        if p is None and self._path:
            return self._load_module(m).pdb
        return Path(p) if p is not None else None

    def image_file(self, module: str | Module) -> Path | None:
        """The image file of ``module`` from the symbol path (fetched by name, TimeDateStamp and
        SizeOfImage), or None."""
        m = self._module(module)
        p = self._image_paths.get(m.kd_name.lower())
        if p is None and self._path:
            p = self._load_module(m, want_image=True).image
        return p

    def image_bytes(self, module: str | Module, *, mapped: bool = True) -> bytes | None:
        """The image of ``module`` from the symbol path: laid out at its RVAs as the loader maps
        it (``mapped=True``: ``SizeOfImage`` bytes, ``.pdata``/``.xdata`` where a stack walker
        expects them) or the file's bytes; None when the path has no copy."""
        p = self.image_file(module)
        if p is None:
            return None
        data = p.read_bytes()
        return layout(data)[0] if mapped else data

    # -- types -----------------------------------------------------------------------------
    def _split_type(self, name: str) -> tuple[TypeCatalog, str]:
        mod, sep, t = name.partition("!")
        if not sep:
            mod, t = "nt", name
        return self._map.types(mod), t

    def type_info(self, name: str) -> pd.DataFrame:
        """The layout of ``module!Type`` from the module's PDB: offset (bytes), name, type
        (WinDbg's form), size (bytes), bit_position, bit_length. ``attrs``: type, size,
        source."""
        cat, t = self._split_type(name)
        return cat.frame(t, dump=self._h.path)

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
        data = self._h.read(va, size)
        return decode(cat, lay, data, 0, va, self._h.pointer_size)


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
