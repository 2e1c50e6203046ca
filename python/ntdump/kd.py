"""A kd-style command line over an open dump: WinDbg's syntax in, WinDbg-like text out.

>>> s = KdSession(d)                                        # doctest: +SKIP
>>> print(s.run("!vm; !poolused /t2 2; x nt!ExAlloc*"))     # doctest: +SKIP

Supported commands: ``!vm``, ``!poolused [flags] [tag] [/t N]``, ``!pool addr``, ``!poolfind tag``,
``lm``, ``!lmi name|addr``, ``x mod!pattern``, ``ln addr``, ``s -b|-w|-d|-q|-a|-u range pattern``,
``!for_each_module <command using @#Base @#End @#ModuleName>``, ``dps|dds|dqs addr [L n]``,
``db|dd|dq addr [L n]``, ``!dh addr|name``, ``!pte addr``, ``.bugcheck``,
``!analyze [-show code [p1 …]]`` (the bug check and what its parameters mean), ``vertarget``, ``r``,
``k``/``kb``/``kn``/``kv`` ``[count]`` (the crash stack, docs/stack.md),
``? expr``. Expressions: hex by default (``0x`` optional, ``0n`` decimal, backtick separators as in
``fffff804`7ba00000``), ``mod!symbol``, ``poi(expr)``, ``@reg``, ``+ - *``, parentheses.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import bugcheck
from ._format import hexdump, kd_addr
from .errors import KdError, NtdumpError

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
            v *= self._atom()
        return v

    def _atom(self) -> int:
        t = self._peek()
        if t is None:
            raise KdError("Expression ends early")
        self.i += 1
        kind, text = t
        if kind == "num":
            return parse_number(text)
        if kind == "op" and text == "-":
            return -self._atom()
        if kind == "op" and text == "(":
            v = self._sum()
            self._expect(")")
            return v
        if kind == "poi":
            v = self._sum()
            self._expect(")")
            return self.s.d.read_pointer(v)
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
    """kd's numbers: hex by default, ``0x`` optional, ``0n`` for decimal, backticks ignored."""
    t = text.replace("`", "").strip()
    if t.lower().startswith("0n"):
        return int(t[2:], 10)
    return int(t, 16)


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
            return start, start + count * unit, args[2:]
        end = self.eval(a, env)
        return start, end + 1, args[2:]

    def run(self, line: str) -> str:
        """Run one or more ``;``-separated commands (``!for_each_module`` takes the rest)."""
        out = []
        for cmd in split_commands(line):
            out.append(self.run_one(cmd))
        return "\n".join(o for o in out if o)

    def run_one(self, cmd: str, env: dict[str, int] | None = None) -> str:
        """Run a single command; errors come back as kd-like error text, never exceptions."""
        cmd = cmd.strip()
        if not cmd:
            return ""
        head, _, rest = cmd.partition(" ")
        # "s-d" and "!for_each_module s-d ..." are written without a space.
        m = re.match(r"^(s)(-\w.*)$", head)
        if m:
            head, rest = "s", f"{m.group(2)} {rest}".strip()
        if head.startswith("?") and head != "?":
            head, rest = "?", head[1:] + " " + rest
        fn = self._commands.get(head.lower())
        if fn is None:
            return f"No export {head} found" if head.startswith("!") else (
                f"^ Syntax error in '{cmd}'")
        try:
            if env is not None and head.lower() in ("s", "dps", "dds", "dqs", "db", "dd", "dq"):
                return self._with_env(fn, rest, env)
            return fn(rest.strip())
        except KdError as e:
            return str(e)
        except NtdumpError as e:
            return f"{type(e).__name__}: {e}"
        except Exception as e:
            return f"error: {type(e).__name__}: {e}"

    def _with_env(self, fn: Callable[[str], str], rest: str, env: dict[str, int]) -> str:
        self._env = env
        try:
            return fn(rest.strip())
        finally:
            self._env = None

    _env: dict[str, int] | None = None

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
        return self.d.modules.lm_text()

    def _lmi(self, args: str) -> str:
        a = args.strip()
        target: Any = a
        if self.d.modules.get(a) is None:
            target = self.eval(a)
        return str(self.d.lmi(target))

    def _x(self, args: str) -> str:
        df = self.d.symbols(args.strip())
        return "\n".join(f"{kd_addr(int(r['address']), self.ptr)} {r['module']}!{r['name']}"
                         for _, r in df.iterrows())

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
        df = self.d.search(pattern, width=width, within=(start, end))
        out = []
        for a in df["address"]:
            a = int(a)
            data = self.d.read(a, 16, pad=True)
            vals = " ".join(data[i : i + 4][::-1].hex() for i in range(0, 16, 4))
            out.append(f"{kd_addr(a, self.ptr)}  {vals}")
        return "\n".join(out)

    def _for_each_module(self, args: str) -> str:
        out = []
        for m in self.d.modules:
            env = {"Base": m.base, "End": m.end, "Size": m.size}
            cmd = args.replace("@#ModuleName", m.kd_name).replace("@#ImageName", m.name)
            r = self.run_one(cmd, env)
            if r:
                out.append(r)
        return "\n".join(out)

    def _count(self, args: str, default: int) -> tuple[int, int]:
        toks = args.split()
        if not toks:
            raise KdError("Address expected")
        va = self.eval(toks[0], self._env)
        n = default
        if len(toks) > 1 and toks[1][:1] in "lL":
            n = self.eval(toks[1][1:].lstrip("?") or toks[2], self._env)
        return va, n

    def _dps(self, args: str, kind: str) -> str:
        va, n = self._count(args, 16 if kind == "dps" and self.ptr == 4 else 8)
        size = {"dps": None, "dds": 4, "dqs": 8}[kind]
        return self.d.dps_text(va, n, size=size)

    def _db(self, args: str, width: int) -> str:

        va, n = self._count(args, 0x80 // width)
        return "\n".join(hexdump(va, self.d.read(va, n * width, pad=True), width, self.ptr))

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
        """``!analyze``: the dump's bug check, name and parameters with their meanings;
        ``!analyze -show code [p1 …]``: the same for a code given by hand (as WinDbg's)."""
        words = args.split()
        if words and words[0].lower() == "-show":
            if len(words) < 2:
                raise KdError("!analyze -show needs a bug check code")
            vals = [parse_number(w) for w in words[1:6]]
            b = bugcheck.describe(vals[0], vals[1:])
        elif words and words[0].lower() not in ("-v", "-vv"):
            raise KdError(f"!analyze: unsupported option {words[0]!r} (use -show code)")
        else:
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

    def _k(self, command: str, args: str) -> str:
        n = self.eval(args) if args.strip() else None
        return self.d.stack_text(command, max_frames=n)

    def _eval(self, args: str) -> str:
        v = self.eval(args)
        signed = v - (1 << 64) if v >> 63 else v
        return f"Evaluate expression: {signed} = {kd_addr(v, self.ptr)}"


def _tag_hex(tag: str) -> str:
    b = tag.encode("latin-1")[:4].ljust(4, b" ")
    return b[::-1].hex()


def split_commands(line: str) -> list[str]:
    """Split on ``;`` the way kd does: ``!for_each_module`` swallows the rest of the line."""
    out: list[str] = []
    rest = line
    while rest:
        s = rest.lstrip()
        if s.lower().startswith("!for_each_module"):
            out.append(s)
            break
        cmd, sep, rest = rest.partition(";")
        out.append(cmd)
        if not sep:
            break
    return [c.strip() for c in out if c.strip()]


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
