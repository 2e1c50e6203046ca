"""The :class:`Dump` object: one open crash dump (or raw physical image)."""

from __future__ import annotations

import builtins
import datetime as _dt
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from . import _native
from ._limits import DEFAULT_CHUNK, U64, check_iter_read
from ._search import SearchMixin
from ._symbols import SymbolsMixin
from .modules import KernelMixin
from .pool import PoolMixin
from .symbolmap import SymbolMapMixin
from .vm import VmMixin

RAW_SUFFIXES = (".raw", ".mem", ".bin", ".img", ".vmem", ".dd")
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

    @property
    def system_datetime(self) -> _dt.datetime | None:
        """:attr:`system_time` as an aware UTC datetime (None when absent)."""
        return filetime_to_datetime(self.system_time)

    @property
    def truncated(self) -> bool:
        """True when the file is shorter than the memory it declares."""
        return self.missing_pages > 0

    @property
    def pointer_size(self) -> int:
        """Bytes per pointer (4 on x86)."""
        return 4 if self.machine == "x86" else 8

    def __str__(self) -> str:
        bc = ", ".join(f"{p:#x}" for p in self.bugcheck_params)
        lines = [
            f"Machine           : {self.machine}{' (PAE)' if self.pae else ''}",
            f"Build             : {self.build}",
            f"Dump type         : {self.dump_type} ({self.layout})",
            f"DTB               : {self.dtb:#x}",
            f"Bugcheck          : {self.bugcheck_code:#x} ({bc})",
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

    def __iter__(self) -> Iterator[WalkStep]:
        return iter(self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def ok(self) -> bool:
        """True when the address translates."""
        return self.pa is not None

    def __str__(self) -> str:
        out = [f"VA {self.va:#x}"]
        for s in self.steps:
            out.append(
                f"  {s.level.upper():<6} at {s.entry_pa:#014x}  contains {s.value:#018x}  "
                f"[{s.index:#x}] {s.kind}"
            )
        if self.pa is not None:
            out.append(f"  -> PA {self.pa:#x} ({self.page_size:#x}-byte page)")
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


def _looks_like_dump(path: str) -> bool:
    try:
        with builtins.open(path, "rb") as f:
            return f.read(4) == b"PAGE"
    except OSError:
        return True  # let the native open raise the proper OSError


class Dump(KernelMixin, VmMixin, SymbolMapMixin, SymbolsMixin, SearchMixin, PoolMixin):
    """An open Windows kernel crash dump.

    Use :func:`ntdump.open`. Also a context manager; closing releases the file map once no other
    reference remains.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        raw: bool | None = None,
        machine: str | None = None,
        pae: bool | None = None,
        dtb: int | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self._raw: _native.Dump | None = None
        self._info: DumpInfo | None = None
        # Results that are costly and never change for an open dump (module list, symbol table …),
        # keyed by the name of the mixin that owns them.
        self._cache: dict[str, Any] = {}
        if raw is None:
            raw = self.path.lower().endswith(RAW_SUFFIXES) and not _looks_like_dump(self.path)
        self._raw = _native.Dump(self.path, raw=raw, machine=machine, pae=pae, dtb=dtb)

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def _d(self) -> _native.Dump:
        if self._raw is None:
            raise ValueError("I/O operation on a closed dump")
        return self._raw

    def close(self) -> None:
        """Release the file map (further reads raise ValueError)."""
        self._raw = None
        self._cache.clear()

    def __enter__(self) -> Dump:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._raw is None:
            return f"<ntdump.Dump {self.path!r} (closed)>"
        i = self.info
        return f"<ntdump.Dump {self.path!r} {i.machine} build {i.build} type {i.dump_type}>"

    # -- header ----------------------------------------------------------------------------
    @property
    def info(self) -> DumpInfo:
        """Header fields (:class:`DumpInfo`)."""
        if self._info is None:
            raw = self._d.info()
            keys = DumpInfo.__dataclass_fields__.keys()
            kw = {k: raw[k] for k in keys if k in raw}
            kw["bugcheck_params"] = tuple(raw["bugcheck_params"])
            kw["warnings"] = tuple(raw["warnings"])
            self._info = DumpInfo(**kw)
        return self._info

    @property
    def warnings(self) -> tuple[str, ...]:
        """Oddities noticed while opening (truncation, count mismatches)."""
        return self.info.warnings

    # -- memory ----------------------------------------------------------------------------
    def read(self, va: int, n: int, *, pad: bool = False) -> bytes:
        """``n`` bytes of kernel virtual memory at ``va``.

        Raises a :class:`~ntdump.TranslationError` subclass naming the first unreadable page,
        unless ``pad=True``, which reads such pages as zeros.
        """
        return self._d.read(va, n, pad)

    def read_phys(self, pa: int, n: int, *, pad: bool = False) -> bytes:
        """``n`` bytes of physical memory at ``pa``.

        Raises :class:`~ntdump.PageNotInDumpError` for a page the dump does not hold, unless
        ``pad=True``, which zero-fills such pages.
        """
        return self._d.read_phys(pa, n, pad)

    def iter_read(self, va: int, n: int, *, chunk: int = DEFAULT_CHUNK, pad: bool = False,
                  physical: bool = False) -> Iterator[bytes]:
        """Stream ``n`` bytes at ``va`` (a PA with ``physical=True``) as chunks of at most
        ``chunk`` bytes (default 1 MiB; at most ``MAX_READ_BYTES``), for ranges larger than one
        :meth:`read` may return (256 MiB). Arguments are checked now; each chunk is read when
        the iterator reaches it, and raises like :meth:`read` (or zero-fills with ``pad=True``).
        A range running past the top of the address space raises TranslationError now."""
        top = U64 if physical or self.info.pointer_size == 8 else 1 << 32
        check_iter_read(va, n, chunk, top)
        read = self.read_phys if physical else self.read

        def gen() -> Iterator[bytes]:
            off = 0
            while off < n:
                take = min(chunk, n - off)
                yield read(va + off, take, pad=pad)
                off += take

        return gen()

    def check_intact(self) -> None:
        """Raise :class:`~ntdump.DumpFormatError` ("file shrank while open") if another process
        truncated the file since it was opened and a read met a vanished page. Every read
        checks this itself; analyses that catch errors to degrade gracefully call it at the end
        so that no answer built from the vanished (zero-filled) pages is returned."""
        self._d.check_intact()

    def translate(self, va: int) -> int:
        """The physical address (PA) that kernel VA ``va`` maps to."""
        return self._d.translate(va)

    def walk(self, va: int, *, dtb: int | None = None) -> PageWalk:
        """The page-table walk for ``va``, level by level (like ``!pte``); never raises for an
        unmapped address: the reason is in ``.error``."""
        w = self._d.walk(va, dtb)
        return PageWalk(
            va=va,
            steps=tuple(WalkStep(*s) for s in w["steps"]),
            pa=w["pa"],
            page_size=w["page_size"],
            error=w["error"],
        )

    def read_pointer(self, va: int) -> int:
        """A pointer-sized little-endian value at ``va`` (4 bytes on x86)."""
        return int.from_bytes(self.read(va, self.info.pointer_size), "little")

    def read_u32(self, va: int) -> int:
        """A little-endian u32 at ``va``."""
        return int.from_bytes(self.read(va, 4), "little")

    def read_u64(self, va: int) -> int:
        """A little-endian u64 at ``va``."""
        return int.from_bytes(self.read(va, 8), "little")

    @property
    def mode(self) -> str | None:
        """Paging mode: ``"x86"``, ``"pae"``, ``"x64"``, or None (ARM64, not yet translated)."""
        return self._d.mode


def open(
    path: str | os.PathLike[str],
    *,
    raw: bool | None = None,
    machine: str | None = None,
    pae: bool | None = None,
    dtb: int | None = None,
) -> Dump:
    """Open a Windows kernel crash dump.

    With ``raw=True`` (or a ``.raw/.mem/.bin`` file without a dump header) the file is a raw
    physical image; its ``dtb`` and ``machine`` are found when not given."""
    return Dump(path, raw=raw, machine=machine, pae=pae, dtb=dtb)
