"""The kernel pool: ``d.pool.used()`` (``!poolused``), ``big()``, ``page(va)`` (``!pool``),
``scan()`` (``!poolfind``), ``scan_summary()`` and ``owners(tag)`` (which driver uses a tag).

Everything works without a PDB: the tables are found through the KDBG block (see docs/pool.md for
how, per Windows family). Addresses are kernel VAs; sizes are bytes.
"""

from __future__ import annotations

import fnmatch
import importlib
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import _schema
from ._handle import Handle
from ._native import (
    PoolScanner,
    layout_sources,
    pool_big,
    pool_owners,
    pool_page,
    pool_track_table_variable,
    pool_used,
)
from .errors import NtdumpError, PoolTableError
from .pooltags import TagTable
from .symbolmap import SymbolMap
from .symbols.kernel import big_table, tracker_tables

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
else:
    from ._lazy import np, pd  # imported on first use (start-up time)

USED_SCHEMA = {
    "tag": _schema.TAG,
    "nonpaged_allocs": _schema.UINT64,
    "nonpaged_frees": _schema.UINT64,
    "nonpaged_bytes": _schema.BYTES,
    "paged_allocs": _schema.UINT64,
    "paged_frees": _schema.UINT64,
    "paged_bytes": _schema.BYTES,
    "description": _schema.NAME,
    "owners": _schema.NAME,
}
BIG_SCHEMA = {
    "va": _schema.ADDRESS,
    "tag": _schema.TAG,
    "bytes": _schema.BYTES,
    "pool_type": _schema.LABEL,
    "freed": _schema.BOOL,
}
SCAN_SCHEMA = {
    "address": _schema.ADDRESS,
    "tag": _schema.TAG,
    "size": _schema.BYTES,
    "pool_type": _schema.LABEL,
    "allocated": _schema.BOOL,
}
SUMMARY_SCHEMA = {
    "tag": _schema.TAG,
    "nonpaged_blocks": _schema.COUNT,
    "nonpaged_bytes": _schema.BYTES,
    "paged_blocks": _schema.COUNT,
    "paged_bytes": _schema.BYTES,
    "free_blocks": _schema.COUNT,
    "description": _schema.NAME,
}
OWNERS_SCHEMA = {"module": _schema.NAME, "evidence": _schema.NAME, "score": "float64"}

#: POOL_TYPE names (wdm.h; WINDOWS_INTERNALS.md §5.2).
POOL_TYPE_NAMES = {
    0: "NonPagedPool", 1: "PagedPool", 2: "NonPagedPoolMustSucceed", 3: "DontUseThisType",
    4: "NonPagedPoolCacheAligned", 5: "PagedPoolCacheAligned",
    6: "NonPagedPoolCacheAlignedMustS", 0x20: "NonPagedPoolSession", 0x21: "PagedPoolSession",
    0x22: "NonPagedPoolMustSucceedSession", 0x24: "NonPagedPoolCacheAlignedSession",
    0x25: "PagedPoolCacheAlignedSession", 0x200: "NonPagedPoolNx",
    0x204: "NonPagedPoolNxCacheAligned", 0x220: "NonPagedPoolSessionNx",
}

#: Owners of a tag: the code patterns and scores live in ntdump-core (pool/owners.rs).
_SCAN_BATCH = 16384  # pages (64 MiB) per native call, so progress can be shown between them


HOW_FOUND_WORDS = {
    "import table": "named in its import table",
    "pointer search": "its address found as a pointer in the image",
    "both": "named in its import table and its address found as a pointer in the image",
}
"""``importers()``'s ``how_found`` values in words, as owner evidence says them."""


def pool_type_name(value: int, *, allocated: bool = True) -> str:
    """A POOL_TYPE value as text: ``"PagedPool"``, ``"NonPagedPool|Quota"``; ``"Free"`` for free
    blocks; ``""`` for the u32::MAX "no type" marker."""
    if not allocated:
        return "Free"
    if value == 0xFFFFFFFF:
        return ""
    base = value & ~0x18
    name = POOL_TYPE_NAMES.get(base, f"{base:#x}")
    if value & 0x8:
        name += "|Quota"
    if value & 0x10:
        name += "|RaiseOnFailure"
    return name


def tag_text(tag: int) -> str:
    """The four bytes of a tag (u32 as read from memory), as latin-1 text."""
    return int(tag).to_bytes(4, "little").decode("latin-1")


def _tag_bytes(tag: str | bytes) -> bytes:
    b = tag.encode("latin-1") if isinstance(tag, str) else bytes(tag)
    if not 1 <= len(b) <= 4:
        raise ValueError(f"a pool tag has 1 to 4 bytes, not {len(b)}: {tag!r}")
    return b.ljust(4, b" ")


def _tags_arg(tags: str | bytes | Iterable[str | bytes] | None) -> list[str] | None:
    if tags is None:
        return None
    if isinstance(tags, str | bytes):
        tags = [tags]
    return [t.decode("latin-1") if isinstance(t, bytes) else t for t in tags]


def _match(tag: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(tag, p if len(p) >= 4 or "*" in p else p.ljust(4))
               for p in patterns)


def _want_bar(progress: bool | Callable[[int, int], Any] | None) -> bool:
    if progress is not None:
        return progress is True
    try:  # a notebook kernel
        from IPython import get_ipython

        if get_ipython() is not None and "IPKernelApp" in get_ipython().config:
            return True
    except Exception:
        pass
    return sys.stderr.isatty()


def _categorical(values: np.ndarray, name: Callable[[int], str]) -> pd.Categorical:
    """A categorical of ``name(v)`` for each value, computing each distinct name once."""
    uniq, codes = np.unique(values, return_inverse=True)
    labels = [name(int(u)) for u in uniq]
    # Distinct values may share a label (e.g. tags differing only in the protected bit).
    cats = list(dict.fromkeys(labels))
    remap = np.array([cats.index(lb) for lb in labels], dtype=np.int64)
    return pd.Categorical.from_codes(remap[codes] if len(codes) else codes, cats)


@dataclass(frozen=True, slots=True)
class PoolBlock:
    """One pool block of a page (header + data). ``size`` and ``previous_size`` in bytes."""

    address: int
    size: int
    previous_size: int
    pool_index: int
    raw_type: int
    pool_type: str
    allocated: bool
    tag: str
    contains: bool
    """True for the block holding the address asked about."""

    @classmethod
    def _from(cls, t: tuple[Any, ...]) -> PoolBlock:
        a, s, p, i, raw, pt, alloc, tag, c = t
        return cls(a, s, p, i, raw, pool_type_name(pt, allocated=alloc), alloc, tag_text(tag), c)


@dataclass(frozen=True)
class PoolPage:
    """What ``!pool`` shows for an address: the blocks of its page (legacy pools), or, on 19H1+
    segment-heap pools, the nearest header at or below it and its big-pool entry."""

    va: int
    page: int
    blocks: tuple[PoolBlock, ...]
    status: str
    """``"ok"``, ``"corrupt"`` or ``"not walked"``."""
    why: str
    corrupt_at: int | None
    nearest: PoolBlock | None
    big: dict[str, Any] | None
    """The big page table entry holding ``va`` (va, tag, bytes, pool_type), if any."""
    descriptions: dict[str, str] = field(default_factory=dict, repr=False)
    pointer_size: int = 8
    layout_source: str = ""
    """Where the ``_POOL_HEADER`` layout comes from (``"pdb nt!_POOL_HEADER (<pdb>)"`` or
    ``"profile x64: …"``)."""

    @property
    def block(self) -> PoolBlock | None:
        """The block holding :attr:`va` (from the walk, else the nearest header if it covers it)."""
        for b in self.blocks:
            if b.contains:
                return b
        return self.nearest if self.nearest is not None and self.nearest.contains else None

    def _addr(self, v: int) -> str:
        return f"{v:0{2 * self.pointer_size}x}"

    def _line(self, b: PoolBlock) -> str:
        state = "(Allocated)" if b.allocated else "(Free)     "
        mark = "*" if b.contains else " "
        return (f"{mark}{self._addr(b.address)} size: {b.size:4x} previous size: "
                f"{b.previous_size:4x}  {state} {mark}{b.tag}")

    def __str__(self) -> str:
        kinds = {b.pool_type for b in self.blocks if b.allocated}
        region = ("Paged pool" if kinds and all(k.startswith("Paged") for k in kinds) else
                  "Nonpaged pool" if kinds else "Unknown")
        out = [f"Pool page {self._addr(self.va)} region is {region}"]
        for b in self.blocks:
            out.append(self._line(b))
            if b.contains and b.tag in self.descriptions:
                out.append(f"\t\tPooltag {b.tag} : {self.descriptions[b.tag]}")
        if self.status == "corrupt":
            out.append(f"{self._addr(self.corrupt_at or 0)} is not a valid small pool "
                       f"allocation, checking large pool... ({self.why})")
        elif self.status == "not walked":
            out.append(f"The page walk is not available: {self.why}.")
            if self.nearest is not None:
                out.append("Nearest pool header at or below the address:")
                out.append(self._line(self.nearest))
            else:
                out.append("No valid pool header at or below the address in this page.")
        if self.big is not None:
            e = self.big
            out.append(f"{self._addr(e['va'])} is a big pool allocation: tag {e['tag']}, "
                       f"{e['bytes']:#x} bytes, {e['pool_type'] or 'type unknown'}"
                       + (" (freed)" if e["freed"] else ""))
        return "\n".join(out)


class Pool:
    """The pool of one dump (``d.pool``). Tables are read once and cached with the dump."""

    def __init__(self, h: Handle, symbol_map: SymbolMap, *,
                 pooltag: str | os.PathLike[str] | None = None) -> None:
        # Owners (which module uses a tag) are computed in the core from the dump's own module
        # list and symbol table; the symbol map gives the kernel's PDB variables when loaded.
        self._h = h
        self._smap = symbol_map
        self._tags = TagTable(pooltag)

    # -- helpers --------------------------------------------------------------------------------
    def _cached(self, key: str, make: Callable[[], Any]) -> Any:
        c = self._h.cache
        k = f"pool.{key}"
        if k not in c:
            c[k] = make()
        return c[k]

    def set_pooltag(self, path: str | os.PathLike[str] | None) -> None:
        """Use descriptions from ``pooltag.txt`` at ``path`` (None: ``$NTDUMP_POOLTAG`` only)."""
        self._tags = TagTable(path)

    def describe(self, tag: str) -> str:
        """The description of ``tag`` from ``pooltag.txt`` or the built-in table, or ``""``."""
        return self._tags.describe(tag)

    @property
    def track_table_address(self) -> int:
        """VA of the ``nt!PoolTrackTable`` *variable* (read from KDBG +0x1B8). Raises
        :class:`PoolTableError` when the dump has no KDBG."""
        return pool_track_table_variable(self._h.native)

    # -- !poolused ------------------------------------------------------------------------------
    def tables(self, **kw: Any) -> dict[str, Any]:
        """Where the tracker tables are and how they were read: variable, table, entries, layout,
        layout_source, layout_scores, per_cpu, per_cpu_array, extra, warnings."""
        key = repr(sorted(kw.items()))
        raw = self._cached(f"used{key}", lambda: pool_used(self._h.native, **kw))
        return {k: v for k, v in raw.items() if k != "columns"}

    def used(
        self,
        sort: str = "nonpaged",
        tags: str | Iterable[str] | None = None,
        top: int | None = None,
        session: bool = False,
        flags: int | None = None,
        *,
        owners: int = 10,
        per_cpu: Sequence[int] | None = None,
        expansion: tuple[int, int] | None = None,
        session_table: tuple[int, int] | None = None,
        track_entries: int | None = None,
    ) -> pd.DataFrame:
        """Pool use per tag, like ``!poolused``.

        Args:
            sort: ``"nonpaged"`` / ``"paged"`` (bytes outstanding, largest first) or ``"tag"``.
            tags: glob(s) over tags (``"Thr*"``); shorter tags are space-padded.
            top: keep the first ``top`` rows (``/t N``).
            session: session pool (``flags & 8``); needs ``session_table=(VA, entries)``, taken
                from the loaded kernel symbols (``nt!ExpSessionPoolTrackTable`` / ``…Size``)
                when not given.
            flags: ``!poolused`` flags: 0x1 verbose (descriptions; always filled here), 0x2 sort by
                nonpaged bytes, 0x4 by paged bytes, 0x8 session pool.
            owners: fill the ``owners`` column for this many top rows (0: none), by :meth:`owners`.
            per_cpu: per-processor table VAs to use instead of the heuristic search.
            expansion: ``(VA, entries)`` of ``nt!PoolTrackTableExpansion``; from the loaded
                kernel symbols (``…Expansion`` / ``…ExpansionSize``) when not given
                (``attrs["expansion_source"]``).
            session_table: ``(VA, entries)`` of the session tracker table.
            track_entries: entries of the global table (``nt!PoolTrackTableSize`` from a PDB),
                when the slot next to the PoolTrackTable variable does not hold it; from the
                loaded kernel symbols when not given (``attrs["track_entries_source"]``).

        Counts are sums over the global table, the per-processor tables (Windows 10+, when found)
        and ``expansion``. ``df.attrs`` has the table addresses, the layout and warnings;
        ``attrs["layout_source"]`` says where the entry layout comes from
        (``"pdb nt!_POOL_TRACKER_TABLE (<pdb>)"`` with the kernel PDB loaded, else
        ``"profile x64-0x38: …"``, the built-in layout chosen by validation). Raises
        :class:`PoolTableError` when the tables are not in the dump (a triage dump, say).
        """
        if flags is not None:
            if flags & 0x2:
                sort = "nonpaged"
            if flags & 0x4:
                sort = "paged"
            if flags & 0x8:
                session = True
        if sort not in ("nonpaged", "paged", "tag"):
            raise ValueError(f"sort must be 'nonpaged', 'paged' or 'tag', not {sort!r}")
        kw: dict[str, Any] = {}
        if per_cpu is not None:
            kw["per_cpu"] = [int(x) for x in per_cpu]
        sym_attrs: dict[str, str] = {}
        if expansion is None or track_entries is None or (session and session_table is None):
            smap = self._smap
            smap.autoload("nt")
            exp, sess, sym_attrs = tracker_tables(self._h, smap)
            expansion = expansion if expansion is not None else exp
            session_table = session_table if session_table is not None else sess
            size_var = smap.symbol_map.get("nt!PoolTrackTableSize")
            if track_entries is None and size_var is not None:
                track_entries = int.from_bytes(self._h.read(size_var, self._h.pointer_size),
                                               "little")
                src = smap.symbol_sources.get("nt", "loaded symbols")
                sym_attrs["track_entries_source"] = (
                    f"nt!PoolTrackTableSize at {size_var:#x} = {track_entries} ({src})")
        if track_entries is not None:
            kw["track_entries"] = int(track_entries)
        extra = []
        if expansion is not None:
            extra.append((int(expansion[0]), int(expansion[1])))
        if session:
            if session_table is None:
                raise PoolTableError(
                    "session pool tags live in nt!ExpSessionPoolTrackTable, which KDBG does not "
                    "point at: pass session_table=(VA, entries) from a PDB",
                    "ExpSessionPoolTrackTable", 0, "unavailable")
            extra = [(int(session_table[0]), int(session_table[1]))]
            kw["only_extra"] = True
        if extra:
            kw["extra"] = extra
        key = repr(sorted(kw.items()))
        raw = self._cached(f"used{key}", lambda: pool_used(self._h.native, **kw))
        c = raw["columns"]
        names = [tag_text(t) for t in c["tag"]]
        df = _schema.frame(
            {**{k: v for k, v in c.items() if k != "tag"}, "tag": names,
             "description": [self.describe(n) for n in names], "owners": [""] * len(names)},
            USED_SCHEMA, dump=self._h.path)
        pats = _tags_arg(tags)
        if pats:
            df = df[[_match(t, pats) for t in names]]
        if sort == "tag":
            df = df.sort_values("tag", key=lambda s: s.astype(str), kind="stable")
        else:
            df = df.sort_values([f"{sort}_bytes", "tag"], ascending=[False, True], kind="stable",
                                key=lambda s: s.astype(str) if s.name == "tag" else s)
        if top is not None:
            df = df.head(top)
        df = df.reset_index(drop=True)
        if owners and len(df):
            found = self._owners_many([str(t) for t in df["tag"][:owners]])
            col = df["owners"].astype(object).to_numpy(copy=True)
            for i, t in enumerate(df["tag"][:owners]):
                col[i] = ", ".join(found.get(str(t), [])[:3])
            df["owners"] = pd.array(col, dtype="string")
        df.attrs.update({k: v for k, v in raw.items() if k != "columns"})
        df.attrs.update(sym_attrs)
        df.attrs["sort"] = sort
        df.attrs["session"] = session
        df.attrs["dump"] = self._h.path
        return df

    def used_text(self, sort: str = "nonpaged", tags: str | Iterable[str] | None = None,
                  top: int | None = None, session: bool = False, flags: int | None = None,
                  **kw: Any) -> str:
        """``!poolused``'s output: per tag, outstanding allocations (allocs - frees) and bytes used,
        nonpaged then paged, sorted as asked; descriptions after a tab."""
        df = self.used(sort, tags, top, session, flags, owners=0, **kw)
        sort = df.attrs["sort"]
        # Laid out as the sample in WinDbg's documentation of !poolused: numbers end in columns
        # 14, 23, 33 and 42 (under "Allocs", "Used", "Allocs", "Used"); the description follows.
        what = {"nonpaged": "NonPaged Pool Consumed", "paged": "Paged Pool Consumed",
                "tag": "Tag"}[sort]
        title = f"   Sorting by  {what}"
        if session:
            title += " (session pool)"
        rows = []
        tot = [0, 0, 0, 0]
        for r in df.itertuples(index=False):
            na = int(r.nonpaged_allocs) - int(r.nonpaged_frees)
            pa = int(r.paged_allocs) - int(r.paged_frees)
            vals = [na, int(r.nonpaged_bytes), pa, int(r.paged_bytes)]
            tot = [a + b for a, b in zip(tot, vals, strict=True)]
            rows.append((str(r.tag), vals, str(r.description) if r.description else ""))
        # Each column is as wide as the documented layout, or wider when a number (or the total)
        # needs it: always at least one space between numbers, and " TOTAL" one column longer
        # than " Tag ".
        w = [max(d, *(len(str(v[i])) + 1 for _, v, _ in rows), len(str(tot[i])) + 1)
             for i, d in enumerate((9, 9, 10, 9))]
        w[0] = max(w[0], len(str(tot[0])) + 2)
        np_end, p_end = 5 + w[0] + w[1] - 3, 5 + sum(w) - 5
        lines = [title, "", "  Pool Used:",
                 " " * (np_end - 8) + "NonPaged" + " " * (p_end - 5 - np_end) + "Paged",
                 " Tag " + "".join(h.rjust(n) for h, n in
                                   zip(("Allocs", "Used", "Allocs", "Used"), w, strict=True))]
        for tag, vals, desc in rows:
            nums = "".join(f"{v:>{n}}" for v, n in zip(vals, w, strict=True))
            lines.append(f" {tag:<4}{nums}" + (f"\t{desc}" if desc else ""))
        lines.append(" TOTAL" + f"{tot[0]:>{w[0] - 1}}"
                     + "".join(f"{v:>{n}}" for v, n in zip(tot[1:], w[1:], strict=True)))
        return "\n".join(lines)

    # -- big pool -------------------------------------------------------------------------------
    def big(self, table: tuple[int, int] | tuple[int, int, str] | None = None) -> pd.DataFrame:
        """Big allocations from ``nt!PoolBigPageTable``: va (bit 0 cleared), tag, bytes,
        pool_type, freed (bit 0 of Va was set). ``table=(VA, entries[, layout])`` skips the
        search; with the kernel's PDB loaded, the table comes from ``nt!PoolBigPageTable`` /
        ``nt!PoolBigPageTableSize`` and the entry layout from its ``_POOL_TRACKER_BIG_PAGES``
        (``attrs["symbol_source"]``, ``attrs["layout_source"]``: ``"pdb nt!…"`` or
        ``"profile …"``). ``df.attrs`` says where the table is and how it was found."""
        extra: dict[str, str] = {}
        if table is None:
            smap = self._smap
            smap.autoload("nt")

            found = big_table(self._h, smap)
            if found is not None:
                table, extra = found
        arg = None if table is None else (int(table[0]), int(table[1]),
                                          str(table[2]) if len(table) > 2 else "")
        raw = self._cached(f"big{arg!r}",
                           lambda: pool_big(self._h.native, arg))
        c = raw["columns"]
        freed = np.asarray(c["freed"], dtype=bool)
        df = _schema.frame(
            {"va": c["va"], "tag": [tag_text(t) for t in c["tag"]], "bytes": c["bytes"],
             "pool_type": [pool_type_name(int(p)) for p in c["pool_type"]], "freed": freed},
            BIG_SCHEMA, dump=self._h.path)
        df.attrs.update({k: v for k, v in raw.items() if k != "columns"})
        df.attrs.update(extra)
        return df

    # -- !pool ----------------------------------------------------------------------------------
    def page(self, va: int) -> PoolPage:
        """The pool page holding ``va`` (``!pool``). On legacy pools (builds < 18362) the page's
        header chain is walked and validated; from 19H1 the walk is not possible and the result
        says so, with the nearest header at or below ``va`` and the big-pool entry holding it."""
        self._smap.autoload("nt")  # the kernel PDB's _POOL_HEADER, when a symbol path has it
        r = pool_page(self._h.native, va)
        blocks = tuple(PoolBlock._from(t) for t in r["blocks"])
        nearest = PoolBlock._from(r["nearest"]) if r["nearest"] is not None else None
        big = None
        if r["big"] is not None:  # the big allocation holding va (core: pool::big::containing)
            bva, btag, nbytes, ptype, freed = r["big"]
            big = {"va": bva, "tag": tag_text(btag), "bytes": nbytes,
                   "pool_type": pool_type_name(ptype), "freed": freed}
        tags = {b.tag for b in blocks} | ({nearest.tag} if nearest else set())
        desc = {t: d for t in tags if (d := self.describe(t))}
        return PoolPage(va, r["page"], blocks, r["status"], r["why"], r["corrupt_at"], nearest,
                        big, desc, self._h.info.pointer_size,
                        layout_sources(self._h.native)["pool_header"])

    # -- !poolfind ------------------------------------------------------------------------------
    def scan(
        self,
        tags: str | bytes | Iterable[str | bytes] | None = None,
        pool: str = "all",
        progress: bool | Callable[[int, int], Any] | None = None,
        *,
        ranges: Sequence[tuple[int, int]] | None = None,
    ) -> pd.DataFrame:
        """Valid pool headers over all mapped kernel memory (``!poolfind``), at memory speed.

        Args:
            tags: tag patterns (``"Thre"``, ``"Thr*"``, ``"T?re"``; ``*`` only at the end), or
                None for every printable tag.
            pool: ``"nonpaged"``, ``"paged"`` (allocated blocks of that pool) or ``"all"`` (free
                blocks included).
            progress: a bar (tqdm, if installed) when True; none when False; a callable
                ``f(pages_done, pages_total)``; None = a bar on a terminal or notebook, shown
                only when the scan lasts over a second.
            ranges: ``[start, end)`` VA pairs instead of all mapped kernel memory.

        Returns address (VA of the POOL_HEADER), tag, size (bytes, header included), pool_type,
        allocated; sorted by address. ``df.attrs["pages"]`` = 4 KiB pages scanned;
        ``df.attrs["layout_source"]`` = where the ``_POOL_HEADER`` layout comes from (the kernel
        PDB's type when loaded, else the built-in profile).
        """
        self._smap.autoload("nt")  # the kernel PDB's _POOL_HEADER, when a symbol path has it
        pats = _tags_arg(tags)
        native_tags = None if pats is None else [p.encode("latin-1") for p in pats]
        sc = PoolScanner(self._h.native, tags=native_tags, pool=pool,
                                 ranges=None if ranges is None else [(a, b) for a, b in ranges])
        total = sc.pages
        cb: Callable[[int, int], Any] | None = progress if callable(progress) else None
        bar = None
        if cb is None and _want_bar(progress if not callable(progress) else None):
            try:
                from tqdm.auto import tqdm

                bar = tqdm(total=total * 4096, unit="B", unit_scale=True, delay=1.0,
                           desc="pool scan", leave=False)
            except ImportError:
                bar = None
        parts = []
        try:
            for lo in range(0, total, _SCAN_BATCH):
                hi = min(total, lo + _SCAN_BATCH)
                parts.append(sc.run(lo, hi))
                if cb is not None:
                    cb(hi, total)
                if bar is not None:
                    bar.update((hi - lo) * 4096)
        finally:
            if bar is not None:
                bar.close()
        cols: dict[str, Any] = {}
        for k in ("address", "tag", "size", "pool_type", "allocated"):
            arrs = [p[k] for p in parts]
            cols[k] = np.concatenate(arrs) if arrs else np.empty(0)
        alloc = cols["allocated"].astype(bool)
        names = _categorical(cols["tag"].astype(np.uint32), tag_text)
        # Free blocks get their own code so that they read "Free".
        key = np.where(alloc, cols["pool_type"].astype(np.int64), -1)
        kinds = _categorical(key, lambda v: pool_type_name(v, allocated=v >= 0))
        df = _schema.frame({"address": cols["address"].astype(np.uint64), "tag": names,
                            "size": cols["size"].astype(np.uint64), "pool_type": kinds,
                            "allocated": alloc}, SCAN_SCHEMA, dump=self._h.path)
        df.attrs["pages"] = total
        df.attrs["warnings"] = list(sc.warnings)
        df.attrs["layout_source"] = layout_sources(self._h.native)["pool_header"]
        return df

    def scan_summary(self, tags: str | bytes | Iterable[str | bytes] | None = None,
                     pool: str = "all",
                     progress: bool | Callable[[int, int], Any] | None = None) -> pd.DataFrame:
        """Per tag, what :meth:`scan` found: allocated blocks and bytes (nonpaged, paged) and free
        blocks; sorted by nonpaged bytes. Works where the tracker table is missing."""
        s = self.scan(tags, pool, progress)
        paged = s["pool_type"].astype(str).str.startswith("Paged").to_numpy()
        alloc = s["allocated"].to_numpy()
        g = pd.DataFrame({
            "tag": s["tag"].astype(str),
            "nonpaged_blocks": (alloc & ~paged).astype(np.int64),
            "nonpaged_bytes": np.where(alloc & ~paged, s["size"].to_numpy(), 0).astype(np.uint64),
            "paged_blocks": (alloc & paged).astype(np.int64),
            "paged_bytes": np.where(alloc & paged, s["size"].to_numpy(), 0).astype(np.uint64),
            "free_blocks": (~alloc).astype(np.int64),
        }).groupby("tag", sort=True).sum().reset_index()
        g["description"] = [self.describe(t) for t in g["tag"]]
        g = g.sort_values(["nonpaged_bytes", "tag"], ascending=[False, True], kind="stable")
        df = _schema.frame({k: g[k].to_numpy() for k in SUMMARY_SCHEMA}, SUMMARY_SCHEMA,
                           dump=self._h.path)
        df.attrs["pages"] = s.attrs["pages"]
        return df

    # -- who owns a tag -------------------------------------------------------------------------
    def _owners_native(self, tags: list[str]) -> list[tuple[list[str], list[str], list[float],
                                                           str]]:
        """(modules, evidence, scores, note) per tag, from the core (ntdump-core pool::owners)."""
        return pool_owners(self._h.native, [_tag_bytes(t) for t in tags])

    def owners_many(self, tags: Sequence[str]) -> dict[str, list[tuple[str, str, float]]]:
        """:meth:`owners` for several tags with one search of the module images (in the core):
        tag -> ``[(module, evidence, score), ...]``, best first. A tag no loaded image holds falls
        back to the owner the tag table names (``pooltag.txt`` or the built-in table; score 0.5);
        empty when neither knows."""
        res: dict[str, list[tuple[str, str, float]]] = {}
        plain = list(dict.fromkeys(t for t in tags if t != "None"))
        groups = ([["None"]] if "None" in tags else []) + ([plain] if plain else [])
        for group in groups:
            try:
                found = self._owners_native(group)
            except NtdumpError:
                continue  # evidence is optional here; the tag table below may still name one
            for t, (mods, evidence, scores, _) in zip(group, found, strict=True):
                res[t] = list(zip(mods, evidence, scores, strict=True))
        for t in tags:
            if not res.get(t):
                res[t] = [(e.binary.split("!", 1)[0], "named by the pool tag table (pooltag.txt "
                           "or the built-in table)", 0.5)
                          for e in self._tags.lookup(t) if e.binary and e.binary != "<unknown>"]
        return res

    def _owners_many(self, tags: list[str]) -> dict[str, list[str]]:
        res: dict[str, list[str]] = {}
        plain = [t for t in tags if t != "None"]
        if "None" in tags:
            try:
                res["None"] = self._owners_native(["None"])[0][0]
            except NtdumpError:
                res["None"] = []
        if plain:
            try:
                found = self._owners_native(plain)
            except NtdumpError:
                return res
            for t, (mods, _, _, _) in zip(plain, found, strict=True):
                res[t] = mods
        return res

    def owners(self, tag: str | bytes) -> pd.DataFrame:
        """Modules that likely allocate with ``tag`` (``findstr /m /l Tag *.sys`` on the images in
        the dump), best first: module (kd name), evidence, score.

        The tag's four bytes are searched in every loaded module's image. A hit right after an
        opcode that loads a 32-bit immediate scores high (x64 ``mov r8d, imm32`` — the tag
        argument of ExAllocatePoolWithTag — 10; ``mov edx`` 6; x86 ``push imm32`` 10); any other
        hit scores 1. For ``"None"`` (untagged pool) the owners are the importers of
        ``nt!ExAllocatePool`` and ``nt!ExAllocatePoolWithQuota`` (10 per function).
        """
        t = _tag_bytes(tag).decode("latin-1")
        try:
            mods, evidence, scores, note = self._owners_native([t])[0]
        except NtdumpError as e:
            if t != "None":
                raise
            mods, evidence, scores, note = [], [], [], str(e)  # untagged: evidence is optional
        df = _schema.frame({"module": mods, "evidence": evidence, "score": scores}, OWNERS_SCHEMA,
                           dump=self._h.path)
        df.attrs["tag"] = t
        if note:
            df.attrs["note"] = note
        return df

    def __repr__(self) -> str:
        return f"<ntdump.Pool of {self._h.path!r}>"


__all__ = [
    "BIG_SCHEMA", "OWNERS_SCHEMA", "POOL_TYPE_NAMES", "SCAN_SCHEMA", "SUMMARY_SCHEMA",
    "USED_SCHEMA", "Pool", "PoolBlock", "PoolPage", "PoolTableError",
    "pool_type_name", "tag_text",
]



def __getattr__(name: str) -> Any:
    """``ntdump.pool.trend`` and ``ntdump.pool.diff``: pool growth across dumps, which lives in
    :mod:`ntdump.trend` (a floor above this one), loaded on first use."""
    if name in ("trend", "diff"):
        return getattr(importlib.import_module("ntdump.trend"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
