"""The crash-dump file header: ``DUMP_HEADER64`` (0x2000 bytes) and ``DUMP_HEADER32`` (0x1000).

Layouts follow WINDOWS_INTERNALS.md sections 1.1, 1.2 and 1.4. Like dbgeng's
``InitDumpHeader32/64``, the whole header is first filled with the u32 "PAGE"
(``DUMP_SIGNATURE32``, for 32- *and* 64-bit headers), then the known fields are written, so
an untouched field reads back as 0x45474150. (The fact sheet's "PAGEDUMP" for 32-bit is just
the first 8 bytes, Signature + ValidDump; the fill itself is "PAGE".)
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

HEADER64_SIZE = 0x2000
HEADER32_SIZE = 0x1000
FILL = b"PAGE"
MACHINE_I386 = 0x014C
MACHINE_AMD64 = 0x8664
#: 2024-01-01 00:00:00 UTC as a FILETIME (100 ns units since 1601-01-01): a fixed default so
#: that forged files are reproducible byte for byte.
DEFAULT_SYSTEM_TIME = 133_485_408_000_000_000
STATUS_BREAKPOINT = 0x80000003

# DUMP_HEADER64 offsets.
CONTEXT64_OFFSET = 0x348
CONTEXT64_SIZE = 0x4D0
EXCEPTION64_OFFSET = 0xF00
RUNS64_OFFSET = 0x88
MAX_RUNS64 = 43
# DUMP_HEADER32 offsets.
CONTEXT32_OFFSET = 0x320
CONTEXT32_SIZE = 0x2CC
EXCEPTION32_OFFSET = 0x7D0
RUNS32_OFFSET = 0x64
MAX_RUNS32 = 86


@dataclass
class Header:
    """Values for the dump header. Addresses are target VAs unless stated.

    ``machine`` is "x64" (64-bit header) or "x86" (32-bit header, ``pae`` selects PAE).
    ``dtb`` is CR3 (for PAE the 32-byte aligned PDPT PA). ``build`` goes to MinorVersion.
    ``system_time`` is a FILETIME, ``system_uptime`` 100 ns units. ``context_rip`` /
    ``context_rsp`` are stored as Rip/Rsp (x64) or Eip/Esp (x86) of the header's CONTEXT;
    ``context_registers`` (name → value: "rax" … "r15" / "eax" … "edi") fill the other
    general registers (:func:`~.stack.plant` sets them).
    ``comment`` (<= 127 bytes) is written NUL-terminated when non-empty; otherwise the
    Comment field keeps the "PAGE" fill, as Windows leaves it.
    """

    machine: str = "x64"
    pae: bool = False
    build: int = 19041
    dtb: int = 0
    bugcheck_code: int = 0x161
    bugcheck_params: Sequence[int] = (0, 0, 0, 0)
    processors: int = 1
    system_time: int = DEFAULT_SYSTEM_TIME
    ps_loaded_module_list: int = 0
    ps_active_process_head: int = 0
    kd_debugger_data_block: int = 0
    pfn_database: int = 0
    context_rip: int = 0
    context_rsp: int = 0
    context_registers: Mapping[str, int] | None = None
    comment: bytes = b""
    major_version: int = 0xF
    system_uptime: int = 0
    product_type: int = 1
    suite_mask: int = 0x110

    def __post_init__(self) -> None:
        if self.machine not in ("x64", "x86"):
            raise ValueError(f"machine must be 'x64' or 'x86', not {self.machine!r}")
        if self.pae and self.machine != "x86":
            raise ValueError("pae only applies to machine='x86'")
        if len(tuple(self.bugcheck_params)) != 4:
            raise ValueError("bugcheck_params needs exactly 4 values")
        if len(self.comment) > 127:
            raise ValueError("comment is at most 127 bytes")

    @property
    def is64(self) -> bool:
        """True for the 64-bit (``DU64``) header."""
        return self.machine == "x64"

    @property
    def header_size(self) -> int:
        """Bytes of the main header: 0x2000 (64-bit) or 0x1000 (32-bit)."""
        return HEADER64_SIZE if self.is64 else HEADER32_SIZE


#: CONTEXT general registers: x64 Rax … R15 from 0x78, 8 bytes apart, in the unwind-code
#: numbering (winnt.h CONTEXT, AMD64); x86 from winnt.h's i386 CONTEXT.
CONTEXT64_REGS = {n: 0x78 + 8 * i for i, n in enumerate(
    ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
     "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"))}
CONTEXT32_REGS = {"edi": 0x9C, "esi": 0xA0, "ebx": 0xA4, "edx": 0xA8, "ecx": 0xAC,
                  "eax": 0xB0, "ebp": 0xB4, "esp": 0xC4}


def _context64(rip: int, rsp: int, regs: Mapping[str, int] | None = None) -> bytes:
    """An x64 CONTEXT (0x4D0 bytes) as a kernel thread would have it."""
    ctx = bytearray(CONTEXT64_SIZE)
    for name, value in (regs or {}).items():
        if name in CONTEXT64_REGS:
            struct.pack_into("<Q", ctx, CONTEXT64_REGS[name], value % (1 << 64))
    struct.pack_into("<II", ctx, 0x30, 0x0010001F, 0x1F80)  # ContextFlags, MxCsr
    struct.pack_into("<6HI", ctx, 0x38, 0x10, 0x2B, 0x2B, 0x53, 0x2B, 0x18, 0x282)
    struct.pack_into("<Q", ctx, 0x98, rsp)
    struct.pack_into("<Q", ctx, 0xF8, rip)
    struct.pack_into("<H", ctx, 0x100, 0x27F)  # FltSave.ControlWord
    struct.pack_into("<II", ctx, 0x118, 0x1F80, 0xFFFF)  # FltSave.MxCsr (== MxCsr), mask
    return bytes(ctx)


def _context32(eip: int, esp: int, regs: Mapping[str, int] | None = None) -> bytes:
    """An x86 CONTEXT (0x2CC bytes)."""
    ctx = bytearray(CONTEXT32_SIZE)
    for name, value in (regs or {}).items():
        if name in CONTEXT32_REGS:
            struct.pack_into("<I", ctx, CONTEXT32_REGS[name], value % (1 << 32))
    struct.pack_into("<I", ctx, 0, 0x0001001F)  # CONTEXT_i386 | full | debug
    struct.pack_into("<IIII", ctx, 0x8C, 0, 0x30, 0x23, 0x23)  # Gs Fs Es Ds
    struct.pack_into("<IIIII", ctx, 0xB8, eip, 0x08, 0x202, esp, 0x10)  # Eip Cs EFlags Esp Ss
    return bytes(ctx)


def build_header(hdr: Header, dump_type: int, file_size: int,
                 runs: Sequence[tuple[int, int]] | None = None,
                 minidump_fields: int | None = None) -> bytearray:
    """Bytes of the main header for ``hdr``.

    ``runs`` (``(base_pfn, page_count)``) fill the PhysicalMemoryBlock (full dumps only);
    ``None`` leaves the "PAGE" fill there, as bitmap and triage dumps do. ``file_size``
    (bytes) becomes RequiredDumpSpace. ``minidump_fields`` is written only when given.
    """
    size = hdr.header_size
    buf = bytearray(FILL * (size // 4))
    params = [int(p) for p in hdr.bugcheck_params]
    if hdr.is64:
        struct.pack_into("<4s4sII", buf, 0, b"PAGE", b"DU64", hdr.major_version, hdr.build)
        struct.pack_into("<QQQQ", buf, 0x10, hdr.dtb, hdr.pfn_database,
                         hdr.ps_loaded_module_list, hdr.ps_active_process_head)
        struct.pack_into("<III", buf, 0x30, MACHINE_AMD64, hdr.processors, hdr.bugcheck_code)
        struct.pack_into("<4Q", buf, 0x40, *params)
        struct.pack_into("<Q", buf, 0x80, hdr.kd_debugger_data_block)
        if runs is not None:
            if len(runs) > MAX_RUNS64:
                raise ValueError(f"a 64-bit header holds at most {MAX_RUNS64} runs")
            struct.pack_into("<I", buf, RUNS64_OFFSET, len(runs))
            struct.pack_into("<Q", buf, RUNS64_OFFSET + 8, sum(c for _, c in runs))
            for i, (base, count) in enumerate(runs):
                struct.pack_into("<QQ", buf, RUNS64_OFFSET + 0x10 + 16 * i, base, count)
        buf[CONTEXT64_OFFSET:CONTEXT64_OFFSET + CONTEXT64_SIZE] = _context64(
            hdr.context_rip, hdr.context_rsp, hdr.context_registers)
        exc = bytearray(0x98)
        struct.pack_into("<IIQQ", exc, 0, STATUS_BREAKPOINT, 0, 0, hdr.context_rip)
        buf[EXCEPTION64_OFFSET:EXCEPTION64_OFFSET + 0x98] = exc
        struct.pack_into("<I", buf, 0xF98, dump_type)
        struct.pack_into("<QQ", buf, 0xFA0, file_size, hdr.system_time)
        if hdr.comment:
            buf[0xFB0:0xFB0 + len(hdr.comment) + 1] = hdr.comment + b"\0"
        struct.pack_into("<Q", buf, 0x1030, hdr.system_uptime)
        if minidump_fields is not None:
            struct.pack_into("<I", buf, 0x1038, minidump_fields)
        struct.pack_into("<II", buf, 0x1040, hdr.product_type, hdr.suite_mask)
        return buf

    for name, value in (("dtb", hdr.dtb), ("ps_loaded_module_list", hdr.ps_loaded_module_list),
                        ("kd_debugger_data_block", hdr.kd_debugger_data_block),
                        ("context_rip", hdr.context_rip)):
        if not 0 <= value < 1 << 32:
            raise ValueError(f"{name}={value:#x} does not fit a 32-bit header")
    struct.pack_into("<4s4sII", buf, 0, b"PAGE", b"DUMP", hdr.major_version, hdr.build)
    struct.pack_into("<IIII", buf, 0x10, hdr.dtb, hdr.pfn_database,
                     hdr.ps_loaded_module_list, hdr.ps_active_process_head)
    struct.pack_into("<III", buf, 0x20, MACHINE_I386, hdr.processors, hdr.bugcheck_code)
    struct.pack_into("<4I", buf, 0x2C, *[p & 0xFFFFFFFF for p in params])
    struct.pack_into("<BBH", buf, 0x5C, 1 if hdr.pae else 0, 0, 0)
    struct.pack_into("<I", buf, 0x60, hdr.kd_debugger_data_block)
    if runs is not None:
        if len(runs) > MAX_RUNS32:
            raise ValueError(f"a 32-bit header holds at most {MAX_RUNS32} runs")
        total = sum(c for _, c in runs)
        if any(b + c > 1 << 32 for b, c in runs) or total >= 1 << 32:
            raise ValueError("a 32-bit header stores PFNs and counts as u32")
        struct.pack_into("<II", buf, RUNS32_OFFSET, len(runs), total)
        for i, (base, count) in enumerate(runs):
            struct.pack_into("<II", buf, RUNS32_OFFSET + 8 + 8 * i, base, count)
    buf[CONTEXT32_OFFSET:CONTEXT32_OFFSET + CONTEXT32_SIZE] = _context32(
        hdr.context_rip, hdr.context_rsp, hdr.context_registers)
    exc = bytearray(0x50)
    struct.pack_into("<IIII", exc, 0, STATUS_BREAKPOINT, 0, 0, hdr.context_rip)
    buf[EXCEPTION32_OFFSET:EXCEPTION32_OFFSET + 0x50] = exc
    if hdr.comment:
        buf[0x820:0x820 + len(hdr.comment) + 1] = hdr.comment + b"\0"
    struct.pack_into("<I", buf, 0xF88, dump_type)
    if minidump_fields is not None:
        struct.pack_into("<I", buf, 0xF8C, minidump_fields)
    struct.pack_into("<II", buf, 0xF94, hdr.product_type, hdr.suite_mask)
    struct.pack_into("<Q", buf, 0xFA0, file_size)
    struct.pack_into("<QQ", buf, 0xFB8, hdr.system_uptime, hdr.system_time)
    return buf
