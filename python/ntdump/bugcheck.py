"""Bug check codes: names (as Microsoft documents them) and which parameter holds the faulting
address."""

from __future__ import annotations

NAMES: dict[int, str] = {
    0x0A: "IRQL_NOT_LESS_OR_EQUAL",
    0x19: "BAD_POOL_HEADER",
    0x1A: "MEMORY_MANAGEMENT",
    0x1E: "KMODE_EXCEPTION_NOT_HANDLED",
    0x3B: "SYSTEM_SERVICE_EXCEPTION",
    0x41: "MUST_SUCCEED_POOL_EMPTY",
    0x4E: "PFN_LIST_CORRUPT",
    0x50: "PAGE_FAULT_IN_NONPAGED_AREA",
    0x7E: "SYSTEM_THREAD_EXCEPTION_NOT_HANDLED",
    0x7F: "UNEXPECTED_KERNEL_MODE_TRAP",
    0x8E: "KERNEL_MODE_EXCEPTION_NOT_HANDLED",
    0x9F: "DRIVER_POWER_STATE_FAILURE",
    0xC2: "BAD_POOL_CALLER",
    0xC5: "DRIVER_CORRUPTED_EXPOOL",
    0xCD: "PAGE_FAULT_BEYOND_END_OF_ALLOCATION",
    0xD1: "DRIVER_IRQL_NOT_LESS_OR_EQUAL",
    0xE2: "MANUALLY_INITIATED_CRASH",
    0xEF: "CRITICAL_PROCESS_DIED",
    0xF4: "CRITICAL_OBJECT_TERMINATION",
    0x124: "WHEA_UNCORRECTABLE_ERROR",
    0x133: "DPC_WATCHDOG_VIOLATION",
    0x139: "KERNEL_SECURITY_CHECK_FAILURE",
    0x161: "LIVE_SYSTEM_DUMP",
}

# Parameter (0-based) that holds the faulting code address, per code.
_ADDRESS_PARAM: dict[int, int] = {0x1E: 1, 0x3B: 1, 0x7E: 1, 0x8E: 1, 0xD1: 3, 0x0A: 3, 0x50: 2}


def name(code: int) -> str:
    """The symbolic name of a bug check code (``0x1000007E`` →
    ``SYSTEM_THREAD_EXCEPTION_NOT_HANDLED_M``); ``UNKNOWN_BUGCHECK`` when not in the table."""
    base = code & ~0x10000000
    n = NAMES.get(base, "UNKNOWN_BUGCHECK")
    return n + "_M" if code & 0x10000000 and base in NAMES else n


def faulting_address(code: int, params: tuple[int, ...] | list[int]) -> tuple[int | None, str]:
    """The code address a bug check blames, and where it came from (``"parameter 2"``)."""
    i = _ADDRESS_PARAM.get(code & ~0x10000000)
    if i is None or i >= len(params) or not params[i]:
        return None, "no faulting-address parameter for this code"
    return params[i], f"parameter {i + 1}"
