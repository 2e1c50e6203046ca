"""Sparse model of a machine's physical memory, the input of every dump writer.

Units: a *PFN* is a physical page number (``pa >> 12``); a *PA* is a physical byte address.
Pages are 4 KiB (:data:`PAGE_SIZE`). Memory exists only inside the *runs*
``(base_pfn, page_count)``; everything between runs is a hole (MMIO, firmware) that a dump
does not contain. Inside the runs, pages that were never written read as zeros and are not
kept in memory, so a model of many GiB costs only the pages actually written.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator

PAGE_SIZE = 0x1000
PAGE_SHIFT = 12
#: Lowest PFN that :meth:`PhysicalMemory.alloc_page` hands out (the first 64 KiB stay free,
#: as on a PC where real-mode structures live there).
FIRST_ALLOC_PFN = 0x10

Run = tuple[int, int]


class PhysicalMemory:
    """Physical memory made of runs of pages, populated sparsely.

    ``runs`` is a list of ``(base_pfn, page_count)`` pairs (pages, not bytes), sorted by
    base and non-overlapping; adjacent runs are allowed and kept as given (a full dump
    writes them as separate runs).

    Attributes:
        runs: the runs as a tuple of ``(base_pfn, page_count)``.
        pages: ``dict[pfn, bytearray(4096)]`` of the pages that were written or allocated.
    """

    def __init__(self, runs: Iterable[Run]) -> None:
        checked: list[Run] = []
        end = -1
        for base, count in runs:
            base, count = int(base), int(count)
            if base < 0 or count <= 0:
                raise ValueError(f"bad run ({base:#x}, {count:#x}): need base >= 0, count > 0")
            if base < end:
                raise ValueError(f"run at pfn {base:#x} overlaps or is out of order")
            checked.append((base, count))
            end = base + count
        if not checked:
            raise ValueError("physical memory needs at least one run")
        self.runs: tuple[Run, ...] = tuple(checked)
        self.pages: dict[int, bytearray] = {}
        self._bases = [b for b, _ in checked]
        self._reserved: set[int] = set()
        self._cursor = FIRST_ALLOC_PFN

    # -- geometry -------------------------------------------------------------------------

    @property
    def page_count(self) -> int:
        """Number of pages (not bytes) inside all runs."""
        return sum(c for _, c in self.runs)

    @property
    def highest_pfn(self) -> int:
        """PFN of the last page of the last run."""
        base, count = self.runs[-1]
        return base + count - 1

    @property
    def size(self) -> int:
        """Bytes of memory inside the runs (``page_count * 4096``)."""
        return self.page_count * PAGE_SIZE

    def _run_index(self, pfn: int) -> int:
        """Index of the run holding ``pfn``, or -1."""
        i = bisect.bisect_right(self._bases, pfn) - 1
        if i >= 0:
            base, count = self.runs[i]
            if pfn < base + count:
                return i
        return -1

    def contains(self, pa: int) -> bool:
        """True if the physical byte address ``pa`` lies inside a run."""
        return pa >= 0 and self._run_index(pa >> PAGE_SHIFT) >= 0

    def contains_pfn(self, pfn: int) -> bool:
        """True if page ``pfn`` lies inside a run."""
        return pfn >= 0 and self._run_index(pfn) >= 0

    def iter_pfns(self) -> Iterator[int]:
        """Every PFN inside the runs, ascending (may be millions: iterate, don't list)."""
        for base, count in self.runs:
            yield from range(base, base + count)

    # -- bytes ----------------------------------------------------------------------------

    def _check_span(self, pa: int, n: int) -> None:
        if pa < 0 or n < 0:
            raise ValueError(f"bad physical range {pa:#x}+{n:#x}")
        if n == 0:
            return
        first, last = pa >> PAGE_SHIFT, (pa + n - 1) >> PAGE_SHIFT
        pfn = first
        while pfn <= last:
            i = self._run_index(pfn)
            if i < 0:
                raise ValueError(f"physical page {pfn:#x} (pa {pfn << PAGE_SHIFT:#x}) is not "
                                 "inside any memory run")
            base, count = self.runs[i]
            pfn = base + count

    def page(self, pfn: int) -> bytearray:
        """The 4096-byte buffer of page ``pfn``, created (zeroed) if needed."""
        buf = self.pages.get(pfn)
        if buf is None:
            if not self.contains_pfn(pfn):
                raise ValueError(f"physical page {pfn:#x} is not inside any memory run")
            buf = self.pages[pfn] = bytearray(PAGE_SIZE)
        return buf

    def write(self, pa: int, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` at physical address ``pa``; may span pages and runs.

        Raises ValueError if any byte falls outside the runs (nothing is written then).
        """
        data = memoryview(data).cast("B")
        self._check_span(pa, len(data))
        pos = 0
        while pos < len(data):
            cur = pa + pos
            off = cur & (PAGE_SIZE - 1)
            take = min(PAGE_SIZE - off, len(data) - pos)
            self.page(cur >> PAGE_SHIFT)[off:off + take] = data[pos:pos + take]
            pos += take

    def read(self, pa: int, n: int) -> bytes:
        """Read ``n`` bytes at physical address ``pa``; unwritten pages read as zeros.

        Raises ValueError if any byte falls outside the runs (a hole is not memory).
        """
        self._check_span(pa, n)
        out = bytearray(n)
        pos = 0
        while pos < n:
            cur = pa + pos
            off = cur & (PAGE_SIZE - 1)
            take = min(PAGE_SIZE - off, n - pos)
            buf = self.pages.get(cur >> PAGE_SHIFT)
            if buf is not None:
                out[pos:pos + take] = buf[off:off + take]
            pos += take
        return bytes(out)

    def read_u64(self, pa: int) -> int:
        """Little-endian u64 at ``pa``."""
        return int.from_bytes(self.read(pa, 8), "little")

    def write_u64(self, pa: int, value: int) -> None:
        """Store ``value`` as a little-endian u64 at ``pa``."""
        self.write(pa, (value & (2**64 - 1)).to_bytes(8, "little"))

    # -- allocation -----------------------------------------------------------------------

    def _used(self, pfn: int) -> bool:
        return pfn in self.pages or pfn in self._reserved

    def reserve(self, pfn: int, count: int = 1) -> None:
        """Exclude pages ``pfn .. pfn+count-1`` from allocation without populating them."""
        self._reserved.update(range(pfn, pfn + count))

    def alloc_page(self) -> int:
        """Allocate a fresh zeroed page and return its PFN.

        Rule (deterministic): the lowest PFN >= 0x10 that is inside a run and neither
        populated (written) nor reserved. The page becomes populated (all zeros).
        """
        pfn = self._cursor
        while True:
            i = bisect.bisect_right(self._bases, pfn) - 1
            if i < 0 or pfn >= self.runs[i][0] + self.runs[i][1]:
                nxt = i + 1
                if nxt >= len(self.runs):
                    raise MemoryError("no free physical page left in the runs")
                pfn = max(pfn, self.runs[nxt][0])
                continue
            if not self._used(pfn):
                break
            pfn += 1
        self._cursor = pfn + 1
        self.pages[pfn] = bytearray(PAGE_SIZE)
        return pfn

    def alloc_pages(self, count: int, align: int = 1) -> int:
        """Reserve ``count`` contiguous pages whose first PFN is a multiple of ``align``.

        Rule: the lowest such block (first PFN >= 0x10) lying inside one run with no page
        populated or reserved. The pages are reserved, not populated (they read as zeros
        and cost nothing), so large pages of 2 MiB / 1 GiB stay sparse. Returns the first PFN.
        """
        used = sorted(self._reserved.union(self.pages))
        for base, rcount in self.runs:
            start = max(base, FIRST_ALLOC_PFN)
            start = -(-start // align) * align
            while start + count <= base + rcount:
                j = bisect.bisect_left(used, start)
                if j < len(used) and used[j] < start + count:
                    start = -(-(used[j] + 1) // align) * align
                    continue
                self.reserve(start, count)
                return start
        raise MemoryError(f"no free block of {count:#x} pages aligned to {align:#x}")

    def __repr__(self) -> str:
        return (f"PhysicalMemory(runs={len(self.runs)}, pages={self.page_count:#x}, "
                f"populated={len(self.pages)})")
