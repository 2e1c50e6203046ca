"""Kernel structures in a forged address space: modules, KDBG, PsLoadedModuleList, unloaded drivers.

:func:`build_kernel_space` maps the kernel, the HAL and drivers (:func:`~.image.map_image`),
binds their imports (:func:`~.image.bind_imports`) and writes what a debugger reads first
(WINDOWS_INTERNALS.md sections 3 and 4):

* kernel variables (KDBG, list heads, pointers) in the kernel's **data area**: the tail of its
  ``.data`` section, from the end of the file-initialised bytes (``min(VirtualSize,
  SizeOfRawData)``, 16-aligned) to the end of the section's last page — inside the image, in a
  writable section (Wine's ntoskrnl.exe has 0xA00+ free bytes there). If that tail is too small
  or not all zero, one or two pages are mapped right after the image instead. A variable the
  kernel *exports* from a writable section (``PsLoadedModuleList``, ``NtBuildNumber``,
  ``MmHighestUserAddress`` … as :func:`~.pe.build_kernel` does) is used at its exported VA;
* ``KLDR_DATA_TABLE_ENTRY`` s, their name buffers and the ``MmUnloadedDrivers`` array in a
  **pool arena**: pages mapped on demand from ``pool_base`` (VA), bump-allocated 16-aligned.

Everything written is returned as ground truth in a :class:`KernelLayout`. Units: VA = virtual
byte address, sizes in bytes, times are FILETIMEs.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .header import Header
from .image import BindResult, MappedImage, bind_imports, map_image
from .memory import PAGE_SIZE, PhysicalMemory
from .paging import PageTables

__all__ = ["FAMILIES", "KernelLayout", "MappedImage", "ModuleInfo", "UnloadedInfo",
           "bind_imports", "build_kernel_space", "kdbg_size", "map_image"]

FAMILIES = ("win10", "win7", "2003", "xp")
DEFAULT_BUILDS = {"win10": 19041, "win7": 7601, "2003": 3790, "xp": 2600}
_LABS = {"win10": "{b}.1.{a}fre.vb_release.191206-1406",
         "win7": "{b}.17514.{a}fre.win7sp1_rtm.101119-1850",
         "2003": "{b}.srv03_sp2_rtm.070216-1710", "xp": "{b}.xpsp.080413-2111"}
_CSD_VERSION = {"win10": 0, "win7": 0x100, "2003": 0x200, "xp": 0x300}
#: (entry size, CheckSum, TimeDateStamp or None, LoadedImports) offsets of the module entry per
#: family, x64 / x86 (layouts file: KLDR_DATA_TABLE_ENTRY on Windows 10, LDR_DATA_TABLE_ENTRY
#: before). Before Windows 8, TimeDateStamp and LoadedImports are one union slot and a kernel
#: module list holds LoadedImports there ([vol2] xp_sp3_x86 0x44, win2003_sp2_x64 and
#: win7_sp1_x64 0x80): the forge writes LoadedImports, as the kernel does.
_LDR = {("win10", True): (0xA0, 0x78, 0x9C, 0x88), ("win10", False): (0x5C, 0x40, 0x58, 0x4C),
        ("win7", True): (0xE0, 0x78, None, 0x80), ("2003", True): (0x98, 0x78, None, 0x80),
        ("xp", True): (0x98, 0x78, None, 0x80)}
_LDR_OLD_X86 = (0x50, 0x40, None, 0x44)
#: LoadedImports special values (pointer-sized; WRK base/ntos/mm/sysload.c NO_IMPORTS_USED,
#: ReactOS ntoskrnl/mm/ARM3/miarm.h MM_SYSLDR_*): -1 boot loaded, -2 no imports, bit 0 = a single
#: imported entry.
MM_SYSLDR_BOOT_LOADED = -1
MM_SYSLDR_NO_IMPORTS = -2
MM_SYSLDR_SINGLE_ENTRY = 1
#: KDBG field offsets used here (section 3.2).
_KDBG_FIELDS = {"KernBase": 0x18, "BreakpointWithStatus": 0x20, "PsLoadedModuleList": 0x48,
                "PsActiveProcessHead": 0x50, "MmLowestPhysicalPage": 0xE8,
                "MmHighestPhysicalPage": 0xF0, "MmNumberOfPhysicalPages": 0xF8,
                "MmPageSize": 0x138, "PoolTrackTable": 0x1B8, "MmHighestUserAddress": 0x1C8,
                "MmSystemRangeStart": 0x1D0, "MmUserProbeAddress": 0x1D8, "NtBuildLab": 0x208,
                "KiProcessorBlock": 0x218, "MmUnloadedDrivers": 0x220,
                "MmLastUnloadedDriver": 0x228, "CmNtCSDVersion": 0x268,
                **{"MmMaximumNonPagedPoolInBytes": 0x100, "MmSizeOfPagedPoolInBytes": 0x140,
                   "MmTotalCommitLimit": 0x148, "MmTotalCommittedPages": 0x150,
                   "MmSharedCommit": 0x158, "MmDriverCommit": 0x160, "MmPagedPoolCommit": 0x170,
                   "MmModifiedPageListHead": 0x198, "MmAvailablePages": 0x1A8,
                   "MmResidentAvailablePages": 0x1B0, "MmAllocatedNonPagedPool": 0x250},
                "MmPhysicalMemoryBlock": 0x270}
#: KDBG fields that a real Windows 10 19041 x64 kernel leaves 0 although the forge can fill them
#: (read off the KDBG copy in ../shared/data/dumps/win10-19041-x64-triage.dmp; its
#: MmPhysicalMemoryBlock, MmSizeOfPagedPoolInBytes, MmPagedPoolCommit, PoolTrackTable are set).
#: ``build_kernel_space(kdbg_real_zeros=True)`` leaves them 0 as that kernel does; the variables
#: are still placed (``layout.variables``), as a PDB would locate them.
KDBG_ZERO_19041 = ("MmLowestPhysicalPage", "MmHighestPhysicalPage", "MmNumberOfPhysicalPages",
                   "MmMaximumNonPagedPoolInBytes", "MmTotalCommitLimit", "MmTotalCommittedPages",
                   "MmSharedCommit", "MmDriverCommit", "MmModifiedPageListHead",
                   "MmAvailablePages", "MmResidentAvailablePages", "MmAllocatedNonPagedPool")
#: ``!vm`` counters ``build_kernel_space(vm=...)`` can place. KDBG-reachable ones get their KDBG
#: field (section 3.2); the rest exist only as symbols (a debugger finds them through the PDB):
#: ``layout.symbol_only`` lists them. Values are pages, except ``*InBytes`` (bytes) and
#: ``MmPoolFailures`` (a count, stored as the first of 9 u32 counters).
VM_COUNTERS = ("MmAvailablePages", "MmResidentAvailablePages", "MmAllocatedNonPagedPool",
               "MmMaximumNonPagedPoolInBytes", "MmSizeOfPagedPoolInBytes", "MmPagedPoolCommit",
               "MmSharedCommit", "MmDriverCommit", "MmTotalCommittedPages", "MmTotalCommitLimit",
               "MmModifiedPageListHead", "MmPoolFailures", "MmTotalFreeSystemPtes",
               "MmSystemLockPagesCount")
SYMBOL_ONLY = ("MmPoolFailures", "MmTotalFreeSystemPtes", "MmSystemLockPagesCount")
MODULE_FLAGS = 0x49104000
UNLOADED_SLOTS = 50
POOL_BASES = {"x64": 0xFFFFC08000000000, "x86": 0x89000000}
_EXPORTED_VARIABLES = ("PsLoadedModuleList", "PsActiveProcessHead", "NtBuildNumber",
                       "MmHighestUserAddress", "MmSystemRangeStart", "MmUserProbeAddress")


def kdbg_size(family: str, build: int) -> int:
    """``KDDEBUGGER_DATA64.Header.Size`` (bytes) for a family and build (section 3.3)."""
    if family == "win10":
        return 0x380 if build >= 17763 else 0x368 if build >= 14393 else 0x360
    return {"win7": 0x340, "2003": 0x318, "xp": 0x290}[family]


@dataclass(frozen=True)
class ModuleInfo:
    """Ground truth of one loaded module (VAs; sizes in bytes; ``ldr_entry`` = VA of its
    ``KLDR_DATA_TABLE_ENTRY``)."""

    name: str
    path: str
    base: int
    size: int
    entry: int
    timestamp: int
    checksum: int
    ldr_entry: int
    image: MappedImage = field(repr=False, compare=False)
    loaded_imports: str | tuple[str, ...] = "boot loaded"
    """What the entry's LoadedImports says: ``"boot loaded"``, ``"no imports"`` or the base
    names of the imported modules (load order)."""
    loaded_imports_raw: int = 0
    """The pointer-sized value written (``2**bits - 1`` / ``- 2`` for the special values)."""


@dataclass(frozen=True)
class UnloadedInfo:
    """One ``MmUnloadedDrivers`` entry: name, StartAddress/EndAddress (VAs), CurrentTime
    (FILETIME), the array slot and the entry's VA."""

    name: str
    start: int
    end: int
    time: int
    slot: int
    va: int


class _Writer:
    """Writes through the page tables and bump-allocates a pool arena of on-demand pages."""

    def __init__(self, pt: PageTables, mem: PhysicalMemory, pool_base: int) -> None:
        self.pt, self.mem = pt, mem
        self.ptr = 8 if pt.mode == "x64" else 4
        self.pool_base = self.cursor = pool_base
        self.mapped_to = pool_base

    def write(self, va: int, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            pa = self.pt.translate(va + pos)
            if pa is None:
                raise ValueError(f"cannot write at {va + pos:#x}: not mapped")
            take = min(PAGE_SIZE - ((va + pos) & 0xFFF), len(data) - pos)
            self.mem.write(pa, data[pos:pos + take])
            pos += take

    def pointer(self, va: int, value: int) -> None:
        self.write(va, (value % (1 << 8 * self.ptr)).to_bytes(self.ptr, "little"))

    def alloc(self, size: int, align: int = 16) -> int:
        va = -(-self.cursor // align) * align
        self.cursor = va + size
        while self.mapped_to < self.cursor:
            self.pt.map(self.mapped_to, self.mem.alloc_page() << 12)
            self.mapped_to += PAGE_SIZE
        return va

    def unicode(self, at: int, length: int, maximum: int, buffer: int) -> None:
        fmt = "<HHIQ" if self.ptr == 8 else "<HHI"
        args = (length, maximum, 0, buffer) if self.ptr == 8 else (length, maximum, buffer)
        self.write(at, struct.pack(fmt, *args))


def _data_area(w: _Writer, kernel: MappedImage, need: int) -> tuple[int, int]:
    """(start VA, end VA) of free kernel memory for variables (see module docstring)."""
    secs = [s for s in kernel.info.sections if s.characteristics & 0x80000000
            and not s.characteristics & 0x20000000]
    secs.sort(key=lambda s: s.name != ".data")
    for s in secs[:1]:
        start = s.virtual_address + min(s.virtual_size or s.raw_size, s.raw_size)
        start = -(-start // 16) * 16
        end = -(-(s.virtual_address + max(s.virtual_size, s.raw_size)) // PAGE_SIZE) * PAGE_SIZE
        if end - start >= need and not any(kernel.image[start:end]):
            return kernel.base + start, kernel.base + end
    start = kernel.end
    pages = -(-need // PAGE_SIZE)
    for i in range(pages):
        if w.pt.translate(start + i * PAGE_SIZE) is not None:
            raise ValueError(f"no room for kernel variables: {start:#x} is already mapped")
        w.pt.map(start + i * PAGE_SIZE, w.mem.alloc_page() << 12)
    return start, start + pages * PAGE_SIZE


@dataclass
class KernelLayout:
    """Ground truth of :func:`build_kernel_space`. All addresses are VAs.

    ``kdbg`` is the KDBG block (``kdbg_size`` bytes); ``ps_loaded_module_list`` and
    ``ps_active_process_head`` the list heads; ``mm_unloaded_drivers`` /
    ``mm_last_unloaded_driver`` / ``pool_track_table`` the *variables* (pointer, u32 index,
    pointer = 0); ``unloaded_array`` the 50-entry array; ``variables`` every kernel variable
    placed (name → VA), ``symbols`` the kernel's exports (name → VA); ``modules`` in load
    order (kernel, HAL, drivers); ``data_area`` and ``pool`` the (start, end) ranges used;
    ``unmapped_va`` a VA guaranteed unmapped; ``corruptions`` option → entry number.
    """

    machine: str
    family: str
    build: int
    pae: bool
    pt: PageTables
    kernel_base: int
    kdbg: int
    kdbg_size: int
    ps_loaded_module_list: int
    ps_active_process_head: int
    mm_unloaded_drivers: int
    mm_last_unloaded_driver: int
    unloaded_array: int
    pool_track_table: int
    ki_processor_block: int
    nt_build_lab: str
    modules: list[ModuleInfo]
    unloaded: list[UnloadedInfo]
    symbols: dict[str, int]
    variables: dict[str, int]
    bind: BindResult
    data_area: tuple[int, int]
    pool: tuple[int, int]
    unmapped_va: int
    stack_top: int
    corruptions: dict[str, int] = field(default_factory=dict)
    discarded: dict[str, list[int]] = field(default_factory=dict)
    """Module name → VAs of the discardable pages removed after initialisation."""

    @property
    def dtb(self) -> int:
        """CR3 of the address space."""
        return self.pt.dtb

    @property
    def kernel_symbols(self) -> dict[str, int]:
        """``nt!Name`` -> VA of placed variables that only a PDB would name (not exported, not in
        KDBG), e.g. ``nt!MmPoolFailures``: what ``Dump.add_symbols`` takes, as a symbol server would
        provide it for a real kernel."""
        return {f"nt!{n}": self.variables[n] for n in SYMBOL_ONLY if n in self.variables}

    def module(self, name: str) -> ModuleInfo:
        """The module whose base name is ``name`` (case-insensitive)."""
        for m in self.modules:
            if m.name.lower() == name.lower():
                return m
        raise KeyError(name)

    def header(self, **overrides: Any) -> Header:
        """A dump :class:`~.header.Header` consistent with this layout (machine, PAE, build,
        DTB, PsLoadedModuleList, PsActiveProcessHead, KdDebuggerDataBlock, Rip at
        KeBugCheckEx (else the kernel entry), Rsp in a mapped stack); ``overrides`` win."""
        rip = self.symbols.get("KeBugCheckEx", self.modules[0].entry)
        hdr = Header(machine=self.machine, pae=self.pae, build=self.build, dtb=self.pt.dtb,
                     ps_loaded_module_list=self.ps_loaded_module_list,
                     ps_active_process_head=self.ps_active_process_head,
                     kd_debugger_data_block=self.kdbg, context_rip=rip,
                     context_rsp=self.stack_top - 0x100)
        return dataclasses.replace(hdr, **overrides)


_SCN_DISCARDABLE = 0x02000000


def _discard_trailing(pt: PageTables, im: MappedImage) -> list[int]:
    """Zero the PTEs of the pages of ``im``'s trailing discardable sections (page-rounded inward
    from the last kept byte); returns their VAs."""
    secs = sorted(im.info.sections, key=lambda x: x.virtual_address)
    tail: list = []
    for sec in reversed(secs):
        if not sec.characteristics & _SCN_DISCARDABLE:
            break
        tail.append(sec)
    if not tail or len(tail) == len(secs):
        return []
    first = min(x.virtual_address for x in tail)
    kept_end = max(x.virtual_address + max(x.virtual_size, x.raw_size) for x in secs
                   if x not in tail)
    start = -(-max(first, kept_end) // PAGE_SIZE) * PAGE_SIZE
    end = -(-im.size // PAGE_SIZE) * PAGE_SIZE
    out = []
    for rva in range(start, end, PAGE_SIZE):
        va = im.base + rva
        if pt.translate(va) is not None:
            pt.set_entry(va, "pte", 0)
            out.append(va)
    return out


def _loaded_imports(images: Sequence[MappedImage], bound: BindResult,
                    boot_loaded: Sequence[str], count: int) -> list[str | list[int]]:
    """Per module: "boot loaded", or the indices (load order) of the modules its bound IAT slots
    point into, the kernel (0) and the HAL (1) left out — MiBuildImportsForBootDrivers' rule."""
    ranges = [(im.base, im.base + im.size) for im in images]
    by_name = {im.name.lower(): i for i, im in enumerate(images)}
    deps: list[set[int]] = [set() for _ in range(count)]
    for importer, _imp, value in bound.bound:
        i = by_name.get(importer.lower())
        if i is None:
            continue
        for j, (lo, hi) in enumerate(ranges):
            if lo <= value < hi:
                deps[i].add(j)
                break
    boot = {n.lower() for n in boot_loaded}
    out: list[str | list[int]] = []
    for i, im in enumerate(images):
        if i < 2 or im.name.lower() in boot:
            out.append("boot loaded")
        else:
            out.append(sorted(j for j in deps[i] if j >= 2 and j != i))
    return out


def build_kernel_space(pt: PageTables, mem: PhysicalMemory, *, machine: str = "x64",
                       family: str = "win10", build: int | None = None,
                       modules: Sequence[tuple[str, str, bytes, int]] = (),
                       unloaded: Sequence[tuple[str, int, int, int]] = (), kdbg: bool = True,
                       processors: int = 1, pool_base: int | None = None,
                       missing_pages: Mapping[str, Sequence[int]] | None = None,
                       kdbg_sign_extend: bool = True, loop_after: int | None = None,
                       unmapped_entry: int | None = None, bad_name_length: int | None = None,
                       huge_size_of_image: int | None = None,
                       vm: Mapping[str, int] | None = None,
                       boot_loaded: Sequence[str] = (),
                       kdbg_real_zeros: bool = False,
                       discard_init: bool = True) -> KernelLayout:
    """Map ``modules`` and write the kernel structures; returns the :class:`KernelLayout`.

    ``modules``: ``(base name, full path, PE bytes, base VA)`` in load order; the first is the
    kernel, the second normally the HAL. ``unloaded``: ``(name, start VA, end VA, FILETIME)``
    oldest first; slot ``i % 50`` of the ring, MmLastUnloadedDriver = ``len % 50``.
    ``missing_pages``: module name → RVAs of pages to leave paged out. ``kdbg=False`` skips
    the KDBG block. On x86 the KDBG's 64-bit address fields are sign-extended
    (``kdbg_sign_extend``) or zero-extended. Corruptions (entry numbers from 1 = the kernel):
    ``loop_after=k`` entry k's Flink → entry 1; ``unmapped_entry=k`` entry k's Flink → an
    unmapped VA; ``bad_name_length=k`` both names of entry k get Length 0xFFFE (> MaximumLength);
    ``huge_size_of_image=k`` SizeOfImage 0x7FFF0000. ``vm``: ``!vm`` counters by variable name
    (see :data:`VM_COUNTERS`), placed as kernel variables.

    LoadedImports is written as the memory manager leaves it after boot (ReactOS
    ``ntoskrnl/mm/ARM3/sysldr.c`` MiBuildImportsForBootDrivers, mirroring Windows): the kernel
    and the HAL ``MM_SYSLDR_BOOT_LOADED``; every other module lists the modules its bound IAT
    slots point into, the kernel and the HAL left out: none → ``MM_SYSLDR_NO_IMPORTS``, one →
    that module's entry with bit 0 set, more → a ``LOAD_IMPORTS {SIZE_T Count; entries[]}``
    array in the pool arena (load order); each listed module's LoadCount goes up by one.
    ``boot_loaded``: module names whose LoadedImports stays ``MM_SYSLDR_BOOT_LOADED`` (a boot
    driver whose list was never built or was cleared, as MiClearImports leaves it).
    ``discard_init``: after binding, the trailing run of sections marked
    IMAGE_SCN_MEM_DISCARDABLE (INIT, .reloc …) of every module is removed from the address space
    (PTEs zeroed), as MmFreeDriverInitialization does once a driver is initialised (WRK
    ``base/ntos/mm/sysload.c``: "all discardable sections at the end of the driver are
    deleted"); pages shared with a kept section stay. ``layout.discarded`` lists the VAs.
    ``kdbg_real_zeros``: leave the KDBG fields of :data:`KDBG_ZERO_19041` 0, as a real Windows
    10 19041 kernel does (the variables still exist). ``MmPhysicalMemoryBlock`` points at a
    PHYSICAL_MEMORY_DESCRIPTOR built from the memory runs (NumberOfRuns, NumberOfPages, runs).
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}")
    if (machine == "x64") != (pt.mode == "x64"):
        raise ValueError(f"machine {machine!r} does not match page tables {pt.mode!r}")
    if not modules:
        raise ValueError("need at least the kernel module")
    build = build or DEFAULT_BUILDS[family]
    is64 = machine == "x64"
    w = _Writer(pt, mem, pool_base or POOL_BASES[machine])
    ptr, mask = w.ptr, (1 << 8 * w.ptr) - 1
    images = [map_image(pt, mem, data, base, name=name,
                        missing_pages=(missing_pages or {}).get(name, ()))
              for name, _, data, base in modules]
    kernel = images[0]
    bound = bind_imports(images, kernel=kernel, hal=images[1] if len(images) > 1 else None)
    discarded = {im.name: _discard_trailing(pt, im) for im in images} if discard_init else {}

    # Kernel variables.
    size = kdbg_size(family, build)
    lab = _LABS[family].format(b=build, a="amd64" if is64 else "x86")
    wants = {"KdpDebuggerDataListHead": 2 * ptr, "KdDebuggerDataBlock": size if kdbg else 0,
             "PsLoadedModuleList": 2 * ptr, "PsActiveProcessHead": 2 * ptr,
             "MmUnloadedDrivers": ptr, "MmLastUnloadedDriver": 8, "PoolTrackTable": ptr,
             "NtBuildLab": len(lab) + 1, "KiProcessorBlock": ptr * (64 if is64 else 32),
             "MmNumberOfPhysicalPages": ptr, "MmLowestPhysicalPage": ptr,
             "MmHighestPhysicalPage": ptr, "MmHighestUserAddress": ptr,
             "MmSystemRangeStart": ptr, "MmUserProbeAddress": ptr, "NtBuildNumber": 4,
             "CmNtCSDVersion": 4, "MmPhysicalMemoryBlock": ptr}
    for name in vm or {}:
        if name not in VM_COUNTERS:
            raise ValueError(f"unknown !vm counter {name!r}; known: {', '.join(VM_COUNTERS)}")
        wants[name] = 36 if name == "MmPoolFailures" else 4 * ptr if "ListHead" in name else ptr
    variables: dict[str, int] = {}
    for name in _EXPORTED_VARIABLES:
        va = kernel.exports.get(name)
        sec = kernel.section_at(va) if va is not None else None
        if va is not None and sec and sec.characteristics & 0x80000000 \
                and not sec.characteristics & 0x20000000:
            variables[name] = va
    need = sum(-(-n // 16) * 16 for k, n in wants.items() if k not in variables)
    area = _data_area(w, kernel, need)
    at = area[0]
    for name, n in wants.items():
        if name not in variables and n:
            variables[name], at = at, at + -(-n // 16) * 16
    v = variables
    user_top = (0x7FFFFFFEFFFF, 0xFFFF800000000000, 0x7FFFFFFF0000) if is64 else \
        (0x7FFEFFFF, 0x80000000, 0x7FFF0000)
    for name, value in zip(("MmHighestUserAddress", "MmSystemRangeStart", "MmUserProbeAddress"),
                           user_top, strict=True):
        w.pointer(v[name], value)
    w.pointer(v["MmNumberOfPhysicalPages"], mem.page_count)
    w.pointer(v["MmLowestPhysicalPage"], mem.runs[0][0])
    w.pointer(v["MmHighestPhysicalPage"], mem.highest_pfn)
    w.write(v["NtBuildLab"], lab.encode() + b"\0")
    w.write(v["NtBuildNumber"], struct.pack("<I", 0xF0000000 | build))
    w.write(v["CmNtCSDVersion"], struct.pack("<I", _CSD_VERSION[family]))
    for name, value in (vm or {}).items():
        if name == "MmPoolFailures":
            w.write(v[name], struct.pack("<9I", value, *[0] * 8))
        else:  # a page count, a byte count, or an MMPFNLIST whose Total comes first
            w.pointer(v[name], value)
    active = v["PsActiveProcessHead"]
    w.pointer(active, active)
    w.pointer(active + ptr, active)

    # PsLoadedModuleList and the module entries.
    esize, ck_off, ts_off, li_off = _LDR.get((family, is64), _LDR_OLD_X86)
    head = v["PsLoadedModuleList"]
    entries = [w.alloc(esize) for _ in images]
    imports = _loaded_imports(images, bound, boot_loaded, len(modules))
    load_counts = [1 + sum(i in deps for deps in imports if isinstance(deps, list))
                   for i in range(len(images))]
    infos: list[ModuleInfo] = []
    for i, ((name, path, _, _), im, e) in enumerate(zip(modules, images, entries, strict=True)):
        n = i + 1
        full = path.encode("utf-16-le")
        buf = w.alloc(len(full) + 2)
        w.write(buf, full + b"\0\0")
        if path.lower().endswith(name.lower()):
            base_buf = buf + len(full) - 2 * len(name)
        else:
            base_buf = w.alloc(2 * len(name) + 2)
            w.write(base_buf, name.encode("utf-16-le") + b"\0\0")
        flink = entries[i + 1] if i + 1 < len(entries) else head
        if loop_after == n:
            flink = entries[0]
        blink = entries[i - 1] if i else head
        soi = 0x7FFF0000 if huge_size_of_image == n else im.size
        names = [(len(full), len(full) + 2, buf), (2 * len(name), 2 * len(name) + 2, base_buf)]
        if bad_name_length == n:
            names = [(0xFFFE, mx, b) for _, mx, b in names]
        w.pointer(e, flink)
        w.pointer(e + ptr, blink)
        o = 0x30 if is64 else 0x18
        w.pointer(e + o, im.base)
        w.pointer(e + o + ptr, im.entry)
        w.write(e + o + 2 * ptr, struct.pack("<I", soi))
        for j, (length, mx, b) in enumerate(names):
            w.unicode(e + (0x48 if is64 else 0x24) + j * 2 * ptr, length, mx, b)
        w.write(e + (0x68 if is64 else 0x34), struct.pack("<IH", MODULE_FLAGS,
                                                          min(load_counts[i], 0xFFFF)))
        w.write(e + ck_off, struct.pack("<I", im.checksum))
        deps = imports[i]
        truth: str | tuple[str, ...]
        if isinstance(deps, str):  # "boot loaded"
            li_raw, truth = MM_SYSLDR_BOOT_LOADED & mask, "boot loaded"
        elif not deps:
            li_raw, truth = MM_SYSLDR_NO_IMPORTS & mask, "no imports"
        elif len(deps) == 1:
            li_raw = entries[deps[0]] | MM_SYSLDR_SINGLE_ENTRY
            truth = (modules[deps[0]][0],)
        else:
            li_raw = w.alloc(ptr * (1 + len(deps)), 16)
            w.pointer(li_raw, len(deps))
            for k, j in enumerate(deps):
                w.pointer(li_raw + ptr * (1 + k), entries[j])
            truth = tuple(modules[j][0] for j in deps)
        w.pointer(e + li_off, li_raw)
        if ts_off is not None:
            w.write(e + ts_off, struct.pack("<I", im.timestamp))
            w.write(e + ts_off - 4, struct.pack("<I", im.size))  # SizeOfImageNotRounded
        infos.append(ModuleInfo(name, path, im.base, im.size, im.entry, im.timestamp,
                                im.checksum, e, im, truth, li_raw))
    w.pointer(head, entries[0])
    w.pointer(head + ptr, entries[-1])
    unmapped = w.pool_base + (0x40000000 if is64 else 0x04000000)
    if pt.translate(unmapped) is not None:
        raise ValueError(f"{unmapped:#x} (pool base + 1 GiB / 64 MiB) must stay unmapped")
    if unmapped_entry is not None:
        w.pointer(entries[unmapped_entry - 1], unmapped)

    # MmUnloadedDrivers: a pointer variable to 50 entries; MmLastUnloadedDriver.
    usize = 0x28 if is64 else 0x18
    array = w.alloc(usize * UNLOADED_SLOTS)
    w.pointer(v["MmUnloadedDrivers"], array)
    w.write(v["MmLastUnloadedDriver"], struct.pack("<I", len(unloaded) % UNLOADED_SLOTS))
    slots: dict[int, UnloadedInfo] = {}
    for i, (name, start, end, when) in enumerate(unloaded):
        slot = i % UNLOADED_SLOTS
        e = array + slot * usize
        raw = name.encode("utf-16-le")
        buf = w.alloc(len(raw) + 2)
        w.write(buf, raw + b"\0\0")
        w.unicode(e, len(raw), len(raw) + 2, buf)
        w.pointer(e + 2 * ptr, start)
        w.pointer(e + 3 * ptr, end)
        w.write(e + 4 * ptr, struct.pack("<Q", when))
        slots[slot] = UnloadedInfo(name, start, end, when, slot, e)
    stack = w.alloc(0x2000, PAGE_SIZE)

    # MmPhysicalMemoryBlock -> PHYSICAL_MEMORY_DESCRIPTOR {ULONG NumberOfRuns; PFN_NUMBER
    # NumberOfPages; PHYSICAL_MEMORY_RUN Run[]} ([vol2] _PHYSICAL_MEMORY_DESCRIPTOR, all builds).
    hdr_size = 16 if is64 else 8
    block = w.alloc(hdr_size + 2 * ptr * len(mem.runs))
    w.write(block, struct.pack("<I", len(mem.runs)))
    w.pointer(block + ptr, mem.page_count)
    for i, (b, c) in enumerate(mem.runs):
        w.pointer(block + hdr_size + 2 * ptr * i, b)
        w.pointer(block + hdr_size + 2 * ptr * i + ptr, c)
    w.pointer(v["MmPhysicalMemoryBlock"], block)

    # KDBG and its one-element list KdpDebuggerDataListHead.
    kd = v.get("KdDebuggerDataBlock", 0)
    if kdbg:
        lh = v["KdpDebuggerDataListHead"]
        w.pointer(lh, kd)
        w.pointer(lh + ptr, kd)
        w.pointer(kd, lh)
        w.pointer(kd + ptr, lh)
        w.write(kd + 0x10, b"KDBG" + struct.pack("<I", size))
        sign = not is64 and kdbg_sign_extend
        values = {name: v[name] for name in _KDBG_FIELDS if name in v}
        values.update(KernBase=kernel.base, MmPageSize=0x1000,
                      BreakpointWithStatus=kernel.exports.get("DbgBreakPointWithStatus", 0))
        for name, off in _KDBG_FIELDS.items():
            value = values.get(name, 0) & mask
            if kdbg_real_zeros and name in KDBG_ZERO_19041:
                value = 0
            value -= (1 << 32) if sign and value >> 31 else 0
            w.write(kd + off, struct.pack("<Q", value % (1 << 64)))
        w.write(kd + 0x36, struct.pack("<H", 1 if pt.mode == "pae" else 0))
    return KernelLayout(
        machine, family, build, pt.mode == "pae", pt, kernel.base, kd, size if kdbg else 0,
        head, active, v["MmUnloadedDrivers"], v["MmLastUnloadedDriver"], array,
        v["PoolTrackTable"], v["KiProcessorBlock"], lab, infos,
        [slots[k] for k in sorted(slots)], dict(kernel.exports), variables, bound, area,
        (w.pool_base, w.mapped_to), unmapped, stack + 0x2000,
        {k: n for k, n in (("loop_after", loop_after), ("unmapped_entry", unmapped_entry),
                           ("bad_name_length", bad_name_length),
                           ("huge_size_of_image", huge_size_of_image)) if n is not None},
        discarded)
