"""Memory search and pointer display: ``Dump.search``, ``Dump.dps`` / ``dds`` / ``dqs``.

``search`` is kd's ``s`` (and ``!for_each_module s``); ``dps`` / ``dds`` / ``dqs`` are kd's
commands of the same names. Addresses are kernel VAs unless ``physical=True`` (then PAs); sizes
are bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._format import kd_hex
from ._handle import Handle
from ._native import kernel_ranges
from ._native import search as native_search
from ._native import search_modules as native_search_modules
from ._schema import ADDRESS, LABEL, NAME, NULLABLE_ADDRESS, UINT64, frame
from ._symbols import Symbols
from .errors import TranslationError
from .modules import ModuleList

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
else:
    from ._lazy import np, pd  # imported on first use (start-up time)

#: Columns of :meth:`Search.search` (``pattern`` only when a list of patterns is given).
SEARCH_SCHEMA = {"address": ADDRESS, "module": NAME, "offset": UINT64}
SEARCH_SCHEMA_MULTI = {**SEARCH_SCHEMA, "pattern": LABEL}
#: Columns of :meth:`Search.dps`; ``value`` is nullable (NA for kd's ``????????``).
DPS_SCHEMA = {"address": ADDRESS, "value": NULLABLE_ADDRESS, "symbol": NAME, "source": LABEL}

#: kd refuses an ``L`` range above 256 MB unless written ``L?``.
KD_RANGE_LIMIT = 256 << 20
#: Widths of :meth:`Search.search`: element bytes of an int pattern, or how a str is encoded.
WIDTHS = (1, 2, 4, 8, "ascii", "unicode")
_SPACE_END = 1 << 64

Width = int | str
Within = Any
"""``(start, end)``, a kd range string, ``"kernel"``, a Module, a ModuleList, or None."""


@dataclass(frozen=True, slots=True)
class _Range:
    start: int
    end: int  # exclusive; may be 2**64
    name: str | None  # module name, or None for a plain range


# -- patterns ----------------------------------------------------------------------------------


def _pack_int(v: int, width: int) -> bytes:
    bits = 8 * width
    if not -(1 << (bits - 1)) <= v < 1 << bits:
        raise ValueError(f"{v:#x} does not fit in {width} byte(s)")
    return (v % (1 << bits)).to_bytes(width, "little")


def _patterns(pattern: Any, width: Width | None) -> tuple[list[bytes], list[Any], int, int]:
    """``(pattern bytes, labels, element size, alignment)`` for ``pattern`` (one or a list).

    Duplicate patterns (same bytes) are kept once, under the first label.
    """
    items = list(pattern) if isinstance(pattern, list | tuple) else [pattern]
    if not items:
        raise ValueError("search needs at least one pattern")
    if width is not None and width not in WIDTHS:
        raise ValueError(f"width must be one of {WIDTHS}, not {width!r}")
    ints = [isinstance(p, int) and not isinstance(p, bool) for p in items]
    if any(ints) and not all(ints):
        raise TypeError("a list of patterns must be all ints or all bytes/str")
    out: list[bytes] = []
    labels: list[Any] = []
    if all(ints):
        if width is None:
            width = 4 if all(-(1 << 31) <= p < 1 << 32 for p in items) else 8
        if not isinstance(width, int):
            raise TypeError(f"int patterns take width 1, 2, 4 or 8, not {width!r}")
        elem = align = width
        packed = [_pack_int(p, width) for p in items]
    else:
        if isinstance(width, int) and width != 1:
            raise TypeError("bytes and str patterns take width 1, 'ascii' or 'unicode'")
        elem = 2 if width == "unicode" else 1
        align = 1
        packed = []
        for p in items:
            if isinstance(p, bytes | bytearray | memoryview):
                packed.append(bytes(p))
            elif isinstance(p, str):
                if width == "unicode":
                    packed.append(p.encode("utf-16-le"))
                else:
                    try:
                        packed.append(p.encode("ascii"))
                    except UnicodeEncodeError:
                        raise ValueError(
                            f"{p!r} is not ASCII: use width='unicode' or bytes"
                        ) from None
            else:
                raise TypeError(f"a pattern is an int, bytes or str, not {type(p).__name__}")
    seen: set[bytes] = set()
    for b, label in zip(packed, items, strict=True):
        if not b:
            raise ValueError("empty pattern")
        if b not in seen:
            seen.add(b)
            out.append(b)
            labels.append(label)
    return out, labels, elem, align


# -- ranges ------------------------------------------------------------------------------------

_NUM = r"(?:0[xXnNtTyY])?[0-9a-fA-F`]+"
_KD_RANGE = re.compile(
    rf"^\s*(?P<start>{_NUM})\s+(?:(?P<l>[lL])(?P<q>\?)?\s*(?P<size>{_NUM})|(?P<end>{_NUM}))\s*$"
)


def kd_number(text: str) -> int:
    """A kd number: hex by default (``fffff804`7ba00000``, ``0x…``), ``0n`` decimal, ``0t`` octal,
    ``0y`` binary; backticks are ignored."""
    t = text.replace("`", "").strip()
    prefixes = {"0x": 16, "0n": 10, "0t": 8, "0y": 2}
    base = prefixes.get(t[:2].lower(), 16)
    digits = t[2:] if t[:2].lower() in prefixes else t
    try:
        return int(digits, base)
    except ValueError:
        raise ValueError(f"{text!r} is not a kd number") from None


def parse_kd_range(text: str, width: int = 1) -> tuple[int, int]:
    """A kd range as ``(start, end)``, ``end`` exclusive.

    * ``"f50b3000 L10"``: 0x10 elements of ``width`` bytes (kd's ``L`` counts elements of the data
      type: dwords for ``s -d``). kd refuses more than 256 MB this way; ``L?`` lifts the limit.
    * ``"f50b3000 f50c0000"``: start and end, kd's end being inclusive.

    Numbers are hex unless prefixed (``0n`` decimal); ``0x`` and backticks are optional.
    """
    m = _KD_RANGE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a kd range ('start L size' or 'start end')")
    start = kd_number(m["start"])
    if m["end"] is not None:
        last = kd_number(m["end"])
        if last < start:
            raise ValueError(f"range {text!r} ends before it starts")
        end = last + 1
    else:
        n = kd_number(m["size"]) * width
        if n > KD_RANGE_LIMIT and not m["q"]:
            raise ValueError(
                f"range {text!r} is {n:#x} bytes: kd limits L to 256 MB; write L? to lift the limit"
            )
        end = start + n
    if end > _SPACE_END:
        raise ValueError(f"range {text!r} runs past the end of the address space")
    return start, end


def _is_module(x: Any) -> bool:
    return hasattr(x, "base") and hasattr(x, "size")


def _as_pair(x: Any) -> tuple[int, int] | None:
    if isinstance(x, tuple) and len(x) == 2 and all(isinstance(v, int) for v in x):
        return int(x[0]), int(x[1])
    return None


def _ranges(within: Within, elem: int) -> list[_Range] | str | None:
    """The ranges of ``within``; ``"kernel"`` or None for the kernel half / all physical memory."""
    if within is None or (isinstance(within, str) and within.strip().lower() == "kernel"):
        return "kernel" if within is not None else None
    if isinstance(within, str):
        return [_Range(*parse_kd_range(within, elem), None)]
    pair = _as_pair(within)
    if pair is not None:
        return [_Range(pair[0], pair[1], None)]
    if _is_module(within):
        return [_module_range(within)]
    if isinstance(within, Iterable):
        out = []
        for x in within:
            p = _as_pair(x)
            if p is not None:
                out.append(_Range(p[0], p[1], None))
            elif _is_module(x):
                if getattr(x, "range_ok", True) is False:
                    continue  # runs past the top of the address space: reported, not searched
                out.append(_module_range(x))
            else:
                raise TypeError(f"within items are modules or (start, end) pairs, not {x!r}")
        return out
    raise TypeError(
        "within is (start, end), a kd range string, 'kernel', a module, or an iterable of "
        f"modules, not {type(within).__name__}"
    )


def _module_range(m: Any) -> _Range:
    name = getattr(m, "name", None)
    return _Range(int(m.base), int(m.base) + int(m.size), None if name is None else str(name))


def _attribute(
    addresses: np.ndarray, ranges: Sequence[_Range], default_base: int
) -> tuple[np.ndarray | None, np.ndarray]:
    """``(module names or None, offsets)`` of each hit: the range holding it (the one with the
    highest start when ranges overlap), its name, and the offset from its start."""
    offsets = addresses - np.uint64(default_base)
    if not ranges or len(addresses) == 0:
        return None, offsets
    rs = sorted(ranges, key=lambda r: (r.start, r.end))
    starts = np.array([r.start for r in rs], dtype=np.uint64)
    ends = np.array([min(r.end, _SPACE_END - 1) for r in rs], dtype=np.uint64)
    full = np.array([r.end == _SPACE_END for r in rs], dtype=bool)
    idx = np.searchsorted(starts, addresses, side="right") - 1
    ok = idx >= 0
    safe = np.where(ok, idx, 0)
    ok &= (addresses < ends[safe]) | full[safe]
    for i in np.flatnonzero(~ok):  # nested or overlapping ranges: fall back to a scan
        a = int(addresses[i])
        for j in range(len(rs) - 1, -1, -1):
            if rs[j].start <= a < rs[j].end:
                safe[i], ok[i] = j, True
                break
    offsets = np.where(ok, addresses - starts[safe], offsets)
    names = None
    if any(r.name is not None for r in rs):
        table = np.array([r.name for r in rs], dtype=object)
        names = table[safe]
        names[~ok] = None
    return names, offsets


class Search:
    """Feature object of :class:`ntdump.Dump` that searches memory and displays pointers.

    Takes the dump's handle and its :class:`~ntdump._symbols.Symbols` (``dps`` names values)."""

    def __init__(self, h: Handle, symbols: Symbols) -> None:
        self._h = h
        self._symbols = symbols

    @property
    def path(self) -> str:
        return self._h.path

    # -- search --------------------------------------------------------------------------------

    def search(
        self,
        pattern: int | bytes | str | Sequence[int | bytes | str],
        width: Width | None = None,
        *,
        within: Within = None,
        physical: bool = False,
        limit: int | None = None,
    ) -> pd.DataFrame:
        """Search memory for a value, bytes or a string, like kd's ``s -d`` / ``-q`` / ``-a`` ….

        Args:
            pattern: an int (packed little-endian to ``width`` bytes), bytes, a str, or a list of
                these (then the frame gets a ``pattern`` column naming which one hit).
            width: for ints 1, 2, 4 or 8 bytes (default 4 if the value fits 32 bits, else 8);
                for str ``"ascii"`` (default) or ``"unicode"`` (UTF-16LE). **Int hits are
                aligned**: only addresses that are multiples of the width are reported, as kd's
                ``s -w/-d/-q`` do.
                Bytes and strings match at any address.
            within: what to search (VAs; PAs with ``physical=True``). ``(start, end)`` with ``end``
                exclusive; a kd range string (``"f50b3000 L?0x10000"`` counts elements of the width,
                ``"f50b3000 f50c0000"`` has an inclusive end); a Module (its ``[base, base+size)``)
                or a ModuleList / iterable of modules (``!for_each_module``); ``"kernel"`` (the
                default) for every mapped kernel-half VA, found by walking the page tables. With
                ``physical=True`` the default is every page stored in the dump.
            physical: search physical memory; ``address`` is then a PA.
            limit: keep only the first ``limit`` hits by address (and stop searching there); use it
                for patterns that hit everywhere, such as 0. ``df.attrs["truncated"]`` tells.

        Returns:
            A DataFrame sorted by address: ``address``; ``module`` (the module of ``within`` that
            holds the hit, else NA); ``offset`` (from that module's base, else from the start of the
            range searched; for ``"kernel"`` from the start of the kernel half). ``df.attrs`` holds
            ``pages_searched``, ``pages_unreadable`` (4 KiB pages skipped: unmapped, paged out or
            missing from the dump) and ``truncated``.

        A hit lies inside one range; ranges that overlap or touch are searched as one. Hits that
        overlap each other are all reported. Matches across page boundaries are found even when the
        two pages are stored apart. The search runs on all cores with the GIL released.
        """
        if limit is not None and limit < 0:
            raise ValueError("limit must be >= 0")
        pats, labels, elem, align = _patterns(pattern, width)
        if isinstance(within, ModuleList) and within._h is self._h and not physical:
            return self._search_modules(within, pattern, pats, labels, align, limit)
        ranges = _ranges(within, elem)
        kernel = False
        default_base = 0
        if ranges == "kernel" or (ranges is None and not physical):
            if physical:
                raise ValueError("within='kernel' is virtual memory; drop physical=True")
            kernel = True
            default_base = 0xFFFF800000000000 if self._h.native.mode == "x64" else 0x80000000
            ranges = []
        native_ranges = None
        if isinstance(ranges, list):
            for r in ranges:
                if not 0 <= r.start <= r.end <= _SPACE_END:
                    raise ValueError(f"bad range ({r.start:#x}, {r.end:#x})")
            if not kernel:
                # A length of 2^64 does not fit the native u64: search the whole space as two
                # halves (only mapped pages are visited, as kd's s does over L?ffffffffffffffff).
                native_ranges = [part for r in ranges if r.end > r.start
                                 for part in ([(0, 1 << 63), (1 << 63, 1 << 63)]
                                              if r.end - r.start == _SPACE_END
                                              else [(r.start, r.end - r.start)])]
            if physical and any(r.name is not None for r in ranges):
                raise ValueError("modules are virtual memory; drop physical=True")
        res = native_search(
            self._h.native, pats, native_ranges, align=align, kernel=kernel, physical=physical,
            limit=limit,
        )
        addresses = res["address"]
        rlist = ranges if isinstance(ranges, list) else []
        names, offsets = _attribute(addresses, rlist, default_base)
        cols: dict[str, Any] = {"address": addresses, "offset": offsets.astype(np.uint64)}
        if names is not None:
            cols["module"] = names
        return self._frame(cols, res, pattern, labels)

    def _search_modules(self, modules: ModuleList, pattern: Any, pats: list[bytes],
                        labels: list[Any], align: int, limit: int | None) -> pd.DataFrame:
        """``within=d.modules``: one native call searches every module and says which module
        holds each hit (``!for_each_module s …``); no per-module work in Python."""
        res = native_search_modules(self._h.native, pats, align=align, limit=limit)
        idx = res["module"]
        names = np.array([m.name for m in modules] + [None], dtype=object)
        cols: dict[str, Any] = {"address": res["address"], "offset": res["offset"],
                                "module": names[idx]}  # -1 (no module) picks the None
        return self._frame(cols, res, pattern, labels)

    def _frame(self, cols: dict[str, Any], res: Any, pattern: Any,
               labels: list[Any]) -> pd.DataFrame:
        schema = SEARCH_SCHEMA
        if isinstance(pattern, list | tuple):
            schema = SEARCH_SCHEMA_MULTI
            cols["pattern"] = pd.Categorical.from_codes(
                res["pattern"].astype(np.int64), categories=pd.Index(labels, dtype=object)
            )
        df = frame(cols, schema, dump=self.path)
        df.attrs.update(
            pages_searched=res["pages_searched"],
            pages_unreadable=res["pages_unreadable"],
            truncated=res["truncated"],
        )
        return df

    def kernel_ranges(self) -> list[tuple[int, int]]:
        """Mapped kernel-half VA ranges as ``(start, end)`` (end exclusive), coalesced: every valid
        or transition page, stored in the dump or not. Triage dumps: the captured ranges."""
        return [(s, s + n) for s, n in kernel_ranges(self._h.native)]

    # -- dps / dds / dqs ----------------------------------------------------------------------

    def _slots(self, va: int, count: int, size: int) -> list[int | None]:
        """``count`` little-endian values of ``size`` bytes from ``va``; stops after the first
        unreadable slot (None); raises if the first slot is unreadable."""
        if count < 0:
            raise ValueError("count must be >= 0")
        try:
            data = self._h.read(va, count * size)
            return [int.from_bytes(data[i : i + size], "little") for i in range(0, len(data), size)]
        except TranslationError:
            pass
        out: list[int | None] = []
        for i in range(count):
            try:
                out.append(int.from_bytes(self._h.read(va + i * size, size), "little"))
            except TranslationError:
                if i == 0:
                    raise
                out.append(None)
                break
        return out

    def _symbol(self, value: int | None) -> str:
        """The symbol of ``value`` (``Dump.ln``) when that succeeds, else ``""``."""
        if value is None:
            return ""
        try:
            s = self._symbols.ln(value)
        except Exception:
            return ""
        return str(s) if s else ""

    def _dxs(self, va: int, count: int, size: int) -> pd.DataFrame:
        values = self._slots(va, count, size)
        cols = {
            "address": [va + i * size for i in range(len(values))],
            "value": pd.array(values, dtype="UInt64"),
            "symbol": [self._symbol(v) for v in values],
        }
        cols["source"] = [None if v is None else self._symbols.ln_source(v) for v in values]
        return frame(cols, DPS_SCHEMA, dump=self.path)

    def dps(self, va: int, count: int = 8) -> pd.DataFrame:
        """kd's ``dps``: ``count`` pointer-sized values from ``va``, each with its symbol.

        Returns ``address``, ``value`` (NA where kd prints ``????????``: the first unreadable slot,
        after which the display stops), ``symbol`` (``Dump.ln`` of the value, "" when unknown)
        and ``source`` (where that name comes from: ``export``, ``pdb <path>`` …; see
        ``Dump.ln_source``).
        Raises a :class:`~ntdump.TranslationError` if the first slot is unreadable."""
        return self._dxs(va, count, self._h.pointer_size)

    def dds(self, va: int, count: int = 8) -> pd.DataFrame:
        """kd's ``dds``: like :meth:`dps` with 4-byte values."""
        return self._dxs(va, count, 4)

    def dqs(self, va: int, count: int = 8) -> pd.DataFrame:
        """kd's ``dqs``: like :meth:`dps` with 8-byte values."""
        return self._dxs(va, count, 8)

    def dps_text(self, va: int, count: int = 8, *, size: int | None = None) -> str:
        """The lines kd prints for ``dps va Lcount`` (``size=4``: ``dds``; ``size=8``: ``dqs``),
        ``????????`` for every value that cannot be read (never an error)::

            fffff804`7c600b20  fffff804`7c640770 nt!Something+0x10
            f50b8058  e0894d1f nt!ExAllocatePool
        """
        size = size or self._h.pointer_size
        if size not in (4, 8):
            raise ValueError("size is 4 (dds) or 8 (dqs)")
        if count < 0:
            raise ValueError("count must be >= 0")
        adigits = 16 if self._h.pointer_size == 8 else 8
        vdigits = 2 * size
        unknown = "????????`????????" if size == 8 else "????????"
        lines = []
        for i, v in enumerate(self._slots_or_none(va, count, size)):
            val = unknown if v is None else kd_hex(v, vdigits)
            line = f"{kd_hex(va + i * size, adigits)}  {val}"
            s = self._symbol(v)
            lines.append(f"{line} {s}" if s else line)
        return "\n".join(lines)

    def _slots_or_none(self, va: int, count: int, size: int) -> list[int | None]:
        """``count`` values of ``size`` bytes from ``va``, None for each one that cannot be read
        (what kd's ``dps`` prints as ``????????``, line after line), read a page at a time."""
        out: list[int | None] = []
        end = va + count * size
        a = va
        while a < end:
            page_end = min(end, (a | 0xFFF) + 1)
            # A slot straddling the page end is read on its own.
            n = max(size, (page_end - a) // size * size)
            try:
                data = self._h.read(a, n)
                out += [int.from_bytes(data[i : i + size], "little") for i in range(0, n, size)]
            except TranslationError:
                for i in range(0, n, size):
                    try:
                        out.append(int.from_bytes(self._h.read(a + i, size), "little"))
                    except TranslationError:
                        out.append(None)
            a += n
        return out[:count]
