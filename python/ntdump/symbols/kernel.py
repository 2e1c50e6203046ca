"""Kernel facts a PDB gives: where ``nt!PoolBigPageTable`` is, and which entry layout the PDB's
``_POOL_TRACKER_BIG_PAGES`` has.

With the kernel's PDB loaded (``load_pdb`` or a symbol path), :meth:`ntdump.pool.Pool.big` reads
the table at the VA the PDB names (``nt!PoolBigPageTable`` holds the table's VA,
``nt!PoolBigPageTableSize`` its entry count, both pointer-sized on x64 as in the WRK's
``SIZE_T PoolBigPageTableSize``) instead of searching near PoolTrackTable, and takes the entry
layout from the PDB's type when it has one: the built-in layout whose size and fields (offsets,
bit fields) equal the PDB's is used; a PDB layout matching none is reported, never guessed.
"""

from __future__ import annotations

from typing import Any

from .._native import pool_layouts
from ..errors import SymbolError


def _pdb_fields(lay: dict[str, Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for f in lay["fields"]:
        if f["bit_length"]:
            out[f["name"]] = [f["offset"], [f["bit_position"], f["bit_length"]]]
        else:
            out[f["name"]] = [f["offset"], f["type"]["size"]]
    return out


def _norm(v: Any) -> Any:
    return [_norm(x) for x in v] if isinstance(v, (list, tuple)) else v


def big_page_layout(cat: Any) -> tuple[str | None, str]:
    """(built-in layout name or None, why) for the PDB's ``_POOL_TRACKER_BIG_PAGES``."""
    try:
        lay = cat.layout("_POOL_TRACKER_BIG_PAGES")
    except Exception as e:
        return None, f"the PDB has no _POOL_TRACKER_BIG_PAGES ({e})"
    have = _pdb_fields(lay)
    for b in pool_layouts()["big_pages"]:
        if b["size"] != lay["size"]:
            continue
        if all(_norm(have.get(k)) == _norm(v) for k, v in b["fields"].items()):
            return b["name"], (f"_POOL_TRACKER_BIG_PAGES from the PDB ({lay['size']} bytes) "
                               f"equals built-in layout {b['name']}")
    return None, (f"the PDB's _POOL_TRACKER_BIG_PAGES ({lay['size']} bytes, fields {have}) "
                  "matches no built-in layout")


def _read_ptr(h: Any, va: int) -> int:
    return int.from_bytes(h.read(va, h.pointer_size), "little")


def big_table(h: Any, symbol_map: Any) -> tuple[tuple[int, int, str], dict[str, str]] | None:
    """``((table VA, entries, layout name or ""), attrs)`` from the loaded kernel symbols, or None
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
    layout = ""
    cat = None
    try:
        cat = symbol_map.types("nt")
    except (SymbolError, OSError) as e:  # symbols from a map, no types: keep the default
        attrs["layout_source"] = f"built-in (no PDB types: {e})"
    if cat is not None:
        name, why = big_page_layout(cat)
        attrs["layout_source"] = why
        if name is not None:
            layout = name
    return (va, entries, layout), attrs

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
