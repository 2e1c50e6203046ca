"""``!vm``: the virtual memory summary (:class:`VmSummary`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._handle import Handle
from ._native import vm_summary
from .errors import SymbolError
from .pool import Pool
from .symbolmap import SymbolMap
from .symbols.mistate import read_field

PAGE_KB = 4
"""KB per page (4 KiB pages on every architecture ntdump reads)."""

EXCESSIVE_POOL_RATIO = 0.95
"""Usage / maximum at or above which a pool is reported as excessive (ntdump's rule)."""


@dataclass(frozen=True, slots=True)
class VmField:
    """One ``!vm`` line. ``pages`` is None when the dump does not provide it; ``source`` then says
    why."""

    key: str
    label: str
    pages: int | None
    source: str
    is_count: bool = False

    @property
    def kb(self) -> int | None:
        """The value in KB (pages * 4), or None."""
        return None if self.pages is None or self.is_count else self.pages * PAGE_KB


class VmSummary:
    """The fields of ``!vm``, each in pages and KB, with where each came from.

    Attributes are ``<key>_pages`` and ``<key>_kb`` for every field (``nonpaged_pool_usage_pages``,
    ``nonpaged_pool_max_kb`` …) and ``pool_allocation_failures`` (a count). A field a build does not
    provide is ``None`` (never a made-up zero); :meth:`source` says why.
    """

    def __init__(self, fields: list[VmField]) -> None:
        self.fields = fields
        self._by_key = {f.key: f for f in fields}

    def __getattr__(self, name: str) -> Any:
        by_key = self.__dict__.get("_by_key", {})
        for suffix, attr in (("_pages", "pages"), ("_kb", "kb")):
            if name.endswith(suffix) and name[: -len(suffix)] in by_key:
                return getattr(by_key[name[: -len(suffix)]], attr)
        if name in by_key:
            return by_key[name].pages
        raise AttributeError(name)

    def __getitem__(self, key: str) -> VmField:
        return self._by_key[key]

    def source(self, key: str) -> str:
        """Where field ``key`` came from, or why it is missing."""
        return self._by_key[key].source

    @property
    def pool_allocation_failures(self) -> int | None:
        """Number of failed pool allocations (``nt!MmPoolFailures``; needs kernel symbols)."""
        return self._by_key["pool_allocation_failures"].pages

    def _ratio(self, usage: str, limit: str) -> float | None:
        u, m = self._by_key[usage].pages, self._by_key[limit].pages
        if u is None or not m:
            return None
        return u / m

    @property
    def nonpaged_pool_ratio(self) -> float | None:
        """NonPagedPool usage / maximum, or None when either is unknown."""
        return self._ratio("nonpaged_pool_usage", "nonpaged_pool_max")

    @property
    def paged_pool_ratio(self) -> float | None:
        """PagedPool usage / maximum, or None when either is unknown."""
        return self._ratio("paged_pool_usage", "paged_pool_max")

    @property
    def warnings(self) -> list[str]:
        """WinDbg's alarms: excessive pool usage and failed allocations."""
        out = []
        r = self.nonpaged_pool_ratio
        if r is not None and r >= EXCESSIVE_POOL_RATIO:
            out.append("Excessive NonPaged Pool Usage")
        r = self.paged_pool_ratio
        if r is not None and r >= EXCESSIVE_POOL_RATIO:
            out.append("Excessive Paged Pool Usage")
        f = self.pool_allocation_failures
        if f:
            out.append(f"{f} pool allocations have failed")
        return out

    def to_dict(self) -> dict[str, Any]:
        """``{key: {"pages", "kb", "source"}}`` plus ``warnings``."""
        d: dict[str, Any] = {
            f.key: {"pages": f.pages, "kb": f.kb, "source": f.source} for f in self.fields
        }
        d["warnings"] = self.warnings
        return d

    def __str__(self) -> str:
        lines = ["", "*** Virtual Memory Usage ***"]
        for f in self.fields:
            if f.is_count:
                continue
            label = f"{f.label}:"
            if f.pages is None:
                lines.append(f"\t{label:<20} (not available: {short_reason(f.source)})")
            else:
                # WinDbg's layout: page count ending in column 26, KB in an 8-wide field.
                lines.append(f"\t{label}{f.pages:>{max(1, 26 - len(label))}}   ({f.kb:>8} Kb)")
        for w in self.warnings:
            stars = "*" * 10
            lines.append(f"\t{stars} {w} {stars}")
        if any(f.pages is None and short_reason(f.source) != f.source for f in self.fields):
            lines.append("\t(every reason in full: ntdump vm --json, or VmSummary.source(key))")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<VmSummary {len(self.fields)} fields, warnings={self.warnings}>"


def _with_nonpaged_commit(fields: list[VmField]) -> list[VmField]:
    """Insert WinDbg's "NonPagedPool Commit" line (before "PagedPool Commit"): no KDBG field or
    pre-Windows 10 variable ntdump reads holds it; Windows 10/11 keep it in
    ``nt!MiState.Vs.NonPagedPoolCommit`` (filled by :meth:`Vm._vm_from_members`)."""
    why = ("no KDBG field holds it (Windows 10/11: nt!MiState.Vs.NonPagedPoolCommit, through the "
           "kernel's PDB)")
    if any(f.source.startswith("triage dump") for f in fields):  # the core's wording for these
        why = f"triage dump: kernel variables are not captured ({why})"
    nc = VmField("nonpaged_pool_commit", "NonPagedPool Commit", None, why)
    i = next((i for i, f in enumerate(fields) if f.key == "paged_pool_commit"), len(fields))
    return [*fields[:i], nc, *fields[i:]]


def short_reason(source: str) -> str:
    """The first reason of a field's ``source`` in a few words, for ``!vm``'s one-line rows: the
    text before the first ``;`` (further sources tried) and before the first `` (`` (details)."""
    first = source.split("; ", 1)[0]
    cut = first.find(" (")
    return first[:cut] if cut > 0 else first


class Vm:
    """Feature object behind ``Dump.vm()``: takes the dump's handle, its
    :class:`~ntdump.pool.Pool` (tracker sums) and its :class:`~ntdump.symbolmap.SymbolMap`
    (kernel variables named by loaded symbols)."""

    def __init__(self, h: Handle, pool: Pool, symbol_map: SymbolMap) -> None:
        self._h = h
        self._pool = pool
        self._map = symbol_map

    def _vm_from_tracker(self, f: VmField, memo: list[Any]) -> VmField:
        """Fill pool usage the kernel variables do not give (PagedPool always, NonPagedPool on
        Windows 10) from the PoolTrackTable sums, naming that source."""
        if f.pages is not None or f.key not in ("paged_pool_usage", "nonpaged_pool_usage"):
            return f
        try:
            if not memo:
                memo.append(self._pool.used(owners=0))
            used = memo[0]
        except Exception as e:
            why = str(e) if str(e).startswith("PoolTrackTable") else f"PoolTrackTable: {e}"
            return VmField(f.key, f.label, None, f"{f.source}; {why}", f.is_count)
        col = "paged_bytes" if f.key == "paged_pool_usage" else "nonpaged_bytes"
        total = int(used[col].sum())
        pages = -(-total // 4096)
        src = (f"PoolTrackTable: sum of {col} over {len(used)} tags ({total:,} bytes); "
               f"kernel variable unavailable: {f.source}")
        gaps = used.attrs.get("warnings") or []
        if gaps:  # the sums met unreadable tables: say so, the value is a lower bound
            src += "; incomplete: " + "; ".join(gaps)
        return VmField(f.key, f.label, pages, src, f.is_count)

    def _vm_from_members(self, fields: list[VmField]) -> list[VmField]:
        """Windows 10/11: the fields ``nt!MiState`` / ``nt!MiSystemPartition`` members (and
        ``nt!ExPoolFailures``) hold, resolved through the kernel PDB's types
        (:mod:`ntdump.symbols.mistate`). A member's value wins over the KDBG / plain-variable one
        (it is what WinDbg reads on these builds); a field no source gives keeps every reason, the
        member's first."""
        build = int(self._h.info.build)
        cat = None
        try:
            cat = self._map.types("nt")
        except (SymbolError, OSError):  # no PDB (or symbols from a map): typed rows say so
            cat = None
        syms = self._map.symbol_map
        pdb = self._map.symbol_sources.get("nt", "no kernel PDB")
        out = []
        for f in fields:
            if cat is not None and f.pages is None and "needs kernel symbols" in f.source:
                # the core says so for want of a symbol; with the PDB loaded, the PDB lacks it
                f = VmField(f.key, f.label, None, f.source.replace(
                    "needs kernel symbols (not in KDBG)",
                    f"is not among the kernel PDB's symbols ({pdb})"), f.is_count)
            mv = read_field(f.key, build, cat, syms, self._h.read, pdb)
            if mv is None:
                out.append(f)
            elif mv.value is not None:
                out.append(VmField(f.key, f.label, mv.value, mv.source, f.is_count))
            elif f.pages is None:
                # the member is the source on these builds: its reason first, unless the dump
                # holds no kernel variables at all (a triage dump says so first)
                first, then = (f.source, mv.source) if f.source.startswith("triage dump") \
                    else (mv.source, f.source)
                out.append(VmField(f.key, f.label, None, f"{first}; {then}", f.is_count))
            else:
                out.append(f)
        return out

    def vm(self) -> VmSummary:
        """The ``!vm`` summary. Fields that need kernel symbols beyond KDBG (e.g. pool allocation
        failures) are filled when symbols are loaded (``load_pdb``/``add_symbols``); on Windows
        10/11 the kernel's PDB also gives the ``nt!MiState`` members (:meth:`_vm_from_members`)."""
        self._map.autoload("nt")  # the kernel's PDB along the symbol path, once (!vm loads nt)
        v: VmSummary | None = self._h.cache.get("vm")
        if v is None:
            syms = {
                k.split("!", 1)[1]: va
                for k, va in self._map.symbol_map.items()
                if k.startswith("nt!")
            }
            rows = vm_summary(self._h.native, syms)
            fields = _with_nonpaged_commit([VmField(*r) for r in rows])
            nt_src = self._map.symbol_sources.get("nt")
            if nt_src:  # name the PDB (or map) the kernel's symbols came from
                fields = [VmField(f.key, f.label, f.pages, f"{f.source} ({nt_src})", f.is_count)
                          if f.pages is not None and f.source.startswith("nt!") else f
                          for f in fields]
            fields = self._vm_from_members(fields)
            used: list[Any] = []  # the tracker sums, read at most once per call
            fields = [self._vm_from_tracker(f, used) for f in fields]
            v = VmSummary(fields)
            self._h.cache["vm"] = v
        return v
