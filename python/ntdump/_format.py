"""Text formatting shared by every floor: addresses and values as kd prints them, hex dumps.

The bottom floor of the package (beside :mod:`ntdump.errors` and the schemas): it imports nothing
from ntdump, so features (``pe``, ``modules``, ``search``) and front ends (``kd``, ``cli``) use it
alike. Addresses are VAs or PAs as given; sizes are bytes.
"""

from __future__ import annotations


def kd_addr(va: int, ptr_size: int = 8) -> str:
    """An address as kd prints it: ``fffff804`7c600b20`` (``ptr_size`` 8) or ``8053a000`` (4)."""
    if ptr_size == 4:
        return f"{va & 0xFFFFFFFF:08x}"
    return f"{(va >> 32) & 0xFFFFFFFF:08x}`{va & 0xFFFFFFFF:08x}"


def kd_hex(value: int, digits: int) -> str:
    """``value`` as kd prints it: ``digits`` hex digits, with a backtick in the middle of 16."""
    s = f"{value:0{digits}x}"
    return f"{s[:8]}`{s[8:]}" if digits == 16 else s


def hexdump(base: int, data: bytes, width: int, ptr_size: int = 8) -> list[str]:
    """The lines kd's ``db`` (``width`` 1), ``dd`` (4) or ``dq`` (8) prints for ``data`` read at
    ``base``: 16 bytes a line, addresses ``ptr_size`` bytes wide."""
    out = []
    for off in range(0, len(data), 16):
        chunk = data[off : off + 16]
        addr = kd_addr(base + off, ptr_size)
        if width == 1:
            cells = [f"{b:02x}" for b in chunk]
            left, right = " ".join(cells[:8]), " ".join(cells[8:])
            hexpart = f"{left}-{right}" if right else left
            text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
            out.append(f"{addr}  {hexpart:<47}  {text}")
        else:
            vals = [
                int.from_bytes(chunk[i : i + width], "little") for i in range(0, len(chunk), width)
            ]
            cells = [kd_addr(v, 4) if width == 4 else kd_addr(v) for v in vals]
            out.append(f"{addr}  " + " ".join(cells))
    return out


__all__ = ["hexdump", "kd_addr", "kd_hex"]
