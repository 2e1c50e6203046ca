"""A kd-style command line over an open dump: WinDbg's syntax in, WinDbg-like text out.

>>> s = KdSession(d)                                        # doctest: +SKIP
>>> print(s.run("!vm; !poolused /t2 2; x nt!ExAlloc*"))     # doctest: +SKIP

Supported commands: ``!vm``, ``!poolused [flags] [tag] [/t N]``, ``!pool addr``, ``!poolfind tag``,
``lm``, ``!lmi name|addr``, ``x mod!pattern``, ``ln addr``, ``s -b|-w|-d|-q|-a|-u range pattern``,
``!for_each_module <command using @#Base @#End @#ModuleName>``, ``dps|dds|dqs addr [L n]``,
``db|dd|dq addr [L n]``, ``!dh addr|name``, ``!pte addr``, ``.bugcheck``,
``!analyze [-v | -show code [p1 …]]`` (the bug check and what its parameters mean; with ``-v`` the
stack, probably-caused-by and bucket id, docs/triage.md), ``vertarget``, ``r``,
``k``/``kb``/``kn``/``kv`` ``[count]`` (the crash stack, docs/stack.md),
``? expr``. Expressions: hex by default (``0x`` optional, ``0n`` decimal, backtick separators as in
``fffff804`7ba00000``), ``mod!symbol``, ``poi(expr)``, ``@reg``, ``+ - *``, parentheses.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import bugcheck
from ._format import kd_addr
from ._limits import (
    MAX_EXPR_DEPTH,
    MAX_SEARCH_HITS,
    U64,
    check_display,
    hexdump_cells,
    read_cells,
)
from ._symsrv import reload_text, sympath_text
from .analyze import analyze
from .errors import KdError, NtdumpError
from .symbols.options import MICROSOFT_SERVER

if TYPE_CHECKING:
    from .dump import Dump


_TOKEN = re.compile(
    r"\s*(?:(?P<num>0n[0-9]+|0x[0-9a-fA-F`]+|[0-9a-fA-F][0-9a-fA-F`]*(?![\w!]))"
    r"|(?P<sym>[A-Za-z_{][\w{}\-.]*![\w@?$]+|@#?\w+)"
    r"|(?P<poi>poi\s*\()"
    r"|(?P<op>[-+*()])"
    r"|(?P<name>[A-Za-z_]\w*))"
)


class Expr:
    """kd's MASM expression evaluator, for the subset users type at dumps."""

    def __init__(self, session: KdSession, text: str, env: dict[str, int] | None = None) -> None:
        self.s = session
        self.env = env or {}
        self.toks: list[tuple[str, str]] = []
        self.depth = 0
        pos = 0
        text = text.strip()
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if not m or m.end() == pos:
                raise KdError(f"Syntax error in '{text}' at '{text[pos:]}'")
            pos = m.end()
            kind = m.lastgroup or ""
            self.toks.append((kind, m.group(kind).strip()))
        self.i = 0

    def value(self) -> int:
        """Evaluate the whole expression."""
        v = self._sum()
        if self.i != len(self.toks):
            raise KdError(f"Extra characters in expression: {self.toks[self.i][1]!r}")
        return v

    def _peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def _sum(self) -> int:
        v = self._prod()
        while (t := self._peek()) and t[1] in "+-" and t[0] == "op":
            self.i += 1
            r = self._prod()
            v = v + r if t[1] == "+" else v - r
        return v & 0xFFFFFFFFFFFFFFFF

    def _prod(self) -> int:
        v = self._atom()
        while (t := self._peek()) and t == ("op", "*"):
            self.i += 1
            v = (v * self._atom()) & 0xFFFFFFFFFFFFFFFF  # 64-bit arithmetic wraps, as in kd
        return v

    def _atom(self) -> int:
        t = self._peek()
        if t is None:
            raise KdError("Expression ends early")
        self.i += 1
        kind, text = t
        if kind == "num":
            return parse_number(text)
        if kind in ("op", "poi") and text != ")":
            self.depth += 1
            if self.depth > MAX_EXPR_DEPTH:
                raise KdError(f"Expression nested too deep (more than {MAX_EXPR_DEPTH} levels)")
            try:
                return self._nested(kind, text)
            finally:
                self.depth -= 1
        return self._leaf(kind, text)

    def _nested(self, kind: str, text: str) -> int:
        if kind == "op" and text == "-":
            return -self._atom() & 0xFFFFFFFFFFFFFFFF
        if kind == "op" and text == "(":
            v = self._sum()
            self._expect(")")
            return v
        if kind == "poi":
            v = self._sum()
            self._expect(")")
            return self.s.d.read_pointer(v)
        raise KdError(f"Syntax error at {text!r}")

    def _leaf(self, kind: str, text: str) -> int:
        if kind == "sym":
            if text.startswith("@#"):
                if text[2:] in self.env:
                    return self.env[text[2:]]
                raise KdError(f"{text} is only defined inside !for_each_module")
            if text.startswith("@"):
                reg = text[1:].lower()
                ctx = self.s.d.info.context
                if reg in ctx:
                    return ctx[reg]
                raise KdError(f"Bad register error at '{text}'")
            return self.s.symbol(text)
        if kind == "name":
            return self.s.symbol(text)
        raise KdError(f"Syntax error at {text!r}")

    def _expect(self, ch: str) -> None:
        t = self._peek()
        if t != ("op", ch):
            raise KdError(f"Missing '{ch}'")
        self.i += 1


def parse_number(text: str) -> int:
    """kd's numbers: hex by default, ``0x`` optional, ``0n`` for decimal, backticks ignored.
    A number that does not fit in 64 bits is refused (KdError), never taken mod 2^64."""
    t = text.replace("`", "").strip()
    digits = t[2:] if t.lower().startswith(("0n", "0x")) else t
    if not digits or len(digits) > 64 or not digits.isascii() or not digits.isalnum():
        raise KdError(f"Syntax error in '{text}'")
    try:
        v = int(digits, 10 if t.lower().startswith("0n") else 16)
    except ValueError:
        raise KdError(f"Syntax error in '{text}'") from None
    if v >= U64:
        raise KdError(f"Numeric overflow in '{text}': it does not fit in 64 bits")
    return v


ADDRESS_SYNTAX = """\
Addresses and numbers are kd expressions: hex by default (0x optional), 0n for decimal (0n4096),
backtick separators (fffff804`7ba00000), mod!sym (nt!ExAllocatePool), mod+off (nt+0x1000),
poi(expr) (the pointer stored at expr), @rip / @esp (registers of the dump's context), + - * ( ).
Ranges: start end, or start L count (elements), or start L?count (no size check)."""
"""How kd expressions and ranges are written: every ``--help`` and ``.help`` shows it."""

COMMAND_HELP: tuple[tuple[str, str], ...] = (
    ("!vm", "virtual memory summary: pool usage and limits, commit, failed allocations"),
    ("!poolused [flags] [tag] [/t N]", "pool usage by tag (flags 2: sort nonpaged, 4: paged)"),
    ("!pool addr", "the pool page holding addr, block by block"),
    ("!poolfind tag [0|1]", "pool blocks with this tag (0 nonpaged, 1 paged)"),
    ("lm [o|l|v] [m pattern], lmvm name", "loaded modules, sorted by start address"),
    ("!lmi name|addr", "module information: headers, debug record, on-disk hint"),
    ("x mod!pattern", "symbols (exports, loaded PDB symbols) matching a wildcard"),
    ("ln addr", "nearest symbol at or below addr"),
    ("s -b|-w|-d|-q|-a|-u range pattern", "search memory"),
    ("!for_each_module cmd", "run cmd for every module, with @#Base @#End @#ModuleName"),
    ("dps|dds|dqs addr [L n]", "pointer-sized / 4-byte / 8-byte values and their symbols"),
    ("db|dd|dq addr [L n]", "bytes / dwords / qwords; ?? where memory cannot be read"),
    ("!dh name|addr", "PE headers of a module"),
    ("!pte addr", "page-table walk of a virtual address"),
    ("k, kb, kn, kv, kbn, knb, kvn, knv [count]",
     "the crash stack (b: first arguments, n: frame numbers, v: verbose)"),
    (".bugcheck", "the bug check code and its four parameters"),
    ("!analyze [-show code p1 ...]", "the bug check explained: name, parameter meanings"),
    ("vertarget", "Windows build, processors, kernel base, session time"),
    ("r", "registers of the dump's context record"),
    ("? expr", "evaluate an expression"),
    (".sympath [path], .sympath+ path", "show, set or extend the symbol path (_NT_SYMBOL_PATH)"),
    (".symfix [cache], .symfix+ [cache]", "Microsoft's public symbol server with a local cache"),
    (".reload", "load symbols again along the symbol path"),
    ("dt [mod!]type [addr]", "a type from a loaded PDB, or the value of that type at addr"),
    (".help, help", "this list"),
)
"""Every command :class:`KdSession` runs, with one line each (``.help``)."""


class KdSession:
    """Runs kd commands against one dump and returns their text output."""

    def __init__(self, d: Dump) -> None:
        self.d = d
        self.ptr = d.info.pointer_size
        self._commands: dict[str, Callable[[str], str]] = {
            "!vm": self._vm,
            "!poolused": self._poolused,
            "!pool": self._pool,
            "!poolfind": self._poolfind,
            "lm": self._lm,
            "!lmi": self._lmi,
            "x": self._x,
            "ln": self._ln,
            "s": self._s,
            "!for_each_module": self._for_each_module,
            "dps": lambda a: self._dps(a, "dps"),
            "dds": lambda a: self._dps(a, "dds"),
            "dqs": lambda a: self._dps(a, "dqs"),
            "db": lambda a: self._db(a, 1),
            "dd": lambda a: self._db(a, 4),
            "dq": lambda a: self._db(a, 8),
            "!dh": self._dh,
            "!pte": self._pte,
            ".bugcheck": self._bugcheck,
            "!analyze": self._analyze,
            "vertarget": self._vertarget,
            "r": self._r,
            "?": self._eval,
            ".sympath": self._sympath,
            ".sympath+": lambda a: self._sympath(a, append=True),
            ".symfix": self._symfix,
            ".symfix+": lambda a: self._symfix(a, append=True),
            ".reload": self._reload,
            "dt": self._dt,
            ".help": self._help,
            "help": self._help,
        }
        for k in ("k", "kb", "kn", "kv", "kbn", "knb", "kvn", "knv"):
            self._commands[k] = (lambda c: lambda a: self._k(c, a))(k)

    # -- plumbing --------------------------------------------------------------------------
    def symbol(self, name: str) -> int:
        """Resolve ``mod!name`` (exports or loaded symbols) or a bare module name (its base)."""
        if "!" not in name:
            m = self.d.modules.get(name)
            if m is not None:
                return m.base
            raise KdError(f"Couldn't resolve error at '{name}'")
        mapped = getattr(self.d, "_mapped_symbol", lambda n: None)(name)
        if mapped is not None:
            return mapped
        try:
            return self.d.symbol(name)
        except Exception as e:
            raise KdError(f"Couldn't resolve error at '{name}'") from e

    def eval(self, text: str, env: dict[str, int] | None = None) -> int:
        """Evaluate a kd expression."""
        return Expr(self, text, env).value()

    def parse_range(self, args: list[str], env: dict[str, int] | None = None,
                    unit: int = 1) -> tuple[int, int, list[str]]:
        """``start end`` or ``start L[?]count`` at the front of ``args``; returns (start, end
        exclusive, rest). ``count`` is in elements of ``unit`` bytes, as kd counts."""
        if not args:
            raise KdError("Range expected")
        start = self.eval(args[0], env)
        if len(args) < 2:
            raise KdError("Range end expected")
        a = args[1]
        if a[:1] in "lL":
            n = a[1:]
            if n.startswith("?"):
                n = n[1:]
            if not n and len(args) > 2:
                n, args = args[2], [*args[:2], *args[3:]]
            count = self.eval(n, env)
            return start, min(start + count * unit, self.top), args[2:]
        end = self.eval(a, env)
        if end < start:
            raise KdError(f"Range error: end {kd_addr(end, self.ptr)} is before the start")
        return start, min(end + 1, self.top), args[2:]

    def run(self, line: str) -> str:
        """Run one or more ``;``-separated commands (``!for_each_module`` takes the rest).
        :attr:`failures` counts the commands that failed (their error text is in the output)."""
        out = [self.run_one(cmd) for cmd in split_commands(line)]
        return "\n".join(o for o in out if o)

    def run_one(self, cmd: str, env: dict[str, int] | None = None) -> str:
        """Run a single command; errors come back as kd-like error text (one line, no Python
        exception names), never exceptions; each failure counts in :attr:`failures` and leaves
        its text in :attr:`last_error`."""
        ok, text = self._run_one(cmd, env)
        self.last_error = None if ok else text
        if not ok:
            self.failures += 1
        return text

    def _run_one(self, cmd: str, env: dict[str, int] | None) -> tuple[bool, str]:
        cmd = cmd.strip()
        if not cmd:
            return True, ""
        head, _, rest = cmd.partition(" ")
        # "s-d" and "!for_each_module s-d ..." are written without a space.
        m = re.match(r"^(s)(-\w.*)$", head)
        if m:
            head, rest = "s", f"{m.group(2)} {rest}".strip()
        if head.lower().startswith("lm") and head.lower() != "lm":
            head, rest = "lm", f"{head[2:]} {rest}".strip()
        if head.startswith("?") and head != "?":
            head, rest = "?", head[1:] + " " + rest
        fn = self._commands.get(head.lower())
        if fn is None:
            # WinDbg's words for an unknown extension, then ours for any unknown command.
            what = f"No export {head} found: no such command" if head.startswith("!") else (
                f"{_clip(head)}: no such command")
            return False, f"{what} (.help lists the commands ntdump's kd supports)"
        try:
            if env is not None and head.lower() in ("s", "dps", "dds", "dqs", "db", "dd", "dq"):
                return True, self._with_env(fn, rest, env)
            return True, fn(rest.strip())
        except KdError as e:
            return False, _one_line(str(e))
        except NtdumpError as e:
            return False, _one_line(f"{head}: {e}")
        except RecursionError:
            return False, f"{head}: input nested too deep"
        except Exception as e:  # a bug: still one kd-like line, never a traceback
            return False, _one_line(f"{head}: {e or type(e).__name__}")

    def _with_env(self, fn: Callable[[str], str], rest: str, env: dict[str, int]) -> str:
        self._env = env
        try:
            return fn(rest.strip())
        finally:
            self._env = None

    _env: dict[str, int] | None = None
    failures: int = 0
    """Commands of :meth:`run` that failed, over the session (``ntdump kd -c`` exits 1 if any)."""
    last_error: str | None = None
    """The error message of the last :meth:`run_one` that failed (None when it succeeded): front
    ends print it on stderr and exit non-zero."""

    def _help(self, args: str) -> str:
        """``.help`` / ``help``: each supported command in one line."""
        w = max(len(c) for c, _ in COMMAND_HELP)
        lines = [f"{c:<{w}}  {h}" for c, h in COMMAND_HELP]
        return "\n".join([*lines, "", ADDRESS_SYNTAX])

    # -- commands --------------------------------------------------------------------------
    def _vm(self, args: str) -> str:
        return str(self.d.vm())

    def _poolused(self, args: str) -> str:
        flags, tags, top = 0, None, None
        toks = args.split()
        i = 0
        while i < len(toks):
            t = toks[i]
            if t.lower().startswith("/t"):
                rest = t[2:]
                if not rest and i + 1 < len(toks):
                    i += 1
                    rest = toks[i]
                top = int(rest, 0) if rest.lower().startswith("0x") else int(rest)
            elif re.fullmatch(r"(0x)?[0-9a-fA-F]+", t) and flags == 0 and tags is None:
                flags = int(t, 16)
            else:
                tags = t
            i += 1
        return self.d.pool.used_text(flags=flags, tags=tags, top=top)

    def _pool(self, args: str) -> str:
        return str(self.d.pool.page(self.eval(args.split()[0])))

    def _poolfind(self, args: str) -> str:
        toks = args.split()
        if not toks:
            raise KdError("Usage: !poolfind Tag [PoolType]")
        if len(toks[0]) > 4 or not all(32 <= ord(c) < 127 for c in toks[0]):
            raise KdError(f"Bad pool tag '{_clip(toks[0])}': up to 4 printable ASCII characters "
                          "(? and * as wildcards)")
        pool = {"0": "nonpaged", "1": "paged"}.get(toks[1] if len(toks) > 1 else "", "all")
        df = self.d.pool.scan(tags=[toks[0]], pool=pool, progress=False)
        lines = [f"Scanning large pool allocation table for tag 0x{_tag_hex(toks[0])} ({toks[0]})",
                 ""]
        for _, r in df.iterrows():
            state = "" if r["allocated"] else " (Free)"
            lines.append(f"{kd_addr(int(r['address']), self.ptr)} : tag {r['tag']}, size "
                         f"{int(r['size']):#10x}, {r['pool_type']} pool{state}")
        return "\n".join(lines)

    def _lm(self, args: str) -> str:
        o = parse_lm_options(args)
        mods = sorted(self.d.modules, key=lambda m: m.base)
        if o.pattern is not None:
            pat = o.pattern.lower()
            mods = [m for m in mods if fnmatch.fnmatchcase(m.kd_name.lower(), pat)]
        if o.path_pattern is not None:
            pat = o.path_pattern.lower()
            mods = [m for m in mods if fnmatch.fnmatchcase(m.path.lower(), pat)]
        if o.address is not None:
            va = self.eval(o.address)
            mods = [m for m in mods if m.base <= va < m.end]
        pdb_mods = {k.split("!", 1)[0].lower() for k in self.d.symbol_map}
        exported: set[str] = set()
        if o.loaded_symbols:
            sm = self.d.symbol_modules()
            exported = {str(k).lower() for k, n in zip(sm["kd_name"], sm["exports"], strict=True)
                        if int(n) > 0}
        rows = []
        for m in mods:
            low = m.kd_name.lower()
            state = ("(pdb symbols)" if low in pdb_mods
                     else "(export symbols)" if low in exported else "(deferred)")
            if o.loaded_symbols and state == "(deferred)":
                continue
            rows.append((m, state))
        if o.sort_by_name:
            rows.sort(key=lambda r: r[0].kd_name.lower())
        if o.names_only:
            return "\n".join(m.kd_name for m, _ in rows)
        w = 18 if self.ptr == 8 else 9
        lines = [f"{'start':<{w}}{'end':<{w + 2}}module name"]
        for m, state in rows:
            lines.append(f"{kd_addr(m.base, self.ptr)} {kd_addr(m.end, self.ptr)}   "
                         f"{m.kd_name:<10} {state:<22} {m.path}".rstrip())
            if o.verbose:
                lines += self._lm_verbose(m)
        if o.pattern is None and o.path_pattern is None and o.address is None \
                and not o.loaded_only and not o.loaded_symbols:
            un = self.d.unloaded_modules()
            if len(un):
                lines += ["", "Unloaded modules:"]
                for name, a, b in zip(un["name"], un["start"], un["end"], strict=True):
                    lines.append(f"{kd_addr(int(a), self.ptr)} {kd_addr(int(b), self.ptr)}   "
                                 f"{name}")
        return "\n".join(lines)

    def _lm_verbose(self, m: Any) -> list[str]:
        """``lmv``'s block under a module line: image path and name, timestamp, checksum, size."""
        out = [f"    Image path: {m.path}", f"    Image name: {m.name}"]
        try:
            t = m.time
        except (ValueError, OverflowError, OSError):
            t = None
        crash = self.d.info.system_datetime
        if t is None or (crash is not None and t > crash):
            # Reproducible builds store a hash of the image here, not a time.
            when = f"{m.timestamp:08X} (a build hash, not a time: later than the dump)"
        else:
            when = f"{t:%a %b %d %H:%M:%S %Y} ({m.timestamp:08X})"
        out.append(f"    Timestamp:        {when}")
        out.append(f"    CheckSum:         {m.checksum:08X}")
        out.append(f"    ImageSize:        {m.size:08X}")
        try:
            pdb = m.pdb
        except NtdumpError as e:
            out.append(f"    Symbol file:      (debug directory unreadable: {e})")
        else:
            if pdb is not None:
                out.append(f"    Symbol file:      {pdb.path} ({pdb.key})")
        return out

    def _lmi(self, args: str) -> str:
        a = args.strip()
        target: Any = a
        if self.d.modules.get(a) is None:
            target = self.eval(a)
        return str(self.d.lmi(target))

    def _x(self, args: str) -> str:
        pattern = args.strip()
        if not pattern:
            raise KdError("Usage: x module!pattern (e.g. x nt!ExAlloc*)")
        df = self.d.symbols(pattern)
        if len(df) == 0:
            raise KdError(self._why_no_symbols(pattern))
        unknown = "????????`????????" if self.ptr == 8 else "????????"
        lines = []
        for mod, name, addr, fwd in zip(df["module"], df["name"], df["address"], df["forwarder"],
                                        strict=True):
            try:
                shown = kd_addr(int(addr), self.ptr)
            except (TypeError, ValueError):  # NA: a forwarder whose target is not resolved
                shown = unknown
            line = f"{shown} {mod}!{name}"
            if isinstance(fwd, str) and fwd:
                line += f" (forwarded to {fwd})"
            lines.append(line)
        return "\n".join(lines)

    def _why_no_symbols(self, pattern: str) -> str:
        """Why ``x pattern`` lists nothing: no such module, or the modules' export directories
        cannot be read from this dump, or no export matches."""
        mod = pattern.rpartition("!")[0] if "!" in pattern else "*"
        sm = self.d.symbol_modules()
        hit = [i for i, k in enumerate(sm["kd_name"])
               if fnmatch.fnmatchcase(str(k).lower(), mod.lower())
               or fnmatch.fnmatchcase(str(sm["file_name"][i]).lower(), mod.lower())]
        if not hit:
            return f"x {pattern}: no loaded module matches '{mod}' (see lm)"
        errs = [(str(sm["kd_name"][i]), _why_no_exports(sm["error"][i], sm["warnings"][i]))
                for i in hit if int(sm["exports"][i]) == 0]
        errs = [(n, why) for n, why in errs if why]
        if errs and len(errs) == len(hit):
            name, why = errs[0]
            more = f" (and {len(errs) - 1} more modules)" if len(errs) > 1 else ""
            return f"x {pattern}: no symbols can be listed: {name}: {why}{more}"
        return f"x {pattern}: no export of {len(hit)} matching module(s) matches"

    def _ln(self, args: str) -> str:
        va = self.eval(args)
        return f"({kd_addr(va, self.ptr)})   {self.d.ln(va)}"

    def _s(self, args: str) -> str:
        toks = shlex.split(args.replace("`", "\x00"))
        toks = [t.replace("\x00", "`") for t in toks]
        width: int | str = 1
        if toks and toks[0].startswith("-"):
            flag = toks.pop(0)[1:].lower()
            widths: dict[str, int | str] = {"b": 1, "w": 2, "d": 4, "q": 8, "a": "ascii",
                                            "u": "unicode"}
            width = widths.get(flag, 0)
            if not width:
                raise KdError(f"Unknown search option -{flag}")
        unit = width if isinstance(width, int) else 1
        start, end, rest = self.parse_range(toks, self._env, unit)
        if not rest:
            raise KdError("Search pattern expected")
        if width in ("ascii", "unicode"):
            pattern: Any = " ".join(rest)
        elif width == 1 and len(rest) > 1:
            pattern = bytes(self.eval(t, self._env) & 0xFF for t in rest)
        else:
            pattern = self.eval(rest[0], self._env)
            if width == 1:
                pattern = bytes([pattern & 0xFF])
        df = self.d.search(pattern, width=width, within=(start, end),
                           limit=MAX_SEARCH_HITS + 1)
        more = len(df) > MAX_SEARCH_HITS
        df = df.iloc[:MAX_SEARCH_HITS]
        out = []
        for a in df["address"]:
            a = int(a)
            data = read_cells(lambda v, k: self.d.read(v, k), a, 16, self.top)
            vals = " ".join("????????" if None in data[i : i + 4] or len(data) < i + 4
                            else bytes(data[i : i + 4][::-1]).hex()  # type: ignore[arg-type]
                            for i in range(0, 16, 4))
            out.append(f"{kd_addr(a, self.ptr)}  {vals}")
        if more:
            out.append(f"... search stopped after {MAX_SEARCH_HITS} hits "
                       "(Dump.search in Python returns them all)")
        return "\n".join(out)

    _for_each_depth = 0

    def _for_each_module(self, args: str) -> str:
        if self._for_each_depth or _FOR_EACH.match(args):
            raise KdError("!for_each_module cannot be nested")
        self._for_each_depth += 1
        try:
            return self._for_each_module_body(args)
        finally:
            self._for_each_depth -= 1

    def _for_each_module_body(self, args: str) -> str:
        out = []
        for m in self.d.modules:
            if getattr(m, "range_ok", True) is False:  # runs past the top of the address space
                continue
            env = {"Base": m.base, "End": m.end, "Size": m.size}
            cmd = args.replace("@#ModuleName", m.kd_name).replace("@#ImageName", m.name)
            r = self.run_one(cmd, env)
            if r:
                out.append(r)
        return "\n".join(out)

    def _count(self, args: str, default: int, unit: int = 1) -> tuple[int, int]:
        """``start``, ``start L[?]count`` or ``start end`` (inclusive, as kd): (start VA, number
        of ``unit``-byte elements)."""
        toks = args.split()
        if not toks:
            raise KdError("Address expected")
        va = self.eval(toks[0], self._env)
        n = default
        if len(toks) > 1 and toks[1][:1] in "lL":
            if toks[1][1:].lstrip("?"):
                n = self.eval(toks[1][1:].lstrip("?"), self._env)
            elif len(toks) > 2:
                n = self.eval(toks[2], self._env)
            else:
                raise KdError("Range count expected after L")
        elif len(toks) > 1:  # an end address: every element that starts at or before it
            end = self.eval(toks[1], self._env)
            if end < va:
                raise KdError(f"Range error: end {kd_addr(end, self.ptr)} is before the start")
            n = (end - va) // unit + 1
        return va, n

    def _dps(self, args: str, kind: str) -> str:
        size = {"dps": None, "dds": 4, "dqs": 8}[kind]
        va, n = self._count(args, 16 if kind == "dps" and self.ptr == 4 else 8,
                            size or self.ptr)
        self._display_limit(n * (size or self.ptr), kind)
        n = min(n, max(0, (self.top - va) // (size or self.ptr)))  # stop at the top: no wrap
        return self.d.dps_text(va, n, size=size)

    def _db(self, args: str, width: int) -> str:
        va, n = self._count(args, 0x80 // width, width)
        self._display_limit(n * width, {1: "db", 4: "dd", 8: "dq"}[width])
        cells = read_cells(lambda a, k: self.d.read(a, k), va, n * width, self.top)
        return "\n".join(hexdump_cells(
            va, cells, width, lambda a: kd_addr(a, self.ptr),
            lambda v, w: kd_addr(v, 4) if w == 4 else kd_addr(v)))

    def _display_limit(self, n_bytes: int, what: str) -> None:
        try:
            check_display(n_bytes, what)
        except NtdumpError as e:
            raise KdError(f"Range error: {e}") from None

    @property
    def top(self) -> int:
        """One past the highest address: 2^32 on x86, 2^64 elsewhere."""
        return 1 << (8 * self.ptr)

    def _dh(self, args: str) -> str:
        a = args.split()[-1] if args.split() else ""
        m = self.d.modules.get(a) or self.d.module(self.eval(a))
        return str(m.headers)

    def _pte(self, args: str) -> str:
        return str(self.d.walk(self.eval(args)))

    def _bugcheck(self, args: str) -> str:

        i = self.d.info
        ps = " ".join(kd_addr(p, self.ptr) for p in i.bugcheck_params)
        return (f"Bugcheck code {i.bugcheck_code:08X}\nArguments {ps}\n"
                f"({bugcheck.name(i.bugcheck_code)})")

    def _analyze(self, args: str) -> str:
        """``!analyze``: the dump's bug check, name and parameters with their meanings, the
        probable cause and the bucket id; ``!analyze -v``: everything (:mod:`ntdump.analyze`: the
        stack too); ``!analyze -show code [p1 …]``: the meanings for a code given by hand (as
        WinDbg's)."""
        words = args.split()
        if words and words[0].lower() == "-show":
            if len(words) < 2:
                raise KdError("!analyze -show needs a bug check code")
            vals = [parse_number(w) for w in words[1:6]]
            b = bugcheck.describe(vals[0], vals[1:])
        elif words and words[0].lower() not in ("-v", "-vv"):
            raise KdError(f"!analyze: unsupported option {words[0]!r} (use -v or -show code)")
        else:
            a = analyze(self.d)
            if words:
                return a.text()
            b = self.d.info.bugcheck
        w = 2 * self.ptr
        lines = [f"{b.name} ({b.code:x})", "Arguments:"]
        for p in b.parameters:
            line = f"Arg{p.index}: {p.value & ((1 << (8 * self.ptr)) - 1):0{w}x}"
            if p.meaning:
                line += f", {p.meaning}" + (f": {p.decoded}" if p.decoded else "")
            lines.append(line)
        if b.manual:
            lines.append("A crash initiated by hand: there is no faulting address.")
        elif b.address is not None:
            lines.append(f"Faulting address ({b.address_source}): {kd_addr(b.address, self.ptr)}")
        if not words:
            pc = a.probably_caused_by
            lines += ["", f"Probably caused by : {pc['image']} ( {pc['symbol']} )" if pc
                      else "Probably caused by : unknown", "",
                      f"FAILURE_BUCKET_ID:  {a.bucket}"]
        return "\n".join(lines)

    def _vertarget(self, args: str) -> str:
        i = self.d.info
        kind = "Free" if i.major_version == 0xF else "Checked" if i.major_version == 0xC else "?"
        lines = [f"Windows Kernel Version {i.build} MP ({i.processors} procs) {kind} "
                 f"{i.machine}{' (PAE)' if i.pae else ''}"]
        if self.d.kernel_base is not None:
            lines.append(f"Kernel base = {kd_addr(self.d.kernel_base, self.ptr)} "
                         f"PsLoadedModuleList = {kd_addr(i.ps_loaded_module_list, self.ptr)}")
        if i.system_datetime:
            lines.append(f"Debug session time: {i.system_datetime:%a %b %d %H:%M:%S.%f %Y} (UTC)")
        return "\n".join(lines)

    def _r(self, args: str) -> str:
        ctx = self.d.info.context
        w = 16 if self.ptr == 8 else 8
        items = [f"{k}={v:0{w}x}" for k, v in ctx.items()]
        return "\n".join(" ".join(items[i : i + 3]) for i in range(0, len(items), 3))

    def _sympath(self, args: str, append: bool = False) -> str:
        return sympath_text(self.d, args, append=append)

    def _symfix(self, args: str, append: bool = False) -> str:
        store = args.strip()
        return self._sympath(f"srv*{store}*{MICROSOFT_SERVER}" if store
                             else f"srv**{MICROSOFT_SERVER}", append=append)

    def _reload(self, args: str) -> str:
        return reload_text(self.d, args)

    def _dt(self, args: str) -> str:
        parts = args.split()
        if not parts:
            raise KdError("Type name expected")
        name = parts[0] if "!" in parts[0] else f"nt!{parts[0]}"
        if len(parts) == 1:
            return str(self.d.dt(name))
        va = self.eval(" ".join(parts[1:]))
        return str(self.d.dt(name, va))

    def _k(self, command: str, args: str) -> str:
        n = self.eval(args) if args.strip() else None
        return self.d.stack_text(command, max_frames=n)

    def _eval(self, args: str) -> str:
        v = self.eval(args)
        signed = v - (1 << 64) if v >> 63 else v
        return f"Evaluate expression: {signed} = {kd_addr(v, self.ptr)}"


PAGE = 0x1000


def _why_no_exports(error: object, warnings: object) -> str | None:
    """Why a module lists no exports: its image error, or the warning about its export directory."""
    if isinstance(error, str) and error:
        return error
    for w in warnings if isinstance(warnings, list) else []:
        if "export" in str(w):
            return str(w)
    return None


def read_with_holes(d: Dump, va: int, n: int, *,
                    physical: bool = False) -> tuple[bytes, list[bool]]:
    """``n`` bytes at ``va`` (a VA, or a PA with ``physical``) read page by page, and one flag per
    byte saying whether it could be read: what ``db``/``dd``/``dq`` print, ``??`` for the holes.
    Unreadable pages come back as zeros with their flags False (never shown as data)."""
    read = d.read_phys if physical else d.read
    data = bytearray()
    valid: list[bool] = []
    a, end = va, va + n
    while a < end:
        step = min(end, (a | (PAGE - 1)) + 1) - a
        try:
            chunk = read(a, step)
            ok = True
        except NtdumpError:
            chunk, ok = bytes(step), False
        data += chunk
        valid += [ok] * step
        a += step
    return bytes(data), valid


def _tag_hex(tag: str) -> str:
    b = tag.encode("latin-1")[:4].ljust(4, b" ")
    return b[::-1].hex()


_FOR_EACH = re.compile(r"\s*!for_each_module", re.IGNORECASE)


class LmOptions:
    """What an ``lm`` option string asks for (``lm o``, ``lml``, ``lmv m amd*``, ``lmvm nt``, ``lm
    sm``, ``lm 1m``, ``lm a addr``, ``lm M *\\drivers\\*``)."""

    def __init__(self) -> None:
        self.verbose = False
        self.loaded_only = False
        self.loaded_symbols = False
        self.sort_by_name = False
        self.names_only = False
        self.pattern: str | None = None
        self.path_pattern: str | None = None
        self.address: str | None = None


def parse_lm_options(args: str) -> LmOptions:
    """Parse what follows ``lm`` the way kd does: option letters run together or apart, then
    ``m pattern`` / ``M pattern`` / ``a address`` (the pattern may follow without a space)."""
    o = LmOptions()
    s = args.strip()
    i = 0
    while i < len(s):
        c = s[i]
        if c.isspace():
            i += 1
            continue
        two = s[i : i + 2]
        if two in ("sm", "1m"):
            o.sort_by_name |= two == "sm"
            o.names_only |= two == "1m"
            i += 2
            continue
        if c in "mMa":
            j = i + 1
            while j < len(s) and s[j].isspace():
                j += 1
            k = j
            while k < len(s) and not s[k].isspace():
                k += 1
            if j == k:
                raise KdError(f"lm {c}: a {'pattern' if c != 'a' else 'address'} is expected")
            value = s[j:k]
            if c == "m":
                o.pattern = value
            elif c == "M":
                o.path_pattern = value
            else:
                o.address = value
            i = k
            continue
        if c == "v":
            o.verbose = True
        elif c == "o":
            o.loaded_only = True
        elif c == "l":
            o.loaded_symbols = True
        elif c not in "DkuecfintpD":
            raise KdError(f"lm: unknown option '{c}' (lm [o|l|v|sm|1m] [m pattern|M pattern|"
                          "a address])")
        i += 1
    return o


def split_commands(line: str) -> list[str]:
    """Split on ``;`` the way kd does: ``!for_each_module`` swallows the rest of the line.
    Linear in the length of the line (one pass, no re-slicing of the remainder)."""
    out: list[str] = []
    pos, n = 0, len(line)
    while pos < n:
        if _FOR_EACH.match(line, pos):
            out.append(line[pos:])
            break
        end = line.find(";", pos)
        if end < 0:
            out.append(line[pos:])
            break
        out.append(line[pos:end])
        pos = end + 1
    return [c.strip() for c in out if c.strip()]


def _one_line(text: str, limit: int = 300) -> str:
    """An error message as one line of at most ``limit`` characters."""
    return _clip(" ".join(text.split()), limit)


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def interactive(d: Dump, prompt: str | None = None) -> None:
    """An interactive ``kd>`` prompt with history (readline where available); Ctrl-D leaves."""
    try:
        import readline  # noqa: F401 - enables history and line editing for input()
    except ImportError:  # pragma: no cover - Windows without pyreadline
        pass
    s = KdSession(d)
    p = prompt or "0: kd> "
    while True:
        try:
            line = input(p)
        except EOFError:
            print()
            return
        except KeyboardInterrupt:
            print()
            continue
        if line.strip() in ("q", "qq", ".exit"):
            return
        out = s.run(line)
        if out:
            print(out)
