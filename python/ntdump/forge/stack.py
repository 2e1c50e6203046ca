"""Plant a crash stack in a forged dump: the stack bytes and the header's CONTEXT.

x64: given a chain of call sites, the stack is built by *emulating* each function's prologue
from the unwind codes the function really has in its image (``.pdata``/``.xdata``, read here by
:mod:`.unwind`, independently of ntdump's reader): pushes of nonvolatile registers, fixed
allocations, the frame register (UWOP_SET_FPREG), register and XMM saves (SAVE_NONVOL(_FAR),
SAVE_XMM128(_FAR)), chained unwind info, and machine frames (UWOP_PUSH_MACHFRAME: the
processor pushes SS, RSP, RFLAGS, CS, RIP and optionally an error code, after aligning RSP down
to 16 — Intel SDM vol. 3 §6.14.2). A function without a RUNTIME_FUNCTION is a leaf: its return
address is at [RSP]. Each function then "uses" the registers it saved (gives them new values),
so a walker that does not restore them from the stack gets them wrong.

x86: EBP frames (``push ebp; mov ebp, esp``, locals, three stdcall arguments per call) — the
chain a debugger follows — and functions without a frame (``fpo=True``, frame-pointer
omission), which save EBP and then use it as a general register: the chain breaks there and the
frames beyond it can only be found by scanning the stack for return addresses.

Usage (see docs/forge.md)::

    sc = scenario.wine_drivers("w.dmp", "x86_64", wine_dir=...)
    nt = sc.layout.module("ntoskrnl.exe").image
    planted = stack.plant(sc, [CallSite("ntoskrnl.exe", rip),          # frame 0: the context
                               CallSite("hidclass.sys", ret_addr), …])  # then return addresses
    planted.frames   # ground truth: pc and child-SP of every frame, how a walker finds it

Units: VAs and sizes in bytes. Registers by name (``"rbx"``, ``"r12"``, ``"ebp"``).
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .image import MappedImage
from .memory import PAGE_SIZE
from .unwind import (
    REGS,
    REGS32,
    UWOP_ALLOC_LARGE,
    UWOP_ALLOC_SMALL,
    UWOP_PUSH_MACHFRAME,
    UWOP_PUSH_NONVOL,
    UWOP_SAVE_NONVOL,
    UWOP_SAVE_NONVOL_FAR,
    UWOP_SAVE_XMM128,
    UWOP_SAVE_XMM128_FAR,
    UWOP_SET_FPREG,
    UWOP_SPARE,
    UnwindInfo,
    lookup,
    runtime_functions,
    unwind_chain,
)

#: Machine-frame values the forge uses: kernel CS/SS selectors and RFLAGS (IF set).
KERNEL_CS, KERNEL_SS, RFLAGS = 0x10, 0x18, 0x286


@dataclass(frozen=True)
class CallSite:
    """One frame to plant. ``module``: the loaded module's base name (``"ntoskrnl.exe"``);
    ``pc``: VA — for frame 0 the instruction pointer of the context; for the others the return
    address (just after a call instruction in ``module``), or, for the frame a machine frame
    interrupted, the interrupted instruction. ``fpo`` (x86 only): the function keeps no EBP
    frame."""

    module: str
    pc: int
    fpo: bool = False


@dataclass(frozen=True)
class PlantedFrame:
    """Ground truth of one planted frame. ``pc`` as given; ``sp`` the child-SP: frame 0 the
    context's RSP/ESP, others the stack pointer just after the return (address of the slot
    holding ``pc`` + 8 / + 4) or, after a machine frame, the RSP it saved; ``slot`` the VA
    holding ``pc`` (None for frame 0); ``how`` the way ntdump's walker is expected to find it:
    "context", "unwind" (x64), "frame-chain" or "scan" (x86); ``frame_base`` the frame's EBP
    (x86 EBP frames) or 0; ``interrupted``: reached through a machine frame."""

    index: int
    module: str
    pc: int
    sp: int
    slot: int | None
    how: str
    frame_base: int = 0
    interrupted: bool = False


@dataclass
class PlantedStack:
    """A planted stack: ``frames`` (frame 0 first), the ``context`` registers (name → value,
    incl. rip/rsp or eip/esp), the stack range used ``(low, high)`` and the machine."""

    machine: str
    frames: list[PlantedFrame]
    context: dict[str, int]
    stack: tuple[int, int]
    writes: dict[int, bytes] = field(default_factory=dict, repr=False)

    def header_fields(self) -> dict[str, Any]:
        """Keyword arguments for :class:`~.header.Header` (``dataclasses.replace``)."""
        ip, sp = ("rip", "rsp") if self.machine == "x64" else ("eip", "esp")
        return {"context_rip": self.context[ip], "context_rsp": self.context[sp],
                "context_registers": dict(self.context)}

    @property
    def return_addresses(self) -> list[int]:
        """``pc`` of every frame after frame 0, in order."""
        return [f.pc for f in self.frames[1:]]


class _Stack:
    """Little-endian writes of the emulated stack, collected then written through a writer."""

    def __init__(self, low: int, high: int, ptr: int) -> None:
        self.low, self.high, self.ptr = low, high, ptr
        self.writes: dict[int, bytes] = {}

    def put(self, va: int, value: int, size: int | None = None) -> None:
        size = size or self.ptr
        if not (self.low <= va and va + size <= self.high):
            raise ValueError(f"stack overflow: {va:#x} is outside [{self.low:#x}, {self.high:#x})")
        self.writes[va] = (value % (1 << 8 * size)).to_bytes(size, "little")


def _reg_fill(k: int, i: int, is64: bool) -> int:
    """A register value that is no address of anything: 0xA… with frame and register number."""
    return (0x0A00_0000_0000_0000 | (k << 16) | (0x100 + i)) if is64 else \
        (0x0A00_0000 | (k << 12) | (0x100 + i))


def _codes_in_order(chain: Sequence[UnwindInfo], offset: int | None) -> list:
    """Prologue operations in execution order: chained parents first, and of the first info
    only those whose CodeOffset <= ``offset`` (None: all)."""
    ops: list = []
    for depth, ui in enumerate(reversed(chain)):
        first = depth == len(chain) - 1
        for c in reversed(ui.codes):
            if c.op in (6,) and ui.version == 2:
                continue  # version-2 epilog descriptions: not prologue operations
            if first and offset is not None and c.offset > offset:
                continue
            ops.append((ui, c))
    return ops


def _function(img: MappedImage, va: int) -> tuple[int, list[UnwindInfo]] | None:
    rf = lookup(runtime_functions(img.image, img.info.directory(3)), va - img.base)
    if rf is None:
        return None
    return rf.begin + img.base, unwind_chain(img.image, rf)


def plant_x64(images: dict[str, MappedImage], frames: Sequence[CallSite], *,
              stack: tuple[int, int]) -> PlantedStack:
    """Emulate the calls of ``frames`` (frame 0 = innermost) on a stack in ``[low, high)``;
    returns the writes and the ground truth (see :func:`plant`)."""
    low, high = stack
    st = _Stack(low, high, 8)
    regs = {i: _reg_fill(0xFF, i, True) for i in range(16)}
    rsp = (high - 0x40) & ~0xF
    n = len(frames)
    infos = []
    for f in frames:
        img = images.get(f.module.lower())
        if img is None:
            raise ValueError(f"module {f.module!r} is not loaded")
        if not img.base <= f.pc < img.end:
            raise ValueError(f"{f.pc:#x} is not inside {f.module}")
        infos.append(img)
    # Does frame k-1's function begin with a machine frame (then frame k was interrupted)?
    found: list[tuple[tuple[int, list[UnwindInfo]] | None, int, bool]] = []
    for k, f in enumerate(frames):
        interrupted = k > 0 and bool(found) and found[-1][2]
        at = f.pc if (k == 0 or interrupted) else f.pc - 1
        fn = _function(infos[k], at)
        mf = fn is not None and any(c.op == UWOP_PUSH_MACHFRAME for ui in fn[1] for c in ui.codes)
        found.append((fn, at, mf))
    truth: list[PlantedFrame | None] = [None] * n
    # The outermost frame "was called" with a zero return address (the walk ends there).
    rsp -= 8
    st.put(rsp, 0)
    for k in range(n - 1, -1, -1):
        f = frames[k]
        fn, at, _ = found[k]
        if fn is not None:
            begin, chain = fn
            interrupted = k > 0 and found[k - 1][2]
            # The context and an interrupted frame may stop inside the prologue; a return
            # address is always past it.
            first_rf_offset = f.pc - begin if k == 0 or interrupted else None
            if first_rf_offset is None and at + 1 - begin < chain[0].prolog_size:
                raise ValueError(f"return address {f.pc:#x} is inside its function's prologue")
            ops = _codes_in_order(chain, first_rf_offset)
            saves: list[tuple[int, int, int]] = []  # (kind 8/16, reg, offset)
            fp: tuple[int, int] | None = None
            saved: set[int] = set()
            for ui, c in ops:
                if c.op == UWOP_PUSH_MACHFRAME:
                    # Frame k+1 was interrupted: handled when frame k+1 "called" us (below).
                    continue
                if c.op == UWOP_PUSH_NONVOL:
                    rsp -= 8
                    st.put(rsp, regs[c.reg or 0])
                    saved.add(c.reg or 0)
                elif c.op in (UWOP_ALLOC_SMALL, UWOP_ALLOC_LARGE):
                    rsp -= c.value
                elif c.op == UWOP_SET_FPREG:
                    regs[ui.frame_register] = rsp + ui.frame_offset
                    fp = (ui.frame_register, ui.frame_offset)
                elif c.op in (UWOP_SAVE_NONVOL, UWOP_SAVE_NONVOL_FAR):
                    saves.append((8, c.reg or 0, c.value))
                    saved.add(c.reg or 0)
                elif c.op in (UWOP_SAVE_XMM128, UWOP_SAVE_XMM128_FAR, UWOP_SPARE) or c.op == 6:
                    saves.append((16, c.reg or 0, c.value))
            base = regs[fp[0]] - fp[1] if fp else rsp
            for kind, r, off in saves:
                if kind == 8:
                    st.put(base + off, regs[r])
                else:  # an XMM register: 16 recognisable bytes
                    st.put(base + off, _reg_fill(k, 0x40 + r, True), 8)
                    st.put(base + off + 8, _reg_fill(k, 0x80 + r, True), 8)
            # The body uses the registers it saved (the frame register keeps its value).
            for r in saved:
                if not fp or r != fp[0]:
                    regs[r] = _reg_fill(k, r, True)
        sp_k = rsp
        truth[k] = PlantedFrame(k, f.module, f.pc, sp_k, None, "context" if k == 0 else "unwind",
                                interrupted=k > 0 and found[k - 1][2])
        if k == 0:
            break
        # Frame k transfers to frame k-1: a call (push the return address) or an interrupt.
        if found[k - 1][2]:
            fn_in = found[k - 1][0]
            err = bool(fn_in and any(c.op == UWOP_PUSH_MACHFRAME and c.value
                                     for ui in fn_in[1] for c in ui.codes))
            old = rsp
            rsp &= ~0xF
            for value in (KERNEL_SS, old, RFLAGS, KERNEL_CS):
                rsp -= 8
                st.put(rsp, value)
            rsp -= 8
            st.put(rsp, f.pc)
            slot = rsp
            if err:
                rsp -= 8
                st.put(rsp, 0)
        else:
            rsp -= 8
            st.put(rsp, f.pc)
            slot = rsp
        done = truth[k]
        assert done is not None
        truth[k] = dataclasses.replace(done, slot=slot)
    ctx = {REGS[i]: v for i, v in regs.items()}
    ctx["rsp"], ctx["rip"] = rsp, frames[0].pc
    return PlantedStack("x64", [t for t in truth if t is not None], ctx, (low, high), st.writes)


def plant_x86(images: dict[str, MappedImage], frames: Sequence[CallSite], *,
              stack: tuple[int, int]) -> PlantedStack:
    """EBP frames, and frame-pointer-omitted ones (``fpo``), from the outermost inwards."""
    low, high = stack
    st = _Stack(low, high, 4)
    for f in frames:
        img = images.get(f.module.lower())
        if img is None or not img.base <= f.pc < img.end:
            raise ValueError(f"{f.pc:#x} is not inside a loaded {f.module!r}")
    regs = {i: _reg_fill(0xFF, i, False) for i in range(8)}
    regs[5] = 0
    esp = (high - 0x40) & ~0xF
    esp -= 4
    st.put(esp, 0)
    n = len(frames)
    base: list[int] = [0] * n
    slots: list[int | None] = [None] * n
    sps: list[int] = [0] * n
    for k in range(n - 1, -1, -1):
        esp -= 4
        st.put(esp, regs[5])  # push ebp
        if frames[k].fpo:
            esp -= 0x10  # locals; EBP now holds something else
            regs[5] = _reg_fill(k, 5, False)
        else:
            regs[5] = esp
            base[k] = esp
            esp -= 0x10
        for r in (3, 6, 7):  # push ebx, esi, edi
            esp -= 4
            st.put(esp, regs[r])
            regs[r] = _reg_fill(k, r, False)
        sps[k] = esp
        if k == 0:
            break
        for a in range(3, 0, -1):  # three stdcall arguments
            esp -= 4
            st.put(esp, 0x0B00_0000 | (k << 8) | a)
        esp -= 4
        st.put(esp, frames[k].pc)
        slots[k] = esp
    # Which frames the EBP chain reaches: frame j+1 while frames 0..j keep EBP frames.
    truth = []
    chain_ok = True
    for k, f in enumerate(frames):
        if k == 0:
            how = "context"
        else:
            how = "frame-chain" if chain_ok else "scan"
        if f.fpo:
            chain_ok = False
        sp = sps[k] if k == 0 else (slots[k] or 0) + 4
        truth.append(PlantedFrame(k, f.module, f.pc, sp, slots[k], how, base[k]))
    ctx = {REGS32[i]: v for i, v in regs.items()}
    ctx["esp"], ctx["eip"] = sps[0], frames[0].pc
    return PlantedStack("x86", truth, ctx, (low, high), st.writes)


def plant_into(write: Callable[[int, bytes], None], images: Sequence[MappedImage],
               frames: Sequence[CallSite], *, machine: str,
               stack: tuple[int, int]) -> PlantedStack:
    """Plant ``frames`` with any writer ``write(va, bytes)`` over a mapped ``stack`` range
    ``(low, high)``; ``images`` are the loaded modules (:class:`~.image.MappedImage`)."""
    if not frames:
        raise ValueError("no frames to plant")
    by_name = {im.name.lower(): im for im in images}
    fn = plant_x64 if machine == "x64" else plant_x86
    planted = fn(by_name, frames, stack=stack)
    for va, data in sorted(planted.writes.items()):
        write(va, data)
    return planted


def plant(scenario: Any, frames: Sequence[CallSite], *, stack: tuple[int, int] | None = None,
          rewrite: bool = True) -> PlantedStack:
    """Plant ``frames`` in a :class:`~.scenario.Scenario` (any format but triage): the stack
    goes to the layout's 8 KiB kernel stack (or ``stack=(low, high)``, mapped), the CONTEXT
    (all general registers) into ``scenario.header``, and, with ``rewrite``, the dump file is
    written again in its format. Returns the ground truth."""
    from .scenario import _write  # a sibling module: the writer of every scenario format

    layout = scenario.layout
    if scenario.fmt == "triage":
        raise ValueError("plant() needs a format with memory pages, not triage")
    rng = stack or (layout.stack_top - 0x2000, layout.stack_top)

    def write(va: int, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            pa = scenario.pt.translate(va + pos)
            if pa is None:
                raise ValueError(f"stack address {va + pos:#x} is not mapped")
            take = min(PAGE_SIZE - ((va + pos) & 0xFFF), len(data) - pos)
            scenario.mem.write(pa, data[pos:pos + take])
            pos += take

    planted = plant_into(write, [m.image for m in layout.modules], frames,
                         machine=layout.machine, stack=rng)
    scenario.header = dataclasses.replace(scenario.header, **planted.header_fields())
    if rewrite:
        scenario.stored = _write(scenario.path, scenario.fmt, scenario.mem, scenario.header,
                                 layout)
    return planted


def _decode_call_ending(code: bytes | bytearray, end: int, is64: bool) -> tuple[int, str] | None:
    """Start offset and form of a call instruction ending exactly at ``end`` in ``code``
    (E8 rel32; FF /2 with any ModRM/SIB/displacement; REX prefixes on x64), else None."""
    if end >= 5 and code[end - 5] == 0xE8:
        return end - 5, "E8"
    for length in range(2, 8):
        s = end - length
        if s < 0:
            break
        if code[s] != 0xFF:
            continue
        modrm = code[s + 1]
        if (modrm >> 3) & 7 != 2:
            continue
        mod, rm = modrm >> 6, modrm & 7
        size = 2
        if mod != 3 and rm == 4:
            size += 1
            sib_base = code[s + 2] & 7 if s + 2 < len(code) else 0
            if mod == 0 and sib_base == 5:
                size += 4
        if mod == 1:
            size += 1
        elif mod == 2 or (mod == 0 and rm == 5):
            size += 4
        if size == length:
            return s, "FF/2"
    return None


def return_addresses(img: MappedImage, *, target: int | None = None,
                     import_name: str | None = None, function: int | None = None) -> list[int]:
    """VAs just after call instructions in ``img``'s executable sections whose destination is
    ``target`` (``E8 rel32``) or whose ``FF 15`` operand is the IAT slot of ``import_name``
    (``"ExAllocatePool"`` or ``"ntoskrnl.exe!ExAllocatePool"``). Found by a byte scan for
    ``E8``/``FF 15`` whose operand matches, so every hit is a real call encoding.
    ``function``: keep only calls inside the function starting at that VA (x64: by its
    RUNTIME_FUNCTION and chained parts; without unwind data, up to the next export)."""
    hits = _return_addresses(img, target, import_name)
    if function is None:
        return hits
    rfs = runtime_functions(img.image, img.info.directory(3))
    if rfs:
        keep = []
        for ra in hits:
            rf = lookup(rfs, ra - 1 - img.base)
            if rf is None:
                continue
            root = unwind_chain(img.image, rf)
            begin = root[-2].chained.begin if len(root) > 1 and root[-2].chained else rf.begin
            if img.base + begin == function:
                keep.append(ra)
        return keep
    later = sorted(v for v in img.exports.values() if v > function)
    end = later[0] if later else img.end
    return [ra for ra in hits if function < ra <= end]


def _return_addresses(img: MappedImage, target: int | None,
                      import_name: str | None) -> list[int]:
    slots = set()
    if import_name:
        dll, _, fn = import_name.rpartition("!")
        slots = {i.iat for i in img.imports
                 if i.name == fn and (not dll or i.dll.lower() == dll.lower())}
    out = []
    for s in img.info.sections:
        if not s.characteristics & 0x20000000:
            continue
        lo, hi = s.virtual_address, s.virtual_address + max(s.virtual_size, 0)
        code = img.image
        for i in range(lo, min(hi, len(code)) - 5):
            if code[i] == 0xE8 and target is not None:
                rel = struct.unpack_from("<i", code, i + 1)[0]
                if img.base + i + 5 + rel == target:
                    out.append(img.base + i + 5)
            elif code[i] == 0xFF and code[i + 1] == 0x15 and slots and i + 6 <= len(code):
                disp = struct.unpack_from("<I", code, i + 2)[0]
                slot = (img.base + i + 6 + struct.unpack_from("<i", code, i + 2)[0]) \
                    if img.info.is64 else disp
                if slot in slots:
                    out.append(img.base + i + 6)
    return out


#: KDBG fields (u16) that locate KPRCB members (WINDOWS_INTERNALS.md §3.2).
KDBG_OFFSET_PRCB_CURRENT_THREAD = 0x2B4
KDBG_OFFSET_PRCB_PROC_STATE_CONTEXT = 0x2BC
KDBG_OFFSET_PRCB_CONTEXT = 0x338
KDBG_SIZE_PRCB = 0x2B0
#: KPRCB layouts the forge writes. x64: Windows 10 19041, the values of the real Windows 10 triage
#: dump's own KDBG copy (../shared/data/dumps/win10-19041-x64-triage.dmp: SizePrcb 0xAF00,
#: OffsetPrcbCurrentThread 0x8, OffsetPrcbProcStateContext 0x1F0, OffsetPrcbContext 0x85C0).
#: x86: the WRK's i386 KPRCB (Server 2003 SP1: CurrentThread at 0x4, ProcessorState at 0x1C with
#: its ContextFrame first; no Context pointer before Windows 7).
PRCB_LAYOUTS = {
    "x64": {"size": 0xAF00, "current_thread": 0x8, "proc_state_context": 0x1F0,
            "context": 0x85C0},
    "x86": {"size": 0x1000, "current_thread": 0x4, "proc_state_context": 0x1C, "context": 0},
}
#: Where the forge maps KPRCBs (one page-aligned block per processor, then its CONTEXT buffer).
PRCB_BASES = {"x64": 0xFFFFC08200000000, "x86": 0x8F000000}


def plant_processors(scenario: Any, contexts: Sequence[Mapping[str, int] | PlantedStack | None],
                     *, threads: Sequence[int] | None = None, rewrite: bool = True
                     ) -> list[int]:
    """Write one KPRCB per entry of ``contexts`` and fill KDBG's KiProcessorBlock and PRCB offset
    fields (:data:`PRCB_LAYOUTS`); each context (a register mapping with rip/rsp or eip/esp, or
    a :class:`PlantedStack`) goes to ``KPRCB.ProcessorState.ContextFrame`` and, on x64, also to a
    separate CONTEXT buffer that ``KPRCB.Context`` points to. ``threads``: the CurrentThread
    values (default 0). Returns the KPRCB VAs; rewrites the file unless ``rewrite=False``."""
    from .header import CONTEXT32_REGS, CONTEXT64_REGS, _context32, _context64
    from .scenario import _write

    layout = scenario.layout
    machine = layout.machine
    lay = PRCB_LAYOUTS[machine]
    is64 = machine == "x64"
    ptr = 8 if is64 else 4
    slots = 64 if is64 else 32
    if len(contexts) > slots:
        raise ValueError(f"KiProcessorBlock holds {slots} processors")
    pt, mem = scenario.pt, scenario.mem

    def write(va: int, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            pa = pt.translate(va + pos)
            if pa is None:
                raise ValueError(f"{va + pos:#x} is not mapped")
            take = min(PAGE_SIZE - ((va + pos) & 0xFFF), len(data) - pos)
            mem.write(pa, data[pos:pos + take])
            pos += take

    ctx_size = 0x4D0 if is64 else 0x2CC
    stride = -(-(lay["size"] + ctx_size + 0x10) // PAGE_SIZE) * PAGE_SIZE
    prcbs = []
    for i, c in enumerate(contexts):
        prcb = PRCB_BASES[machine] + i * stride
        for off in range(0, stride, PAGE_SIZE):
            if pt.translate(prcb + off) is None:
                pt.map(prcb + off, mem.alloc_page() << 12)
        prcbs.append(prcb)
        thread = threads[i] if threads is not None and i < len(threads) else 0
        write(prcb + lay["current_thread"], thread.to_bytes(ptr, "little"))
        if c is None:
            continue
        regs = dict(c.context if isinstance(c, PlantedStack) else c)
        ip, sp = (regs.get("rip", 0), regs.get("rsp", 0)) if is64 else \
            (regs.get("eip", 0), regs.get("esp", 0))
        names = CONTEXT64_REGS if is64 else CONTEXT32_REGS
        body = (_context64 if is64 else _context32)(
            ip, sp, {k: v for k, v in regs.items() if k in names})
        write(prcb + lay["proc_state_context"], body)
        if lay["context"]:
            buf = prcb + -(-lay["size"] // 16) * 16
            write(buf, body)
            write(prcb + lay["context"], buf.to_bytes(ptr, "little"))
    kd = layout.kdbg
    for i, prcb in enumerate(prcbs):
        write(layout.ki_processor_block + i * ptr, prcb.to_bytes(ptr, "little"))
    write(kd + KDBG_SIZE_PRCB, struct.pack("<H", lay["size"] & 0xFFFF))
    write(kd + KDBG_OFFSET_PRCB_CURRENT_THREAD, struct.pack("<H", lay["current_thread"]))
    write(kd + KDBG_OFFSET_PRCB_PROC_STATE_CONTEXT, struct.pack("<H", lay["proc_state_context"]))
    if layout.kdbg_size >= 0x340:
        write(kd + KDBG_OFFSET_PRCB_CONTEXT, struct.pack("<H", lay["context"]))
    if scenario.header.processors != len(contexts):
        scenario.header = dataclasses.replace(scenario.header, processors=len(contexts))
    if rewrite:
        scenario.stored = _write(scenario.path, scenario.fmt, scenario.mem, scenario.header,
                                 layout)
    return prcbs


__all__ = ["KERNEL_CS", "KERNEL_SS", "RFLAGS", "CallSite", "PlantedFrame", "PlantedStack",
           "PRCB_LAYOUTS", "plant", "plant_into", "plant_processors", "plant_x64", "plant_x86",
           "return_addresses"]
