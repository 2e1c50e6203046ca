"""Limits that keep hostile requests bounded, and the helpers that apply them (docs/robustness.md).

Floor of the package (imports nothing from ntdump but ``errors``): used by ``dump``, ``kd`` and
``cli``.

* :data:`MAX_READ_BYTES` — most bytes one ``Dump.read`` / ``read_phys`` call returns (the native
  layer refuses more with :class:`~ntdump.errors.ReadLimitError` before allocating anything);
  ``Dump.iter_read`` streams larger ranges.
* :data:`MAX_DISPLAY_BYTES` — most bytes one display command (kd ``db/dd/dq/dps``, CLI ``db``,
  ``dps``) shows.
* :data:`MAX_SEARCH_HITS` — most hits one kd ``s`` command prints.
* :data:`MAX_EXPR_DEPTH` — deepest nesting of parentheses, ``poi(`` and unary minus in a kd
  expression.
"""

from __future__ import annotations

from collections.abc import Callable

from .errors import NtdumpError, ReadLimitError, TranslationError

U64 = 1 << 64
"""2^64: one past the highest 64-bit address."""
MAX_READ_BYTES = 256 << 20
"""Bytes: per-call cap of ``Dump.read`` / ``Dump.read_phys`` (256 MiB; same as the native cap)."""
MAX_DISPLAY_BYTES = 1 << 20
"""Bytes: most memory one display command shows (1 MiB = 65,536 lines of ``db``)."""
MAX_EXPR_DEPTH = 64
"""Deepest nesting of ``(``, ``poi(`` and unary ``-`` in one kd expression."""
MAX_SEARCH_HITS = 4096
"""Hits one kd ``s`` command prints (the search stops there; ``Dump.search`` has no cap)."""
DEFAULT_CHUNK = 1 << 20
"""Bytes: default chunk of ``Dump.iter_read``."""


def check_address(value: int, what: str = "address", bits: int = 64) -> int:
    """``value`` if it fits in ``bits`` bits (0 … 2^bits - 1), else ValueError naming it."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if not 0 <= value < (1 << bits):
        raise ValueError(f"{what} {value:#x} does not fit in {bits} bits" if value >= 0
                         else f"{what} {value} is negative")
    return value


def check_display(n_bytes: int, what: str) -> int:
    """``n_bytes`` if a display command may show that many bytes, else ReadLimitError."""
    if n_bytes < 0:
        raise ReadLimitError(f"{what}: negative length {n_bytes}", n_bytes, MAX_DISPLAY_BYTES)
    if n_bytes > MAX_DISPLAY_BYTES:
        raise ReadLimitError(
            f"{what}: {n_bytes:#x} bytes is over the display limit of {MAX_DISPLAY_BYTES:#x} "
            "bytes (use Dump.iter_read in Python for more)", n_bytes, MAX_DISPLAY_BYTES)
    return n_bytes


def check_iter_read(va: int, n: int, chunk: int, top: int = U64) -> None:
    """Validate an ``iter_read`` request: ValueError for bad arguments, TranslationError when the
    range runs past ``top`` (the end of the address space: it would wrap to 0)."""
    check_address(va, "address")
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"length {n!r} must be a non-negative int")
    if not isinstance(chunk, int) or not 0 < chunk <= MAX_READ_BYTES:
        raise ValueError(f"chunk must be 1 … {MAX_READ_BYTES:#x} bytes, not {chunk!r}")
    if va + n > top:
        raise TranslationError(
            f"{va:#x} + {n:#x} bytes runs past the top of the address space", va)


def read_cells(read: Callable[[int, int], bytes], va: int, n: int, top: int = U64,
               page: int = 0x1000) -> list[int | None]:
    """``n`` bytes at ``va`` as a list of byte values, None where unreadable (kd's ``??``).
    Stops at ``top`` (the end of the address space): nothing past it is listed, so nothing
    wraps to address 0. ``read(va, n)`` raises for unreadable memory."""
    out: list[int | None] = []
    end = min(va + n, top)
    cur = va
    while cur < end:
        take = min(page - (cur % page), end - cur)
        try:
            out.extend(read(cur, take))
        except NtdumpError:
            out.extend([None] * take)
        cur += take
    return out


def hexdump_cells(base: int, cells: list[int | None], width: int, addr: Callable[[int], str],
                  value: Callable[[int, int], str]) -> list[str]:
    """kd's ``db`` (width 1) / ``dd`` (4) / ``dq`` (8) lines for ``cells`` at ``base``; unreadable
    bytes print as ``??`` (a word with an unreadable byte as one ``?`` per digit). ``addr(va)``
    formats a line's address, ``value(v, width)`` one word."""
    out = []
    for off in range(0, len(cells), 16):
        row = cells[off : off + 16]
        if width == 1:
            hx = ["??" if b is None else f"{b:02x}" for b in row]
            left, right = " ".join(hx[:8]), " ".join(hx[8:])
            hexpart = f"{left}-{right}" if right else left
            text = "".join("?" if b is None else chr(b) if 32 <= b < 127 else "." for b in row)
            out.append(f"{addr(base + off)}  {hexpart:<47}  {text}")
        else:
            words = []
            for i in range(0, len(row), width):
                w = row[i : i + width]
                if len(w) < width or any(b is None for b in w):
                    words.append("".join(c if c == "`" else "?" for c in value(0, width)))
                else:
                    words.append(value(int.from_bytes(bytes(w), "little"), width))  # type: ignore[arg-type]
            out.append(f"{addr(base + off)}  " + " ".join(words))
    return out
