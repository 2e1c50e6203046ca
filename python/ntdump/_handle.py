"""The native handle of an open dump and the header records every feature shares.

Floor: below the features (``pe``, ``modules``, ``symbols``, ``search``, ``pool``, ``vm``) and
``dump``; above ``errors``, ``_format`` and the schemas. :class:`Handle` wraps the native
``NativeDump``: feature objects take a Handle (never :class:`ntdump.Dump`), read through it and
keep their per-dump results in :attr:`Handle.cache`, which :meth:`Handle.close` drops.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from . import bugcheck as _bugcheck
from ._completeness import dump_cut
from ._format import kd_addr
from ._native import Dump as NativeDump

_FILETIME_EPOCH = _dt.datetime(1601, 1, 1, tzinfo=_dt.UTC)


def filetime_to_datetime(ft: int) -> _dt.datetime | None:
    """Convert a Windows FILETIME (100 ns units since 1601-01-01 UTC) to an aware datetime."""
    if not ft:
        return None
    try:
        return _FILETIME_EPOCH + _dt.timedelta(microseconds=ft // 10)
    except OverflowError:
        return None


@dataclass(frozen=True, slots=True)
class DumpInfo:
    """Header facts of a dump. Addresses are kernel VAs except ``dtb`` (a PA)."""

    machine: str
    """``"x86"``, ``"x64"`` or ``"arm64"``."""
    pae: bool
    build: int
    """OS build number (the header's MinorVersion)."""
    dump_type: int
    """1 full, 2 summary, 3 header, 4 triage, 5/6 bitmap, 8/9/0xA range; 0 for raw images."""
    layout: str
    """``"full"``, ``"bitmap"``, ``"range"``, ``"triage"``, ``"raw"`` or ``"header"``."""
    dtb: int
    bugcheck_code: int
    bugcheck_params: tuple[int, int, int, int]
    processors: int
    system_time: int
    """FILETIME (100 ns since 1601-01-01 UTC); see :attr:`system_datetime`."""
    system_up_time: int
    ps_loaded_module_list: int
    ps_active_process_head: int
    kd_debugger_data_block: int
    pfn_database: int
    runs: list[tuple[int, int]]
    """Physical memory present in the file: (base_page, page_count) runs, sorted."""
    header_runs: list[tuple[int, int]] | None
    """The header's own PhysicalMemoryBlock runs (full dumps), as declared."""
    present_pages: int
    missing_pages: int
    """Pages the dump declares that the file is too short to hold (truncated file)."""
    file_size: int
    major_version: int = 0
    product_type: int = 0
    suite_mask: int = 0
    attributes: int = 0
    mini_dump_fields: int = 0
    comment: str = ""
    exception_code: int = 0
    exception_address: int = 0
    context: dict[str, int] = field(default_factory=dict)
    """Registers of the crashing CPU from the header's CONTEXT (``rip``, ``rsp`` … or ``eip`` …)."""
    warnings: tuple[str, ...] = ()
    required_dump_space: int | None = None
    """The file size the writer intended (header RequiredDumpSpace, bytes); None when absent."""

    @property
    def system_datetime(self) -> _dt.datetime | None:
        """:attr:`system_time` as an aware UTC datetime (None when absent)."""
        return filetime_to_datetime(self.system_time)

    @property
    def bugcheck(self) -> _bugcheck.BugCheck:
        """The bug check with its name, each parameter's meaning and decoded sub-values
        (:class:`ntdump.bugcheck.BugCheck`)."""
        return _bugcheck.describe(self.bugcheck_code, self.bugcheck_params)

    @property
    def cut(self) -> dict[str, Any] | None:
        """How much of a truncated dump is missing (file size, expected size from the header,
        missing pages, the present fraction, and a sentence naming the cut); None when whole."""
        return dump_cut(self)

    @property
    def truncated(self) -> bool:
        """True when the file is shorter than the memory it declares."""
        return self.missing_pages > 0

    @property
    def pointer_size(self) -> int:
        """Bytes per pointer (4 on x86)."""
        return 4 if self.machine == "x86" else 8

    def __str__(self) -> str:
        bc = self.bugcheck
        lines = [
            f"Machine           : {self.machine}{' (PAE)' if self.pae else ''}",
            f"Build             : {self.build}",
            f"Dump type         : {self.dump_type} ({self.layout})",
            f"DTB               : {self.dtb:#x}",
            f"Bugcheck          : {bc.summary()}",
            *(f"                    {p}" for p in bc.parameters),
            f"Processors        : {self.processors}",
            f"System time       : {self.system_datetime or '-'}",
            f"PsLoadedModuleList: {self.ps_loaded_module_list:#x}",
            f"KDBG              : {self.kd_debugger_data_block:#x}",
            f"Physical memory   : {self.present_pages} pages in {len(self.runs)} runs"
            + (f", {self.missing_pages} missing (truncated)" if self.missing_pages else ""),
        ]
        ip = self.context.get("rip", self.context.get("eip"))
        if ip is not None:
            lines.append(f"Context IP        : {ip:#x}")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class WalkStep:
    """One page-table entry read during a walk."""

    level: str
    """``"pml4e"``, ``"pdpte"``, ``"pde"`` or ``"pte"``."""
    index: int
    entry_pa: int
    value: int
    kind: str
    """``"table"``, ``"page"``, ``"transition"``, or why it is not present."""


@dataclass(frozen=True, slots=True)
class PageWalk:
    """The result of :meth:`Dump.walk`, like WinDbg's ``!pte``."""

    va: int
    steps: tuple[WalkStep, ...]
    pa: int | None
    page_size: int | None
    """Bytes: 0x1000, 0x200000, 0x400000 or 0x40000000."""
    error: Exception | None
    pointer_size: int = 8
    """Bytes of a VA in this dump (4 or 8): how ``str()`` prints addresses, as kd does."""

    def __iter__(self) -> Iterator[WalkStep]:
        return iter(self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def ok(self) -> bool:
        """True when the address translates."""
        return self.pa is not None

    def __str__(self) -> str:
        out = [f"VA {kd_addr(self.va, self.pointer_size)}"]
        for s in self.steps:
            out.append(
                f"  {s.level.upper():<6} at {s.entry_pa:#014x}  contains {s.value:#018x}  "
                f"[{s.index:#x}] {s.kind}"
            )
        if self.pa is not None:
            out.append(f"  -> PA {kd_addr(self.pa, 8 if self.pa >> 32 else 4)} "
                       f"({self.page_size:#x}-byte page)")
        else:
            out.append(f"  -> {self.error}")
        return "\n".join(out)

    def to_frame(self) -> Any:
        """The steps as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(
            {
                "level": [s.level for s in self.steps],
                "index": pd.array([s.index for s in self.steps], dtype="uint64"),
                "entry_pa": pd.array([s.entry_pa for s in self.steps], dtype="uint64"),
                "value": pd.array([s.value for s in self.steps], dtype="uint64"),
                "kind": [s.kind for s in self.steps],
            }
        )


class Handle:
    """The native dump of one open :class:`ntdump.Dump`, shared by its feature objects.

    ``path`` names the file (DataFrames carry it in ``attrs["dump"]``); :attr:`cache` holds
    results that are costly and never change for an open dump (module list, symbol table …),
    keyed by the feature that owns them.
    """

    def __init__(self, path: str, native: NativeDump) -> None:
        self.path = path
        self._native: NativeDump | None = native
        self._info: DumpInfo | None = None
        self.cache: dict[str, Any] = {}

    @property
    def native(self) -> NativeDump:
        """The native dump; raises ValueError once closed."""
        if self._native is None:
            raise ValueError("I/O operation on a closed dump")
        return self._native

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._native is None

    def close(self) -> None:
        """Drop the native dump and every cached result (further reads raise ValueError)."""
        self._native = None
        self.cache.clear()

    @property
    def info(self) -> DumpInfo:
        """Header fields (:class:`DumpInfo`), read once."""
        if self._info is None:
            raw: dict[str, Any] = dict(self.native.info())
            keys = DumpInfo.__dataclass_fields__.keys()
            kw = {k: raw[k] for k in keys if k in raw}
            kw["bugcheck_params"] = tuple(raw["bugcheck_params"])
            kw["warnings"] = tuple(raw["warnings"])
            self._info = DumpInfo(**kw)
        return self._info

    @property
    def pointer_size(self) -> int:
        """Bytes per pointer (4 on x86, else 8)."""
        return self.info.pointer_size

    def read(self, va: int, n: int, *, pad: bool = False) -> bytes:
        """``n`` bytes of kernel virtual memory at ``va`` (see :meth:`ntdump.Dump.read`)."""
        return self.native.read(va, n, pad)

    def cached(self, key: str, make: Any) -> Any:
        """``cache[key]``, computed by ``make()`` the first time."""
        v = self.cache.get(key)
        if v is None:
            v = make()
            self.cache[key] = v
        return v


__all__ = ["DumpInfo", "Handle", "PageWalk", "WalkStep", "filetime_to_datetime"]
