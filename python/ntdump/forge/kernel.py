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
#: (entry size, CheckSum, TimeDateStamp) offsets of the module entry per family, x64 / x86
#: (layouts file: KLDR_DATA_TABLE_ENTRY on Windows 10, LDR_DATA_TABLE_ENTRY before).
_LDR = {("win10", True): (0xA0, 0x78, 0x9C), ("win10", False): (0x5C, 0x40, 0x58),
        ("win7", True): (0xE0, 0x78, 0x80), ("2003", True): (0x98, 0x78, 0x80),
        ("xp", True): (0x98, 0x78, 0x80)}
_LDR_OLD_X86 = (0x50, 0x40, 0x44)
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
                   "MmResidentAvailablePages": 0x1B0, "MmAllocatedNonPagedPool": 0x250}}
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


def build_kernel_space(pt: PageTables, mem: PhysicalMemory, *, machine: str = "x64",
                       family: str = "win10", build: int | None = None,
                       modules: Sequence[tuple[str, str, bytes, int]] = (),
                       unloaded: Sequence[tuple[str, int, int, int]] = (), kdbg: bool = True,
                       processors: int = 1, pool_base: int | None = None,
                       missing_pages: Mapping[str, Sequence[int]] | None = None,
                       kdbg_sign_extend: bool = True, loop_after: int | None = None,
                       unmapped_entry: int | None = None, bad_name_length: int | None = None,
                       huge_size_of_image: int | None = None,
                       vm: Mapping[str, int] | None = None) -> KernelLayout:
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
             "CmNtCSDVersion": 4}
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
    esize, ck_off, ts_off = _LDR.get((family, is64), _LDR_OLD_X86)
    head = v["PsLoadedModuleList"]
    entries = [w.alloc(esize) for _ in images]
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
        w.write(e + (0x68 if is64 else 0x34), struct.pack("<IH", MODULE_FLAGS, 1))
        w.write(e + ck_off, struct.pack("<I", im.checksum))
        w.write(e + ts_off, struct.pack("<I", im.timestamp))
        if family == "win10":
            w.write(e + ts_off - 4, struct.pack("<I", im.size))  # SizeOfImageNotRounded
        infos.append(ModuleInfo(name, path, im.base, im.size, im.entry, im.timestamp,
                                im.checksum, e, im))
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
                           ("huge_size_of_image", huge_size_of_image)) if n is not None})
