"""Loaded kernel modules: :class:`Module`, :class:`ModuleList` and the kernel facts behind them."""

from __future__ import annotations

import datetime as _dt
import fnmatch
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import _schema
from ._format import kd_addr
from ._handle import Handle
from ._native import PeImage, kernel_info
from .errors import NtdumpWarning, SymbolError
from .pe import (
    EXPORT_SCHEMA,
    IMPORT_SCHEMA,
    PdbInfo,
    PeHeaders,
    PeImages,
    debug_frame,
    headers_of,
    pdb_from_codeview,
    sections_frame,
)

if TYPE_CHECKING:
    import pandas as pd
else:
    from ._lazy import pd  # imported on first use (start-up time)

KERNEL_NAMES = ("ntoskrnl.exe", "ntkrnlpa.exe", "ntkrnlmp.exe", "ntkrpamp.exe")
"""File names of the NT kernel: uniprocessor, PAE, multiprocessor, PAE multiprocessor."""

MODULE_SCHEMA = {
    "name": _schema.NAME,
    "kd_name": _schema.NAME,
    "base": _schema.ADDRESS,
    "end": _schema.ADDRESS,
    "size": _schema.BYTES,
    "path": _schema.NAME,
    "timestamp": _schema.UINT32,
    "timestamp_source": _schema.LABEL,
    "loaded_imports": _schema.NAME,
    "checksum": _schema.UINT32,
    "entry_point": _schema.ADDRESS,
    "flags": _schema.UINT32,
    "load_count": _schema.COUNT,
    "ldr_entry": _schema.ADDRESS,
    "range_ok": _schema.BOOL,
}
"""``end`` saturates at the top of the address space (2^64 - 1, 2^32 - 1 on x86); ``range_ok``
is False for an entry that runs past the top of the address space (a corrupt loader entry,
reported in ``Dump.kernel_warnings``): range-based analyses (search ``within=d.modules``, pool
owners, ``!for_each_module``) skip such rows."""

UNLOADED_SCHEMA = {
    "name": _schema.NAME,
    "start": _schema.ADDRESS,
    "end": _schema.ADDRESS,
    "time": _schema.UINT64,
}

if TYPE_CHECKING:
    from ._native import Kdbg, KernelInfo, ModuleColumns



def kd_module_name(file_name: str, index: int | None = None) -> str:
    """The name kd gives a module: ``nt`` for the kernel, ``hal`` for hal.dll, else the base name
    without its extension (``{6B1A…}.sys`` → ``{6B1A…}``)."""
    low = file_name.lower()
    if low in KERNEL_NAMES or (index == 0 and low.startswith("nt") and low.endswith(".exe")):
        return "nt"
    if low == "hal.dll":
        return "hal"
    return file_name.rsplit(".", 1)[0] if "." in file_name else file_name


@dataclass(frozen=True, eq=False)
class Module:
    """A loaded kernel module (one ``PsLoadedModuleList`` entry). Addresses are VAs; sizes bytes."""

    name: str
    """Base file name, e.g. ``ntoskrnl.exe``."""
    path: str
    """Full path as the loader recorded it, e.g. ``\\SystemRoot\\system32\\ntoskrnl.exe``."""
    base: int
    size: int
    entry_point: int
    timestamp: int
    """Linker TimeDateStamp (seconds since 1970-01-01 UTC)."""
    checksum: int
    flags: int
    load_count: int
    ldr_entry: int
    """VA of the loader entry (0 for triage dumps)."""
    kd_name: str
    """kd's name: ``nt``, ``hal``, or the base name without extension."""
    index: int
    _images: PeImages = field(repr=False)
    timestamp_source: str = "pe header"
    """Where :attr:`timestamp` comes from: ``"pe header"`` (the image's in-memory
    ``FileHeader.TimeDateStamp``, what ``lm v`` shows), ``"loader entry"`` (header unreadable;
    Windows 8+ entries have a TimeDateStamp field), ``"triage driver list"``, or
    ``"unavailable"`` (header unreadable and, before Windows 8, the entry's slot holds
    LoadedImports: timestamp is 0)."""
    loaded_imports: str | tuple[str, ...] = "unknown"
    """The loader entry's LoadedImports: ``"boot loaded"`` (the kernel, the HAL, boot drivers
    whose list was never built), ``"no imports"`` (nothing besides the kernel and the HAL, which
    are never listed), a tuple of the kd names of the imported modules, ``"unknown"`` (unreadable;
    see ``d.kernel_warnings``) or ``"not recorded"`` (triage dumps)."""
    range_ok: bool = True
    """False when ``[base, base + size)`` runs past the top of the address space (a corrupt
    entry): range-based analyses skip the module."""

    @property
    def end(self) -> int:
        """First VA past the image."""
        return self.base + self.size

    @property
    def time(self) -> _dt.datetime:
        """:attr:`timestamp` as a UTC datetime."""
        return _dt.datetime.fromtimestamp(self.timestamp, _dt.UTC)

    def __contains__(self, va: object) -> bool:
        return isinstance(va, int) and self.base <= va < self.end

    def __str__(self) -> str:
        return f"{self.base:#x} {self.end:#x}   {self.kd_name:<20} {self.path}"

    # -- the PE image (read once per dump; PeFormatError when headers are missing/malformed) ---
    @property
    def pe(self) -> PeImage:
        """The parsed image (``ntdump.PeImage``)."""
        return self._images.image(self.base, self.size or None)

    @property
    def headers(self) -> PeHeaders:
        """The headers (``print(m.headers)`` looks like ``!dh``)."""
        return headers_of(self.pe, self._images.path)

    @property
    def pdb(self) -> PdbInfo | None:
        """The CodeView record (PDB name, GUID, age, symbol-store key), or None when absent or
        not readable."""
        return pdb_from_codeview(self.pe.codeview())

    @property
    def missing_pages(self) -> list[int]:
        """RVAs of the image's pages that could not be read (zero-filled)."""
        return list(self.pe.missing_pages)

    @property
    def pe_warnings(self) -> list[str]:
        """What was odd or cut short while reading the image."""
        return list(self.pe.warnings)

    def sections(self) -> pd.DataFrame:
        """The section table: name, va, rva, virtual_size, raw_size, raw_pointer, characteristics,
        flags."""
        return sections_frame(self.pe, self._images.path)

    def exports(self) -> pd.DataFrame:
        """Exports: name (NA for ordinal-only), ordinal, rva, address (NA for forwarders),
        forwarder. Sorted by ordinal."""
        e = self.pe.exports()
        if e is None:
            return _schema.frame({}, EXPORT_SCHEMA, dump=self._images.path)
        c = e["columns"]
        cols: dict[str, Any] = dict(c)
        cols["address"] = [None if f is not None else self.base + r
                           for r, f in zip(c["rva"], c["forwarder"], strict=True)]
        return _schema.frame(cols, EXPORT_SCHEMA, dump=self._images.path)

    def imports(self, *, resolve: bool = True) -> pd.DataFrame:
        """One row per IAT slot: dll, name (NA when imported by ordinal or when the ILT is gone),
        ordinal, hint, iat_slot (VA), iat_rva, value (what the slot holds now; NA if unreadable),
        target (``Dump.ln`` of the value when ``resolve``), source ("descriptor" or, when the
        import descriptors are unreadable, "iat directory")."""
        c: dict[str, Any] = dict(self.pe.imports())
        targets: list[str | None] = [None] * len(c["value"])
        ln = self._images.resolve
        if resolve and ln is not None:
            targets = [ln(v) if v is not None else None for v in c["value"]]
        c["target"] = targets
        return _schema.frame(c, IMPORT_SCHEMA, dump=self._images.path)

    def debug_directories(self) -> pd.DataFrame:
        """The debug directory: kind, kind_name, size_of_data, address_of_raw_data (RVA),
        pointer_to_raw_data, time_date_stamp, mapped (the data's pages are readable)."""
        return debug_frame(self.pe, self._images.path)



class ModuleList:
    """The loaded modules of a dump, in load order (the kernel first). ``!for_each_module`` is a
    loop
    over this list; ``d.search(x, within=d.modules)`` searches every module."""

    def __init__(self, h: Handle, modules: list[Module], *, source: str,
                 layout_source: str = "") -> None:
        self._h = h
        self._modules = modules
        self._starts = sorted((m.base, i) for i, m in enumerate(modules))
        self.source = source
        """Where the list came from: "PsLoadedModuleList", "triage driver list" or "none"."""
        self.layout_source = layout_source
        """Where the loader entry layout of the walk comes from: the kernel PDB's type
        (``"pdb nt!_KLDR_DATA_TABLE_ENTRY (<pdb path>)"``) or the built-in profile
        (``"profile win10 x64: …"``); for a triage dump's driver list it is not used."""

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules)

    def __len__(self) -> int:
        return len(self._modules)

    def __bool__(self) -> bool:
        return bool(self._modules)

    def __getitem__(self, key: int | str) -> Module:
        """By position, or by name: kd's (``"nt"``, ``"hal"``, ``"amdppm"``) or the file name
        (``"amdppm.sys"``), case-insensitive. Raises ``KeyError``/``IndexError``."""
        if isinstance(key, int):
            return self._modules[key]
        low = key.lower()
        for m in self._modules:
            if low in (m.kd_name.lower(), m.name.lower()):
                return m
        raise KeyError(f"no loaded module named {key!r}")

    def get(self, key: str, default: Module | None = None) -> Module | None:
        """Like ``[key]`` but returns ``default`` when absent."""
        try:
            return self[key]
        except KeyError:
            return default

    def find(self, pattern: str) -> list[Module]:
        """Modules whose kd name or file name matches a glob (``"win*"``), case-insensitive."""
        p = pattern.lower()
        return [
            m
            for m in self._modules
            if fnmatch.fnmatchcase(m.kd_name.lower(), p) or fnmatch.fnmatchcase(m.name.lower(), p)
        ]

    def at(self, va: int) -> Module | None:
        """The module whose [base, end) holds ``va`` (``!lmi``'s question), or None."""
        lo, hi = 0, len(self._starts)
        while lo < hi:
            mid = (lo + hi) // 2
            if self._starts[mid][0] <= va:
                lo = mid + 1
            else:
                hi = mid
        for j in range(lo - 1, -1, -1):
            m = self._modules[self._starts[j][1]]
            if va in m:
                return m
            if self._starts[j][0] + (1 << 32) < va:
                break
        return None

    def to_frame(self) -> pd.DataFrame:
        """One row per module (``lm``), in load order. ``timestamp_source`` says where
        ``timestamp`` comes from; ``loaded_imports`` is ``"boot loaded"``, ``"no imports"``,
        ``"unknown"``, ``"not recorded"`` or the kd names of the imported modules joined by
        ``", "`` (:attr:`Module.loaded_imports` has them as a tuple)."""
        cols: dict[str, Any] = {k: [getattr(m, k) for m in self._modules] for k in MODULE_SCHEMA}
        last = (1 << (8 * self._h.pointer_size)) - 1  # the top of the address space
        cols["end"] = [min(m.end, last) for m in self._modules]
        # One string per row (Parquet- and CSV-friendly): the kind, or the kd names joined by ", ".
        cols["loaded_imports"] = [", ".join(v) if isinstance(v, tuple) else v
                                  for v in cols["loaded_imports"]]
        df = _schema.frame(cols, MODULE_SCHEMA, dump=self._h.path)
        df.attrs["source"] = self.source
        df.attrs["layout_source"] = self.layout_source
        return df

    def dependents(self, name: str) -> list[Module]:
        """Modules whose LoadedImports lists ``name`` (a kd or file name): "which modules depend
        on the suspect?". The kernel and the HAL are never listed by Windows, so asking for
        them returns []."""
        target = self[name].kd_name
        return [m for m in self._modules
                if isinstance(m.loaded_imports, tuple) and target in m.loaded_imports]

    def __repr__(self) -> str:
        return f"<ModuleList {len(self)} modules from {self.source}>"

    def lm_text(self) -> str:
        """``lm`` as kd prints it: start, end, module name, path; sorted by start address."""

        ptr = self._h.pointer_size
        lines = ["start             end                 module name"]
        for m in sorted(self._modules, key=lambda m: m.base):
            end = min(m.end, (1 << (8 * ptr)) - 1)
            flag = "" if m.range_ok else "   (runs past the top of the address space)"
            lines.append(f"{kd_addr(m.base, ptr)} {kd_addr(end, ptr)}   {m.kd_name:<20} {m.path}"
                         f"{flag}")
        return "\n".join(lines)


def _imports_value(c: ModuleColumns, i: int, names: list[str]) -> str | tuple[str, ...]:
    """Module ``i``'s LoadedImports as :attr:`Module.loaded_imports` holds it."""
    kind, entries, _ = c["loaded_imports"][i]
    if kind != "modules":
        return str(kind)
    return tuple(names[j] if j is not None else f"<ldr entry {va:#x}>" for va, j in entries)


class Kernel:
    """Feature object of :class:`ntdump.Dump` about the kernel: modules, unloaded drivers, KDBG.

    Takes the dump's handle and its :class:`~ntdump.pe.PeImages` (which every Module uses)."""

    def __init__(self, h: Handle, images: PeImages) -> None:
        self._h = h
        self._images = images

    def _kernel(self) -> KernelInfo:
        return self._h.cached("kernel", lambda: kernel_info(self._h.native))

    @property
    def modules(self) -> ModuleList:
        """The loaded modules (:class:`ModuleList`), from ``PsLoadedModuleList`` or, in triage
        dumps, the dump's own driver list."""
        return self._h.cached("modules", self._module_list)

    def _module_list(self) -> ModuleList:
        k = self._kernel()
        c = k["modules"]
        # One naming rule for lm, symbols and kd (nt, hal, stem, stem_<base> for repeats).
        names = c["kd_name"]
        mods = [
            Module(
                name=c["name"][i],
                path=c["path"][i],
                base=c["base"][i],
                size=c["size"][i],
                entry_point=c["entry_point"][i],
                timestamp=c["timestamp"][i],
                checksum=c["checksum"][i],
                flags=c["flags"][i],
                load_count=c["load_count"][i],
                ldr_entry=c["ldr_entry"][i],
                kd_name=names[i],
                index=i,
                _images=self._images,
                timestamp_source=c["timestamp_source"][i],
                loaded_imports=_imports_value(c, i, names),
                range_ok=bool(c["range_ok"][i]),
            )
            for i in range(len(c["name"]))
        ]
        for i, (_, _, note) in enumerate(c["loaded_imports"]):
            if note:
                k["warnings"].append(f"{c['name'][i]}: LoadedImports: {note}")
        if not mods and self._h.info.layout != "triage":
            warnings.warn(NtdumpWarning(self.empty_modules_reason()), stacklevel=4)
        return ModuleList(self._h, mods, source=k["module_source"],
                          layout_source=k["ldr_layout_source"])

    def empty_modules_reason(self) -> str:
        """Why the module list is empty, in one line (from the kernel warnings)."""
        why = "; ".join(self._kernel()["warnings"]) or "PsLoadedModuleList is empty"
        return f"{self._h.path}: no loaded modules found ({why})"

    def unloaded_modules(self) -> pd.DataFrame:
        """Recently unloaded drivers (``lm`` 's "Unloaded modules" part): name, start, end, time."""
        return _schema.frame(self._kernel()["unloaded"], UNLOADED_SCHEMA, dump=self._h.path)

    @property
    def kernel_base(self) -> int | None:
        """VA of the kernel image (KDBG.KernBase, or the first module's base)."""
        return self._kernel()["kernel_base"]

    @property
    def kdbg(self) -> Kdbg | None:
        """The KDBG block: ``{"va", "size", "bytes"}``, or None when not found (see warnings)."""
        return self._kernel()["kdbg"]

    @property
    def kernel_warnings(self) -> list[str]:
        """What was odd while walking kernel structures (loops, unreadable entries …)."""
        return list(self._kernel()["warnings"])

    def module(self, name_or_va: str | int) -> Module:
        """A module by name (``"nt"``, ``"amdppm.sys"``) or by an address inside it."""
        if isinstance(name_or_va, int):
            m = self.modules.at(name_or_va)
            if m is None:
                raise SymbolError(f"no loaded module holds {name_or_va:#x}")
            return m
        try:
            return self.modules[name_or_va]
        except KeyError as e:
            raise SymbolError(str(e)) from None
