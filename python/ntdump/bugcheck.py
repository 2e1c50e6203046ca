"""Bug checks: the name of every documented code, what each parameter of the common codes means,
and the sub-values a reader wants decoded (an exception code's name, an access type, an IRQL).

Names: :data:`NAMES` is Microsoft's whole Bug Check Code Reference (:mod:`._bugcheck_codes`).
Parameter meanings: the reference page of each code ("Bug Check 0x1E: KMODE_EXCEPTION_NOT_HANDLED"
… on learn.microsoft.com/windows-hardware/drivers/debugger/), in ntdump's words. Exception code
names: NTSTATUS values of [MS-ERREF] §2.3.1. ``FAST_FAIL_*`` codes (0x139 parameter 1): winnt.h.
WHEA error source types (0x124 parameter 1): ``WHEA_ERROR_SOURCE_TYPE``, wdm.h / ntddk.h.

:func:`describe` turns a code and its four parameters into a :class:`BugCheck`; ``Dump.bugcheck``
and ``DumpInfo.bugcheck`` return one, and triage prints it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ._bugcheck_codes import CODES
from ._bugcheck_codes import SOURCE as NAMES_SOURCE

NAMES: dict[int, str] = CODES
"""Bug check code → name: every code of Microsoft's Bug Check Code Reference."""

__all__ = ["NAMES", "NAMES_SOURCE", "BugCheck", "BugCheckParameter", "describe", "name",
           "faulting_address", "exception_name", "MANUAL_CODES"]

_M = 0x10000000
"""The ``_M`` variants (0x1000007E …) are the same bug checks raised by the newer
``KeBugCheckEx`` path; their parameters mean the same as the base code's."""

MANUAL_CODES = frozenset({0xE2, 0xDEADDEAD, 0x1C8})
"""Crashes a person asked for (keyboard, debugger, NMI button, power-button hold): there is no
faulting code address; the context IP is ``KeBugCheckEx``, where the crash was raised."""

NTSTATUS: dict[int, str] = {
    0x80000001: "STATUS_GUARD_PAGE_VIOLATION",
    0x80000002: "STATUS_DATATYPE_MISALIGNMENT",
    0x80000003: "STATUS_BREAKPOINT",
    0x80000004: "STATUS_SINGLE_STEP",
    0xC0000005: "STATUS_ACCESS_VIOLATION",
    0xC0000006: "STATUS_IN_PAGE_ERROR",
    0xC0000008: "STATUS_INVALID_HANDLE",
    0xC000000D: "STATUS_INVALID_PARAMETER",
    0xC0000017: "STATUS_NO_MEMORY",
    0xC000001D: "STATUS_ILLEGAL_INSTRUCTION",
    0xC0000025: "STATUS_NONCONTINUABLE_EXCEPTION",
    0xC0000026: "STATUS_INVALID_DISPOSITION",
    0xC000008C: "STATUS_ARRAY_BOUNDS_EXCEEDED",
    0xC000008E: "STATUS_FLOAT_DIVIDE_BY_ZERO",
    0xC0000094: "STATUS_INTEGER_DIVIDE_BY_ZERO",
    0xC0000095: "STATUS_INTEGER_OVERFLOW",
    0xC0000096: "STATUS_PRIVILEGED_INSTRUCTION",
    0xC000009A: "STATUS_INSUFFICIENT_RESOURCES",
    0xC00000FD: "STATUS_STACK_OVERFLOW",
    0xC0000374: "STATUS_HEAP_CORRUPTION",
    0xC0000409: "STATUS_STACK_BUFFER_OVERRUN",
    0xC0000420: "STATUS_ASSERTION_FAILURE",
}
"""Exception codes seen in bug check parameters ([MS-ERREF] §2.3.1 NTSTATUS values)."""

FAST_FAIL: dict[int, str] = {
    0: "FAST_FAIL_LEGACY_GS_VIOLATION", 1: "FAST_FAIL_VTGUARD_CHECK_FAILURE",
    2: "FAST_FAIL_STACK_COOKIE_CHECK_FAILURE", 3: "FAST_FAIL_CORRUPT_LIST_ENTRY",
    4: "FAST_FAIL_INCORRECT_STACK", 5: "FAST_FAIL_INVALID_ARG", 6: "FAST_FAIL_GS_COOKIE_INIT",
    7: "FAST_FAIL_FATAL_APP_EXIT", 8: "FAST_FAIL_RANGE_CHECK_FAILURE",
    9: "FAST_FAIL_UNSAFE_REGISTRY_ACCESS", 10: "FAST_FAIL_GUARD_ICALL_CHECK_FAILURE",
}
"""``__fastfail`` codes (winnt.h): KERNEL_SECURITY_CHECK_FAILURE's parameter 1."""

WHEA_SOURCES: dict[int, str] = {
    0: "machine check exception (MCE)", 1: "corrected machine check (CMC)",
    2: "corrected platform error (CPE)", 3: "non-maskable interrupt (NMI)",
    4: "PCI Express error", 5: "generic error source", 6: "IA64 INIT error", 7: "BOOT error",
    8: "SCI-based generic error", 9: "IA64 MCA", 0xA: "IA64 CMC", 0xB: "IA64 CPE",
}
"""``WHEA_ERROR_SOURCE_TYPE`` values: WHEA_UNCORRECTABLE_ERROR's parameter 1."""


def exception_name(code: int) -> str | None:
    """The NTSTATUS name of an exception code (``0xC0000005`` → ``STATUS_ACCESS_VIOLATION``); the
    value may be sign-extended to 64 bits, as x64 bug check parameters are. None when unknown."""
    return NTSTATUS.get(code & 0xFFFFFFFF)


def _status(v: int) -> str | None:
    n = exception_name(v)
    return f"{n} ({v & 0xFFFFFFFF:#010x})" if n else None


def _irql(v: int) -> str | None:
    return {0: "PASSIVE_LEVEL", 1: "APC_LEVEL", 2: "DISPATCH_LEVEL"}.get(
        v, "a device IRQL (above DISPATCH_LEVEL)" if 2 < v < 32 else None)


def _access(v: int) -> str | None:
    # 0x0A / 0xD1 / 0xC5 parameter 3: bit 0 write, bit 3 execute (0xD1 also documents 2 = execute).
    return {0: "read", 1: "write", 2: "execute", 8: "execute"}.get(v)


def _pf_access(v: int) -> str | None:
    # 0x50 parameter 2 (Windows 10 1507 and later): 0 read, 2 write, 0x10 execute; older: 0/1.
    return {0: "read", 1: "write", 2: "write", 0x10: "execute"}.get(v)


def _table(names: dict[int, str]) -> Callable[[int], str | None]:
    return lambda v: names.get(v)


_EXC = ("exception code", _status)

# code → four (meaning, decoder or None); a meaning of "" is a reserved / unused parameter.
_Param = tuple[str, Callable[[int], str | None] | None]
PARAMETERS: dict[int, tuple[_Param, _Param, _Param, _Param]] = {
    0x0A: (("memory referenced", None), ("IRQL at the time of the reference", _irql),
           ("access type", _access), ("address of the instruction that referenced memory", None)),
    0x19: (("type of violation", None), ("depends on parameter 1", None),
           ("depends on parameter 1", None), ("depends on parameter 1", None)),
    0x1A: (("type of memory-management violation", _table({
        0x403: "the page table and PFNs are out of sync",
        0x41790: "a page table page has been corrupted",
        0x61941: "the paging hierarchy is corrupt"})),
        ("depends on parameter 1", None), ("depends on parameter 1", None),
        ("depends on parameter 1", None)),
    0x1E: (_EXC, ("address where the exception occurred", None),
           ("exception parameter 0", None), ("exception parameter 1", None)),
    0x3B: (_EXC, ("address of the instruction that caused the bug check", None),
           ("address of the context record", None), ("", None)),
    0x41: (("size of the request that could not be satisfied (bytes)", None),
           ("nonpaged pool pages in use", None),
           ("requests larger than a page (PAGE_SIZE)", None), ("pages available", None)),
    0x50: (("memory referenced", None), ("access type", _pf_access),
           ("address of the instruction that referenced memory (0 if unknown)", None),
           ("type of page fault", None)),
    0x7E: (_EXC, ("address where the exception occurred", None),
           ("address of the exception record", None), ("address of the context record", None)),
    0x7F: (("trap number", _table({0: "divide error", 4: "overflow", 5: "bound check",
                                   6: "invalid opcode", 8: "double fault",
                                   0xD: "general protection fault"})),
           ("", None), ("", None), ("", None)),
    0x8E: (_EXC, ("address where the exception occurred", None),
           ("address of the trap frame", None), ("", None)),
    0x9F: (("type of failure", _table({
        1: "a device object being freed still has an outstanding power request",
        2: "a device object completed the system power IRP without PoStartNextPowerIrp",
        3: "a device object has been blocking an IRP for too long",
        4: "the power transition timed out waiting to synchronise with the PnP subsystem"})),
        ("depends on parameter 1 (3: the physical device object of the stack; "
         "4: the time-out in seconds)", None),
        ("depends on parameter 1 (3: nt!TRIAGE_9F_POWER; 4: the thread holding the PnP lock)",
         None),
        ("depends on parameter 1 (3: the blocked IRP; 4: nt!TRIAGE_9F_PNP)", None)),
    0xA0: (("type of internal power error", None), ("depends on parameter 1", None),
           ("depends on parameter 1", None), ("depends on parameter 1", None)),
    0xBE: (("virtual address of the attempted write", None), ("PTE contents", None),
           ("", None), ("", None)),
    0xC2: (("type of violation", _table({
        0x0: "a zero-byte pool allocation was requested",
        0x7: "an attempt to free pool that was already freed",
        0x8: "an attempt to allocate pool at an invalid IRQL",
        0x9: "an attempt to free pool at an invalid IRQL"})),
        ("depends on parameter 1", None), ("depends on parameter 1", None),
        ("depends on parameter 1", None)),
    0xC4: (("type of violation", None), ("depends on parameter 1", None),
           ("depends on parameter 1", None), ("depends on parameter 1", None)),
    0xC5: (("memory referenced", None), ("IRQL at the time of the reference", _irql),
           ("access type", _access), ("address of the instruction that referenced memory", None)),
    0xD1: (("memory referenced", None), ("IRQL at the time of the reference", _irql),
           ("access type", _access), ("address of the instruction that referenced memory", None)),
    0xE2: (("", None), ("", None), ("", None), ("", None)),
    0xEA: (("the stuck thread object", None), ("the DEFERRED_WATCHDOG object", None),
           ("the offending driver's name", None), ("times caught in the same loop", None)),
    0xEF: (("the process object", None), ("what died", _table({0: "a process", 1: "a thread"})),
           ("", None), ("", None)),
    0xF4: (("type of terminated object", _table({3: "process", 6: "thread"})),
           ("the terminated object", None), ("the process image file name", None),
           ("an explanatory ASCII message", None)),
    0xFC: (("virtual address whose execution was attempted", None), ("PTE contents", None),
           ("", None), ("", None)),
    0x124: (("type of error source", _table(WHEA_SOURCES)),
            ("address of the WHEA_ERROR_RECORD", None),
            ("high 32 bits of MCi_STATUS (machine checks), else 0", None),
            ("low 32 bits of MCi_STATUS (machine checks), else 0", None)),
    0x133: (("what happened", _table({
        0: "a single DPC or ISR exceeded its time allotment",
        1: "the system spent too long, cumulatively, at DISPATCH_LEVEL or above"})),
        ("0: DPC time count (ticks); 1: the watchdog period (ticks)", None),
        ("0: DPC time allotment (ticks); 1: nt!DPC_WATCHDOG_GLOBAL_TRIAGE_BLOCK", None),
        ("0: nt!DPC_WATCHDOG_GLOBAL_TRIAGE_BLOCK; 1: reserved", None)),
    0x139: (("type of corruption (__fastfail code)", _table(FAST_FAIL)),
            ("address of the trap frame", None), ("address of the exception record", None),
            ("", None)),
    0x154: (("the store context or data manager", None), ("exception information", None),
            ("", None), ("", None)),
    0x1C8: (("time the power button was held down (ms)", None),
            ("the nt!_POP_POWER_BUTTON_TRIAGE_BLOCK", None), ("", None), ("", None)),
}
"""What each parameter of the common codes means (index 0 = parameter 1), and how to decode
its value. The ``_M`` variants use their base code's entry."""

_ADDRESS_PARAM: dict[int, int] = {0x1E: 1, 0x3B: 1, 0x7E: 1, 0x8E: 1, 0xD1: 3, 0x0A: 3, 0xC5: 3,
                                  0x50: 2}
"""Parameter (0-based) that holds the faulting code address, per code."""

_EXCEPTION_CODES = frozenset({0x1E, 0x3B, 0x7E, 0x8E})


def _base(code: int) -> int:
    return code & ~_M if code & _M and (code & ~_M) in NAMES else code


def name(code: int) -> str:
    """The symbolic name of a bug check code (``0x1000007E`` →
    ``SYSTEM_THREAD_EXCEPTION_NOT_HANDLED_M``); ``UNKNOWN_BUGCHECK`` when not documented."""
    if code in NAMES:
        return NAMES[code]
    base = _base(code)
    if base != code:
        return NAMES[base] + "_M"
    return "UNKNOWN_BUGCHECK"


def faulting_address(code: int, params: Sequence[int]) -> tuple[int | None, str]:
    """The code address a bug check blames, and where it came from (``"parameter 2"``)."""
    i = _ADDRESS_PARAM.get(_base(code))
    if i is None or i >= len(params) or not params[i]:
        return None, "no faulting-address parameter for this code"
    return params[i], f"parameter {i + 1}"


@dataclass(frozen=True, slots=True)
class BugCheckParameter:
    """One bug check parameter: ``index`` 1 to 4, its ``value``, what it ``meaning`` is ("" when the
    code is not one ntdump describes, "reserved" when documented as unused), and ``decoded``: the
    value's name where it has one (``STATUS_ACCESS_VIOLATION (0xc0000005)``, ``write``)."""

    index: int
    value: int
    meaning: str
    decoded: str | None = None

    def __str__(self) -> str:
        s = f"Arg{self.index}: {self.value:#018x}"
        if self.meaning:
            s += f", {self.meaning}"
        if self.decoded:
            s += f": {self.decoded}"
        return s

    def to_dict(self) -> dict[str, Any]:
        """Plain data."""
        return {"index": self.index, "value": self.value, "meaning": self.meaning,
                "decoded": self.decoded}


@dataclass(frozen=True, slots=True)
class BugCheck:
    """A bug check: ``code``, ``name``, its four :class:`BugCheckParameter` s, and what ntdump
    reads from them.

    ``manual``: a crash a person asked for (:data:`MANUAL_CODES`): no fault, no faulting address.
    ``live``: a live kernel dump, not a crash at all. ``address``: the code address the bug check
    blames (parameter named by ``address_source``), None when the code has no such parameter.
    ``exception_code`` / ``exception_name``: the unhandled exception of 0x1E, 0x3B, 0x7E, 0x8E and
    their ``_M`` variants (32-bit NTSTATUS value; None for other codes)."""

    code: int
    name: str
    parameters: tuple[BugCheckParameter, ...]
    manual: bool
    live: bool
    address: int | None
    address_source: str
    exception_code: int | None
    exception_name: str | None
    described: bool
    """True when ntdump knows what this code's parameters mean (the common codes)."""

    @property
    def params(self) -> tuple[int, ...]:
        """The four raw values."""
        return tuple(p.value for p in self.parameters)

    def summary(self) -> str:
        """One line: code, name, and the exception (``STATUS_ACCESS_VIOLATION``) or the kind."""
        s = f"{self.code:#x} {self.name}"
        if self.exception_code is not None:
            s += f": exception {self.exception_name or 'code'} ({self.exception_code:#010x})"
        elif self.manual:
            s += ": crash initiated by hand (no fault)"
        elif self.live:
            s += ": live dump (the system kept running)"
        return s

    def __str__(self) -> str:
        return "\n".join([self.summary(), *(f"  {p}" for p in self.parameters)])

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-serialisable)."""
        return {"code": self.code, "name": self.name,
                "parameters": [p.to_dict() for p in self.parameters], "manual": self.manual,
                "live": self.live, "address": self.address, "address_source": self.address_source,
                "exception_code": self.exception_code, "exception_name": self.exception_name}


def describe(code: int, params: Sequence[int]) -> BugCheck:
    """The :class:`BugCheck` for ``code`` and its parameters (missing parameters read as 0)."""
    values = [int(p) for p in params][:4] + [0] * max(0, 4 - len(params))
    base = _base(code)
    spec = PARAMETERS.get(base)
    out = []
    for i, v in enumerate(values):
        meaning, decoded = "", None
        if spec is not None:
            meaning, dec = spec[i]
            meaning = meaning or "reserved"
            decoded = dec(v) if dec is not None else None
        out.append(BugCheckParameter(i + 1, v, meaning, decoded))
    manual = base in MANUAL_CODES
    n = name(code)
    live = code == 0x161 or "LIVEDUMP" in n or "LIVE_DUMP" in n
    addr, src = faulting_address(code, values)
    if manual:
        addr, src = None, "manually initiated crash: there is no faulting address"
    exc = values[0] & 0xFFFFFFFF if base in _EXCEPTION_CODES else None
    return BugCheck(code, n, tuple(out), manual, live, addr, src, exc,
                    exception_name(exc) if exc is not None else None, spec is not None)
