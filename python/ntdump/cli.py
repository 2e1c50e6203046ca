"""The ``ntdump`` command line.

Sub-commands grow with the library; each prints what the matching WinDbg command would, laid out
for a terminal, and exits non-zero with one clear line on stderr for an unreadable dump.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from ._format import kd_addr
from ._limits import MAX_DISPLAY_BYTES, check_display, hexdump_cells, read_cells
from ._native import __version__
from .batch.cli import add_commands as add_batch_command
from .dump import Dump
from .dump import open as nt_open
from .errors import NtdumpError
from .kd import ADDRESS_SYNTAX, KdSession, interactive, parse_number
from .stack import stack_text, to_frame
from .trend import add_command as add_trend_command
from .triage import triage


def _int(s: str) -> int:
    """Parse an address the way kd does: hex by default, ``0x`` optional, backtick separators.
    Anything that is not a number from 0 to 2^64 - 1 is refused (argparse: one line, status 2)."""
    try:
        return parse_number(s)
    except NtdumpError as e:
        raise argparse.ArgumentTypeError(f"{s!r} is not an address: {e}") from None


def _length(s: str) -> int:
    """A byte count for display commands (Python syntax: ``0x100``, ``256``), at most
    :data:`~ntdump._limits.MAX_DISPLAY_BYTES`."""
    try:
        n = int(s, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not a length") from None
    if not 0 <= n <= MAX_DISPLAY_BYTES:
        raise argparse.ArgumentTypeError(
            f"{s} bytes is outside 0 … {MAX_DISPLAY_BYTES:#x} (the display limit; use "
            "Dump.iter_read in Python for more)")
    return n


def _count(s: str) -> int:
    """An element count for dps/dds/dqs (decimal), at most the display limit / 4."""
    try:
        n = int(s, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not a count") from None
    if not 0 <= n <= MAX_DISPLAY_BYTES // 4:
        raise argparse.ArgumentTypeError(
            f"{s} is outside 0 … {MAX_DISPLAY_BYTES // 4} (the display limit)")
    return n


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``ntdump <command>: error: …`` on stderr, status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


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
    if getattr(args, "symbols", None) is not None:
        kw["symbols"] = args.symbols
    if getattr(args, "offline", False):
        kw["offline"] = True
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
    check_display(args.length, args.command)
    with _open(args) as d:
        va = KdSession(d).eval(args.address)
        ptr = d.info.pointer_size
        top = 1 << 64 if args.physical or ptr == 8 else 1 << 32
        read = d.read_phys if args.physical else d.read
        # Unreadable bytes print as ?? (as kd does); nothing past the top wraps to address 0.
        cells = read_cells(read, va, args.length, top)
        print("\n".join(hexdump_cells(
            va, cells, width, lambda a: kd_addr(a, ptr),
            lambda v, w: kd_addr(v, 4) if w == 4 else kd_addr(v))))
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
                frame: Callable[[Any, argparse.Namespace], Any] | None = None,
                fail_status: int = 2):
    """A sub-command that runs a kd command line (text) or returns a table (--json/--csv). A
    failing command prints one line on stderr and exits ``fail_status`` (2; 1 for "ran, but found
    nothing", e.g. ``x`` with no match)."""

    def run(args: argparse.Namespace) -> int:
        with _open(args) as d:
            if frame is not None and (getattr(args, "json", False) or getattr(args, "csv", False)):
                _emit_frame(frame(d, args), args)
                return 0
            s = KdSession(d)
            out = s.run_one(build(args))
            if s.failures:  # one line on stderr (the text kd would have printed)
                print(f"ntdump: {args.dump}: {' '.join(out.split())}", file=sys.stderr)
                return fail_status
            print(out)
        return 0

    return run


def _lm_command(args: argparse.Namespace) -> int:
    """``lm``: the table, or kd's text; an empty list from a dump that should have one is said
    on stderr (with the reason) and exits 1 ("ran, but found nothing")."""
    import warnings

    from .errors import NtdumpWarning

    with _open(args) as d, warnings.catch_warnings():
        warnings.simplefilter("ignore", NtdumpWarning)  # said once below, on stderr
        mods = d.modules
        if getattr(args, "json", False) or getattr(args, "csv", False):
            _emit_frame(mods.to_frame(), args)
        else:
            s = KdSession(d)
            out = s.run_one("lm " + " ".join(getattr(args, "options", [])))
            if s.failures:
                print(f"ntdump: {args.dump}: {' '.join(out.split())}", file=sys.stderr)
                return 2
            print(out)
        if not mods and d.info.layout != "triage":
            print(f"ntdump: {d.empty_modules_reason()}", file=sys.stderr)
            return 1
    return 0


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


def cmd_analyze(args: argparse.Namespace) -> int:
    from .analyze import analyze

    with _open(args) as d:
        a = analyze(d)
        print(a.to_json(indent=1) if args.json else a.text())
    return 0


def cmd_kd(args: argparse.Namespace) -> int:
    with _open(args) as d:
        if args.command_line:
            s = KdSession(d)
            print(s.run(args.command_line))
            if s.failures:
                print(f"ntdump: kd: {s.failures} command(s) failed", file=sys.stderr)
                return 1
        else:
            interactive(d)
    return 0


def symbol_args(sp: argparse.ArgumentParser) -> None:
    """``--symbols PATH`` and ``--offline``, on every command that opens a dump."""
    sp.add_argument("--symbols", metavar="PATH",
                    help="symbol path in _NT_SYMBOL_PATH syntax (srv*CACHE*URL;DIR); default: "
                    "the _NT_SYMBOL_PATH environment variable")
    sp.add_argument("--offline", action="store_true",
                    help="never contact a symbol server (local stores and caches only)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
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
        symbol_args(sp)
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
    sp = add("lm", "loaded modules (lm), sorted by start address; exit status 1 when the list "
             "is empty", _lm_command, table=True)
    sp.add_argument("options", nargs="*", help="kd's lm options: o (loaded only), l (symbols "
                    "loaded), v (verbose), m PATTERN, M PATH_PATTERN, a ADDRESS, sm, 1m; e.g. "
                    "'ntdump lm DUMP v m amd*' or 'ntdump lm DUMP vm amdppm'")
    sp = add("lmi", "module information (!lmi)", _kd_command(lambda a: f"!lmi {a.module}"))
    sp.add_argument("module", help="name or address")
    sp = add("x", "examine symbols (x nt!ExAlloc*); exit status 1 when nothing matches",
             _kd_command(lambda a: f"x {a.pattern}", lambda d, a: d.symbols(a.pattern),
                         fail_status=1), table=True)
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
        sp.add_argument("-n", "--count", type=_count, default=16)
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
        sp.add_argument("-l", "--length", type=_length, default=0x80,
                        help=f"bytes (at most {MAX_DISPLAY_BYTES:#x})")
        sp.add_argument("--physical", action="store_true", help="address is physical (!db)")
    sp = add("triage", "the whole investigation in one report", cmd_triage)
    g = sp.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true", help="JSON (docs/triage-schema.json)")
    g.add_argument("--markdown", action="store_true")
    sp.add_argument("--pdb", help="kernel PDB to load first (enables symbol-only fields)")
    sp = add("analyze", "the crash: bug check, stack, probably caused by, bucket (!analyze -v)",
             cmd_analyze)
    sp.add_argument("--json", action="store_true", help="the analysis as JSON")
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


def _warning_line(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """Python warnings (e.g. :class:`~ntdump.errors.NtdumpWarning`) as one line on stderr, without
    the source line Python's default format adds."""
    print(f"ntdump: warning: {' '.join(str(message).split())}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or one line on stderr (2)
        return e.code if isinstance(e.code, int) else 2
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _warning_line
            return int(args.func(args) or 0)
    except BrokenPipeError:  # pragma: no cover - e.g. `ntdump lm x | head`
        return 0
    except (NtdumpError, OSError) as e:
        where = getattr(args, "dump", None)
        # An OSError about the dump itself names the file once (not "[Errno 21] …: 'path'").
        msg = e.strerror if isinstance(e, OSError) and e.strerror and e.filename == where else e
        print(f"ntdump: {where + ': ' if where else ''}{' '.join(str(msg).split())}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ntdump: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: still one line and status 2; NTDUMP_DEBUG=1 re-raises
        if os.environ.get("NTDUMP_DEBUG"):
            raise
        where = getattr(args, "dump", None)
        print(f"ntdump: {where + ': ' if where else ''}internal error: {type(e).__name__}: "
              f"{' '.join(str(e).split())} (NTDUMP_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
