"""Kernel facts a PDB gives: where ``nt!PoolBigPageTable`` and the other pool tables are.

With the kernel's PDB loaded (``load_pdb`` or a symbol path), :meth:`ntdump.pool.Pool.big` reads
the table at the VA the PDB names (``nt!PoolBigPageTable`` holds the table's VA,
``nt!PoolBigPageTableSize`` its entry count, both pointer-sized on x64 as in the WRK's
``SIZE_T PoolBigPageTableSize``) instead of searching near PoolTrackTable. The entry layout is the
PDB's ``_POOL_TRACKER_BIG_PAGES`` when the core took it (see
:meth:`ntdump.symbolmap.SymbolMap.apply_kernel_layouts`); the result's ``attrs["layout_source"]``
says which.
"""

from __future__ import annotations

from typing import Any


def _read_ptr(h: Any, va: int) -> int:
    return int.from_bytes(h.read(va, h.pointer_size), "little")


def big_table(h: Any, symbol_map: Any) -> tuple[tuple[int, int, str], dict[str, str]] | None:
    """``((table VA, entries, ""), attrs)`` from the loaded kernel symbols, or None
    when ``nt!PoolBigPageTable`` / ``nt!PoolBigPageTableSize`` are not loaded. ``h`` is the dump's
    handle, ``symbol_map`` its :class:`~ntdump.symbolmap.SymbolMap`."""
    sm = symbol_map.symbol_map
    tv, sv = sm.get("nt!PoolBigPageTable"), sm.get("nt!PoolBigPageTableSize")
    if tv is None or sv is None:
        return None
    va = _read_ptr(h, tv)
    entries = _read_ptr(h, sv)
    src = symbol_map.symbol_sources.get("nt", "loaded symbols")
    attrs = {"symbol_source": (f"nt!PoolBigPageTable at {tv:#x} -> {va:#x}, "
                               f"nt!PoolBigPageTableSize at {sv:#x} = {entries} ({src})")}
    # No layout name: the core uses the PDB's layout when it took one, else the profile's.
    return (va, entries, ""), attrs


def _pointer_pair(h: Any, symbol_map: Any, table: str, size: str
                  ) -> tuple[tuple[int, int] | None, str]:
    sm = symbol_map.symbol_map
    tv, sv = sm.get(f"nt!{table}"), sm.get(f"nt!{size}")
    if tv is None or sv is None:
        return None, ""
    va, n = _read_ptr(h, tv), _read_ptr(h, sv)
    src = symbol_map.symbol_sources.get("nt", "loaded symbols")
    text = f"nt!{table} at {tv:#x} -> {va:#x}, nt!{size} at {sv:#x} = {n} ({src})"
    return ((va, n) if va and n else None), text


def tracker_tables(h: Any, symbol_map: Any) -> tuple[tuple[int, int] | None,
                                                     tuple[int, int] | None, dict[str, str]]:
    """(expansion, session, attrs): the ``(VA, entries)`` of ``nt!PoolTrackTableExpansion`` and
    of ``nt!ExpSessionPoolTrackTable`` from the loaded kernel symbols (None when not loaded, or
    when the variable holds 0: no expansion table yet)."""
    attrs: dict[str, str] = {}
    exp, t = _pointer_pair(h, symbol_map, "PoolTrackTableExpansion",
                           "PoolTrackTableExpansionSize")
    if t:
        attrs["expansion_source"] = t
    sess, t = _pointer_pair(h, symbol_map, "ExpSessionPoolTrackTable",
                            "ExpSessionPoolTrackTableSize")
    if t:
        attrs["session_source"] = t
    return exp, sess, attrs
