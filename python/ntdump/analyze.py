"""``d.analyze()``: what ``!analyze -v`` says about a crash, and a bucket id to count crashes by.

:func:`analyze` reads the bug check (code, name, parameters with their meanings), the faulting
IP and its module where the code defines one, the crash stack (``d.stack()``), the first frame
outside the kernel and the HAL ("probably caused by") and builds a bucket id in the spirit of
WinDbg's ``FAILURE_BUCKET_ID`` (rule: :func:`bucket_id`, docs/triage.md). It never raises for a
readable dump: a part that cannot be determined is None and says why in ``notes``.

An analysis: it uses the dump and its features, never the front ends (kd, cli) above it.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import bugcheck
from ._format import kd_addr

if TYPE_CHECKING:
    import pandas as pd

    from .dump import Dump

KERNEL_MODULES = frozenset({"nt", "hal"})
"""kd names of the kernel and the HAL: frames in them are never "probably caused by"."""

POOL_ALLOCATORS = re.compile(r"^(nt!)?ExAllocatePool(WithTag|WithQuota|WithQuotaTag|"
                             r"WithTagPriority|2|3|Zero|Uninitialized)?(\+0x[0-9a-f]+)?$",
                             re.IGNORECASE)
"""Symbols of the kernel's pool allocators (``nt!ExAllocatePool…``, any offset)."""

AV_CODES = frozenset({0x0A, 0x50, 0xD1, 0xD5, 0xD6})
"""Bug checks that are access violations by nature (a bad address touched): bucket prefix AV."""
_EXCEPTION_CODES = frozenset({0x1E, 0x7E, 0x8E, 0x3B})
"""Bug checks whose parameter 1 is an exception code (AV when it is 0xC0000005)."""
STATUS_ACCESS_VIOLATION = 0xC0000005

BUCKET_PREFIXES: dict[int, str] = {
    0x41: "0x41_POOL_EMPTY",
    0xE2: "MANUALLY_INITIATED_CRASH",
    0x161: "LIVE_SYSTEM_DUMP",
}
"""Fixed bucket prefixes by code (WinDbg names these buckets the same way)."""
SUBTYPE_CODES = frozenset({0x19, 0x1A, 0xC2, 0xC4, 0x13A, 0x139})
"""Codes whose parameter 1 is a sub-type: the prefix is ``0x<code>_<P1>`` (e.g. ``0xC2_8``)."""

NON_FAILURE_CODES = frozenset({0xE2, 0x161, 0x1E0, 0x1E1})
"""Bug checks that are not a failure of anyone (manually initiated, live dumps): nobody is blamed
from the stack of such a dump."""

def parameter_meanings(code: int, params: list[int] | tuple[int, ...]) -> list[str]:
    """What each of the four parameters of bug check ``code`` means, with the value decoded where
    it has a name (``access type: write``), from :func:`ntdump.bugcheck.describe` (Microsoft's Bug
    Check Code Reference); empty strings for codes it does not describe and reserved
    parameters."""
    bc = bugcheck.describe(code, list(params))
    if not bc.described:
        return ["", "", "", ""]
    return [(p.meaning if p.meaning != "reserved" else "")
            + (f": {p.decoded}" if p.decoded else "") for p in bc.parameters]


def _int(v: Any) -> int | None:
    try:
        return None if v is None or v != v else int(v)  # NaN / <NA> compare unequal
    except (TypeError, ValueError):
        return None


def _str(v: Any) -> str | None:
    try:
        return None if v is None or v != v else str(v)
    except (TypeError, ValueError):  # pd.NA's truth value is ambiguous
        return None


def _addr(va: int, ptr: int) -> str:
    return kd_addr(va, ptr)


def function_of(symbol: str | None) -> tuple[str, str]:
    """(module, function) of a kd symbol: ``nt!ExAllocatePool+0x13`` → ("nt", "ExAllocatePool");
    ``mydrv+0x1080`` → ("mydrv", "unknown_function"), as WinDbg names a frame it has no symbol
    for."""
    if not symbol:
        return "unknown_module", "unknown_function"
    head = symbol.split("+", 1)[0]
    if "!" in head:
        mod, fn = head.split("!", 1)
        return mod, fn or "unknown_function"
    return head, "unknown_function"


def bucket_prefix(code: int, params: list[int] | tuple[int, ...]) -> str:
    """The first part of a bucket id: ``AV`` for access violations (0xA, 0x50, 0xD1, 0xD5,
    0xD6, and exception bug checks 0x1E/0x7E/0x8E/0x3B with code 0xC0000005), a fixed name for
    0x41 (``0x41_POOL_EMPTY``), 0xE2 and 0x161, ``0x<code>_<P1>`` for codes whose parameter 1 is
    a sub-type (0x19, 0x1A, 0xC2, 0xC4, 0x139, 0x13A), else ``0x<code>``. Hex digits upper case."""
    base = code & ~0x10000000
    p1 = params[0] if params else 0
    # The exception code is an NTSTATUS (32 bits); 64-bit dumps hold it sign-extended.
    if base in AV_CODES or (base in _EXCEPTION_CODES
                            and p1 & 0xFFFFFFFF == STATUS_ACCESS_VIOLATION):
        return "AV"
    if base in BUCKET_PREFIXES:
        return BUCKET_PREFIXES[base]
    if base in SUBTYPE_CODES:
        return f"0x{code:X}_{p1:X}"
    return f"0x{code:X}"


def bucket_id(code: int, params: list[int] | tuple[int, ...], symbol: str | None) -> str:
    """``<prefix>_<module>!<function>`` (prefix: :func:`bucket_prefix`; module!function: the
    blamed frame's, ``unknown_function`` without a symbol), ``<prefix>_UNKNOWN`` with no frame.
    :func:`analyze` uses the prefix alone for bug checks that are no failure (0xE2, 0x161)."""
    prefix = bucket_prefix(code, params)
    if not symbol:
        return f"{prefix}_UNKNOWN"
    mod, fn = function_of(symbol)
    return f"{prefix}_{mod}!{fn}"


@dataclass
class Analysis:
    """The result of :func:`analyze` (``d.analyze()``). Addresses are VAs.

    ``stack`` is ``d.stack()`` (a DataFrame: frame, sp, return_address, symbol, module, how) or
    None when it could not be walked (``notes`` says why); ``probably_caused_by`` the blamed frame
    ({"module": kd name, "image": file name, "symbol", "frame": index or None, "why"}) or None.
    """

    bugcheck: dict[str, Any]
    faulting_ip: int | None
    faulting_ip_source: str
    faulting_module: str | None
    faulting_symbol: str | None
    stack: pd.DataFrame | None
    probably_caused_by: dict[str, Any] | None
    bucket: str
    ptr_size: int = 8
    notes: list[str] = field(default_factory=list)
    allocator_callers: list[str] = field(default_factory=list)
    """kd names of non-kernel modules found on the stack calling a pool allocator."""
    allocator_calls: list[dict[str, Any]] = field(default_factory=list)
    """Each such call: module (kd name), frame, symbol (the caller's), allocator (its symbol)."""

    def frames(self) -> list[dict[str, Any]]:
        """The stack as a list of plain rows (empty when there is no stack)."""
        if self.stack is None:
            return []
        out = []
        for _, r in self.stack.iterrows():
            out.append({"frame": _int(r.get("frame")) or 0, "sp": _int(r.get("sp")) or 0,
                        "return_address": _int(r.get("return_address")) or 0,
                        "symbol": _str(r.get("symbol")), "module": _str(r.get("module")),
                        "how": _str(r.get("how")) or ""})
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-serialisable)."""
        return {"bugcheck": self.bugcheck, "faulting_ip": self.faulting_ip,
                "faulting_ip_source": self.faulting_ip_source,
                "faulting_module": self.faulting_module, "faulting_symbol": self.faulting_symbol,
                "stack": self.frames(), "probably_caused_by": self.probably_caused_by,
                "allocator_callers": self.allocator_callers,
                "allocator_calls": self.allocator_calls, "bucket": self.bucket,
                "notes": self.notes}

    def to_json(self, **kw: Any) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), **kw)

    def text(self) -> str:
        """``!analyze -v`` style text."""
        b = self.bugcheck
        p = self.ptr_size
        star = "*" * 79
        out = [star, "*" + "Bugcheck Analysis".center(77) + "*", star, "",
               f"{b['name']} ({b['code']:x})", "Arguments:"]
        for i, (v, m) in enumerate(zip(b["params"], b["meanings"], strict=True)):
            out.append(f"Arg{i + 1}: {_addr(v, p)}" + (f", {m}" if m else ""))
        out.append("")
        if self.faulting_ip is not None:
            out += ["FAULTING_IP: ",
                    f"{self.faulting_symbol or '?'}", f"{_addr(self.faulting_ip, p)} "
                    f"({self.faulting_ip_source})", ""]
        out.append("STACK_TEXT:  ")
        if self.stack is None or not len(self.stack):
            out.append("(no stack)")
        else:
            out.append("ChildEBP RetAddr  Call Site" if p == 4 else
                       "Child-SP          RetAddr           Call Site")
            rows = self.frames()
            for i, r in enumerate(rows):
                # d.stack()'s return_address is where frame i is (WinDbg's RetAddr of the row
                # above), so this row's RetAddr is the next row's.
                ret = rows[i + 1]["return_address"] if i + 1 < len(rows) else 0
                out.append(f"{_addr(r['sp'], p)} {_addr(ret, p)} "
                           f"{r['symbol'] or '?'}" + ("" if r["how"] in ("context", "unwind",
                                                                         "frame-chain")
                                                      else f"  ({r['how']})"))
        out.append("")
        pc = self.probably_caused_by
        if pc:
            out += [f"SYMBOL_NAME:  {pc['symbol']}", f"MODULE_NAME: {pc['module']}",
                    f"IMAGE_NAME:  {pc['image']}", ""]
        out.append(f"FAILURE_BUCKET_ID:  {self.bucket}")
        out.append("")
        if pc:
            out.append(f"Probably caused by : {pc['image']} ( {pc['symbol']} )")
        else:
            out.append("Probably caused by : unknown")
        out += [f"Note: {n}" for n in self.notes]
        return "\n".join(out)

    __str__ = text

    def _repr_html_(self) -> str:
        return "<pre class='ntdump-analyze'>" + html.escape(self.text()) + "</pre>"


def _frames(d: Dump, notes: list[str]) -> pd.DataFrame | None:
    stack = getattr(d, "stack", None)
    if stack is None:
        notes.append("could not determine the crash stack because this build of ntdump has no "
                     "stack walker (Dump.stack)")
        return None
    try:
        return stack()
    except Exception as e:
        notes.append(f"could not determine the crash stack because {type(e).__name__}: {e}")
        return None


def analyze(d: Dump) -> Analysis:
    """``!analyze -v`` for ``d`` (see the module docstring). Never raises for a readable dump."""
    notes: list[str] = []
    info = d.info
    code, params = info.bugcheck_code, list(info.bugcheck_params)
    bc = {"code": code, "name": bugcheck.name(code), "params": params,
          "meanings": parameter_meanings(code, params)}
    ptr = info.pointer_size

    # Faulting IP: the parameter the code defines, else none (the context IP is in KeBugCheckEx).
    ip, src = bugcheck.faulting_address(code, params)
    fmod = fsym = None
    mods = None
    try:
        mods = d.modules
    except Exception as e:
        notes.append(f"could not determine the loaded modules because {type(e).__name__}: {e}")
    if ip is not None and mods is not None:
        m = mods.at(ip)
        if m is not None:
            fmod = m.kd_name
            try:
                fsym = d.ln(ip)
            except Exception:
                fsym = f"{m.kd_name}+{ip - m.base:#x}"
        else:
            notes.append(f"the faulting IP {ip:#x} ({src}) is in no loaded module")

    stack = _frames(d, notes)
    rows: list[tuple[int, str | None, str | None]] = []
    if stack is not None:
        rows = [(_int(f) or 0, _str(s), _str(m))
                for f, s, m in zip(stack["frame"], stack["symbol"], stack["module"],
                                   strict=True)]

    # Who called a pool allocator (a non-kernel frame right below an allocator frame).
    callers: list[str] = []
    calls: list[dict[str, Any]] = []
    for i in range(1, len(rows)):
        mod = rows[i][2]
        inner = rows[i - 1][1] or ""
        if mod and mod.lower() not in KERNEL_MODULES and POOL_ALLOCATORS.match(inner):
            calls.append({"module": mod, "frame": rows[i][0], "symbol": rows[i][1],
                          "allocator": inner.split("+", 1)[0]})
            if mod not in callers:
                callers.append(mod)

    # Probably caused by: the faulting IP's module when it is a driver, else the first stack
    # frame outside the kernel and the HAL.
    blamed: dict[str, Any] | None = None

    def image_of(kd: str) -> str:
        if mods is not None:
            for m in mods:
                if m.kd_name.lower() == kd.lower():
                    return m.name
        return kd

    if fmod and fmod.lower() not in KERNEL_MODULES:
        frame = next((f for f, s, m in rows if m and m.lower() == fmod.lower()), None)
        blamed = {"module": fmod, "image": image_of(fmod), "symbol": fsym, "frame": frame,
                  "why": f"the faulting IP ({src}) is in it"}
    else:
        for f, sym, mod in rows:
            if mod and mod.lower() not in KERNEL_MODULES:
                blamed = {"module": mod, "image": image_of(mod), "symbol": sym, "frame": f,
                          "why": "first frame outside the kernel and the HAL"}
                break
    if code & ~0x10000000 in NON_FAILURE_CODES:
        blamed = None  # nobody failed: a manual crash or a live dump

    # Bucket: the blamed frame, else the faulting IP, else the innermost frame; a non-failure
    # (manual crash, live dump) is its own bucket.
    sym = blamed["symbol"] if blamed else fsym or (rows[0][1] if rows else None)
    if code & ~0x10000000 in NON_FAILURE_CODES:
        bucket = bucket_prefix(code, params)
    else:
        bucket = bucket_id(code, params, sym)
    return Analysis(bc, ip, src, fmod, fsym, stack, blamed, bucket, ptr, notes, callers, calls)


__all__ = ["AV_CODES", "Analysis", "BUCKET_PREFIXES", "KERNEL_MODULES", "NON_FAILURE_CODES",
           "POOL_ALLOCATORS", "analyze", "bucket_id", "bucket_prefix", "function_of",
           "parameter_meanings"]
