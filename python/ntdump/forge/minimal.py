"""Ready-made small dumps with every kind of mapping, and their ground truth.

:func:`minimal_x64` and :func:`minimal_x86` build a memory with a few runs (one hole), page
tables with valid 4 KiB / large pages and the software PTE kinds, write recognisable content
and a dump file, and return a :class:`ForgeResult` describing what is where.

Recognisable content ("stamps"): a page mapped at a VA starts with ``va`` (u64), then ``pa``
(u64), then 510 copies of a u64 derived from ``va`` (:func:`stamp`). The first and last page
of each run carry ``stamp(0, pa)`` (VA 0 means "not mapped").
"""

from __future__ import annotations

import bisect
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from .header import Header
from .memory import PAGE_SIZE, PhysicalMemory
from .paging import MM_READWRITE, PROTECTION_SHIFT, PROTOTYPE, SIZE_1G, SIZE_4K, PageTables
from .triage import TriageDriver, write_triage
from .writers import write_bitmap, write_full, write_range, write_raw

#: Kinds of :class:`Mapping` that hardware translates (Valid=1 leaf).
VALID_KINDS = ("4k", "2m", "4m", "1g", "hole")
FORMATS = ("full", "bitmap", "kernel", "range_kernel", "range_kernel_user", "range_full",
           "raw", "triage")
_DUMP_TYPES = {"full": 1, "bitmap": 5, "kernel": 6, "range_kernel": 8,
               "range_kernel_user": 9, "range_full": 0xA, "raw": 0, "triage": 4}
PAGEFILE_HIGH = 0x1234
PROTO_VA_64 = 0xFFFF8A0000123450
PROTO_VA_32 = 0xE1000120
NT_NAME = "\\SystemRoot\\system32\\ntoskrnl.exe"


class Mapping(NamedTuple):
    """One prepared VA: ``pa`` is None for kinds without a frame (pagefile, demand_zero,
    prototype, none). ``page_size`` in bytes. Kinds: "4k", "2m", "4m", "1g" (valid, PA in
    the dump where stored), "hole" (valid, PA in a hole: never in the dump), "transition",
    "pagefile", "demand_zero", "prototype", "none" (all-zero entry)."""

    va: int
    pa: int | None
    page_size: int
    kind: str


def stamp(va: int, pa: int) -> bytes:
    """The 4096-byte recognisable content of the page mapped at ``va`` (PA ``pa``)."""
    word = (va * 0x9E3779B97F4A7C15 + 0x5851F42D4C957F2D) & (2**64 - 1)
    return struct.pack("<QQ", va, pa) + struct.pack("<Q", word) * 510


@dataclass
class ForgeResult:
    """What a ``minimal_*`` call wrote. ``stored`` is the ``(pfn, count)`` runs present in
    the file (empty for triage); ``mode`` is "x64", "pae" or "x86"."""

    path: Path
    header: Header
    mem: PhysicalMemory
    pt: PageTables
    dtb: int
    mode: str
    fmt: str
    dump_type: int
    mappings: list[Mapping]
    stored: tuple[tuple[int, int], ...]
    triage_blocks: list[tuple[int, bytes]] = field(default_factory=list)

    def is_stored(self, pa: int) -> bool:
        """True if the page holding physical address ``pa`` is in the dump file."""
        pfn = pa >> 12
        i = bisect.bisect_right([b for b, _ in self.stored], pfn) - 1
        return i >= 0 and pfn < self.stored[i][0] + self.stored[i][1]

    def expected_phys(self, pa: int, n: int) -> bytes | None:
        """Bytes a reader must return for ``n`` bytes at ``pa`` (not crossing a page), or None
        if the page is not in the dump. Raw images read holes as zeros."""
        if not self.is_stored(pa):
            return None
        return self.mem.read(pa, n) if self.mem.contains(pa) else bytes(n)

    def expected_virtual(self, va: int, n: int) -> bytes | None:
        """Bytes at ``va`` through valid entries (not crossing a page), or None."""
        pa = self.pt.translate(va)
        return None if pa is None else self.expected_phys(pa, n)

    def by_kind(self, kind: str) -> list[Mapping]:
        """The prepared mappings of one kind."""
        return [m for m in self.mappings if m.kind == kind]

    def sample_vas(self, n: int, seed: int = 0) -> list[tuple[int, int]]:
        """``n`` deterministic ``(va, expected pa)`` pairs inside valid mappings ("4k", "2m",
        "4m", "1g") whose page is stored in the file. Each mapping is equally likely, then a
        byte inside its stored part."""
        per_mapping: list[list[tuple[int, int, int]]] = []
        for m in self.mappings:
            if m.kind not in ("4k", "2m", "4m", "1g") or m.pa is None:
                continue
            segs = []
            for base, count in self.stored:
                lo = max(m.pa, base * PAGE_SIZE)
                hi = min(m.pa + m.page_size, (base + count) * PAGE_SIZE)
                if lo < hi:
                    segs.append((m.va + lo - m.pa, lo, hi - lo))
            if segs:
                per_mapping.append(segs)
        if not per_mapping:
            return []
        rng = random.Random(seed)
        out = []
        for _ in range(n):
            segs = rng.choice(per_mapping)
            va, pa, length = rng.choices(segs, weights=[s[2] for s in segs])[0]
            off = rng.randrange(length)
            out.append((va + off, pa + off))
        return out


def _layout(size: int) -> list[tuple[int, int]]:
    """Runs for ``size`` bytes of RAM: 0x1-0x9F, then two runs split by a 2 MiB hole."""
    if size % 0x200000 or size < 16 << 20:
        raise ValueError("size must be a multiple of 2 MiB and at least 16 MiB")
    pages = size // PAGE_SIZE
    low = ((pages - 0x100) // 2) & ~0x1FF
    high = pages - 0x100 - low
    return [(0x1, 0x9F), (0x100, low), (0x100 + low + 0x200, high)]


class _Builder:
    def __init__(self, size: int, mode: str, pdpt_offset: int = 0) -> None:
        self.mem = PhysicalMemory(_layout(size))
        self.pt = PageTables(self.mem, mode, pdpt_offset=pdpt_offset)
        self.mappings: list[Mapping] = []
        base, count = self.mem.runs[1]
        self.hole_pa = (base + count) * PAGE_SIZE

    def page(self, va: int, kind: str = "4k") -> int:
        pa = self.mem.alloc_page() << 12
        self.mem.write(pa, stamp(va, pa))
        self.pt.map(va, pa)
        self.mappings.append(Mapping(va, pa, SIZE_4K, kind))
        return pa

    def large(self, va: int, size: int, kind: str) -> None:
        pa = self.mem.alloc_pages(size // SIZE_4K, size // SIZE_4K) << 12
        self.pt.map(va, pa, size)
        for i in (0, 1, size // SIZE_4K // 2, size // SIZE_4K - 1):
            self.mem.write(pa + i * SIZE_4K, stamp(va + i * SIZE_4K, pa + i * SIZE_4K))
        self.mappings.append(Mapping(va, pa, size, kind))

    def software(self, va: int, kind: str, value: int | None, pa: int | None = None) -> None:
        if kind == "transition":
            assert pa is not None
            self.pt.map_transition(va, pa)
        elif value is not None:
            self.pt.set_entry(va, "pte", value)
        self.mappings.append(Mapping(va, pa, SIZE_4K, kind))

    def finish_memory(self) -> None:
        for base, count in self.mem.runs:
            for pfn in {base, base + count - 1}:
                if pfn not in self.mem.pages:
                    self.mem.write(pfn << 12, stamp(0, pfn << 12))


def _write(path: Path, b: _Builder, hdr: Header, fmt: str, blocks: list) -> ForgeResult:
    mem = b.mem
    populated = sorted(mem.pages)
    writers: dict[str, Callable[[], None]] = {
        "full": lambda: write_full(path, mem, hdr),
        "bitmap": lambda: write_bitmap(path, mem, hdr, "full"),
        "kernel": lambda: write_bitmap(path, mem, hdr, "kernel", pages=populated),
        "range_kernel": lambda: write_range(path, mem, hdr, 8, pages=populated),
        "range_kernel_user": lambda: write_range(path, mem, hdr, 9, pages=populated),
        "range_full": lambda: write_range(path, mem, hdr, 0xA),
        "raw": lambda: write_raw(path, mem),
    }
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}")
    stored: tuple[tuple[int, int], ...]
    if fmt == "triage":
        drivers = [TriageDriver(NT_NAME, b.mappings[0].va, 16 * SIZE_4K, 0x5F3E2A1B, 0xA5938C)]
        write_triage(path, hdr, blocks, drivers=drivers)
        stored = ()
    else:
        writers[fmt]()
        if fmt in ("kernel", "range_kernel", "range_kernel_user"):
            runs: list[tuple[int, int]] = []
            for pfn in populated:
                if runs and sum(runs[-1]) == pfn:
                    runs[-1] = (runs[-1][0], runs[-1][1] + 1)
                else:
                    runs.append((pfn, 1))
            stored = tuple(runs)
        elif fmt == "raw":
            stored = ((0, mem.highest_pfn + 1),)
        else:
            stored = mem.runs
    return ForgeResult(path, hdr, mem, b.pt, b.pt.dtb, b.pt.mode, fmt, _DUMP_TYPES[fmt],
                       b.mappings, stored, blocks if fmt == "triage" else [])


def minimal_x64(path: str | Path, *, fmt: str = "full", size: int = 64 << 20,
                build: int = 19041, bugcheck_code: int = 0x161,
                bugcheck_params: tuple[int, int, int, int] = (1, 2, 3, 4),
                processors: int = 2) -> ForgeResult:
    """Write a small x64 dump of ``size`` bytes of RAM in format ``fmt`` (see
    :data:`FORMATS`; "kernel" and "range_kernel*" store only the populated pages).

    Mappings: 16 stamped 4 KiB pages at 0xFFFFF80000000000 (the "image"), 4 user pages at
    0x7FF700000000, a 2 MiB page at 0xFFFFF80040000000, a 1 GiB page at 0xFFFFF88000000000
    → PA 0, a transition, a paged-out, a demand-zero, a prototype and an empty PTE at
    0xFFFFF80000100000 + 0x1000·i, and a valid 4 KiB mapping into the hole.
    """
    b = _Builder(size, "x64")
    image = 0xFFFFF80000000000
    for i in range(16):
        b.page(image + i * SIZE_4K)
    user = 0x00007FF700000000
    for i, pa in enumerate(b.pt.map_data(user, bytes(4 * SIZE_4K))):
        b.mem.write(pa, stamp(user + i * SIZE_4K, pa))
        b.mappings.append(Mapping(user + i * SIZE_4K, pa, SIZE_4K, "4k"))
    b.large(0xFFFFF80040000000, 0x200000, "2m")
    b.pt.map(0xFFFFF88000000000, 0, SIZE_1G)
    b.mappings.append(Mapping(0xFFFFF88000000000, 0, SIZE_1G, "1g"))
    soft = 0xFFFFF80000100000
    tpa = b.mem.alloc_page() << 12
    b.mem.write(tpa, stamp(soft, tpa))
    b.software(soft, "transition", None, tpa)
    prot = MM_READWRITE << PROTECTION_SHIFT
    b.software(soft + 0x1000, "pagefile", (PAGEFILE_HIGH << 32) | prot)
    b.software(soft + 0x2000, "demand_zero", prot)
    b.software(soft + 0x3000, "prototype", ((PROTO_VA_64 & (2**48 - 1)) << 16) | PROTOTYPE)
    b.software(soft + 0x4000, "none", None)
    b.pt.map(soft + 0x5000, b.hole_pa)
    b.mappings.append(Mapping(soft + 0x5000, b.hole_pa, SIZE_4K, "hole"))
    b.mappings.append(Mapping(0xFFFFA00000000000, None, SIZE_4K, "none"))
    b.finish_memory()
    hdr = Header(machine="x64", build=build, dtb=b.pt.dtb, bugcheck_code=bugcheck_code,
                 bugcheck_params=bugcheck_params, processors=processors,
                 ps_loaded_module_list=image + 0x1010, ps_active_process_head=image + 0x1020,
                 kd_debugger_data_block=image + 0x2080, pfn_database=0xFFFFFA8000000000,
                 context_rip=image + 0x1234, context_rsp=image + 0xFF00,
                 comment=b"ntdump.forge minimal_x64")
    blocks = [(image + i * SIZE_4K, b.mem.read(b.mappings[i].pa or 0, SIZE_4K))
              for i in range(4)]
    return _write(Path(path), b, hdr, fmt, blocks)


def minimal_x86(path: str | Path, *, pae: bool = True, fmt: str = "full", size: int = 64 << 20,
                build: int = 2600, bugcheck_code: int = 0x161,
                bugcheck_params: tuple[int, int, int, int] = (1, 2, 3, 4),
                processors: int = 1, pdpt_offset: int = 0x20) -> ForgeResult:
    """Write a small 32-bit dump (PAE by default, PDPT ``pdpt_offset`` bytes into its page).

    Formats: "full", "bitmap", "kernel" (32-bit header, summary header at 0x1000), "raw",
    "triage". Mappings: 16 stamped 4 KiB pages at 0x80400000, 4 user pages at 0x00400000, a
    2 MiB (PAE) or 4 MiB (non-PAE) page at 0x81000000, the software PTE kinds at
    0x80500000 + 0x1000·i, and a valid 4 KiB mapping into the hole.
    """
    if fmt.startswith("range"):
        raise ValueError("range (RDMP) dumps are 64-bit only")
    if size > 3 << 30:
        raise ValueError("keep 32-bit memory below 3 GiB")
    mode = "pae" if pae else "x86"
    b = _Builder(size, mode, pdpt_offset if pae else 0)
    image = 0x80400000
    for i in range(16):
        b.page(image + i * SIZE_4K)
    user = 0x00400000
    for i, pa in enumerate(b.pt.map_data(user, bytes(4 * SIZE_4K))):
        b.mem.write(pa, stamp(user + i * SIZE_4K, pa))
        b.mappings.append(Mapping(user + i * SIZE_4K, pa, SIZE_4K, "4k"))
    if pae:
        b.large(0x81000000, 0x200000, "2m")
    else:
        b.large(0x81000000, 0x400000, "4m")
    soft = 0x80500000
    tpa = b.mem.alloc_page() << 12
    b.mem.write(tpa, stamp(soft, tpa))
    b.software(soft, "transition", None, tpa)
    prot = MM_READWRITE << PROTECTION_SHIFT
    if pae:
        b.software(soft + 0x1000, "pagefile", (PAGEFILE_HIGH << 32) | prot)
        b.software(soft + 0x3000, "prototype", (PROTO_VA_32 << 32) | PROTOTYPE)
    else:
        b.software(soft + 0x1000, "pagefile", (PAGEFILE_HIGH << 12) | prot)
        b.software(soft + 0x3000, "prototype", PROTOTYPE | ((PROTO_VA_32 & 0x3F0) >> 1)
                   | ((PROTO_VA_32 & 0x7FFFFC00) << 1))
    b.software(soft + 0x2000, "demand_zero", prot)
    b.software(soft + 0x4000, "none", None)
    b.pt.map(soft + 0x5000, b.hole_pa)
    b.mappings.append(Mapping(soft + 0x5000, b.hole_pa, SIZE_4K, "hole"))
    b.mappings.append(Mapping(0xC8000000, None, SIZE_4K, "none"))
    b.finish_memory()
    hdr = Header(machine="x86", pae=pae, build=build, dtb=b.pt.dtb,
                 bugcheck_code=bugcheck_code, bugcheck_params=bugcheck_params,
                 processors=processors, ps_loaded_module_list=image + 0x1010,
                 ps_active_process_head=image + 0x1020, kd_debugger_data_block=image + 0x2080,
                 context_rip=image + 0x1234, context_rsp=image + 0xFF00,
                 comment=b"ntdump.forge minimal_x86")
    blocks = [(image + i * SIZE_4K, b.mem.read(b.mappings[i].pa or 0, SIZE_4K))
              for i in range(4)]
    return _write(Path(path), b, hdr, fmt, blocks)
