"""The ``ntdump`` command line.

Sub-commands grow with the library; each prints what the matching WinDbg command would, laid out
for a terminal, and exits non-zero with one clear line on stderr for an unreadable dump.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .errors import NtdumpError


def _int(s: str) -> int:
    """Parse an address the way kd does: hex by default, ``0x`` optional, backtick separators."""
    s = s.strip().replace("`", "")
    if s.lower().startswith("0n"):
        return int(s[2:], 10)
    return int(s, 16)


def _open(args: argparse.Namespace):
    from . import open as nt_open

    kw = {}
    if getattr(args, "raw", False):
        kw["raw"] = True
    if getattr(args, "machine", None):
        kw["machine"] = args.machine
    if getattr(args, "dtb", None) is not None:
        kw["dtb"] = args.dtb
    return nt_open(args.dump, **kw)


def cmd_info(args: argparse.Namespace) -> int:
    with _open(args) as d:
        print(d.info)
    return 0


def cmd_pte(args: argparse.Namespace) -> int:
    with _open(args) as d:
        print(d.walk(args.address))
    return 0


def kd_addr(va: int, ptr_size: int = 8) -> str:
    """An address as kd prints it: ``fffff804`7c600b20`` (64-bit) or ``8053a000`` (32-bit)."""
    if ptr_size == 4:
        return f"{va & 0xFFFFFFFF:08x}"
    return f"{va >> 32:08x}`{va & 0xFFFFFFFF:08x}"


def _hexdump(base: int, data: bytes, width: int, ptr_size: int = 8) -> list[str]:
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


def cmd_dump_memory(args: argparse.Namespace) -> int:
    width = {"db": 1, "dd": 4, "dq": 8}[args.command]
    with _open(args) as d:
        data = (d.read_phys if args.physical else d.read)(args.address, args.length, pad=True)
        print("\n".join(_hexdump(args.address, data, width, d.info.pointer_size)))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from . import forge
    from . import open as nt_open

    with tempfile.TemporaryDirectory(prefix="ntdump-demo-") as tmp:
        path = Path(args.out) if args.out else Path(tmp) / "MEMORY.DMP"
        r = forge.minimal_x64(path, fmt="full", size=256 << 20)
        print(f"forged {path} ({r.fmt}, {r.mem.page_count} pages of RAM)\n")
        with nt_open(path) as d:
            print(d.info)
            print()
            shown: set[str] = set()
            for m in r.mappings:
                if m.kind in ("4k", "2m", "1g", "transition") and m.kind not in shown:
                    shown.add(m.kind)
                    print(f"{m.kind} mapping:")
                    print(d.walk(m.va + 0x123))
                    print()
            for m in r.mappings:
                if m.kind in ("pagefile", "hole"):
                    try:
                        d.read(m.va, 8)
                    except NtdumpError as e:
                        print(f"read {m.va:#x}: {type(e).__name__}: {e}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ntdump", description="Read Windows kernel crash dumps.")
    sub = p.add_subparsers(dest="command", required=True)

    def dump_arg(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("dump", help="MEMORY.DMP, a triage dump, or a raw image")
        sp.add_argument("--raw", action="store_true", help="the file is a raw physical image")
        sp.add_argument("--machine", choices=["x86", "x64"], help="raw images: architecture")
        sp.add_argument("--dtb", type=_int, help="raw images: directory table base (hex)")

    sp = sub.add_parser("info", help="header facts (like dumpchk / .bugcheck / vertarget)")
    dump_arg(sp)
    sp.set_defaults(func=cmd_info)
    sp = sub.add_parser("pte", help="page-table walk of an address (!pte)")
    dump_arg(sp)
    sp.add_argument("address", type=_int)
    sp.set_defaults(func=cmd_pte)
    for name in ("db", "dd", "dq"):
        sp = sub.add_parser(name, help=f"display memory ({name})")
        dump_arg(sp)
        sp.add_argument("address", type=_int)
        sp.add_argument("-l", "--length", type=lambda s: int(s, 0), default=0x80, help="bytes")
        sp.add_argument("--physical", action="store_true", help="address is physical (!db)")
        sp.set_defaults(func=cmd_dump_memory)
    sp = sub.add_parser("demo", help="forge a dump and show what ntdump reads from it")
    sp.add_argument("--out", help="keep the forged dump at this path")
    sp.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # pragma: no cover - e.g. `ntdump info x | head`
        return 0
    except (NtdumpError, OSError) as e:
        where = getattr(args, "dump", None)
        print(f"ntdump: {where + ': ' if where else ''}{e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
