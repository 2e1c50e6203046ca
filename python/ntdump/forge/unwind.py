"""x64 unwind data (``.pdata`` / ``.xdata``): read it from a mapped image, and write it for
synthetic functions whose prologues are assembled here.

Source of every layout and rule: Microsoft's "x64 exception handling" documentation
(RUNTIME_FUNCTION, UNWIND_INFO, UNWIND_CODE, the UWOP_* operations and their slot counts,
UNW_FLAG_CHAININFO), cross-checked with ReactOS ``sdk/lib/rtl/amd64/unwind.c`` and Wine
``dlls/ntdll/signal_x86_64.c`` (how RtlVirtualUnwind applies the codes); the version 2
``UWOP_EPILOG`` code (op 6) follows LLVM's ``Win64EH.h``. pefile is the tests' outside judge of
the reader.

Units: RVAs are byte offsets from an image base; VAs are absolute; sizes and offsets in bytes.
Registers are numbered as unwind codes number them (0 RAX, 1 RCX, 2 RDX, 3 RBX, 4 RSP, 5 RBP,
6 RSI, 7 RDI, 8-15 R8-R15); :data:`REGS` gives the names.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

REGS = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
REGS32 = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")

UWOP_PUSH_NONVOL, UWOP_ALLOC_LARGE, UWOP_ALLOC_SMALL, UWOP_SET_FPREG = 0, 1, 2, 3
UWOP_SAVE_NONVOL, UWOP_SAVE_NONVOL_FAR, UWOP_EPILOG, UWOP_SPARE = 4, 5, 6, 7
UWOP_SAVE_XMM128, UWOP_SAVE_XMM128_FAR, UWOP_PUSH_MACHFRAME = 8, 9, 10
UNW_FLAG_EHANDLER, UNW_FLAG_UHANDLER, UNW_FLAG_CHAININFO = 1, 2, 4
#: Directory index of the exception table (``.pdata``).
EXCEPTION_DIRECTORY = 3
#: Most RUNTIME_FUNCTIONs read from one image, and most links of a chain followed.
MAX_FUNCTIONS = 1 << 20
MAX_CHAIN = 32


def reg_index(name: str | int) -> int:
    """Unwind-code number of a register name ("rbp", "r12", "ebp" …) or the number itself."""
    if isinstance(name, int):
        return name
    n = name.lower()
    return REGS.index(n) if n in REGS else REGS32.index(n)


@dataclass(frozen=True)
class RuntimeFunction:
    """One ``RUNTIME_FUNCTION`` (12 bytes): BeginAddress, EndAddress (exclusive), UnwindData —
    all RVAs."""

    begin: int
    end: int
    unwind: int


@dataclass(frozen=True)
class UnwindCode:
    """One decoded unwind operation. ``offset``: CodeOffset (bytes from the function start to
    the end of the prologue instruction; for version-2 epilog codes the raw byte). ``op`` the
    UWOP_* number, ``info`` OpInfo; ``reg`` the register (integer ops, XMM number for XMM ops)
    or None; ``value``: allocation size, save offset (bytes, from the frame base) or, for
    PUSH_MACHFRAME, 1 when an error code was pushed; ``slots`` the 16-bit slots it used."""

    offset: int
    op: int
    info: int
    reg: int | None
    value: int
    slots: int


@dataclass(frozen=True)
class UnwindInfo:
    """An ``UNWIND_INFO`` at RVA ``rva``: header fields, decoded ``codes`` (in stored order:
    the last prologue instruction first), ``chained`` (the parent RUNTIME_FUNCTION when
    UNW_FLAG_CHAININFO is set) and ``handler`` (RVA, EHANDLER/UHANDLER)."""

    rva: int
    version: int
    flags: int
    prolog_size: int
    count: int
    frame_register: int
    frame_offset: int  # bytes (the stored 4-bit value times 16)
    codes: tuple[UnwindCode, ...]
    chained: RuntimeFunction | None = None
    handler: int | None = None


def _u8(img: bytes | bytearray, off: int) -> int:
    if not 0 <= off < len(img):
        raise ValueError(f"unwind data at RVA {off:#x} is outside the image")
    return img[off]


def _u16(img: bytes | bytearray, off: int) -> int:
    if not 0 <= off <= len(img) - 2:
        raise ValueError(f"unwind data at RVA {off:#x} is outside the image")
    return int(struct.unpack_from("<H", img, off)[0])


def _u32(img: bytes | bytearray, off: int) -> int:
    if not 0 <= off <= len(img) - 4:
        raise ValueError(f"unwind data at RVA {off:#x} is outside the image")
    return int(struct.unpack_from("<I", img, off)[0])


def runtime_functions(img: bytes | bytearray, directory: tuple[int, int]) -> list[RuntimeFunction]:
    """The RUNTIME_FUNCTION table of a mapped image ``img`` (bytes indexed by RVA) given the
    exception directory ``(rva, size)``; sorted by BeginAddress, empty entries dropped."""
    rva, size = directory
    out = []
    for i in range(min(size // 12, MAX_FUNCTIONS) if rva else 0):
        off = rva + 12 * i
        if off + 12 > len(img):
            break
        b, e, u = struct.unpack_from("<III", img, off)
        if b or e or u:
            out.append(RuntimeFunction(b, e, u))
    out.sort(key=lambda f: f.begin)
    return out


def lookup(functions: Sequence[RuntimeFunction], rva: int) -> RuntimeFunction | None:
    """The entry whose [begin, end) holds ``rva`` in a table sorted by begin, else None."""
    i = bisect.bisect_right([f.begin for f in functions], rva) - 1
    if i >= 0 and functions[i].begin <= rva < functions[i].end:
        return functions[i]
    return None


def parse_unwind_info(img: bytes | bytearray, rva: int) -> UnwindInfo:
    """Decode the UNWIND_INFO at ``rva`` of a mapped image (versions 1 and 2)."""
    b0 = _u8(img, rva)
    version, flags = b0 & 7, b0 >> 3
    if version not in (1, 2):
        raise ValueError(f"UNWIND_INFO at RVA {rva:#x}: version {version}")
    prolog, count, fr = _u8(img, rva + 1), _u8(img, rva + 2), _u8(img, rva + 3)
    codes: list[UnwindCode] = []
    i, first_epilog = 0, True
    while i < count:
        at = rva + 4 + 2 * i
        off, opinfo = _u8(img, at), _u8(img, at + 1)
        op, info = opinfo & 0xF, opinfo >> 4
        reg: int | None = None
        value, slots = 0, 1
        if op == UWOP_PUSH_NONVOL:
            reg = info
        elif op == UWOP_ALLOC_LARGE:
            if info == 0:
                value, slots = _u16(img, at + 2) * 8, 2
            elif info == 1:
                value, slots = _u32(img, at + 2), 3
            else:
                raise ValueError(f"UWOP_ALLOC_LARGE with OpInfo {info} at RVA {at:#x}")
        elif op == UWOP_ALLOC_SMALL:
            value = info * 8 + 8
        elif op == UWOP_SET_FPREG:
            pass
        elif op == UWOP_SAVE_NONVOL:
            reg, value, slots = info, _u16(img, at + 2) * 8, 2
        elif op == UWOP_SAVE_NONVOL_FAR:
            reg, value, slots = info, _u32(img, at + 2), 3
        elif op == UWOP_EPILOG:
            if version == 1:  # version 1: the obsolete UWOP_SAVE_XMM (scaled by 8)
                reg, value, slots = info, _u16(img, at + 2) * 8, 2
            else:  # version 2: one slot each (LLVM Win64EH)
                value = off if first_epilog else off | (info << 8)
                first_epilog = False
        elif op == UWOP_SPARE:
            # version 1: the obsolete UWOP_SAVE_XMM_FAR; version 2: spare, three slots
            reg, value, slots = info, _u32(img, at + 2), 3
        elif op == UWOP_SAVE_XMM128:
            reg, value, slots = info, _u16(img, at + 2) * 16, 2
        elif op == UWOP_SAVE_XMM128_FAR:
            reg, value, slots = info, _u32(img, at + 2), 3
        elif op == UWOP_PUSH_MACHFRAME:
            value = info
        else:
            raise ValueError(f"unknown unwind op {op} at RVA {at:#x}")
        codes.append(UnwindCode(off, op, info, reg, value, slots))
        i += slots
    tail = rva + 4 + 2 * ((count + 1) & ~1)
    chained = handler = None
    if flags & UNW_FLAG_CHAININFO:
        chained = RuntimeFunction(_u32(img, tail), _u32(img, tail + 4), _u32(img, tail + 8))
    elif flags & (UNW_FLAG_EHANDLER | UNW_FLAG_UHANDLER):
        handler = _u32(img, tail)
    return UnwindInfo(rva, version, flags, prolog, count, fr & 0xF, (fr >> 4) * 16,
                      tuple(codes), chained, handler)


def unwind_chain(img: bytes | bytearray, fn: RuntimeFunction) -> list[UnwindInfo]:
    """``fn``'s UNWIND_INFO followed by those of its chained parents (at most
    :data:`MAX_CHAIN`; a cycle raises ``ValueError``)."""
    out: list[UnwindInfo] = []
    seen: set[int] = set()
    cur: RuntimeFunction | None = fn
    while cur is not None:
        if cur.unwind in seen or len(out) >= MAX_CHAIN:
            raise ValueError(f"unwind chain from RVA {fn.begin:#x} loops or is too long")
        seen.add(cur.unwind)
        ui = parse_unwind_info(img, cur.unwind)
        out.append(ui)
        cur = ui.chained
    return out


# --- writing: synthetic functions with real prologues -------------------------------------


@dataclass(frozen=True)
class Function:
    """A synthetic function for :func:`~.pe.build_driver` (``functions=``).

    ``prologue``: operations in execution order —
    ``("push", reg)``; ``("alloc", bytes)`` (a multiple of 8); ``("setfp", reg, offset)``
    (``lea reg, [rsp+offset]``, offset a multiple of 16, ≤ 240; x86: ``mov ebp, esp``);
    ``("save", reg, offset)`` (``mov [rsp+offset], reg``); ``("savexmm", n, offset)``
    (``movaps [rsp+offset], xmmN``, offset a multiple of 16); ``("machframe", error_code)``
    (first only: the processor pushed a machine frame, with an error code when true).
    Sizes pick the unwind code: ALLOC_SMALL ≤ 128, ALLOC_LARGE (16-bit) < 512 KiB, else the
    32-bit form; SAVE_* use the FAR form when the scaled offset does not fit 16 bits.

    ``calls``: the body, in order; each is a local function name (``call rel32``),
    ``"dll!Name"`` (``call [IAT slot]``: x64 ``FF 15`` RIP-relative, x86 ``FF 15`` absolute)
    or raw ``bytes`` of any call instruction (e.g. ``b"\\xff\\xd0"`` = ``call rax``).
    ``chain_saves``: when not empty, the body is split after the prologue: the second part
    starts with these ``("save", reg, offset)`` operations and is described by its own
    RUNTIME_FUNCTION whose UNWIND_INFO has UNW_FLAG_CHAININFO pointing at the first part's.
    ``export``: add the function to the export table.
    """

    name: str
    prologue: Sequence[tuple] = ()
    calls: Sequence[str | bytes] = ()
    chain_saves: Sequence[tuple] = ()
    export: bool = True


@dataclass
class AssembledFunction:
    """Machine code of a :class:`Function` at ``.text`` offset ``start`` (bytes): where each
    call's rel32/disp32 operand is (``fixups``: (code offset, target)), the offset just after
    each call (``returns``), the prologue's unwind codes (``codes``) and, with ``chain_saves``,
    the split offset and the chained part's codes."""

    fn: Function
    start: int
    code: bytearray
    prolog_size: int
    codes: list[tuple[int, int, int, bytes]]  # (code offset, op, info, extra slots)
    frame_register: int = 0
    frame_offset: int = 0
    fixups: list[tuple[int, str]] = field(default_factory=list)
    returns: list[int] = field(default_factory=list)
    split: int | None = None
    chain_prolog: int = 0
    chain_codes: list[tuple[int, int, int, bytes]] = field(default_factory=list)


def _rex(w: bool, r: int, b: int = 0) -> bytes:
    v = 0x40 | (8 if w else 0) | (4 if r >= 8 else 0) | (1 if b >= 8 else 0)
    return bytes([v]) if v != 0x40 else b""


def _save_insn(reg: int, off: int) -> bytes:
    # mov [rsp+disp32], reg: REX.W(+R) 89 /r, ModRM mod=10 rm=100, SIB 0x24
    return _rex(True, reg) + bytes([0x89, 0x84 | ((reg & 7) << 3), 0x24]) + struct.pack("<i", off)


def _savexmm_insn(n: int, off: int) -> bytes:
    # movaps [rsp+disp32], xmmN: (REX.R) 0F 29 /r
    insn = bytes([0x0F, 0x29, 0x84 | ((n & 7) << 3), 0x24])
    return _rex(False, n) + insn + struct.pack("<i", off)


def _save_code(op_near: int, op_far: int, reg: int, off: int, scale: int) -> tuple[int, int, bytes]:
    if off % scale:
        raise ValueError(f"save offset {off:#x} is not a multiple of {scale}")
    if off // scale <= 0xFFFF:
        return op_near, reg, struct.pack("<H", off // scale)
    return op_far, reg, struct.pack("<I", off)


def assemble(fn: Function, start: int, *, is64: bool) -> AssembledFunction:
    """Assemble ``fn`` at ``.text`` offset ``start``: prologue, body (calls), a matching
    epilogue (``ret``, or ``iretq`` after a machine frame), padded with ``int3`` to 16 bytes."""
    code = bytearray()
    codes: list[tuple[int, int, int, bytes]] = []
    fr = fro = 0
    pushed: list[int] = []
    alloc = alloc_after_fp = 0
    machframe: bool | None = None
    for i, op in enumerate(fn.prologue):
        kind = op[0]
        if kind == "machframe":
            if i or not is64:
                raise ValueError("machframe must be the first x64 prologue operation")
            machframe = bool(op[1]) if len(op) > 1 else False
            codes.append((0, UWOP_PUSH_MACHFRAME, int(machframe), b""))
        elif kind == "push":
            r = reg_index(op[1])
            code += (_rex(False, 0, r) + bytes([0x50 + (r & 7)])) if is64 else bytes([0x50 + r])
            pushed.append(r)
            codes.append((len(code), UWOP_PUSH_NONVOL, r, b""))
        elif kind == "alloc":
            size = int(op[1])
            if size <= 0 or size % (8 if is64 else 4):
                raise ValueError(f"allocation {size:#x} must be a positive multiple of 8")
            if size < 0x80:
                code += (b"\x48" if is64 else b"") + bytes([0x83, 0xEC, size])
            else:
                code += (b"\x48" if is64 else b"") + b"\x81\xec" + struct.pack("<I", size)
            alloc += size
            alloc_after_fp += size if fr else 0
            if size <= 128:
                codes.append((len(code), UWOP_ALLOC_SMALL, size // 8 - 1, b""))
            elif size <= 0x7FFF8:
                codes.append((len(code), UWOP_ALLOC_LARGE, 0, struct.pack("<H", size // 8)))
            else:
                codes.append((len(code), UWOP_ALLOC_LARGE, 1, struct.pack("<I", size)))
        elif kind == "setfp":
            r = reg_index(op[1])
            off = int(op[2]) if len(op) > 2 else 0
            if not is64:
                code += b"\x8b\xec"  # mov ebp, esp
                fr = 5
                continue
            if off % 16 or not 0 <= off <= 240:
                raise ValueError("frame offset must be a multiple of 16 in [0, 240]")
            # lea reg, [rsp+disp8]
            code += _rex(True, r) + bytes([0x8D, 0x44 | ((r & 7) << 3), 0x24, off])
            fr, fro = r, off
            codes.append((len(code), UWOP_SET_FPREG, 0, b""))
        elif kind == "save":
            r, off = reg_index(op[1]), int(op[2])
            code += _save_insn(r, off)
            o, info, extra = _save_code(UWOP_SAVE_NONVOL, UWOP_SAVE_NONVOL_FAR, r, off, 8)
            codes.append((len(code), o, info, extra))
        elif kind == "savexmm":
            n, off = int(op[1]), int(op[2])
            code += _savexmm_insn(n, off)
            o, info, extra = _save_code(UWOP_SAVE_XMM128, UWOP_SAVE_XMM128_FAR, n, off, 16)
            codes.append((len(code), o, info, extra))
        else:
            raise ValueError(f"unknown prologue operation {op!r}")
    prolog = len(code)
    if prolog > 255:
        raise ValueError(f"{fn.name}: prologue of {prolog} bytes is longer than 255")
    out = AssembledFunction(fn, start, code, prolog, codes, fr, fro)
    if fn.chain_saves:
        out.split = len(code)
        for op in fn.chain_saves:
            if op[0] != "save":
                raise ValueError("chain_saves holds ('save', reg, offset) operations only")
            r, off = reg_index(op[1]), int(op[2])
            code += _save_insn(r, off)
            o, info, extra = _save_code(UWOP_SAVE_NONVOL, UWOP_SAVE_NONVOL_FAR, r, off, 8)
            out.chain_codes.append((len(code) - out.split, o, info, extra))
        out.chain_prolog = len(code) - out.split
    for c in fn.calls:
        if isinstance(c, bytes | bytearray):
            code += bytes(c)
        elif "!" in c:
            code += b"\xff\x15"
            out.fixups.append((len(code), c))
            code += bytes(4)
        else:
            code += b"\xe8"
            out.fixups.append((len(code), c))
            code += bytes(4)
        out.returns.append(len(code))
        code += b"\x90"  # a nop after each call, as compilers emit before an epilogue
    # Epilogue.
    if fr and is64:
        # lea rsp, [fr + disp32]: back to the value after the pushes
        disp = alloc - alloc_after_fp - fro
        code += _rex(True, 4, fr) + bytes([0x8D, 0xA0 | (fr & 7)])
        code += (b"\x24" if fr & 7 == 4 else b"") + struct.pack("<i", disp)
    elif alloc:
        code += (b"\x48" if is64 else b"") + b"\x81\xc4" + struct.pack("<I", alloc)
    if not is64 and fr:
        code += b"\x8b\xe5"  # mov esp, ebp
    for r in reversed(pushed):
        code += (_rex(False, 0, r) + bytes([0x58 + (r & 7)])) if is64 else bytes([0x58 + r])
    if machframe:
        code += b"\x48\x83\xc4\x08"  # drop the error code
    code += b"\x48\xcf" if machframe is not None else b"\xc3"
    code += b"\xcc" * (-len(code) % 16)
    return out


def encode_unwind_info(codes: Sequence[tuple[int, int, int, bytes]], prolog: int, *,
                       frame_register: int = 0, frame_offset: int = 0,
                       chained: RuntimeFunction | None = None) -> bytes:
    """Bytes of an UNWIND_INFO (version 1) for prologue ``codes`` given in execution order
    ((code offset, op, info, extra slot bytes)); stored last-first as the format requires."""
    slots = bytearray()
    for off, op, info, extra in reversed(codes):
        slots += bytes([off, op | (info << 4)]) + extra
    count = len(slots) // 2
    if count > 255:
        raise ValueError("more than 255 unwind code slots")
    flags = UNW_FLAG_CHAININFO if chained else 0
    out = bytearray([1 | (flags << 3), prolog, count, frame_register | ((frame_offset // 16) << 4)])
    out += slots + bytes(2 * (count & 1))
    if chained:
        out += struct.pack("<III", chained.begin, chained.end, chained.unwind)
    return bytes(out)
