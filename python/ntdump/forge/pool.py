"""Kernel pool structures in a forged address space (WINDOWS_INTERNALS.md section 5).

:func:`build_pool` writes, into page tables and physical memory built with the rest of the forge:

* the pool **variables** in a 4-page "kernel data" block: ``PoolTrackTable`` (pointer) with
  ``PoolTrackTableSize`` in the pointer-sized slot just before it (where Volatility 2 reads it),
  ``PoolBigPageTable`` / ``PoolBigPageTableSize`` at the distances Volatility 2's
  ``bigpagepools.py`` uses for the version (XP … 8.1; Windows 10+ has no published distance, so
  they go right after the PoolTrackTable variable: +4/+5 pointers), and on Windows 10+ the
  ``ExPoolTagTables`` array of per-processor table pointers (+0x40 pointers);
* the **tracker tables** (``_POOL_TRACKER_TABLE``, any layout in :data:`TRACKER_LAYOUTS`), tags
  placed by the kernel's hash with linear probing; as InitializePool leaves them (WRK
  ``base/ntos/ex/pool.c``, ReactOS ``ntoskrnl/mm/ARM3/expool.c``): ``2^n + 1`` entries, the last
  one the overflow bucket, ``PoolTrackTableSize = 2^n + 1`` and hash mask ``2^n - 1``; on
  Windows 10+ one table per processor, the counts split between the global and per-CPU tables
  (each share consistent: frees ≤ allocs, all freed ⇒ 0 bytes);
* the **big page table** (``_POOL_TRACKER_BIG_PAGES``, any layout in :data:`BIG_LAYOUTS`) as the
  kernel keeps it: InitializePool zeroes it and sets every slot's ``Va`` to 1
  (``POOL_BIG_TABLE_ENTRY_FREE``; WRK ``pool.c`` InitializePool, ReactOS ``expool.c``
  InitializePool); an allocation takes the first slot with bit 0 of ``Va`` set at or after its
  hash (WRK ExpAddTagForBigPages: ``(Va >> PAGE_SHIFT) & mask``; Vista+ as ReactOS
  ExpComputePartialHashForAddress: the page number XOR-folded); a freed allocation keeps its
  slot with bit 0 of ``Va`` set and its old Key and size (ReactOS ExpFindAndRemoveTagBigPages).
  One mapped page per big allocation. Optionally a **session big page table** initialised the
  same way (WRK ExInitializePoolDescriptor for ``PagedPoolSession``);
* **pool pages**: 4 KiB pages of headers chained by PreviousSize, allocated blocks per tag (a
  sample of each tag's outstanding allocations, up to ``sample`` blocks; exactly all of them when
  the tag gives ``block_size`` and has at most ``sample`` outstanding), free blocks to fill pages;
* the KDBG's PoolTrackTable field (+0x1B8) pointing at the variable — an existing KDBG
  (``kdbg_va``, e.g. ``KernelLayout.kdbg`` from :func:`~.kernel.build_kernel_space`), or a bare
  one written by :func:`write_minimal_kdbg`.

Units: VA = virtual byte address; sizes in bytes; block sizes include the header.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .memory import PAGE_SIZE, PhysicalMemory
from .paging import PageTables
from .scenario import Scenario
from .writers import write_bitmap, write_full

__all__ = ["BIG_LAYOUTS", "POOL_BIG_TABLE_ENTRY_FREE", "STORY_TAGS", "TRACKER_LAYOUTS", "BigAlloc",
           "PoolBlockSpec", "big_hash",
           "add_to_scenario",
           "PoolLayout", "PoolTag", "build_pool", "default_big_layout",
           "default_tracker_layout", "pool_header_bytes", "write_minimal_kdbg",
           "write_pool_page"]

# Field tuples: (offset, width in bytes). Same names and values as crates/ntdump-core pool/layout.rs
# (both checked against Volatility's published layouts by tests/test_pool_layouts.py).
_TRK_FIELDS = ("Key", "NonPagedAllocs", "NonPagedFrees", "NonPagedBytes", "PagedAllocs",
               "PagedFrees", "PagedBytes")
TRACKER_LAYOUTS: dict[str, tuple[int, dict[str, tuple[int, int]]]] = {
    "x86-0x1c": (0x1C, dict(zip(_TRK_FIELDS, ((0, 4), (4, 4), (8, 4), (0xC, 4), (0x10, 4),
                                             (0x14, 4), (0x18, 4)), strict=True))),
    "x86-0x30": (0x30, dict(zip(_TRK_FIELDS, ((0, 4), (8, 8), (0x10, 8), (4, 4), (0x20, 8),
                                             (0x28, 8), (0x18, 4)), strict=True))),
    "x86-0x40": (0x40, dict(zip(_TRK_FIELDS, ((0, 4), (8, 8), (0x10, 8), (4, 4), (0x20, 8),
                                             (0x28, 8), (0x18, 4)), strict=True))),
    "x64-0x28": (0x28, dict(zip(_TRK_FIELDS, ((0, 4), (4, 4), (8, 4), (0x10, 8), (0x18, 4),
                                             (0x1C, 4), (0x20, 8)), strict=True))),
    "x64-0x38": (0x38, dict(zip(_TRK_FIELDS, ((0, 4), (0x10, 8), (0x18, 8), (8, 8), (0x28, 8),
                                             (0x30, 8), (0x20, 8)), strict=True))),
    "x64-0x50": (0x50, dict(zip(_TRK_FIELDS, ((0, 4), (0x10, 8), (0x18, 8), (8, 8), (0x28, 8),
                                             (0x30, 8), (0x20, 8)), strict=True))),
}
#: name → (size, x64, {field: (offset, width)}); PoolType of Windows 10+ layouts is a 12-bit field
#: at bit 8 of the u32 after Key (entry "PoolTypeBits": (offset, 0)).
BIG_LAYOUTS: dict[str, tuple[int, dict[str, tuple[int, int]]]] = {
    "xp-x86-12": (12, {"Va": (0, 4), "Key": (4, 4), "NumberOfPages": (8, 4)}),
    "xp-x86-8": (8, {"Va": (0, 4), "Key": (4, 4)}),
    "2003-x86": (16, {"Va": (0, 4), "Key": (4, 4), "NumberOfPages": (8, 4)}),
    "2003-x64": (24, {"Va": (0, 8), "Key": (8, 4), "NumberOfPages": (0xC, 4)}),
    "vista-x86": (16, {"Va": (0, 4), "Key": (4, 4), "PoolType": (8, 4),
                       "NumberOfBytes": (0xC, 4)}),
    "vista-x64": (24, {"Va": (0, 8), "Key": (8, 4), "PoolType": (0xC, 4),
                       "NumberOfBytes": (0x10, 8)}),
    "win10-x86": (16, {"Va": (0, 4), "Key": (4, 4), "PoolTypeBits": (8, 0),
                       "NumberOfBytes": (0xC, 4)}),
    # x86 Insider build 21292: the Windows 10 entry plus ProcessBilled (an EPROCESS pointer) at
    # 0x10, 0x14 bytes (ntdiff/headers Win10_XXXX_21292/x86/System32/ntoskrnl.exe/Standalone/
    # _POOL_TRACKER_BIG_PAGES.h, from that build's PDB); x64 gained the field at 20348 (sheet 5.7).
    "win10-x86-21292": (0x14, {"Va": (0, 4), "Key": (4, 4), "PoolTypeBits": (8, 0),
                               "NumberOfBytes": (0xC, 4), "ProcessBilled": (0x10, 4)}),
    "win10-x64": (24, {"Va": (0, 8), "Key": (8, 4), "PoolTypeBits": (0xC, 0),
                       "NumberOfBytes": (0x10, 8)}),
    "win11-x64": (32, {"Va": (0, 8), "Key": (8, 4), "PoolTypeBits": (0xC, 0),
                       "NumberOfBytes": (0x10, 8), "ProcessBilled": (0x18, 8)}),
}
#: Volatility 2 bigpagepools.py distances: PoolBigPageTable = var - d0, …Size = var - d1.
VOL2_DISTANCES = {(2600, False): (8, 12), (3790, False): (24, 28), (3790, True): (48, 56),
                  (6000, False): (20, 24), (6000, True): (40, 48), (7600, False): (20, 24),
                  (7600, True): (40, 48), (9200, False): (92, 88), (9200, True): (-5200, -5224),
                  (9600, False): (116, 120), (9600, True): (-5200, -5176),
                  (9601, True): (-5192, -5200)}


def vol2_distance(build: int, x64: bool) -> tuple[int, int] | None:
    """Volatility 2's (d0, d1) for a build, or None (Windows 10+ and unknown builds)."""
    key = {6001: 6000, 6002: 6000, 7601: 7600}.get(build, build)
    if key == 9601 and not x64:
        key = 9600
    return VOL2_DISTANCES.get((key, x64))


REGION_BASES = {"x64": 0xFFFFC08100000000, "x86": 0x8E000000}
_VAR_OFFSET = 0x2000  # of the PoolTrackTable variable inside the 4-page variable block


@dataclass(frozen=True)
class PoolTag:
    """One tag's counters as the tracker tables should show them (sums over all tables).

    ``block_size`` (bytes, header included, a multiple of the header unit) makes the pool pages
    hold exactly the outstanding allocations at that size; then ``*_bytes`` default to
    ``outstanding x block_size``."""

    tag: bytes
    nonpaged_allocs: int = 0
    nonpaged_frees: int = 0
    nonpaged_bytes: int | None = None
    paged_allocs: int = 0
    paged_frees: int = 0
    paged_bytes: int | None = None
    block_size: int | None = None

    def bytes_of(self, paged: bool) -> int:
        """Outstanding bytes of the nonpaged or paged pool."""
        given = self.paged_bytes if paged else self.nonpaged_bytes
        if given is not None:
            return given
        a, f = (self.paged_allocs, self.paged_frees) if paged else \
            (self.nonpaged_allocs, self.nonpaged_frees)
        return (a - f) * (self.block_size or 0)

    @property
    def key(self) -> int:
        """The tag as the u32 the tables hold."""
        return int.from_bytes(self.tag.ljust(4, b" ")[:4], "little")


@dataclass(frozen=True)
class BigAlloc:
    """One big allocation: VA (page aligned), tag, bytes, POOL_TYPE, freed (Va bit 0 set)."""

    va: int
    tag: bytes
    bytes: int
    pool_type: int = 0
    freed: bool = False


@dataclass(frozen=True)
class PoolBlockSpec:
    """A block of a pool page as written: VA of its header, size (bytes), tag, allocated, POOL_TYPE
    (requested), PreviousSize (bytes)."""

    address: int
    size: int
    tag: bytes
    allocated: bool
    pool_type: int
    previous_size: int


#: The founding story (DESIGN.md): ``None`` tops nonpaged use with 246,479 outstanding
#: allocations and 50,827,424 bytes; ``MmCm`` (contiguous memory) is second.
STORY_TAGS: tuple[PoolTag, ...] = (
    PoolTag(b"None", nonpaged_allocs=251_203, nonpaged_frees=4_724, nonpaged_bytes=50_827_424),
    PoolTag(b"MmCm", nonpaged_allocs=1_198, nonpaged_frees=12, nonpaged_bytes=3_853_216),
    PoolTag(b"Thre", nonpaged_allocs=91_577, nonpaged_frees=90_626, nonpaged_bytes=1_183_696),
    PoolTag(b"File", nonpaged_allocs=4_812_337, nonpaged_frees=4_803_102,
            nonpaged_bytes=1_625_360),
    PoolTag(b"Proc", nonpaged_allocs=2_319, nonpaged_frees=2_237, nonpaged_bytes=106_272),
    PoolTag(b"MmSt", paged_allocs=1_210_331, paged_frees=1_196_020, paged_bytes=26_014_736),
    PoolTag(b"CM31", paged_allocs=51_006, paged_frees=35_101, paged_bytes=21_630_976),
    PoolTag(b"Ntfx", nonpaged_allocs=688_201, nonpaged_frees=680_500, nonpaged_bytes=998_864,
            paged_allocs=120, paged_frees=100, paged_bytes=2_560),
    PoolTag(b"VndC", nonpaged_allocs=40, nonpaged_frees=8, block_size=0x60),
)


def default_tracker_layout(machine: str, build: int) -> str:
    """The layout the reader expects first for a machine and build (pool/layout.rs)."""
    if machine == "x86":
        return "x86-0x40" if build >= 21292 else "x86-0x30" if build >= 18362 else "x86-0x1c"
    return "x64-0x50" if build >= 22000 else "x64-0x38" if build >= 14393 else "x64-0x28"


def default_big_layout(machine: str, build: int) -> str:
    """The big page layout for a machine and build."""
    x64 = machine != "x86"
    if build < 3000:
        return "2003-x64" if x64 else "xp-x86-12"
    if build < 4000:
        return "2003-x64" if x64 else "2003-x86"
    if build < 10000:
        return "vista-x64" if x64 else "vista-x86"
    if x64:
        return "win11-x64" if build >= 20348 else "win10-x64"
    return "win10-x86-21292" if build >= 21292 else "win10-x86"


def _pool_type_stored(build: int, pool_type: int, allocated: bool) -> int:
    """The PoolType value a header stores (section 5.3)."""
    if not allocated:
        return 0
    if build < 6000:
        return ((pool_type & 0x69) + 1) | 4
    return pool_type | 2


def pool_header_bytes(machine: str, build: int, *, previous_size: int, block_size: int,
                      pool_type: int, allocated: bool, tag: bytes, pool_index: int = 0,
                      raw_type: int | None = None) -> bytes:
    """A POOL_HEADER (8 bytes x86, 16 x64). Sizes in bytes (divided by the unit: 8 / 16);
    ``raw_type`` overrides the stored PoolType."""
    unit = 8 if machine == "x86" else 16
    t = _pool_type_stored(build, pool_type, allocated) if raw_type is None else raw_type
    ps, bs = previous_size // unit, block_size // unit
    tag4 = tag.ljust(4, b" ")[:4]
    if machine == "x86":
        v = (ps & 0x1FF) | ((pool_index & 0x7F) << 9) | ((bs & 0x1FF) << 16) | ((t & 0x7F) << 25)
        return struct.pack("<I", v) + tag4
    return bytes([ps & 0xFF, pool_index & 0xFF, bs & 0xFF, t & 0xFF]) + tag4 + bytes(8)


class _Region:
    """Maps fresh pages on demand from a base VA; leaves one unmapped guard page after each
    allocation, so a reader that runs past a table finds nothing."""

    def __init__(self, pt: PageTables, mem: PhysicalMemory, base: int) -> None:
        self.pt, self.mem, self.cursor = pt, mem, base

    def alloc(self, size: int, *, guard: bool = True) -> int:
        va = self.cursor
        pages = max(1, -(-size // PAGE_SIZE))
        for i in range(pages):
            if self.pt.translate(va + i * PAGE_SIZE) is not None:
                raise ValueError(f"pool region {va + i * PAGE_SIZE:#x} is already mapped")
            self.pt.map(va + i * PAGE_SIZE, self.mem.alloc_page() << 12)
        self.cursor = va + (pages + (1 if guard else 0)) * PAGE_SIZE
        return va

    def reserve(self, size: int) -> int:
        """VA space without mapping it (a table only partly present)."""
        va = self.cursor
        self.cursor += (-(-size // PAGE_SIZE) + 1) * PAGE_SIZE
        return va

    def write(self, va: int, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            pa = self.pt.translate(va + pos)
            take = min(PAGE_SIZE - ((va + pos) & 0xFFF), len(data) - pos)
            if pa is not None:
                self.mem.write(pa, data[pos:pos + take])
            pos += take


def write_pool_page(pt: PageTables, mem: PhysicalMemory, va: int, machine: str, build: int,
                    blocks: Sequence[tuple[bytes, int, bool, int]], *,
                    map_page: bool = True) -> list[PoolBlockSpec]:
    """Write one pool page at ``va`` (page aligned): ``blocks`` = (tag, size in bytes, allocated,
    POOL_TYPE) in order; the rest of the page becomes a free block. Returns what was written."""
    unit = 8 if machine == "x86" else 16
    if map_page:
        pt.map(va, mem.alloc_page() << 12)
    pa = pt.translate(va)
    if pa is None:
        raise ValueError(f"{va:#x} is not mapped")
    page = bytearray(PAGE_SIZE)
    out: list[PoolBlockSpec] = []
    off, prev = 0, 0
    seg_heap = build >= 18362
    items = list(blocks)
    used = sum(s for _, s, _, _ in items)
    if used > PAGE_SIZE or any(s <= 0 or s % unit for _, s, _, _ in items):
        raise ValueError("block sizes must be positive multiples of the unit, within a page")
    if used < PAGE_SIZE:
        items.append((b"Free", PAGE_SIZE - used, False, 0))
    for tag, size, alloc, ptype in items:
        ps = 0 if seg_heap else prev
        page[off:off + (8 if machine == "x86" else 16)] = pool_header_bytes(
            machine, build, previous_size=ps, block_size=size, pool_type=ptype,
            allocated=alloc, tag=tag)
        out.append(PoolBlockSpec(va + off, size, tag.ljust(4, b" ")[:4], alloc,
                                 ptype if alloc else 0, ps))
        prev, off = size, off + size
    mem.write(pa, bytes(page))
    return out


def write_minimal_kdbg(pt: PageTables, mem: PhysicalMemory, va: int, *, size: int = 0x380,
                       kern_base: int = 0) -> int:
    """A bare KDBG block at ``va`` (mapped if needed): List pointing at itself, "KDBG", Size,
    KernBase; every other field 0. Returns ``va``."""
    for p in range(va & ~0xFFF, va + size, PAGE_SIZE):
        if pt.translate(p) is None:
            pt.map(p, mem.alloc_page() << 12)
    body = bytearray(size)
    struct.pack_into("<QQ4sIQ", body, 0, va, va, b"KDBG", size, kern_base)
    reg = _Region(pt, mem, 0)
    reg.write(va, bytes(body))
    return va


def _hash_index(machine: str, build: int, key: int, mask: int) -> int:
    """The tracker table hash. From Server 2003 SP1 (build 3790): WRK ``pool.c`` POOLTAG_HASH,
    ``t = Key * 40543`` (64-bit), ``(t ^ (t >> 32)) & Mask`` — also ReactOS
    ExpComputeHashForTag and the Windows 10 decompilations (sheet 5.6). Before (XP): the older
    byte-folding macro the sheet attributes to 2003 (``[?]``: no public XP source)."""
    if build >= 3790:
        t = (40543 * key) & 0xFFFFFFFFFFFFFFFF
        return (t ^ (t >> 32)) & mask
    b = key.to_bytes(4, "little")
    h = ((((b[0] << 2) ^ b[1]) << 2 ^ b[2]) << 2) ^ b[3]
    return ((40543 * h) >> 2) & mask


def _split(a: int, f: int, b: int, n: int) -> list[tuple[int, int, int]]:
    """Split allocs/frees/bytes in n consistent shares (share 0 gets the remainders)."""
    o = a - f
    fs = [f // n + (f % n if i == 0 else 0) for i in range(n)]
    os_ = [o // n + (o % n if i == 0 else 0) for i in range(n)]
    bs = [(b * os_[i] // o) if o else 0 for i in range(n)]
    bs[0] += b - sum(bs)
    return [(fs[i] + os_[i], fs[i], bs[i]) for i in range(n)]


def _put(buf: bytearray, off: int, width: int, value: int) -> None:
    buf[off:off + width] = (value % (1 << (8 * width))).to_bytes(width, "little")


POOL_BIG_TABLE_ENTRY_FREE = 1
"""Bit 0 of a big page entry's ``Va``: the slot is free (WRK ``pool.c``, ReactOS ``expool.c``)."""


def big_hash(build: int, va: int) -> int:
    """The unmasked hash of a big allocation's VA: WRK (2003) ExpAddTagForBigPages uses the page
    number; Vista and later as ReactOS ``ExpComputePartialHashForAddress`` (page number, its
    bytes XOR-folded). The reader does not depend on it."""
    pfn = va >> 12
    if build < 6000:
        return pfn
    r = pfn & 0xFFFFFFFF
    return (r >> 24) ^ (r >> 16) ^ (r >> 8) ^ r


def _fill_big_table(buf: bytearray, layout: str, build: int, entries: int,
                    allocs: Sequence[BigAlloc], free_value: int | None = None) -> None:
    """Initialise a big page table as InitializePool does (every ``Va`` = 1; zero on XP) and
    insert ``allocs`` in order; freed ones then get bit 0 of ``Va`` set, keeping Key and size."""
    bsize, bfields = BIG_LAYOUTS[layout]
    voff, vwidth = bfields["Va"]
    free = free_value if free_value is not None else (0 if build < 3000 else
                                                      POOL_BIG_TABLE_ENTRY_FREE)
    n = len(buf) // bsize
    for i in range(n):
        _put(buf, i * bsize + voff, vwidth, free)

    def slot_free(i: int) -> bool:
        v = int.from_bytes(buf[i * bsize + voff:i * bsize + voff + vwidth], "little")
        return v & 1 == 1 or v == 0

    mask = entries - 1
    for a in allocs:
        i = big_hash(build, a.va) & mask
        for _ in range(entries):
            if i < n and slot_free(i):
                break
            i = (i + 1) % entries
        else:
            raise ValueError("big page table full")
        if i >= n:  # the table is only partly mapped: first free mapped slot
            i = next(j for j in range(n) if slot_free(j))
        e = i * bsize
        _put(buf, e + voff, vwidth, a.va)
        _put(buf, e + bfields["Key"][0], 4, int.from_bytes(a.tag.ljust(4, b" ")[:4], "little"))
        if "NumberOfPages" in bfields:
            _put(buf, e + bfields["NumberOfPages"][0], 4, -(-a.bytes // PAGE_SIZE))
        if "NumberOfBytes" in bfields:
            off, width = bfields["NumberOfBytes"]
            _put(buf, e + off, width, a.bytes)
        if "PoolType" in bfields:
            _put(buf, e + bfields["PoolType"][0], 4, a.pool_type)
        if "PoolTypeBits" in bfields:  # Pattern 0-7, PoolType 8-19 (12 bits), SlushSize 20-31
            _put(buf, e + bfields["PoolTypeBits"][0], 4, 0x5A | ((a.pool_type & 0xFFF) << 8))
    for a in allocs:  # frees come after the allocations: bit 0 set, the rest kept
        if a.freed:
            for i in range(n):
                e = i * bsize
                if int.from_bytes(buf[e + voff:e + voff + vwidth], "little") == a.va:
                    _put(buf, e + voff, vwidth, a.va | POOL_BIG_TABLE_ENTRY_FREE)
                    break


@dataclass
class PoolLayout:
    """Ground truth of :func:`build_pool`. VAs; sizes in bytes; entries = table slots."""

    machine: str
    build: int
    kdbg: int
    variables: dict[str, int]
    track_table: int
    track_entries: int
    tracker_layout: str
    per_cpu_tables: list[int]
    per_cpu_array: int | None
    big_table: int
    big_entries: int
    big_layout: str
    tags: list[PoolTag]
    big: list[BigAlloc]
    blocks: list[PoolBlockSpec]
    pages: list[int]
    region: tuple[int, int]
    expected_used: dict[str, tuple[int, int, int, int, int, int]] = field(default_factory=dict)
    """tag text → (nonpaged allocs, frees, bytes, paged allocs, frees, bytes)."""
    session_big_table: int | None = None
    """VA of the session big page table (``session_big``), or None."""
    session_big_entries: int = 0
    session_big: list[BigAlloc] = field(default_factory=list)

    @property
    def track_variable(self) -> int:
        """VA of the PoolTrackTable variable."""
        return self.variables["PoolTrackTable"]


def build_pool(pt: PageTables, mem: PhysicalMemory, *, machine: str, build: int,
               kdbg_va: int, tags: Sequence[PoolTag] = STORY_TAGS,
               big: Sequence[BigAlloc] | None = None, processors: int = 1,
               tracker_layout: str | None = None, big_layout: str | None = None,
               track_entries: int = 1024, big_entries: int = 512, sample: int = 24,
               region_base: int | None = None, per_cpu: bool | None = None,
               track_size_value: int | None = None, track_pointer_value: int | None = None,
               big_size_value: int | None = None, big_table_mapped_pages: int | None = None,
               big_distance: tuple[int, int] | None = None,
               kdbg_sign_extend: bool = True,
               session_big: Sequence[BigAlloc] | None = None,
               session_big_entries: int = 64,
               big_free_value: int | None = None,
               track_size_slot: str = "before", per_cpu_offset: int | None = None,
               per_cpu_style: str | None = None) -> PoolLayout:
    """Write the pool tables, variables and pages (see the module docstring); returns the truth.

    Bad-input knobs: ``track_size_value`` / ``big_size_value`` overwrite the size variables
    (e.g. an absurd count); ``track_pointer_value`` overwrites the PoolTrackTable variable (e.g. an
    unmapped VA); ``big_table_mapped_pages`` maps only that many pages of the big table.
    ``session_big``: big allocations of a session big page table (written and initialised like
    the global one, ``session_big_entries`` slots). ``big_free_value``: the ``Va`` of never-used
    slots (default: 1 as InitializePool writes it, 0 on XP, whose source is not public ``[?]``).
    Placement knobs for the locating heuristics: ``track_size_slot`` ("before" the PoolTrackTable
    variable, where Volatility 2 reads it, or "after"); ``per_cpu_offset`` (bytes from the
    variable to ExPoolTagTables, default +0x40 pointers); ``per_cpu``: write per-processor tables
    (default: Windows 10+, and multiprocessor kernels from build 3790 as WRK has them);
    ``per_cpu_style`` (default "separate" on Windows 10+, "wrk" before; "separate": the
    sheet's Windows 10 model, one table per processor besides the global; "wrk": slot 0 is the
    global table itself, as WRK ``pool.c`` InitializePool sets ``ExPoolTagTables[0] =
    PoolTrackTable``).
    """
    x64 = machine != "x86"
    ptr = 8 if x64 else 4
    tl = tracker_layout or default_tracker_layout(machine, build)
    bl = big_layout or default_big_layout(machine, build)
    tsize, tfields = TRACKER_LAYOUTS[tl]
    bsize = BIG_LAYOUTS[bl][0]
    if track_entries & (track_entries - 1) or big_entries & (big_entries - 1):
        raise ValueError("table sizes are powers of two")
    reg = _Region(pt, mem, region_base or REGION_BASES["x64" if x64 else "x86"])
    start = reg.cursor

    # Variables.
    block = reg.alloc(4 * PAGE_SIZE)
    var = block + _VAR_OFFSET
    d0, d1 = big_distance or vol2_distance(build, x64) or (-4 * ptr, -5 * ptr)
    variables = {"PoolTrackTable": var,
                 "PoolTrackTableSize": var + ptr if track_size_slot == "after" else var - ptr,
                 "PoolBigPageTable": var - d0, "PoolBigPageTableSize": var - d1}
    # Per-processor tag tables: Windows 10+ (sheet 5.6, [A]); multiprocessor kernels from Server
    # 2003 SP1 (WRK pool.c: ExPoolTagTables on non-NT_UP builds, slot 0 = PoolTrackTable).
    default_multi = build >= 10000 or (build >= 3790 and processors > 1)
    multi = (per_cpu if per_cpu is not None else default_multi) and processors >= 1
    if per_cpu_style is None:
        per_cpu_style = "separate" if build >= 10000 else "wrk"
    if multi:
        variables["ExPoolTagTables"] = var + (0x40 * ptr if per_cpu_offset is None
                                              else per_cpu_offset)

    # Tracker tables: 2^n + 1 entries (the last is the overflow bucket), PoolTrackTableSize =
    # 2^n + 1, mask = PoolTrackTableSize - 2 (WRK pool.c / ReactOS expool.c InitializePool).
    # "wrk": ExPoolTagTables[0] = PoolTrackTable (WRK pool.c InitializePool), the global table
    # is processor 0's; "separate": one table per processor besides the global one.
    wrk = multi and per_cpu_style == "wrk"
    nshare = (processors if wrk else 1 + processors) if multi else 1
    stored_entries = track_entries + 1
    tables = [reg.alloc(stored_entries * tsize) for _ in range(nshare)]
    bufs = [bytearray(stored_entries * tsize) for _ in range(nshare)]
    mask = track_entries - 1
    expected: dict[str, tuple[int, int, int, int, int, int]] = {}
    for t in tags:
        nb, pb = t.bytes_of(False), t.bytes_of(True)
        np_sh = _split(t.nonpaged_allocs, t.nonpaged_frees, nb, nshare)
        p_sh = _split(t.paged_allocs, t.paged_frees, pb, nshare)
        idx = _hash_index(machine, build, t.key, mask)
        for _ in range(track_entries):
            if int.from_bytes(bufs[0][idx * tsize:idx * tsize + 4], "little") in (0, t.key):
                break
            idx = (idx + 1) & mask
        else:
            raise ValueError("tracker table full")
        for s in range(nshare):
            e = idx * tsize
            vals = {"NonPagedAllocs": np_sh[s][0], "NonPagedFrees": np_sh[s][1],
                    "NonPagedBytes": np_sh[s][2], "PagedAllocs": p_sh[s][0],
                    "PagedFrees": p_sh[s][1], "PagedBytes": p_sh[s][2]}
            _put(bufs[s], e, 4, t.key)
            for name, v in vals.items():
                off, width = tfields[name]
                _put(bufs[s], e + off, width, v)
        expected[t.tag.ljust(4, b" ").decode("latin-1")] = (
            t.nonpaged_allocs, t.nonpaged_frees, nb, t.paged_allocs, t.paged_frees, pb)
    for va, b in zip(tables, bufs, strict=True):
        reg.write(va, bytes(b))

    # Big page table.
    if big is None:
        big = [BigAlloc(0, b"ObNm", 0x3000, 1), BigAlloc(0, b"MmCm", 0x10000, 0),
               BigAlloc(0, b"Thre", 0x2000, 0x200, freed=True)]
    placed: list[BigAlloc] = []
    for a in big:
        va = a.va or reg.alloc(a.bytes)
        placed.append(BigAlloc(va, a.tag, a.bytes, a.pool_type, a.freed))
    btab_bytes = big_entries * bsize
    if big_table_mapped_pages is None:
        btab = reg.alloc(btab_bytes)
        bbuf = bytearray(btab_bytes)
    else:
        btab = reg.reserve(btab_bytes)
        for i in range(big_table_mapped_pages):
            pt.map(btab + i * PAGE_SIZE, mem.alloc_page() << 12)
        bbuf = bytearray(min(btab_bytes, big_table_mapped_pages * PAGE_SIZE))
    _fill_big_table(bbuf, bl, build, big_entries, placed, big_free_value)
    reg.write(btab, bytes(bbuf))
    sess_table, sess_placed = None, []
    if session_big is not None:
        for a in session_big:
            va = a.va or reg.alloc(a.bytes)
            sess_placed.append(BigAlloc(va, a.tag, a.bytes, a.pool_type, a.freed))
        sess_table = reg.alloc(session_big_entries * bsize)
        sbuf = bytearray(session_big_entries * bsize)
        _fill_big_table(sbuf, bl, build, session_big_entries, sess_placed, big_free_value)
        reg.write(sess_table, bytes(sbuf))

    # Pool pages: a sample of each tag's outstanding small allocations.
    unit = 8 if machine == "x86" else 16
    limit = PAGE_SIZE - 2 * unit
    pending: list[tuple[bytes, int, bool, int]] = []
    for t in tags:
        for paged in (False, True):
            na, nf = (t.paged_allocs, t.paged_frees) if paged else (t.nonpaged_allocs,
                                                                   t.nonpaged_frees)
            o = na - nf
            if o <= 0:
                continue
            size = t.block_size or max(unit, min(limit, t.bytes_of(paged) // o // unit * unit))
            if size > limit:
                continue
            n = o if t.block_size and o <= sample else min(o, sample)
            pending += [(t.tag, size, True, 1 if paged else 0)] * n
    blocks: list[PoolBlockSpec] = []
    pages: list[int] = []
    while pending:
        cur: list[tuple[bytes, int, bool, int]] = []
        used = 0
        while pending and used + pending[0][1] <= PAGE_SIZE - unit:
            item = pending.pop(0)
            cur.append(item)
            used += item[1]
            if len(cur) % 3 == 0 and used + unit * 4 <= PAGE_SIZE - unit:
                cur.append((b"Frag", unit * 4, False, 0))  # a free block between allocations
                used += unit * 4
        if not cur:  # a single block that does not fit (cannot happen with limit) - stop
            break
        va = reg.alloc(PAGE_SIZE, guard=False)
        pages.append(va)
        blocks += write_pool_page(pt, mem, va, machine, build, cur, map_page=False)

    # Variables and KDBG.
    vals = {"PoolTrackTable": tables[0] if track_pointer_value is None else track_pointer_value,
            "PoolTrackTableSize": stored_entries if track_size_value is None else track_size_value,
            "PoolBigPageTable": btab,
            "PoolBigPageTableSize": big_entries if big_size_value is None else big_size_value}
    for name, v in vals.items():
        reg.write(variables[name], (v % (1 << 8 * ptr)).to_bytes(ptr, "little"))
    if multi:
        slots = tables if wrk else tables[1:]
        arr = b"".join(t.to_bytes(ptr, "little") for t in slots)
        reg.write(variables["ExPoolTagTables"], arr)
    value = var
    if not x64 and kdbg_sign_extend and value >> 31:
        value |= 0xFFFFFFFF00000000
    reg.write(kdbg_va + 0x1B8, struct.pack("<Q", value))
    return PoolLayout(machine, build, kdbg_va, variables, tables[0], stored_entries, tl,
                      tables[1:], variables.get("ExPoolTagTables"), btab, big_entries, bl,
                      list(tags), placed, blocks, pages, (start, reg.cursor), expected,
                      sess_table, session_big_entries if sess_table else 0, sess_placed)


def add_to_scenario(sc: Scenario, *, tags: Sequence[PoolTag] = STORY_TAGS,
                    **kw: Any) -> PoolLayout:
    """Add pool structures to a written :class:`~.scenario.Scenario` (e.g. ``win10_x64``: the
    founding story's dump) and write its file again in the same format ("full", "bitmap" or
    "kernel"); ``kw`` go to :func:`build_pool`. Returns the pool's ground truth."""
    s = sc
    hdr = s.header
    lay = s.layout
    pl = build_pool(s.pt, s.mem, machine=lay.machine, build=lay.build,
                    kdbg_va=lay.kdbg, processors=hdr.processors, tags=tags, **kw)
    fmt = s.fmt
    if fmt == "full":
        write_full(s.path, s.mem, hdr)
    elif fmt == "bitmap":
        write_bitmap(s.path, s.mem, hdr, "full")
    elif fmt == "kernel":
        write_bitmap(s.path, s.mem, hdr, "kernel", pages=sorted(s.mem.pages))
    else:
        raise ValueError(f"add_to_scenario writes full, bitmap or kernel dumps, not {fmt!r}")
    return pl
