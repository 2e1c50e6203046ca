"""Loaded kernel modules: :class:`Module`, :class:`ModuleList` and the kernel facts behind them."""

from __future__ import annotations

import datetime as _dt
import fnmatch
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from . import _native, _schema
from .errors import SymbolError

try:  # The PE methods of Module (imports, exports, sections, headers, pdb) live in pe.py.
    from .pe import ModulePeMixin
except ImportError:  # pragma: no cover - only while pe.py is being written

    class ModulePeMixin:  # type: ignore[no-redef]
        """Placeholder base until ntdump.pe is present."""


if TYPE_CHECKING:
    from .dump import Dump

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
    "checksum": _schema.UINT32,
    "entry_point": _schema.ADDRESS,
    "flags": _schema.UINT32,
    "load_count": _schema.COUNT,
    "ldr_entry": _schema.ADDRESS,
}

UNLOADED_SCHEMA = {
    "name": _schema.NAME,
    "start": _schema.ADDRESS,
    "end": _schema.ADDRESS,
    "time": _schema.UINT64,
}


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
class Module(ModulePeMixin):
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
    _dump: Dump = field(repr=False)

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


class ModuleList:
    """The loaded modules of a dump, in load order (the kernel first). ``!for_each_module`` is a
    loop
    over this list; ``d.search(x, within=d.modules)`` searches every module."""

    def __init__(self, dump: Dump, modules: list[Module], *, source: str) -> None:
        self._dump = dump
        self._modules = modules
        self._starts = sorted((m.base, i) for i, m in enumerate(modules))
        self.source = source
        """Where the list came from: "PsLoadedModuleList", "triage driver list" or "none"."""

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
        """One row per module (``lm``), in load order."""
        cols: dict[str, Any] = {k: [getattr(m, k) for m in self._modules] for k in MODULE_SCHEMA}
        cols["end"] = [m.end for m in self._modules]
        return _schema.frame(cols, MODULE_SCHEMA, dump=self._dump.path)

    def __repr__(self) -> str:
        return f"<ModuleList {len(self)} modules from {self.source}>"

    def lm_text(self) -> str:
        """``lm`` as kd prints it: start, end, module name, path."""
        from .cli import kd_addr

        ptr = self._dump.info.pointer_size
        lines = ["start             end                 module name"]
        for m in self._modules:
            lines.append(f"{kd_addr(m.base, ptr)} {kd_addr(m.end, ptr)}   {m.kd_name:<20} {m.path}")
        return "\n".join(lines)


class KernelMixin:
    """Methods of :class:`ntdump.Dump` about the kernel: modules, unloaded drivers, KDBG."""

    _cache: dict[str, Any]
    path: str

    def _kernel(self) -> dict[str, Any]:
        k = self._cache.get("kernel")
        if k is None:
            k = _native.kernel_info(self._d)  # type: ignore[attr-defined]
            self._cache["kernel"] = k
        return k

    @property
    def modules(self) -> ModuleList:
        """The loaded modules (:class:`ModuleList`), from ``PsLoadedModuleList`` or, in triage
        dumps,
        the dump's own driver list."""
        ml = self._cache.get("modules")
        if ml is None:
            k = self._kernel()
            c = k["modules"]
            # One naming rule for lm, symbols and kd (nt, hal, stem, stem_<base> for repeats).
            kd_names = c["kd_name"]
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
                    kd_name=kd_names[i],
                    index=i,
                    _dump=self,  # type: ignore[arg-type]
                )
                for i in range(len(c["name"]))
            ]
            ml = ModuleList(self, mods, source=k["module_source"])  # type: ignore[arg-type]
            self._cache["modules"] = ml
        return ml

    def unloaded_modules(self) -> pd.DataFrame:
        """Recently unloaded drivers (``lm`` 's "Unloaded modules" part): name, start, end, time."""
        return _schema.frame(self._kernel()["unloaded"], UNLOADED_SCHEMA, dump=self.path)

    @property
    def kernel_base(self) -> int | None:
        """VA of the kernel image (KDBG.KernBase, or the first module's base)."""
        return self._kernel()["kernel_base"]

    @property
    def kdbg(self) -> dict[str, Any] | None:
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
