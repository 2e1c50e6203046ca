"""The ``ntdump`` command line.

Sub-commands grow with the library; each prints what the matching WinDbg command would, laid out
for a terminal, and exits non-zero with one clear line on stderr for an unreadable dump.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._format import hexdump
from ._native import __version__
from .batch.cli import add_commands as add_batch_command
from .dump import Dump
from .dump import open as nt_open
from .errors import NtdumpError
from .kd import ADDRESS_SYNTAX, KdSession, interactive, read_with_holes
from .stack import stack_text, to_frame
from .trend import add_command as add_trend_command
from .triage import triage


def _int(s: str) -> int:
    """Parse an address the way kd does: hex by default, ``0x`` optional, backtick separators."""
    s = s.strip().replace("`", "")
    if s.lower().startswith("0n"):
        return int(s[2:], 10)
    return int(s, 16)


def _description(summary: str) -> str:
    """A sub-command's ``--help`` text: what it does, then how addresses are written."""
    return f"{summary[:1].upper()}{summary[1:]}.\n\n{ADDRESS_SYNTAX}"


def _open(args: argparse.Namespace) -> Dump:
    kw: dict[str, Any] = {}
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


def cmd_k(args: argparse.Namespace) -> int:
    images = {Path(f).name: f for f in args.image}
    with _open(args) as d:
        sw = d.stack_walk(args.processor, args.frames, images=images or None)
        if args.json or args.csv:
            df = to_frame(sw, d.path)
            print(df.to_json(orient="records") if args.json else df.to_csv(index=False), end="")
            return 0
        print(stack_text(sw, d._stack.read_args, args=args.b, numbers=args.n, verbose=args.v))
        for w in sw.warnings:
            print(f"ntdump: {w}", file=sys.stderr)
    return 0


def cmd_pte(args: argparse.Namespace) -> int:
    with _open(args) as d:
        print(d.walk(KdSession(d).eval(args.address)))
    return 0


def cmd_dump_memory(args: argparse.Namespace) -> int:
    width = {"db": 1, "dd": 4, "dq": 8}[args.command]
    with _open(args) as d:
        va = KdSession(d).eval(args.address)
        data, valid = read_with_holes(d, va, args.length, physical=args.physical)
        print("\n".join(hexdump(va, data, width, d.info.pointer_size, valid)))
    return 0


DEMO_CHAIN = (
    "!vm",
    "!poolused /t2 2",
    "x nt!ExAllocatePool",
    "!for_each_module s-d @#Base @#End {ex_allocate_pool:x}",
    "dps {hit:x} L6",
    "!lmi {hit:x}",
)
"""The founding story's kd commands, in order (DESIGN.md)."""


def cmd_demo(args: argparse.Namespace) -> int:
    """Forge the founding story's dump, walk the investigation in kd syntax, then triage it.
    ``--out FILE`` keeps the dump (otherwise it lives in a temporary folder, deleted at the end)."""
    from . import forge  # only the demo forges (start-up time of every other command)

    with tempfile.TemporaryDirectory(prefix="ntdump-demo-") as tmp:
        path = Path(args.out) if args.out else Path(tmp) / "MEMORY.DMP"
        st = forge.founding_story(path)
        mem = st.scenario.mem
        print(f"Forged {path}: a Server 2003 x86 PAE machine ({mem.page_count:,} pages of RAM, "
              f"{mem.page_count * 4 // 1024:,} MiB) whose NonPagedPool ran out.")
        # Say plainly what the demo supplies that a real investigation gets from symbols.
        names = ", ".join(sorted(st.symbols))
        print("In place of symbols: the forged kernel has no PDB, so the demo hands ntdump the "
              f"addresses a symbol server would give for {names} (d.add_symbols); "
              "everything else is read from the dump itself (KDBG, loader list, pool tables, "
              "images). With a real dump: ntdump.open(path, symbols='srv*CACHE*URL') or "
              "--pdb.\n")
        with nt_open(path) as d:
            d.add_symbols(st.symbols)
            kd = KdSession(d)
            hit = None
            for template in DEMO_CHAIN:
                if "{hit" in template and hit is None:
                    continue
                cmd = template.format(ex_allocate_pool=st.scenario.ex_allocate_pool, hit=hit or 0)
                print(f"0: kd> {cmd}")
                out = kd.run(cmd)
                print(out + "\n")
                if cmd.startswith("!for_each_module") and out.strip():
                    hit = int(out.split()[0].replace("`", ""), 16)
            print(f"0: kd> $$ ... or all of it in one command: ntdump triage {path}\n")
            print(triage(d).text())
        print()
        if args.out:
            print(f"The dump is kept at {path}. Try: ntdump triage {path}   or   "
                  f"ntdump kd {path}  (without the symbols the demo supplied, the count of "
                  "failed pool allocations shows as unknown).")
        else:
            print("The dump was written to a temporary folder and is deleted now. To keep it: "
                  "ntdump demo --out MEMORY.DMP, then ntdump triage MEMORY.DMP.")
    return 0


def _hex_strings(df):
    """``df`` with its address columns as ``0x…`` strings (``--hex``); other columns unchanged."""
    cols = [c for c in df.attrs.get("address_columns") or () if c in df.columns]
    if not cols:
        return df
    out = df.copy()
    for c in cols:
        out[c] = [None if v is None or v != v else f"{int(v):#x}" for v in
                  df[c].astype(object).where(df[c].notna(), None)]
    return out


def _emit_frame(df, args: argparse.Namespace) -> bool:
    """Write a DataFrame as JSON or CSV when asked; return True if written. Addresses stay
    integers unless ``--hex`` asks for ``0x…`` strings."""
    if getattr(args, "hex", False):
        df = _hex_strings(df)
    if getattr(args, "json", False):
        print(df.to_json(orient="records", default_handler=str))
        return True
    if getattr(args, "csv", False):
        print(df.to_csv(index=False), end="")
        return True
    return False


def _kd_command(build: Callable[[argparse.Namespace], str],
                frame: Callable[[Any, argparse.Namespace], Any] | None = None):
    """A sub-command that runs a kd command line (text) or returns a table (--json/--csv)."""

    def run(args: argparse.Namespace) -> int:
        with _open(args) as d:
            if frame is not None and (getattr(args, "json", False) or getattr(args, "csv", False)):
                _emit_frame(frame(d, args), args)
                return 0
            s = KdSession(d)
            out = s.run_one(build(args))
            if s.last_error is not None:
                print(f"ntdump: {args.dump}: {s.last_error}", file=sys.stderr)
                return 1
            print(out)
        return 0

    return run


def cmd_vm(args: argparse.Namespace) -> int:
    import json

    with _open(args) as d:
        v = d.vm()
        print(json.dumps(v.to_dict(), indent=1) if args.json else v)
    return 0


def cmd_triage(args: argparse.Namespace) -> int:
    with _open(args) as d:
        if getattr(args, "pdb", None):
            d.load_pdb(args.pdb)
        r = triage(d)
        if args.json:
            print(r.to_json(indent=1))
        elif args.markdown:
            print(r.to_markdown())
        else:
            print(r.text())
    return 0


def cmd_kd(args: argparse.Namespace) -> int:
    with _open(args) as d:
        if args.command_line:
            s = KdSession(d)
            print(s.run(args.command_line))
            return 1 if s.failures else 0
        interactive(d)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ntdump",
        description="Read Windows kernel crash dumps: what kd answers, from any OS.",
    )
    p.add_argument("--version", action="version", version=f"ntdump {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def dump_arg(sp: argparse.ArgumentParser, table: bool = False) -> None:
        sp.add_argument("dump", help="MEMORY.DMP, a triage dump, or a raw image")
        sp.add_argument("--raw", action="store_true", help="the file is a raw physical image")
        sp.add_argument("--machine", choices=["x86", "x64"], help="raw images: architecture")
        sp.add_argument("--dtb", type=_int, help="raw images: directory table base (hex)")
        if table:
            g = sp.add_mutually_exclusive_group()
            g.add_argument("--json", action="store_true", help="the table as JSON records")
            g.add_argument("--csv", action="store_true", help="the table as CSV")
            sp.add_argument("--hex", action="store_true", help="with --json/--csv: addresses as "
                            "0x… strings (default: integers)")

    def add(name: str, help: str, func, table: bool = False, **extra: Any):
        sp = sub.add_parser(name, help=help, description=_description(help),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        dump_arg(sp, table)
        sp.set_defaults(func=func, **extra)
        return sp

    add("info", "header facts (dumpchk, .bugcheck, vertarget)", cmd_info)
    sp = add("vm", "virtual memory summary (!vm)", cmd_vm)
    sp.add_argument("--json", action="store_true")
    sp = add("poolused", "pool usage by tag (!poolused)", _kd_command(
        lambda a: f"!poolused {a.flags} {a.tag or ''} " + (f"/t {a.top}" if a.top else ""),
        lambda d, a: d.pool.used(flags=int(a.flags, 16), tags=a.tag, top=a.top)), table=True)
    sp.add_argument("flags", nargs="?", default="0", help="!poolused flags (hex): 1 verbose, "
                    "2 sort by nonpaged, 4 sort by paged, 8 session")
    sp.add_argument("tag", nargs="?", help="tag or wildcard (Thr*)")
    sp.add_argument("-t", "--top", type=int, help="only the top N tags (/t N)")
    sp = add("pool", "the pool page holding an address (!pool)",
             _kd_command(lambda a: f"!pool {a.address}"))
    sp.add_argument("address", help="kd expression (see above)")
    sp = add("poolfind", "find pool blocks by tag (!poolfind)", _kd_command(
        lambda a: f"!poolfind {a.tag}",
        lambda d, a: d.pool.scan(tags=[a.tag], progress=False)), table=True)
    sp.add_argument("tag")
    sp = add("lm", "loaded modules (lm), sorted by start address", _kd_command(
        lambda a: "lm " + " ".join(a.options), lambda d, a: d.modules.to_frame()), table=True)
    sp.add_argument("options", nargs="*", help="kd's lm options: o (loaded only), l (symbols "
                    "loaded), v (verbose), m PATTERN, M PATH_PATTERN, a ADDRESS, sm, 1m; e.g. "
                    "'ntdump lm DUMP v m amd*' or 'ntdump lm DUMP vm amdppm'")
    sp = add("lmi", "module information (!lmi)", _kd_command(lambda a: f"!lmi {a.module}"))
    sp.add_argument("module", help="name or address")
    sp = add("x", "examine symbols (x nt!ExAlloc*)", _kd_command(
        lambda a: f"x {a.pattern}", lambda d, a: d.symbols(a.pattern)), table=True)
    sp.add_argument("pattern")
    sp = add("ln", "nearest symbol (ln)", _kd_command(lambda a: f"ln {a.address}"))
    sp.add_argument("address")
    sp = add("s", "search memory (s -d start L?len pattern)", _kd_command(
        lambda a: "s " + " ".join(a.args)), table=False)
    sp.add_argument("args", nargs=argparse.REMAINDER,
                    help="kd syntax, e.g. -d fffff804`7ba00000 L?0x100000 e0894d1f")
    for name in ("dps", "dds", "dqs"):
        sp = add(name, f"display words and symbols ({name})", _kd_command(
            (lambda n: lambda a: f"{n} {a.address} L{a.count:x}")(name),
            (lambda n: lambda d, a: getattr(d, n)(KdSession(d).eval(a.address), a.count))(name)),
            table=True)
        sp.add_argument("address")
        sp.add_argument("-n", "--count", type=int, default=16)
    sp = add("dh", "PE headers of a module (!dh)", _kd_command(lambda a: f"!dh {a.module}"))
    sp.add_argument("module", help="name or address")
    sp = add("k", "the crash stack (k, kb, kn, kv)", cmd_k, table=True)
    sp.add_argument("-b", action="store_true", help="with the first arguments (kb)")
    sp.add_argument("-n", action="store_true", help="with frame numbers (kn)")
    sp.add_argument("-v", action="store_true", help="verbose: arguments, trap frames (kv)")
    sp.add_argument("-p", "--processor", type=int, help="that processor's saved context")
    sp.add_argument("--frames", type=int, default=64, help="most frames (default 64)")
    sp.add_argument("--image", action="append", default=[], metavar="FILE",
                    help="image file of a module whose unwind data the dump lacks (repeatable)")
    sp = add("pte", "page-table walk of an address (!pte)", cmd_pte)
    sp.add_argument("address", help="kd expression (see above)")
    for name in ("db", "dd", "dq"):
        sp = add(name, f"display memory ({name})", cmd_dump_memory)
        sp.add_argument("address", help="kd expression (see above)")
        sp.add_argument("-l", "--length", type=lambda s: int(s, 0), default=0x80, help="bytes")
        sp.add_argument("--physical", action="store_true", help="address is physical (!db)")
    sp = add("triage", "the whole investigation in one report", cmd_triage)
    g = sp.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true", help="JSON (docs/triage-schema.json)")
    g.add_argument("--markdown", action="store_true")
    sp.add_argument("--pdb", help="kernel PDB to load first (enables symbol-only fields)")
    sp = add("kd", "WinDbg command syntax: -c \"cmd; cmd\" or an interactive prompt", cmd_kd)
    sp.add_argument("-c", dest="command_line", help="commands to run, separated by ';'")
    sp = sub.add_parser("demo", help="forge the founding story's dump and triage it",
                        description="Forge the founding story's dump (a Server 2003 machine whose "
                        "NonPagedPool leaked through a driver named by a GUID), investigate it in "
                        "kd syntax, then triage it.")
    sp.add_argument("--out", help="keep the forged dump at this path")
    sp.set_defaults(func=cmd_demo)
    add_batch_command(sub)
    add_trend_command(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # pragma: no cover - e.g. `ntdump lm x | head`
        return 0
    except (NtdumpError, OSError) as e:
        where = getattr(args, "dump", None)
        # An OSError about the dump itself names the file once (not "[Errno 21] …: 'path'").
        msg = e.strerror if isinstance(e, OSError) and e.strerror and e.filename == where else e
        print(f"ntdump: {where + ': ' if where else ''}{msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
