"""Founding-story crash dumps with legitimate look-alikes: who is the culprit?

:func:`crash_story` writes a kernel dump in which a driver named by a GUID leaks untagged
``ExAllocatePool`` pool *and* crashes the machine while calling it, among legitimate drivers that
import ``ExAllocatePool`` too. The point of these dumps is that no shortcut finds the culprit:
it is neither first nor last by name or load order among the importers, and only the evidence an
engineer would weigh separates it (the crash stack, the bug check parameters, what the leaked
blocks point at, its name, path, debug data and load order).

Three families, as the story is told on servers (issue 10):

========  ==============  =====  ==========================================================
family    machine         build  bug check
========  ==============  =====  ==========================================================
"2003"    x86 PAE         3790   0x41 MUST_SUCCEED_POOL_EMPTY (size, pages used, big
                                 requests, pages available)
"win7"    x64             7601   0xC2 BAD_POOL_CALLER, P1 = 8: allocation at a bad IRQL
                                 (IRQL 2, PagedPool, size)
"win10"   x64             19041  0xD1 DRIVER_IRQL_NOT_LESS_OR_EQUAL: the culprit writes through
                                 the NULL ExAllocatePool returned (P1 0x10, IRQL 2, write, IP)
========  ==============  =====  ==========================================================

Bug check parameters as Microsoft's "Bug Check Code Reference" documents them (0x41, 0xC2, 0xD1).

The modules, in load order: a forged kernel and HAL (:mod:`.pe`) whose ``ExAllocatePool`` →
``ExAllocatePoolWithTag`` → ``KeBugCheckEx`` chain is real code (``call rel32``), eight forged boot
drivers, a forged ``cdrom.sys`` that imports ``ExAllocatePool`` (it sorts before the culprit's
name), then **Wine's real** ``hidclass.sys``, ``hidparse.sys``, ``usbd.sys`` (importers of
``ExAllocatePool``, read from ``wine_dir``: the package does not ship them), the culprit, and
Wine's ``winebus.sys``, ``wineusb.sys``, ``winexinput.sys`` (importers too). The culprit is a forged
driver named ``d3a8f1c2-5b7e-4c09-a6e1-7f2b9c4d8e15.sys`` (a GUID without braces), loaded from
``\\??\\C:\\ProgramData\\…``, with a CodeView PDB path from a developer's machine; its internal
function ``VndAllocContext`` calls ``ExAllocatePool`` through its IAT slot and writes to the block.

The crash stack is planted in the kernel stack the layout reserves (``KernelLayout.stack_top``),
as the code would leave it:

* x86 (EBP frames, stdcall; WRK i386 calling convention): ``KeBugCheckEx`` ←
  ``ExAllocatePoolWithTag`` ← ``ExAllocatePool`` ← culprit ← ``IofCallDriver``; each frame
  ``[ebp]`` = caller's EBP, ``[ebp+4]`` = return address, the arguments above; context
  Eip/Esp/Ebp in ``KeBugCheckEx``.
* x64 (fixed frames, no frame pointer; each function's prologue is ``sub rsp, N``): the same
  chain, the return address at ``rsp + N`` of each frame. For 0xD1 the chain is
  ``KeBugCheckEx`` ← ``KiBugCheckDispatch`` ← ``KiPageFault`` (internal, not exported) with a
  ``KTRAP_FRAME`` (Windows 10 x64 PDB layout: ErrorCode +0x160, Rip +0x168, SegCs +0x170,
  EFlags +0x178, Rsp +0x180, SegSs +0x188; 0x190 bytes) whose Rip is the culprit's faulting
  instruction — right after its call to ``ExAllocatePool`` — and whose Rsp is the culprit's
  frame.

Pool: the story's tags (``None`` on top, :data:`~.pool.STORY_TAGS`) with a sample of ``None``
blocks in pool pages; most of them hold pointers into the culprit's image (a list head in its
``.data`` and its function), a few into ``hidclass.sys`` (a legitimate user of untagged pool).

``leak=False`` writes the same machine healthy: the same drivers (the GUID driver too, idle), a
quarter-full pool, no failures, ``None`` blocks holding nothing, bug check 0xE2
(MANUALLY_INITIATED_CRASH) from a kernel-only stack.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from .image import parse_pe
from .kernel import KernelLayout, ModuleInfo, build_kernel_space
from .memory import PAGE_SIZE, PhysicalMemory
from .paging import PageTables
from .pe import build_driver, build_hal, build_kernel
from .pool import STORY_TAGS, PoolLayout, build_pool
from .scenario import DEFAULT_DRIVERS, STORY_EX_ALLOCATE_POOL, _place, _unloaded, _wine_folder
from .story import HEALTHY_TAGS, HEALTHY_VM, STORY_VM
from .writers import write_bitmap, write_full

__all__ = ["CULPRIT", "FAMILIES", "LEGIT_IMPORTERS", "WINE_IMPORTERS", "CrashStory", "Frame",
           "crash_story"]

CULPRIT = "d3a8f1c2-5b7e-4c09-a6e1-7f2b9c4d8e15.sys"
"""The culprit's file name: a GUID (no braces), between ``cdrom.sys`` and ``hidclass.sys`` by
name."""
CULPRIT_PATH = "\\??\\C:\\ProgramData\\Vndr\\" + CULPRIT
CULPRIT_PDB = "C:\\Users\\dev\\source\\repos\\VndFlt\\x64\\Release\\VndFlt.pdb"
"""A PDB path from a developer's build machine (Microsoft's own drivers carry a bare name)."""
CULPRIT_FUNCTION = "VndAllocContext"
WINE_BEFORE = ("hidclass.sys", "hidparse.sys", "usbd.sys")
WINE_AFTER = ("winebus.sys", "wineusb.sys", "winexinput.sys")
WINE_IMPORTERS = WINE_BEFORE + WINE_AFTER
"""Wine's drivers that import ``ExAllocatePool`` (checked with pefile by the tests)."""
LEGIT_IMPORTERS = ("cdrom.sys", *WINE_IMPORTERS)
"""Every legitimate importer of ``ExAllocatePool`` in a :func:`crash_story` dump."""

_NT = "ntoskrnl.exe"


@dataclass(frozen=True)
class _Family:
    machine: str
    build: int
    family: str
    kernel_base: int
    drivers_base: int
    root: str
    bugcheck: int


FAMILIES = {
    "2003": _Family("x86", 3790, "2003", 0xE0800000, 0xF5000000, "\\WINDOWS\\system32\\", 0x41),
    "win7": _Family("x64", 7601, "win7", 0xFFFFF80002A00000, 0xFFFFF88000E00000,
                    "\\SystemRoot\\system32\\", 0xC2),
    "win10": _Family("x64", 19041, "win10", 0xFFFFF8026BE00000, 0xFFFFF80270000000,
                     "\\SystemRoot\\system32\\", 0xD1),
}
"""family → machine, build, bases, system folder and the bug check of the leaking variant."""


@dataclass(frozen=True)
class Frame:
    """One planted stack frame, innermost first: the function it is in (``module!function``),
    the instruction address (the context IP for frame 0, else a return address just after a call),
    and the child-SP (the frame's stack pointer, a VA)."""

    function: str
    address: int
    sp: int


@dataclass
class CrashStory:
    """A :func:`crash_story` dump and its ground truth."""

    path: Path
    family: str
    leak: bool
    fmt: str
    layout: KernelLayout
    pool: PoolLayout
    bugcheck_code: int
    bugcheck_params: tuple[int, int, int, int]
    frames: list[Frame]
    culprit: ModuleInfo
    culprit_call_return: int
    """VA just after the culprit's ``call [ExAllocatePool]`` (its frame's return address)."""
    importers: list[str]
    """Base names of every module importing ntoskrnl.exe!ExAllocatePool, in load order."""
    leaked_pointers: dict[str, int] = field(default_factory=dict)
    """module base name → how many sampled ``None`` blocks hold a pointer into it."""

    @property
    def machine(self) -> str:
        """``"x86"`` or ``"x64"``."""
        return self.layout.machine


def _len(pieces: list) -> int:
    return sum(5 if isinstance(p, tuple) and p[0] == "call" else 6 if isinstance(p, tuple)
               else len(p) for p in pieces)


def _kernel_bodies(x64: bool, code: int, params: tuple[int, ...]) -> dict[str, list]:
    """Code of the kernel functions on the crash stack. Returns name → pieces."""
    if x64:
        p1, p2, p3, p4 = (v & 0xFFFFFFFF for v in params)
        bugcheck_args = [b"\x48\xc7\x44\x24\x20" + struct.pack("<I", p4),  # mov [rsp+20h], p4
                         b"\x41\xb9" + struct.pack("<I", p3),  # mov r9d, p3
                         b"\x41\xb8" + struct.pack("<I", p2),  # mov r8d, p2
                         b"\xba" + struct.pack("<I", p1),  # mov edx, p1
                         b"\xb9" + struct.pack("<I", code)]  # mov ecx, code
        return {
            # KeBugCheckEx: sub rsp,28h; then it never returns (jmp $).
            "KeBugCheckEx": [b"\x48\x83\xec\x28", b"\xeb\xfe"],
            "ExAllocatePoolWithTag": [b"\x48\x83\xec\x38", *bugcheck_args,
                                      ("call", "KeBugCheckEx"), b"\x48\x83\xc4\x38\xc3"],
            # ExAllocatePool: mov r8d, 'None'; call ExAllocatePoolWithTag.
            "ExAllocatePool": [b"\x48\x83\xec\x28", b"\x41\xb8None",
                               ("call", "ExAllocatePoolWithTag"), b"\x48\x83\xc4\x28\xc3"],
            # IofCallDriver: mov rax,[rcx+8] (DriverObject); call [rax+70h] (MajorFunction[]).
            "IofCallDriver": [b"\x48\x83\xec\x28", b"\x48\x8b\x41\x08", b"\xff\x50\x70",
                              b"\x48\x83\xc4\x28\xc3"],
            "KiBugCheckDispatch": [b"\x48\x83\xec\x38", *bugcheck_args,
                                   ("call", "KeBugCheckEx"), b"\x48\x83\xc4\x38\xc3"],
            # KiPageFault: push rbp; sub rsp,158h (the KTRAP_FRAME); call KiBugCheckDispatch.
            "KiPageFault": [b"\x55", b"\x48\x81\xec\x58\x01\x00\x00",
                            ("call", "KiBugCheckDispatch"), b"\x48\x81\xc4\x58\x01\x00\x00\x5d",
                            b"\x48\xcf"],
        }
    push_args = [b"\x68" + struct.pack("<I", params[3] & 0xFFFFFFFF),
                 b"\x68" + struct.pack("<I", params[2] & 0xFFFFFFFF),
                 b"\x68" + struct.pack("<I", params[1] & 0xFFFFFFFF),
                 b"\xff\x75\x0c",  # push [ebp+0Ch] (NumberOfBytes)
                 b"\x68" + struct.pack("<I", code)]
    return {
        "KeBugCheckEx": [b"\x55\x8b\xec", b"\xeb\xfe"],
        "ExAllocatePoolWithTag": [b"\x55\x8b\xec", *push_args, ("call", "KeBugCheckEx"),
                                  b"\x5d\xc2\x0c\x00"],
        "ExAllocatePool": [b"\x55\x8b\xec", b"\x68None", b"\xff\x75\x0c", b"\xff\x75\x08",
                           ("call", "ExAllocatePoolWithTag"), b"\x5d\xc2\x08\x00"],
        # IofCallDriver (fastcall): mov eax,[ecx+8]; push edx; push ecx; call [eax+38h].
        "IofCallDriver": [b"\x55\x8b\xec", b"\x8b\x41\x08", b"\x52\x51", b"\xff\x50\x38",
                          b"\x5d\xc3"],
    }


def _culprit_body(x64: bool) -> list:
    if x64:  # mov ecx, 0; mov edx, 0C8h; call [ExAllocatePool]; mov [rax+10h], rbx
        return [b"\x48\x83\xec\x28", b"\xb9\x00\x00\x00\x00", b"\xba\xc8\x00\x00\x00",
                ("iat", "ntoskrnl.exe!ExAllocatePool"), b"\x48\x89\x58\x10",
                b"\x48\x83\xc4\x28\xc3"]
    return [b"\x55\x8b\xec", b"\x68\xc8\x00\x00\x00", b"\x6a\x00",
            ("iat", "ntoskrnl.exe!ExAllocatePool"), b"\x89\x58\x10", b"\x5d\xc3"]


def _ret_after(pieces: list, nth_call: int = 0) -> int:
    """Offset just after the ``nth_call``-th call piece of a body."""
    seen = 0
    for i, p in enumerate(pieces):
        if isinstance(p, tuple):
            if seen == nth_call:
                return _len(pieces[:i + 1])
            seen += 1
    raise ValueError("no such call")


def _offset_after(pieces: list, marker: bytes) -> int:
    """Offset just after the piece equal to ``marker``."""
    for i, p in enumerate(pieces):
        if p == marker:
            return _len(pieces[:i + 1])
    raise ValueError("marker not in body")


def crash_story(path: str | Path, family: str = "2003", *, wine_dir: str | Path,
                leak: bool = True, fmt: str = "full", size: int = 128 << 20) -> CrashStory:
    """Write a founding-story crash dump of ``family`` ("2003", "win7" or "win10"; see the module
    docstring) at ``path``. ``wine_dir``: a folder holding Wine's PE files (itself, or with
    ``wine-i386`` / ``wine-x86_64`` inside). ``fmt``: "full", "bitmap" or "kernel". ``size``:
    bytes of RAM (the file is sparse)."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {sorted(FAMILIES)}")
    if fmt not in ("full", "bitmap", "kernel"):
        raise ValueError("fmt must be 'full', 'bitmap' or 'kernel'")
    fam = FAMILIES[family]
    x64 = fam.machine == "x64"
    ptr = 8 if x64 else 4
    wine = _wine_folder(wine_dir, "x86_64" if x64 else "i386")

    # Bug check and parameters (the faulting IP of 0xD1 is filled in once the culprit is placed).
    code = fam.bugcheck if leak else 0xE2
    params: list[int] = {0x41: [0xC8, STORY_VM["MmAllocatedNonPagedPool"], 0x1F3, 0],
                         0xC2: [8, 2, 1, 0xC8], 0xD1: [0x10, 2, 1, 0],
                         0xE2: [0, 0, 0, 0]}[code]

    # Kernel: real call chains in the functions on the stack.
    kbodies = _kernel_bodies(x64, code, tuple(params))
    if not leak:  # manual crash: IofCallDriver → KeBugCheckEx(0xE2)
        kbodies = {k: v for k, v in kbodies.items() if k in ("KeBugCheckEx", "IofCallDriver")}
    krvas: dict[str, int] = {}
    fixed = {"ExAllocatePool": STORY_EX_ALLOCATE_POOL - fam.kernel_base} if not x64 else None
    kernel = build_kernel(machine=fam.machine, image_base=fam.kernel_base, fixed_rvas=fixed,
                          bodies=kbodies, function_rvas=krvas)
    hal = build_hal(machine=fam.machine)
    root = fam.root
    mods: list[tuple[str, str, bytes]] = [(_NT, root + _NT, kernel),
                                          ("hal.dll", root + "hal.dll", hal)]
    for spec in DEFAULT_DRIVERS:
        mods.append((spec.name, root + "drivers\\" + spec.name,
                     build_driver(spec.name, machine=fam.machine, imports=spec.imports,
                                  pool_tags=spec.pool_tags, exports=spec.exports,
                                  dll=bool(spec.exports))))
    mods.append(("cdrom.sys", root + "drivers\\cdrom.sys",
                 build_driver("cdrom.sys", machine=fam.machine,
                              imports={_NT: ["ExAllocatePool", "ExFreePool", "IofCallDriver",
                                             "IoAllocateIrp", "KeInitializeEvent"],
                                       "CLASSPNP.SYS": ["ClassInitialize"]})))
    for name in WINE_BEFORE:
        mods.append((name, root + "drivers\\" + name, (wine / name).read_bytes()))
    cbody = _culprit_body(x64)
    crvas: dict[str, int] = {}
    culprit_bytes = build_driver(
        CULPRIT, machine=fam.machine,
        imports={_NT: ["RtlInitUnicodeString", "IoCreateDevice", "ExAllocatePool", "_wcsnicmp",
                       "ExFreePoolWithTag", "KeInitializeEvent", "KeSetEvent",
                       "IofCompleteRequest"]},
        pool_tags=[b"VndC", b"VndE"], data=bytes(64),
        rsds=(bytes.fromhex("5a1c0e9b3f7d4e21a8b6c4d2e0f19a37"), 3, CULPRIT_PDB),
        bodies={CULPRIT_FUNCTION: cbody}, function_rvas=crvas)
    mods.append((CULPRIT, CULPRIT_PATH, culprit_bytes))
    for name in WINE_AFTER:
        mods.append((name, root + "drivers\\" + name, (wine / name).read_bytes()))

    # Kernel space.
    pages = size // PAGE_SIZE
    mem = PhysicalMemory([(0x1, 0x9F), (0x100, pages - 0x100)])
    pt = PageTables(mem, "x64" if x64 else "pae")
    sizes = [-(-parse_pe(data).size_of_image // PAGE_SIZE) * PAGE_SIZE for _, _, data in mods]
    bases = _place(sizes[:2], fam.kernel_base) + _place(sizes[2:], fam.drivers_base)
    vm = dict(STORY_VM if leak else HEALTHY_VM)
    tags = STORY_TAGS if leak else HEALTHY_TAGS
    if fam.family == "win10":  # no MmAllocatedNonPagedPool: readers sum the tracker tables
        vm.pop("MmAllocatedNonPagedPool")
        total = sum(t.bytes_of(False) for t in tags)
        limit = int(total / (0.98 if leak else 0.25))
        vm["MmMaximumNonPagedPoolInBytes"] = -(-limit // 4096) * 4096
    layout = build_kernel_space(
        pt, mem, machine=fam.machine, family=fam.family, build=fam.build,
        modules=[(n, p, d, b) for (n, p, d), b in zip(mods, bases, strict=True)],
        unloaded=_unloaded(fam.drivers_base + 0x1000000), processors=1, vm=vm)
    nt = layout.modules[0]
    cul = layout.module(CULPRIT)
    fn = cul.base + crvas[CULPRIT_FUNCTION]
    culprit_ret = fn + _ret_after(cbody)
    if code == 0xD1:
        params[3] = culprit_ret  # the faulting write right after the call
    k = {name: nt.base + rva for name, rva in krvas.items()}

    # Pool, then what the leaked blocks hold.
    pl = build_pool(pt, mem, machine=fam.machine, build=fam.build, kdbg_va=layout.kdbg,
                    tags=tags, processors=1)
    leaked: dict[str, int] = {}
    hdr_size = 16 if x64 else 8
    none_blocks = [b for b in pl.blocks if b.allocated and b.tag == b"None"]
    if leak:
        hid = layout.module("hidclass.sys")
        data_va = cul.base + next(s.virtual_address for s in cul.image.info.sections
                                  if s.name == ".data")
        for i, b in enumerate(none_blocks):
            if i % 6 == 5:  # a legitimate untagged allocation of hidclass.sys
                owner, values = "hidclass.sys", [hid.base + 0x1040, 0, 0x20]
            else:  # the culprit's context: list links to its global head, its function, size
                owner, values = CULPRIT, [data_va + 0x10, data_va + 0x10, fn, 0xC8]
            blob = b"".join(v.to_bytes(ptr, "little") for v in values)
            pa = pt.translate(b.address + hdr_size)
            assert pa is not None
            mem.write(pa, blob)
            leaked[owner] = leaked.get(owner, 0) + 1

    # The crash stack.
    stack = layout.stack_top - 0x400
    frames: list[Frame] = []
    words: list[tuple[int, int]] = []  # (VA, value)

    def ret(fname: str, nth: int = 0) -> int:
        return k[fname] + _ret_after(kbodies[fname], nth)

    if not x64:
        # Innermost first: (function, IP, number of stack arguments).
        chain = [("nt!KeBugCheckEx", k["KeBugCheckEx"] + 3, 5)]
        if leak:
            chain += [("nt!ExAllocatePoolWithTag", ret("ExAllocatePoolWithTag"), 3),
                      ("nt!ExAllocatePool", ret("ExAllocatePool"), 2),
                      (f"{CULPRIT}!{CULPRIT_FUNCTION}", culprit_ret, 2)]
        chain += [("nt!IofCallDriver", k["IofCallDriver"] + _offset_after(
            kbodies["IofCallDriver"], b"\xff\x50\x38"), 0)]
        ebp = stack
        ebps = []
        for _, _, nargs in chain:
            ebps.append(ebp)
            ebp = ebp + 8 + 4 * nargs
        for i, (name, ip, _) in enumerate(chain):
            frames.append(Frame(name, ip, ebps[i]))
            nxt = ebps[i + 1] if i + 1 < len(chain) else 0
            ra = chain[i + 1][1] if i + 1 < len(chain) else 0
            words += [(ebps[i], nxt), (ebps[i] + 4, ra)]
        if code == 0x41:
            words += [(ebps[0] + 8 + 4 * j, v) for j, v in enumerate([code, *params])]
        ctx = {"context_rip": chain[0][1], "context_rsp": ebps[0], "context_rbp": ebps[0]}
    else:
        # (function, IP, frame allocation of the function: its return address is at sp + alloc)
        if leak and code == 0xD1:
            chain = [("nt!KeBugCheckEx", k["KeBugCheckEx"] + 4, 0x28),
                     ("nt!KiBugCheckDispatch", ret("KiBugCheckDispatch"), 0x38),
                     ("nt!KiPageFault", ret("KiPageFault"), None),
                     (f"{CULPRIT}!{CULPRIT_FUNCTION}", culprit_ret, 0x28)]
        elif leak:
            chain = [("nt!KeBugCheckEx", k["KeBugCheckEx"] + 4, 0x28),
                     ("nt!ExAllocatePoolWithTag", ret("ExAllocatePoolWithTag"), 0x38),
                     ("nt!ExAllocatePool", ret("ExAllocatePool"), 0x28),
                     (f"{CULPRIT}!{CULPRIT_FUNCTION}", culprit_ret, 0x28)]
        else:
            chain = [("nt!KeBugCheckEx", k["KeBugCheckEx"] + 4, 0x28)]
        chain += [("nt!IofCallDriver", k["IofCallDriver"] + _offset_after(
            kbodies["IofCallDriver"], b"\xff\x50\x70"), 0x28)]
        sp = stack
        for i, (name, ip, alloc) in enumerate(chain):
            frames.append(Frame(name, ip, sp))
            nxt_ip = chain[i + 1][1] if i + 1 < len(chain) else 0
            if alloc is None:  # KiPageFault: KTRAP_FRAME at sp, 0x190 bytes
                trap = sp
                nxt_sp = trap + 0x190
                words += [(trap + 0x160, 0), (trap + 0x168, nxt_ip), (trap + 0x170, 0x10),
                          (trap + 0x178, 0x10282), (trap + 0x180, nxt_sp), (trap + 0x188, 0x18)]
                sp = nxt_sp
                continue
            words.append((sp + alloc, nxt_ip))
            sp = sp + alloc + 8
        ctx = {"context_rip": chain[0][1], "context_rsp": stack, "context_rbp": 0}
    for va, value in words:
        pa = pt.translate(va)
        assert pa is not None, f"stack {va:#x} unmapped"
        mem.write(pa, (value & ((1 << 8 * ptr) - 1)).to_bytes(ptr, "little"))

    hdr = layout.header(bugcheck_code=code, bugcheck_params=tuple(params), processors=1,
                        product_type=3 if family == "2003" else 1,
                        comment=f"ntdump.forge crash_story {family}".encode(), **ctx)
    out = Path(path)
    if fmt == "full":
        write_full(out, mem, hdr)
    elif fmt == "bitmap":
        write_bitmap(out, mem, hdr, "full")
    else:
        write_bitmap(out, mem, hdr, "kernel", pages=sorted(mem.pages))
    importers = [m.name for m in layout.modules
                 if any(i.name == "ExAllocatePool" and i.dll.lower() == _NT
                        for i in m.image.imports)]
    return CrashStory(out, family, leak, fmt, layout, pl, code,
                      (params[0], params[1], params[2], params[3]), frames, cul, culprit_ret,
                      importers, leaked)
