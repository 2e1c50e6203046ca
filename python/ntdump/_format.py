"""Text formatting shared by every floor: addresses and values as kd prints them, hex dumps.

The bottom floor of the package (beside :mod:`ntdump.errors` and the schemas): it imports nothing
from ntdump, so features (``pe``, ``modules``, ``search``) and front ends (``kd``, ``cli``) use it
alike. Addresses are VAs or PAs as given; sizes are bytes.
"""

from __future__ import annotations

from collections.abc import Sequence


def kd_addr(va: int, ptr_size: int = 8) -> str:
    """An address as kd prints it: ``fffff804`7c600b20`` (``ptr_size`` 8) or ``8053a000`` (4)."""
    if ptr_size == 4:
        return f"{va & 0xFFFFFFFF:08x}"
    return f"{(va >> 32) & 0xFFFFFFFF:08x}`{va & 0xFFFFFFFF:08x}"


def kd_hex(value: int, digits: int) -> str:
    """``value`` as kd prints it: ``digits`` hex digits, with a backtick in the middle of 16."""
    s = f"{value:0{digits}x}"
    return f"{s[:8]}`{s[8:]}" if digits == 16 else s


def hexdump(
    base: int,
    data: bytes,
    width: int,
    ptr_size: int = 8,
    valid: Sequence[bool] | None = None,
) -> list[str]:
    """The lines kd's ``db`` (``width`` 1), ``dd`` (4) or ``dq`` (8) prints for ``data`` read at
    ``base``: 16 bytes a line, addresses ``ptr_size`` bytes wide.

    ``valid`` (one flag per byte of ``data``) marks what could be read: an unreadable byte prints
    as ``??`` and an element with any unreadable byte as ``????????`` (``dd``) or
    ``????????`????????`` (``dq``), as WinDbg prints memory it cannot read; ``None`` means all of
    ``data`` was read.
    """
    ok = (lambda i: True) if valid is None else (lambda i: bool(valid[i]))
    out = []
    for off in range(0, len(data), 16):
        chunk = data[off : off + 16]
        addr = kd_addr(base + off, ptr_size)
        if width == 1:
            cells = [f"{b:02x}" if ok(off + i) else "??" for i, b in enumerate(chunk)]
            left, right = " ".join(cells[:8]), " ".join(cells[8:])
            hexpart = f"{left}-{right}" if right else left
            text = "".join(
                (chr(b) if 32 <= b < 127 else ".") if ok(off + i) else "?"
                for i, b in enumerate(chunk)
            )
            out.append(f"{addr}  {hexpart:<47}  {text}")
        else:
            cells = []
            for i in range(0, len(chunk), width):
                if not all(ok(off + i + j) for j in range(len(chunk[i : i + width]))):
                    cells.append("????????" if width == 4 else "????????`????????")
                    continue
                v = int.from_bytes(chunk[i : i + width], "little")
                cells.append(kd_addr(v, 4) if width == 4 else kd_addr(v))
            out.append(f"{addr}  " + " ".join(cells))
    return out


__all__ = ["hexdump", "kd_addr", "kd_hex"]
