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
Microsoft's page for 0x41 says that from Windows XP on no driver may request must-succeed pool
(a driver that asks gets 0xC2 with parameter 1 = 0x9A), so on a real 2003 server 0x41 comes from
the kernel's own must-succeed requests once the leak has drained the pool; the 2003 scenario keeps
the issue's picture (the leaking driver's thread on the 0x41 stack), which is the case the
evidence must handle, not a claim about which request raised it.

The modules, in load order: a forged kernel and HAL (:mod:`.pe`) whose ``ExAllocatePool`` →
``ExAllocatePoolWithTag`` → ``KeBugCheckEx`` chain is real code (``call rel32``; x64's
``ExAllocatePool`` a stub, as its tail jump leaves no frame), eight forged
boot
drivers, a forged ``cdrom.sys`` that imports ``ExAllocatePool`` (it sorts before the culprit's
name), then **Wine's real** ``hidclass.sys``, ``hidparse.sys``, ``usbd.sys`` (importers of
``ExAllocatePool``, read from ``wine_dir``: the package does not ship them), the culprit, and
Wine's ``winebus.sys``, ``wineusb.sys``, ``winexinput.sys`` (importers too). The culprit is a forged
driver named ``d3a8f1c2-5b7e-4c09-a6e1-7f2b9c4d8e15.sys`` (a GUID without braces), loaded from
``\\??\\C:\\ProgramData\\…``, with a CodeView PDB path from a developer's machine; its internal
function ``VndAllocContext`` calls ``ExAllocatePool`` through its IAT slot and writes to the block.

The crash stack is planted by :func:`.stack.plant_into` in the layout's 8 KiB kernel stack from
the chain of call sites (frame 0 in ``KeBugCheckEx``; the others return addresses just after a
call): ``KeBugCheckEx`` ← ``ExAllocatePoolWithTag`` ← ``ExAllocatePool`` (x86 only: on x64 it
tail-jumps to ``ExAllocatePoolWithTag`` and leaves no frame) ← the culprit's
``VndAllocContext`` ← ``IofCallDriver`` (its ``call [rax+70h]`` / ``call [eax+38h]``: the driver's
MajorFunction entry). x64 frames follow each function's real unwind codes (the functions come from
:class:`.unwind.Function` with ``.pdata``); x86 frames are EBP frames. For 0xD1 the chain is
``KeBugCheckEx`` ← ``KiBugCheckDispatch`` ← ``KiPageFault`` (internal functions: no export names
them; KiPageFault's unwind data starts with UWOP_PUSH_MACHFRAME, error code included) ← the
culprit's faulting instruction — right after its call to ``ExAllocatePool`` — ← ``IofCallDriver``.

Pool: the story's tags (``None`` on top, :data:`~.pool.STORY_TAGS`) with a sample of ``None``
blocks in pool pages; most of them hold pointers into the culprit's image (a list head in its
``.data`` and its function), a few into ``hidclass.sys`` (a legitimate user of untagged pool).

``leak=False`` writes the same machine healthy: the same drivers (the GUID driver too, idle), a
quarter-full pool, no failures, ``None`` blocks holding nothing, bug check 0xE2
(MANUALLY_INITIATED_CRASH) from a kernel-only stack.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .image import parse_pe
from .kernel import KernelLayout, ModuleInfo, build_kernel_space
from .memory import PAGE_SIZE, PhysicalMemory
from .paging import PageTables
from .pe import build_driver, build_hal, build_kernel
from .pool import STORY_TAGS, PoolLayout, build_pool
from .scenario import DEFAULT_DRIVERS, _place, _unloaded, _wine_folder
from .stack import CallSite, PlantedFrame, plant_into, return_addresses
from .story import (
    HEALTHY_NONPAGED_PAGES,
    HEALTHY_TAGS,
    STORY_NONPAGED_PAGES,
    WIN7_RUNS,
    WIN10_SIZE,
    X86_RUNS,
    server_tags,
    story_counters,
)
from .unwind import Function, lookup, runtime_functions
from .writers import write_bitmap, write_full

__all__ = ["CULPRIT", "FAMILIES", "LEGIT_IMPORTERS", "WINE_IMPORTERS", "CrashStory",
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
    frames: list[PlantedFrame]
    """The planted crash stack (:class:`~.stack.PlantedFrame`: module, pc, child-SP, how a
    walker finds it), frame 0 first."""
    culprit: ModuleInfo
    culprit_call_return: int
    """VA just after the culprit's ``call [ExAllocatePool]`` (its frame's return address)."""
    importers: list[str]
    """Base names of every module importing ntoskrnl.exe!ExAllocatePool, in load order."""
    leaked_pointers: dict[str, int] = field(default_factory=dict)
    """module base name → how many sampled ``None`` blocks hold a pointer into it."""
    vm: dict[str, int] = field(default_factory=dict)
    """The ``!vm`` counters written (variable name → value; pages, or bytes for *InBytes)."""
    tags: tuple = ()
    """The pool tags written (:class:`~.pool.PoolTag`)."""
    runs: tuple[tuple[int, int], ...] = ()
    """Physical memory: ``(first page, page count)`` runs."""

    @property
    def machine(self) -> str:
        """``"x86"`` or ``"x64"``."""
        return self.layout.machine


def _kernel_functions(x64: bool, code: int) -> tuple[Function, ...]:
    """The kernel functions on the crash stack, with real prologues (and, on x64, unwind data)."""
    if x64:
        fr: tuple = (("alloc", 0x28),)
        fns = [Function("KeBugCheckEx", (("push", "rbx"), ("alloc", 0x30)), calls=()),
               Function("ExAllocatePoolWithTag", (("push", "rbx"), ("push", "rsi"),
                                                  ("alloc", 0x28)), calls=("KeBugCheckEx",)),
               # ExAllocatePool stays a stub: on x64 it tail-jumps to ExAllocatePoolWithTag
               # (mov r8d, 'None'; jmp), so no frame of its own is on a real stack.
               # IofCallDriver: call [rax+70h] (the driver's MajorFunction[] entry).
               Function("IofCallDriver", fr, calls=(b"\xff\x50\x70",))]
        if code == 0xD1:  # the page-fault path (internal functions: no export names them)
            fns += [Function("KiBugCheckDispatch", (("alloc", 0x138),), calls=("KeBugCheckEx",),
                             export=False),
                    Function("KiPageFault", (("machframe", True), ("push", "rbp"),
                                             ("alloc", 0x158)),
                             calls=("KiBugCheckDispatch",), export=False)]
        return tuple(fns)
    frame: tuple = (("push", "ebp"), ("setfp", "ebp"))
    return (Function("KeBugCheckEx", frame, calls=()),
            Function("ExAllocatePoolWithTag", (*frame, ("alloc", 0x10), ("push", "esi")),
                     calls=("KeBugCheckEx",)),
            Function("ExAllocatePool", frame, calls=("ExAllocatePoolWithTag",)),
            Function("IofCallDriver", frame, calls=(b"\xff\x50\x38",)))


def _culprit_function(x64: bool) -> Function:
    pro: tuple = (("push", "rbx"), ("alloc", 0x20)) if x64 else \
        (("push", "ebp"), ("setfp", "ebp"), ("push", "ebx"))
    return Function(CULPRIT_FUNCTION, pro, calls=("ntoskrnl.exe!ExAllocatePool",), export=False)


def crash_story(path: str | Path, family: str = "2003", *, wine_dir: str | Path,
                leak: bool = True, fmt: str = "full", size: int | None = None,
                system_time: int | None = None) -> CrashStory:
    """Write a founding-story crash dump of ``family`` ("2003", "win7" or "win10"; see the module
    docstring) at ``path``. ``wine_dir``: a folder holding Wine's PE files (itself, or with
    ``wine-i386`` / ``wine-x86_64`` inside). ``fmt``: "full", "bitmap" or "kernel". ``size``:
    bytes of RAM (the file is sparse); None = the founding story's machine of the family
    (:data:`~.story.X86_RUNS`, :data:`~.story.WIN7_RUNS`, :data:`~.story.WIN10_SIZE`), whose
    ``!vm`` counters follow from its RAM (:func:`~.story.story_counters`). ``system_time``: the
    header's FILETIME (default :data:`~.header.DEFAULT_SYSTEM_TIME`)."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {sorted(FAMILIES)}")
    if fmt not in ("full", "bitmap", "kernel"):
        raise ValueError("fmt must be 'full', 'bitmap' or 'kernel'")
    fam = FAMILIES[family]
    x64 = fam.machine == "x64"
    ptr = 8 if x64 else 4
    wine = _wine_folder(wine_dir, "x86_64" if x64 else "i386")

    # The machine: RAM, tags and !vm counters as the founding story has them (forge.machine rules).
    runs: Sequence[tuple[int, int]] = {"2003": X86_RUNS, "win7": WIN7_RUNS}.get(
        family, ((0x1, 0x9F), (0x100, WIN10_SIZE // PAGE_SIZE - 0x100)))
    if size is not None:
        runs = ((0x1, 0x9F), (0x100, size // PAGE_SIZE - 0x100))
    tags = server_tags(STORY_TAGS if leak else HEALTHY_TAGS,
                       STORY_NONPAGED_PAGES if leak else HEALTHY_NONPAGED_PAGES)
    vm = story_counters(fam.family, fam.machine, sum(n for _, n in runs),
                        max(b + n for b, n in runs) - 1, tags, leak=leak)

    # Bug check and parameters (the faulting IP of 0xD1 is filled in once the culprit is placed).
    code = fam.bugcheck if leak else 0xE2
    np_pages = -(-sum(t.bytes_of(False) for t in tags) // PAGE_SIZE)
    params: list[int] = {0x41: [0xC8, np_pages, 0x1F3, 0],
                         0xC2: [8, 2, 1, 0xC8], 0xD1: [0x10, 2, 1, 0],
                         0xE2: [0, 0, 0, 0]}[code]

    # Kernel: real functions (prologues, calls, unwind data) for the frames of the crash stack.
    kernel = build_kernel(machine=fam.machine, image_base=fam.kernel_base,
                          functions=_kernel_functions(x64, code))
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
    culprit_bytes = build_driver(
        CULPRIT, machine=fam.machine,
        imports={_NT: ["RtlInitUnicodeString", "IoCreateDevice", "ExAllocatePool", "_wcsnicmp",
                       "ExFreePoolWithTag", "KeInitializeEvent", "KeSetEvent",
                       "IofCompleteRequest"]},
        pool_tags=[b"VndC", b"VndE"], data=bytes(64),
        rsds=(bytes.fromhex("5a1c0e9b3f7d4e21a8b6c4d2e0f19a37"), 3, CULPRIT_PDB),
        functions=(_culprit_function(x64),))
    mods.append((CULPRIT, CULPRIT_PATH, culprit_bytes))
    for name in WINE_AFTER:
        mods.append((name, root + "drivers\\" + name, (wine / name).read_bytes()))

    # Kernel space.
    mem = PhysicalMemory(list(runs))
    pt = PageTables(mem, "x64" if x64 else "pae")
    sizes = [-(-parse_pe(data).size_of_image // PAGE_SIZE) * PAGE_SIZE for _, _, data in mods]
    bases = _place(sizes[:2], fam.kernel_base) + _place(sizes[2:], fam.drivers_base)
    layout = build_kernel_space(
        pt, mem, machine=fam.machine, family=fam.family, build=fam.build,
        modules=[(n, p, d, b) for (n, p, d), b in zip(mods, bases, strict=True)],
        unloaded=_unloaded(fam.drivers_base + 0x1000000), processors=1, vm=vm)
    nt = layout.modules[0].image
    cul = layout.module(CULPRIT)
    # The culprit's call to ExAllocatePool in VndAllocContext (DriverEntry calls it too, first).
    culprit_ret = max(return_addresses(cul.image, import_name="ntoskrnl.exe!ExAllocatePool"))
    rfs = runtime_functions(cul.image.image, cul.image.info.directory(3))
    rf = lookup(rfs, culprit_ret - 1 - cul.base) if rfs else None
    fn = cul.base + rf.begin if rf is not None else culprit_ret - 0x10
    if code == 0xD1:
        params[3] = culprit_ret  # the faulting write right after the call

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

    # The crash stack (forge.stack plants it from the call sites, innermost first).
    ex = nt.exports

    def call_in(function: str, target: str) -> int:
        return return_addresses(nt, target=ex[target], function=ex[function])[0]

    iof = ex["IofCallDriver"]
    iof_ret = next(r for r in range(iof, iof + 0x40) if nt.image[r - nt.base - 3:r - nt.base]
                   == (b"\xff\x50\x70" if x64 else b"\xff\x50\x38"))
    sites = [CallSite(_NT, ex["KeBugCheckEx"] + (6 if x64 else 3))]
    if leak and code == 0xD1:
        kbd_ret = next(r for r in return_addresses(nt, target=ex["KeBugCheckEx"])
                       if r != call_in("ExAllocatePoolWithTag", "KeBugCheckEx"))
        krf = runtime_functions(nt.image, nt.info.directory(3))
        kbd = nt.base + lookup(krf, kbd_ret - 1 - nt.base).begin  # type: ignore[union-attr]
        kpf_ret = return_addresses(nt, target=kbd)[0]
        sites += [CallSite(_NT, kbd_ret), CallSite(_NT, kpf_ret), CallSite(CULPRIT, culprit_ret)]
    elif leak:
        sites.append(CallSite(_NT, call_in("ExAllocatePoolWithTag", "KeBugCheckEx")))
        if not x64:  # x86: a call (stdcall, two arguments to three); x64: a tail jump
            sites.append(CallSite(_NT, call_in("ExAllocatePool", "ExAllocatePoolWithTag")))
        sites.append(CallSite(CULPRIT, culprit_ret))
    sites.append(CallSite(_NT, iof_ret))

    def write(va: int, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            pa = pt.translate(va + pos)
            if pa is None:
                raise ValueError(f"stack {va + pos:#x} is not mapped")
            take = min(PAGE_SIZE - ((va + pos) & 0xFFF), len(data) - pos)
            mem.write(pa, data[pos:pos + take])
            pos += take

    planted = plant_into(write, [m.image for m in layout.modules], sites,
                         machine=fam.machine, stack=(layout.stack_top - 0x2000, layout.stack_top))
    frames = planted.frames
    ctx = planted.header_fields()
    hdr = layout.header(bugcheck_code=code, bugcheck_params=tuple(params), processors=1,
                        product_type=3 if family == "2003" else 1,
                        comment=f"ntdump.forge crash_story {family}".encode(), **ctx,
                        **({} if system_time is None else {"system_time": system_time}))
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
                      importers, leaked, vm, tuple(tags), tuple(runs))
