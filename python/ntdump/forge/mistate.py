"""Windows 10 19041 x64's ``nt!MiState`` and ``nt!MiSystemPartition``, forged.

Windows 10 keeps most of what earlier kernels held in separate memory-manager variables
(``MmAllocatedNonPagedPool``, ``MmMaximumNonPagedPoolInPages``, ``MmPagedPoolInfo``,
``MmAvailablePages`` …) as members of one variable, ``nt!MiState`` (type
``_MI_SYSTEM_INFORMATION``), and of the system partition ``nt!MiSystemPartition`` (type
``_MI_PARTITION``). A debugger finds them only through the kernel's PDB, whose types give every
member's offset. :data:`LAYOUT_19041_X64` is the part of those types this forge writes, at the
offsets of the public symbols of Windows 10 2004 (build 19041) x64, and :func:`plant` writes
values consistent with the forged machine (:func:`counters`) into a scenario's address space.

Sources of the layout (offsets and sizes; every struct keeps its real total size, members ntdump
does not need are left out as padding):

* ntdiff/headers ``Win10_2004_20H1/x64/System32/ntoskrnl.exe/ALL_SORTED.h`` (commit
  4f641bf19726c73fdf6a0ddee9be8bc93afea4d5; generated from ntkrnlmp.pdb): ``_MI_SYSTEM_INFORMATION``
  (0x3280 bytes: Pools 0x0, Hardware 0x15C0, SystemPtes 0x2100, Vs 0x25C0), ``_MI_POOL_STATE``,
  ``_MI_VISIBLE_STATE`` (0xCC0), ``_MI_SYSTEM_PTE_TYPE`` (0x60), ``_MM_PAGED_POOL_INFO``,
  ``_MI_PARTITION`` (0x2D00, Vp at 0x1B00), ``_MI_PARTITION_COMMIT``, ``_MI_VISIBLE_PARTITION``
  (0x1200), ``_MMPFNLIST``. The same listing for the 20H1 preview build 19037
  (``Win10_20H1_19037/.../Standalone/_MI_SYSTEM_INFORMATION.h``) agrees on every offset used here;
  Geoff Chappell's MI_SYSTEM_INFORMATION and MI_VISIBLE_STATE pages give the same sizes for 2004
  (0x3280, 0xCC0).
* ``nt!MiState`` is the structure itself, not a pointer to it (Rekall reads
  ``get_constant_object("nt!MiState", "_MI_SYSTEM_INFORMATION")``); so is ``nt!MiSystemPartition``
  (Microsoft's DTrace sample ``samples/windows/memory/systemwidememoryusage.d`` casts
  ``&nt`MiSystemPartition`` to ``_MI_PARTITION*`` and prints ``Vp.AvailablePages``,
  ``Vp.ResidentAvailablePages``, ``Vp.SharedCommit``, ``Vp.ModifiedPageListHead.Total``,
  ``Vp.TotalCommittedPages``, ``Vp.TotalCommitLimit``, all in pages).
* ``nt!ExPoolFailures`` is a ``ULONG`` (WRK ``base/ntos/ex/pool.c``, ReactOS ``expool.c``); the
  segment-heap kernels (19H1+) still increment it when ``ExAllocatePoolWithTag`` fails
  (decompilations of 19H1+ ntoskrnl). The public PDB gives it no type; it is read as 4 bytes.

Units: pages unless a member is a count (``ExPoolFailures``) or a mask; VAs are byte addresses.
Enum members (``_MMLISTS ListName``, ``_MI_SYSTEM_VA_TYPE VaType``) are written as their 4-byte
values (the PDB describes them as unsigned 4-byte integers: departs, the reader never decodes them).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

from .machine import PAGE, TB, nonpaged_pool_maximum
from .memory import PAGE_SIZE, PhysicalMemory
from .paging import PageTables

__all__ = ["LAYOUT_19041_X64", "PAGED_POOL_LIMIT_PAGES", "MiStateLayout", "counters",
           "member_offset", "plant", "vm_counters"]

#: A member's type: a primitive (``"u8"``, ``"u16"``, ``"u32"``, ``"i32"``, ``"u64"``), another
#: struct of the layout by name, or ``(element type, count)`` for an array.
MemberType = str | tuple[str, int]

#: struct name -> (size in bytes, [(member, offset in bytes, type)]) for build 19041 x64 (see the
#: module docstring for the listing). Offsets and sizes are the listing's; members not needed are
#: left out (their bytes stay zero).
LAYOUT_19041_X64: dict[str, tuple[int, list[tuple[str, int, MemberType]]]] = {
    "_MI_SYSTEM_INFORMATION": (0x3280, [
        ("Pools", 0x0, "_MI_POOL_STATE"),
        ("Hardware", 0x15C0, "_MI_HARDWARE_STATE"),
        ("SystemPtes", 0x2100, "_MI_SYSTEM_PTE_STATE"),
        ("Cookie", 0x2588, "u64"),
        ("ZeroingDisabled", 0x2598, "i32"),
        ("FullyInitialized", 0x259C, "u8"),
        ("SafeBooted", 0x259D, "u8"),
        ("Vs", 0x25C0, "_MI_VISIBLE_STATE"),
    ]),
    "_MI_POOL_STATE": (0xA8, [
        ("MaximumNonPagedPoolThreshold", 0x0, "u64"),
        ("AllocatedNonPagedPool", 0x8, "u64"),
        ("AllocatedSecureNonPagedPool", 0x10, "u64"),
        ("HighEventSets", 0x20, "u32"),
        ("HighEventSetsValid", 0x24, "u8"),
        ("LowPagedPoolThreshold", 0x28, "u64"),
        ("HighPagedPoolThreshold", 0x30, "u64"),
        ("TotalPagedPoolQuota", 0x98, "u64"),
        ("TotalNonPagedPoolQuota", 0xA0, "u64"),
    ]),
    "_MI_HARDWARE_STATE": (0x1C0, [
        ("NodeMask", 0x0, "u32"),
        ("PhysicalAddressBits", 0x60, "u32"),
        ("TotalPagesAllowed", 0x70, "u64"),
        ("SecondaryColors", 0x7C, "u32"),
        ("InvalidPteMask", 0xC0, "u64"),
    ]),
    "_MI_SYSTEM_PTE_STATE": (0x200, [
        ("SystemViewPteInfo", 0xB8, "_MI_SYSTEM_PTE_TYPE"),
        ("KernelStackPteInfo", 0x118, "_MI_SYSTEM_PTE_TYPE"),
        ("StackGrowthFailures", 0x178, "u32"),
    ]),
    "_MI_SYSTEM_PTE_TYPE": (0x60, [
        ("BasePte", 0x10, "u64"),
        ("Flags", 0x18, "u32"),
        ("VaType", 0x1C, "u32"),
        ("PteFailures", 0x28, "u32"),
        ("TotalSystemPtes", 0x38, "u64"),
        ("Hint", 0x40, "u64"),
        ("LowestBitEverAllocated", 0x48, "u64"),
        ("TotalFreeSystemPtes", 0x58, "u64"),
    ]),
    "_MM_PAGED_POOL_INFO": (0x18, [
        ("Lock", 0x0, "u64"),
        ("MaximumSize", 0x8, "u64"),
        ("AllocatedPagedPool", 0x10, "u64"),
    ]),
    "_MI_VISIBLE_STATE": (0xCC0, [
        ("SessionIdBitmap", 0x10, "u64"),
        ("PagedPoolInfo", 0x18, "_MM_PAGED_POOL_INFO"),
        ("MaximumNonPagedPoolInPages", 0x30, "u64"),
        ("SizeOfPagedPoolInPages", 0x38, "u64"),
        ("SystemPteInfo", 0x40, "_MI_SYSTEM_PTE_TYPE"),
        ("NonPagedPoolCommit", 0xA0, "u64"),
        ("SmallNonPagedPtesCommit", 0xA8, "u64"),
        ("BootCommit", 0xB0, "u64"),
        ("MdlPagesAllocated", 0xB8, "u64"),
        ("SystemPageTableCommit", 0xC0, "u64"),
        ("ProcessCommit", 0xC8, "u64"),
        ("DriverCommit", 0xD0, "i32"),
        ("PagingLevels", 0xD4, "u8"),
        ("PfnDatabaseCommit", 0xD8, "u64"),
        ("MapCacheFailures", 0x920, "u32"),
        ("PagefileHashPages", 0x928, "u64"),
        ("SystemVaTypeCount", 0xA48, ("u64", 16)),
    ]),
    "_MI_PARTITION": (0x2D00, [
        ("Commit", 0x1840, "_MI_PARTITION_COMMIT"),
        ("SessionDetachTimeStamp", 0x1AD8, "u32"),
        ("Vp", 0x1B00, "_MI_VISIBLE_PARTITION"),
    ]),
    "_MI_PARTITION_COMMIT": (0x40, [
        ("PeakCommitment", 0x0, "u64"),
        ("TotalCommitLimitMaximum", 0x8, "u64"),
        ("LowCommitThreshold", 0x18, "u64"),
        ("HighCommitThreshold", 0x20, "u64"),
        ("SystemCommitReserve", 0x30, "u64"),
        ("OverCommit", 0x38, "u64"),
    ]),
    "_MMPFNLIST": (0x28, [
        ("Total", 0x0, "u64"),
        ("ListName", 0x8, "u32"),
        ("Flink", 0x10, "u64"),
        ("Blink", 0x18, "u64"),
        ("Lock", 0x20, "u64"),
    ]),
    "_MI_VISIBLE_PARTITION": (0x1200, [
        ("LowestPhysicalPage", 0x0, "u64"),
        ("HighestPhysicalPage", 0x8, "u64"),
        ("NumberOfPhysicalPages", 0x10, "u64"),
        ("NumberOfPagingFiles", 0x18, "u32"),
        ("AvailablePages", 0xC0, "u64"),
        ("ResidentAvailablePages", 0x100, "u64"),
        ("TotalCommittedPages", 0x228, "u64"),
        ("ModifiedPageListHead", 0x240, "_MMPFNLIST"),
        ("ModifiedNoWritePageListHead", 0x280, "_MMPFNLIST"),
        ("TotalCommitLimit", 0x2A8, "u64"),
        ("TotalPagesForPagingFile", 0x2B0, "u64"),
        ("ProcessLockedFilePages", 0x2C0, "u64"),
        ("SharedCommit", 0x2C8, "u64"),
        ("ChargeCommitmentFailures", 0x2D8, ("u32", 4)),
    ]),
}

_PRIM = {"u8": (1, "<B"), "u16": (2, "<H"), "u32": (4, "<I"), "i32": (4, "<i"), "u64": (8, "<Q")}

#: Microsoft, "Memory Limits for Windows and Windows Server Releases", paged pool row: 64-bit
#: Windows 8.1 / Server 2012 R2 and later, "15.5 TB or system commit limit, whichever is
#: smaller" (pages).
PAGED_POOL_LIMIT_PAGES = (31 * TB // 2) // PAGE

#: The forge's page file: 1 GiB (pages), so the commit limit is RAM plus it.
PAGE_FILE_PAGES = (1 << 30) // PAGE


def member_offset(path: str, struct_name: str = "_MI_SYSTEM_INFORMATION",
                  layout: Mapping[str, tuple[int, list[tuple[str, int, MemberType]]]] =
                  LAYOUT_19041_X64) -> tuple[int, MemberType]:
    """(offset in bytes, type) of the dotted member ``path`` (``"Vs.SystemPteInfo.
    TotalFreeSystemPtes"``) from the start of ``struct_name``. ``KeyError`` for an unknown
    member."""
    off = 0
    t: MemberType = struct_name
    for name in path.split("."):
        if not isinstance(t, str) or t not in layout:
            raise KeyError(f"{path}: {t!r} is not a struct of the layout")
        members = {m: (o, mt) for m, o, mt in layout[t][1]}
        if name not in members:
            raise KeyError(f"{path}: {t} has no member {name}")
        o, t = members[name]
        off += o
    return off, t


def _pack(t: MemberType, value: int | list[int]) -> bytes:
    if isinstance(t, tuple):
        elem, count = t
        vals = list(value) if isinstance(value, list) else [value] + [0] * (count - 1)
        if len(vals) != count:
            raise ValueError(f"{count} elements wanted, {len(vals)} given")
        return b"".join(_pack(elem, v) for v in vals)
    if t not in _PRIM:
        raise ValueError(f"cannot write a whole struct {t}; name one of its members")
    if isinstance(value, list):
        raise ValueError(f"{t} takes one value")
    return struct.pack(_PRIM[t][1], value)


def counters(physical_pages: int, highest_pfn: int, lowest_pfn: int, *,
             tracker_nonpaged_bytes: int, tracker_paged_bytes: int, failures: int = 0,
             leak: bool = False) -> dict[str, dict[str, int | list[int]]]:
    """Values for ``MiState``/``MiSystemPartition`` members and ``ExPoolFailures`` of a Windows 10
    19041 x64 machine of ``physical_pages`` pages whose pools hold what the tracker tables count
    (``tracker_*_bytes``), as :func:`plant` takes them: ``{"MiState": {path: value},
    "MiSystemPartition": {…}, "ExPoolFailures": {"": n}}``. The rules are those of
    :func:`.machine.check_counters` (checked by :func:`vm_counters`): the nonpaged maximum as
    Windows 8.1+ x64 sizes it (RAM), usage = the tracker's bytes in pages, available pages what is
    left beside nonpaged pool (a fifth when ``leak``, two fifths otherwise, as
    :func:`.story.story_counters`), the paged pool limit 15.5 TB or the commit limit (RAM + a
    1 GiB page file), commit below the limit and above its parts."""
    np_pages = -(-tracker_nonpaged_bytes // PAGE)
    paged_pages = -(-tracker_paged_bytes // PAGE)
    free = physical_pages - np_pages
    if free <= 0:
        raise ValueError(f"{np_pages:,} nonpaged pages do not fit in {physical_pages:,} pages")
    available = free // 5 if leak else free * 2 // 5
    limit = physical_pages + PAGE_FILE_PAGES
    committed = limit * 45 // 100
    shared, driver = 3_467, 1_765
    mistate: dict[str, int | list[int]] = {
        "Pools.AllocatedNonPagedPool": np_pages,
        "Pools.MaximumNonPagedPoolThreshold": 0,
        "Hardware.PhysicalAddressBits": 39,
        "Hardware.TotalPagesAllowed": physical_pages,
        "FullyInitialized": 1,
        "Vs.PagedPoolInfo.AllocatedPagedPool": paged_pages,
        "Vs.MaximumNonPagedPoolInPages":
            nonpaged_pool_maximum("win10", "x64", physical_pages, highest_pfn) // PAGE,
        "Vs.SizeOfPagedPoolInPages": min(PAGED_POOL_LIMIT_PAGES, limit),
        "Vs.SystemPteInfo.TotalSystemPtes": 262_144,
        "Vs.SystemPteInfo.TotalFreeSystemPtes": 205_776,
        "Vs.NonPagedPoolCommit": np_pages,
        "Vs.DriverCommit": driver,
        "Vs.PagingLevels": 4,
    }
    partition: dict[str, int | list[int]] = {
        "Vp.LowestPhysicalPage": lowest_pfn,
        "Vp.HighestPhysicalPage": highest_pfn,
        "Vp.NumberOfPhysicalPages": physical_pages,
        "Vp.NumberOfPagingFiles": 1,
        "Vp.AvailablePages": available,
        "Vp.ResidentAvailablePages": available + (free - available) // 4,
        "Vp.ModifiedPageListHead.Total": min(462, (free - available) // 8),
        "Vp.ModifiedPageListHead.ListName": 3,  # ModifiedPageList (_MMLISTS)
        "Vp.TotalCommittedPages": committed,
        "Vp.TotalCommitLimit": limit,
        "Vp.TotalPagesForPagingFile": PAGE_FILE_PAGES,
        "Vp.SharedCommit": shared,
        "Commit.PeakCommitment": committed + 1_024,
        "Commit.TotalCommitLimitMaximum": limit,
    }
    return {"MiState": mistate, "MiSystemPartition": partition,
            "ExPoolFailures": {"": failures}}


def vm_counters(values: Mapping[str, Mapping[str, int | list[int]]]) -> dict[str, int]:
    """The values of :func:`counters` under the names of the variables they replaced, as
    :func:`.machine.check_counters` takes them (pages; ``*InBytes`` in bytes)."""
    ms, p = values["MiState"], values["MiSystemPartition"]

    def n(v: int | list[int]) -> int:
        return sum(v) if isinstance(v, list) else v

    return {"MmMaximumNonPagedPoolInBytes": n(ms["Vs.MaximumNonPagedPoolInPages"]) * PAGE,
            "MmAllocatedNonPagedPool": n(ms["Pools.AllocatedNonPagedPool"]),
            "MmAvailablePages": n(p["Vp.AvailablePages"]),
            "MmResidentAvailablePages": n(p["Vp.ResidentAvailablePages"]),
            "MmModifiedPageListHead": n(p["Vp.ModifiedPageListHead.Total"]),
            "MmSizeOfPagedPoolInBytes": n(ms["Vs.SizeOfPagedPoolInPages"]) * PAGE,
            "MmSharedCommit": n(p["Vp.SharedCommit"]),
            "MmDriverCommit": n(ms["Vs.DriverCommit"]),
            "MmTotalCommittedPages": n(p["Vp.TotalCommittedPages"]),
            "MmTotalCommitLimit": n(p["Vp.TotalCommitLimit"])}


@dataclass
class MiStateLayout:
    """Ground truth of :func:`plant`: the VA of each variable (``"MiState"``,
    ``"MiSystemPartition"``, ``"ExPoolFailures"``) and the values written (variable -> member path
    -> value)."""

    variables: dict[str, int]
    values: dict[str, dict[str, int | list[int]]] = field(default_factory=dict)

    def va(self, variable: str, path: str = "") -> int:
        """VA of ``variable.path``."""
        if not path:
            return self.variables[variable]
        struct_name = {"MiState": "_MI_SYSTEM_INFORMATION",
                       "MiSystemPartition": "_MI_PARTITION"}[variable]
        return self.variables[variable] + member_offset(path, struct_name)[0]


#: Bytes each variable takes (the struct's size; ExPoolFailures a ULONG).
_SIZES = {"MiState": LAYOUT_19041_X64["_MI_SYSTEM_INFORMATION"][0],
          "MiSystemPartition": LAYOUT_19041_X64["_MI_PARTITION"][0], "ExPoolFailures": 4}
_TYPES = {"MiState": "_MI_SYSTEM_INFORMATION", "MiSystemPartition": "_MI_PARTITION"}


def plant(pt: PageTables, mem: PhysicalMemory, at: int,
          values: Mapping[str, Mapping[str, int | list[int]]]) -> MiStateLayout:
    """Map fresh pages from ``at`` (a page-aligned kernel VA, e.g. inside a large kernel's
    ``.data``: kernel base + 0x1200000) and write ``nt!MiState``, ``nt!MiSystemPartition`` and
    ``nt!ExPoolFailures`` there, each on its own pages, with ``values`` (from :func:`counters`,
    member path -> value; ``ExPoolFailures`` under ``""``). Raises ``ValueError`` when a page is
    already mapped or a path names no member of :data:`LAYOUT_19041_X64`."""
    if at % PAGE_SIZE:
        raise ValueError(f"{at:#x} is not page aligned")
    lay = MiStateLayout({}, {k: dict(v) for k, v in values.items()})
    cur = at
    for var in ("MiState", "MiSystemPartition", "ExPoolFailures"):
        size = _SIZES[var]
        pages = -(-size // PAGE_SIZE)
        for i in range(pages):
            va = cur + i * PAGE_SIZE
            if pt.translate(va) is not None:
                raise ValueError(f"{va:#x} is already mapped")
            pt.map(va, mem.alloc_page() << 12)
        lay.variables[var] = cur
        cur += pages * PAGE_SIZE
    for var, members in values.items():
        for path, value in members.items():
            t: MemberType
            if var == "ExPoolFailures":
                off, t = 0, "u32"
            else:
                try:
                    off, t = member_offset(path, _TYPES[var])
                except KeyError as e:
                    raise ValueError(str(e)) from None
            data = _pack(t, value)
            va = lay.variables[var] + off
            pos = 0
            while pos < len(data):  # members may straddle a page
                pa = pt.translate(va + pos)
                assert pa is not None
                take = min(PAGE_SIZE - ((va + pos) & 0xFFF), len(data) - pos)
                mem.write(pa, data[pos:pos + take])
                pos += take
    return lay
