"""Page tables built inside a :class:`~ntdump.forge.memory.PhysicalMemory`.

Three paging modes (WINDOWS_INTERNALS.md section 2.1):

* ``"x64"``: 4 levels (PML4 → PDPT → PD → PT), 8-byte entries, 4 KiB / 2 MiB / 1 GiB pages.
* ``"pae"``: 32-bit PAE, PDPT of 4 entries (32-byte aligned) → PD → PT, 8-byte entries,
  4 KiB / 2 MiB pages.
* ``"x86"``: 32-bit non-PAE, PD → PT, 4-byte entries, 4 KiB / 4 MiB pages.

VA means virtual address, PA physical address (bytes). The tables are real memory: they
are written into the model with :meth:`PhysicalMemory.write`, so every dump format carries
them, and :meth:`PageTables.entries` reads them back from memory (the forge's ground truth).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from .memory import PAGE_SIZE, PhysicalMemory

# Hardware bits (section 2.2).
P, RW, US, ACCESSED, DIRTY, PS = 0x1, 0x2, 0x4, 0x20, 0x40, 0x80
NX = 1 << 63
PROTOTYPE, TRANSITION = 1 << 10, 1 << 11
#: Windows software protection MM_READWRITE (4) in bits 5..9 of a non-valid PTE.
MM_READWRITE = 4
PROTECTION_SHIFT = 5
#: Flags of a valid entry pointing to a lower table (Windows kernel style: P|RW|A|D).
TABLE_FLAGS = P | RW | ACCESSED | DIRTY
#: A PAE PDPTE may only carry P (plus PWT/PCD); RW/US/A/D are reserved there.
PAE_PDPTE_FLAGS = P

SIZE_4K, SIZE_2M, SIZE_4M, SIZE_1G = 0x1000, 0x200000, 0x400000, 0x40000000


@dataclass(frozen=True)
class _Level:
    name: str
    shift: int  # VA bit where this level's index starts
    bits: int  # index width
    large: int | None  # page size a PS=1 entry maps at this level, if allowed


@dataclass(frozen=True)
class _Mode:
    levels: tuple[_Level, ...]
    entry_size: int
    frame_mask: int  # PA bits of an entry
    va_bits: int


_MODES: dict[str, _Mode] = {
    "x64": _Mode(
        (_Level("pml4e", 39, 9, None), _Level("pdpte", 30, 9, SIZE_1G),
         _Level("pde", 21, 9, SIZE_2M), _Level("pte", 12, 9, None)),
        8, 0x000F_FFFF_FFFF_F000, 48),
    "pae": _Mode(
        (_Level("pdpte", 30, 2, None), _Level("pde", 21, 9, SIZE_2M),
         _Level("pte", 12, 9, None)),
        8, 0x000F_FFFF_FFFF_F000, 32),
    "x86": _Mode(
        (_Level("pde", 22, 10, SIZE_4M), _Level("pte", 12, 10, None)),
        4, 0xFFFF_F000, 32),
}

Entry = tuple[str, int, int]


class PageTables:
    """Builder of one address space (one DTB) in ``mem``.

    The top-level table is allocated at construction. ``dtb`` is the CR3 value: the PML4
    (x64) or PD (x86) page address, or the PDPT address for PAE, which is 32-byte aligned and
    sits ``pdpt_offset`` bytes into its page (0 = page start).
    """

    #: Self-map slot: x64 PML4 index 0x1ED (VA 0xFFFFF68000000000, the fixed index Windows used
    #: up to 1511 and the default of the randomised one since 1607), x86 PD index 0x300 (VA
    #: 0xC0000000). PAE: the four PDs are allocated up front and PD 3's entries 0..3 point at
    #: them, so the PDs appear at 0xC0600000 + k * 0x1000 and the page tables from 0xC0000000.
    SELF_MAP_INDEX: ClassVar[dict[str, int]] = {"x64": 0x1ED, "x86": 0x300}

    def __init__(self, mem: PhysicalMemory, mode: str = "x64", *, pdpt_offset: int = 0,
                 self_map: bool = False) -> None:
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {sorted(_MODES)}, not {mode!r}")
        if mode != "pae" and pdpt_offset:
            raise ValueError("pdpt_offset only applies to PAE")
        if pdpt_offset % 32 or not 0 <= pdpt_offset <= PAGE_SIZE - 32:
            raise ValueError("pdpt_offset must be a multiple of 32 inside the page")
        self.mem = mem
        self.mode = mode
        self._m = _MODES[mode]
        self.dtb: int = (mem.alloc_page() << 12) + pdpt_offset
        self.self_map_va: int | None = None
        """VA at which the top-level table maps itself (None: not self-mapped)."""
        if self_map and mode == "pae":
            pds = []
            for k in range(4):
                pd = self.mem.alloc_page() << 12
                self._write(self._root() + 8 * k, pd | PAE_PDPTE_FLAGS)
                pds.append(pd)
            for k, pd in enumerate(pds):
                self._write(pds[3] + 8 * k, pd | 0x63)
            self.self_map_va = 0xC0000000
        elif self_map and mode in self.SELF_MAP_INDEX:
            # The kernel's page tables map themselves through one top-level entry pointing at
            # the top-level table (MiInitMachineDependent: PXE_SELFMAP / PDE_BASE), so every
            # table page is also a kernel VA.
            i = self.SELF_MAP_INDEX[mode]
            self._write(self._root() + i * self._m.entry_size, self._root() | 0x63)
            self.self_map_va = (0xFFFF000000000000 | i << 39) if mode == "x64" else i << 22

    # -- helpers --------------------------------------------------------------------------

    @property
    def level_names(self) -> tuple[str, ...]:
        """Names of the levels of this mode, top first (e.g. ``("pdpte", "pde", "pte")``)."""
        return tuple(lv.name for lv in self._m.levels)

    def _check_va(self, va: int) -> int:
        if self.mode == "x64":
            top = va >> 47
            if top not in (0, 0x1FFFF):
                raise ValueError(f"{va:#x} is not a canonical x64 address")
            return va & ((1 << 48) - 1)
        if not 0 <= va < 1 << 32:
            raise ValueError(f"{va:#x} is not a 32-bit address")
        return va

    def _root(self) -> int:
        return self.dtb & ~0x1F if self.mode == "pae" else self.dtb & ~0xFFF

    def _entry_pa(self, table_pa: int, level: _Level, va: int) -> int:
        index = (va >> level.shift) & ((1 << level.bits) - 1)
        return table_pa + index * self._m.entry_size

    def _read(self, pa: int) -> int:
        return int.from_bytes(self.mem.read(pa, self._m.entry_size), "little")

    def _write(self, pa: int, value: int) -> None:
        size = self._m.entry_size
        if not 0 <= value < 1 << (8 * size):
            raise ValueError(f"entry value {value:#x} does not fit {size} bytes")
        self.mem.write(pa, value.to_bytes(size, "little"))

    def _level_index(self, name: str) -> int:
        for i, lv in enumerate(self._m.levels):
            if lv.name == name:
                return i
        raise ValueError(f"level {name!r} does not exist in {self.mode} (levels: "
                         f"{', '.join(self.level_names)})")

    def _descend(self, va: int, depth: int) -> int:
        """PA of the entry at level ``depth`` for ``va``, allocating tables above it."""
        table = self._root()
        for level in self._m.levels[:depth]:
            epa = self._entry_pa(table, level, va)
            value = self._read(epa)
            if value == 0:
                new = self.mem.alloc_page() << 12
                flags = PAE_PDPTE_FLAGS if (self.mode == "pae" and level.name == "pdpte") \
                    else TABLE_FLAGS
                self._write(epa, new | flags)
                table = new
            elif value & P and not (level.large and value & PS):
                table = value & self._m.frame_mask
            else:
                raise ValueError(f"cannot descend through the {level.name} of {va:#x}: it "
                                 f"holds {value:#x} (a large page or a non-valid entry)")
        return self._entry_pa(table, self._m.levels[depth], va)

    # -- public API -----------------------------------------------------------------------

    def map(self, va: int, pa: int, page_size: int = SIZE_4K, *, writable: bool = True,
            nx: bool = False) -> None:
        """Map ``va`` to ``pa`` with a valid leaf entry of ``page_size`` bytes.

        Sizes: 4 KiB everywhere, 2 MiB on x64/PAE, 4 MiB on x86 non-PAE, 1 GiB on x64 only.
        ``va`` and ``pa`` must be aligned to the page size. ``pa`` need not lie in the memory
        runs (a mapping into a hole is how a "page missing from the dump" is made).
        Intermediate tables are allocated as needed; an existing leaf is overwritten.
        """
        lva = self._check_va(va)
        if va % page_size or pa % page_size:
            raise ValueError(f"va {va:#x} and pa {pa:#x} must be aligned to {page_size:#x}")
        if nx and self.mode == "x86":
            raise ValueError("non-PAE x86 has no NX bit")
        if pa & ~self._m.frame_mask:
            raise ValueError(f"pa {pa:#x} does not fit a {self.mode} entry")
        flags = P | ACCESSED | DIRTY | (RW if writable else 0) | (NX if nx else 0)
        if page_size == SIZE_4K:
            depth = len(self._m.levels) - 1
        else:
            depths = [i for i, lv in enumerate(self._m.levels) if lv.large == page_size]
            if not depths:
                raise ValueError(f"page size {page_size:#x} is not available in {self.mode}")
            depth = depths[0]
            flags |= PS
        self._write(self._descend(lva, depth), pa | flags)

    def map_transition(self, va: int, pa: int) -> None:
        """Write a transition PTE for the 4 KiB page at ``va``: Valid=0, Transition (bit 11)=1,
        Prototype (bit 10)=0, the frame of ``pa``, protection 4 (MM_READWRITE) in bits 5..9."""
        lva = self._check_va(va)
        if va % SIZE_4K or pa % SIZE_4K:
            raise ValueError("transition pages are 4 KiB: va and pa must be page aligned")
        value = pa | TRANSITION | (MM_READWRITE << PROTECTION_SHIFT)
        self._write(self._descend(lva, len(self._m.levels) - 1), value)

    def set_entry(self, va: int, level: str, value: int) -> int:
        """Write the raw ``value`` into the ``level`` entry ("pml4e", "pdpte", "pde", "pte")
        that translates ``va``, allocating the tables above it. Returns the entry's PA.

        For software PTEs: paged out (PageFileHigh != 0), demand zero (protection bits only),
        prototype (bit 10), or anything else a test needs.
        """
        lva = self._check_va(va)
        epa = self._descend(lva, self._level_index(level))
        self._write(epa, value)
        return epa

    def map_data(self, va: int, data: bytes, page_size: int = SIZE_4K) -> list[int]:
        """Copy ``data`` into freshly allocated physical memory and map it at ``va``.

        ``va`` must be aligned to ``page_size``. 4 KiB pages come from
        :meth:`PhysicalMemory.alloc_page`; larger pages from an aligned
        :meth:`PhysicalMemory.alloc_pages` block. Returns the PA of each mapped page
        (one entry per ``page_size`` page).
        """
        if va % page_size:
            raise ValueError(f"va {va:#x} must be aligned to {page_size:#x}")
        out: list[int] = []
        view = memoryview(data)
        count = max(1, -(-len(data) // page_size))
        for i in range(count):
            chunk = view[i * page_size:(i + 1) * page_size]
            if page_size == SIZE_4K:
                pa = self.mem.alloc_page() << 12
            else:
                pa = self.mem.alloc_pages(page_size // SIZE_4K, page_size // SIZE_4K) << 12
            if len(chunk):
                self.mem.write(pa, chunk)
            self.map(va + i * page_size, pa, page_size)
            out.append(pa)
        return out

    def entries(self, va: int) -> list[Entry]:
        """Walk ``va`` from the DTB, reading the tables back from memory.

        Returns ``(level name, entry PA, entry value)`` for each level visited, stopping
        after a non-present entry, a large-page leaf, or the PTE.
        """
        lva = self._check_va(va)
        out: list[Entry] = []
        table = self._root()
        for level in self._m.levels:
            epa = self._entry_pa(table, level, lva)
            value = self._read(epa)
            out.append((level.name, epa, value))
            if not value & P or (level.large and value & PS):
                break
            table = value & self._m.frame_mask
        return out

    def translate(self, va: int) -> int | None:
        """PA for ``va`` following valid entries only (as hardware does), else None."""
        walk = self.entries(va)
        name, _, value = walk[-1]
        if not value & P:
            return None
        level = self._m.levels[self._level_index(name)]
        size = level.large if (level.large and value & PS) else SIZE_4K
        return (value & self._m.frame_mask & ~(size - 1)) | (va & (size - 1))


def large_sizes(mode: str) -> Sequence[int]:
    """Large page sizes (bytes) available in ``mode``."""
    return [lv.large for lv in _MODES[mode].levels if lv.large]
