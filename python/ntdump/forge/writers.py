"""Writers of physical-memory dump files: full (type 1), bitmap (5/6), range (8/9/0xA), raw.

All writers are sparse: they write the header, seek to the file offset of each *populated*
page of the :class:`PhysicalMemory`, write it (contiguous pages in one call), and finally
``truncate()`` the file to its full size, so the zero pages become a hole on disk. No
buffer the size of the dump is ever built; writing a multi-GiB dump takes well under a second
when few pages are populated.

File layouts: WINDOWS_INTERNALS.md sections 1.5 (full), 1.6 (bitmap), 1.7 (range).
"""

from __future__ import annotations

import bisect
import os
import struct
from collections.abc import Iterable, Sequence

from .header import HEADER64_SIZE, Header, build_header
from .memory import PAGE_SIZE, PhysicalMemory

PathLike = str | os.PathLike[str]
#: ``(first_pfn, page_count, file_offset)``: a stretch of pages stored back to back.
Segment = tuple[int, int, int]

DUMP_TYPE_FULL = 1
DUMP_TYPE_BITMAP_FULL = 5
DUMP_TYPE_BITMAP_KERNEL = 6
RANGE_DUMP_TYPES = (8, 9, 0xA)
_WRITE_CHUNK = 256  # pages joined per write() call at most (1 MiB)


def _segments(runs: Iterable[tuple[int, int]], first_offset: int) -> list[Segment]:
    """Lay ``runs`` (``(pfn, count)``) back to back from ``first_offset`` (bytes)."""
    out: list[Segment] = []
    offset = first_offset
    for base, count in runs:
        out.append((base, count, offset))
        offset += count * PAGE_SIZE
    return out


def _write_body(path: PathLike, header: bytes | bytearray, mem: PhysicalMemory,
                segments: Sequence[Segment], file_size: int,
                extra: Sequence[tuple[int, bytes]] = ()) -> None:
    """Write ``header`` at 0, ``extra`` (offset, bytes) blobs, the populated pages of ``mem``
    that ``segments`` store, then extend the file to ``file_size`` bytes (sparse)."""
    starts = [s[0] for s in segments]
    placed: list[tuple[int, int]] = []  # (file offset, pfn)
    for pfn in sorted(mem.pages):
        i = bisect.bisect_right(starts, pfn) - 1
        if i >= 0:
            base, count, offset = segments[i]
            if pfn < base + count:
                placed.append((offset + (pfn - base) * PAGE_SIZE, pfn))
    with open(path, "wb") as f:
        f.write(header)
        for offset, blob in extra:
            f.seek(offset)
            f.write(blob)
        i = 0
        while i < len(placed):
            j = i + 1
            while (j < len(placed) and j - i < _WRITE_CHUNK
                   and placed[j][0] == placed[j - 1][0] + PAGE_SIZE):
                j += 1
            f.seek(placed[i][0])
            f.write(b"".join(mem.pages[pfn] for _, pfn in placed[i:j]))
            i = j
        f.truncate(file_size)


def write_full(path: PathLike, mem: PhysicalMemory, hdr: Header) -> None:
    """Write a full dump (DumpType 1) of every page in ``mem.runs``.

    64-bit ``PAGEDU64`` (pages from file offset 0x2000, at most 43 runs) when
    ``hdr.machine == "x64"``, 32-bit ``PAGEDUMP`` (pages from 0x1000, at most 86 runs) for
    "x86". Pages are stored run after run in header order.
    """
    segments = _segments(mem.runs, hdr.header_size)
    size = hdr.header_size + mem.page_count * PAGE_SIZE
    header = build_header(hdr, DUMP_TYPE_FULL, size, runs=mem.runs)
    _write_body(path, header, mem, segments, size)


def _pfn_runs(mem: PhysicalMemory, pages: Iterable[int] | None) -> list[tuple[int, int]]:
    """The stored pages as sorted ``(pfn, count)`` runs; ``None`` means all of ``mem.runs``."""
    if pages is None:
        merged: list[list[int]] = []
        for base, count in mem.runs:
            if merged and merged[-1][0] + merged[-1][1] == base:
                merged[-1][1] += count
            else:
                merged.append([base, count])
        return [(b, c) for b, c in merged]
    out: list[tuple[int, int]] = []
    for pfn in sorted(set(pages)):
        if not mem.contains_pfn(pfn):
            raise ValueError(f"page {pfn:#x} to store is not inside the memory runs")
        if out and out[-1][0] + out[-1][1] == pfn:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((pfn, 1))
    if not out:
        raise ValueError("no page to store")
    return out


def _bitmap(runs: Sequence[tuple[int, int]], bits: int) -> bytes:
    """Bitmap (LSB first) with the pages of ``runs`` set, rounded up to whole u32 words."""
    value = 0
    for base, count in runs:
        value |= ((1 << count) - 1) << base
    nbytes = -(-bits // 32) * 4
    return value.to_bytes(nbytes, "little")


def write_bitmap(path: PathLike, mem: PhysicalMemory, hdr: Header, kind: str = "full",
                 pages: Iterable[int] | None = None) -> None:
    """Write a bitmap dump: DumpType 5 ("FDMP", ``kind="full"``) or 6 ("SDMP", "kernel").

    ``pages`` are the PFNs to store (each inside ``mem.runs``); by default every page of
    ``mem.runs``. The summary header sits right after the main header (0x2000 for x64,
    0x1000 for an "x86" 32-bit header, which Volatility 3 reads). It holds HeaderSize (file
    offset of the first page, page aligned), Pages (set bits), BitmapSize (bits =
    ``mem.highest_pfn + 1``) and the bitmap, rounded up to 32 bits. The main header's
    run area keeps the "PAGE" fill. Stored pages follow in ascending PFN order.
    """
    if kind not in ("full", "kernel"):
        raise ValueError("kind must be 'full' (FDMP, type 5) or 'kernel' (SDMP, type 6)")
    runs = _pfn_runs(mem, pages)
    bits = mem.highest_pfn + 1
    bitmap = _bitmap(runs, bits)
    sub_at = hdr.header_size
    first = -(-(sub_at + 0x38 + len(bitmap)) // PAGE_SIZE) * PAGE_SIZE
    stored = sum(c for _, c in runs)
    sub = bytearray(first - sub_at)
    signature = b"FDMP" if kind == "full" else b"SDMP"
    options = 0 if kind == "full" else 1  # DUMP_SUMMARY_VALID_KERNEL_VA for kernel dumps
    struct.pack_into("<4s4sI", sub, 0, signature, b"DUMP", options)
    struct.pack_into("<QQQ", sub, 0x20, first, stored, bits)
    sub[0x38:0x38 + len(bitmap)] = bitmap
    size = first + stored * PAGE_SIZE
    dump_type = DUMP_TYPE_BITMAP_FULL if kind == "full" else DUMP_TYPE_BITMAP_KERNEL
    header = build_header(hdr, dump_type, size)
    _write_body(path, header + sub, mem, _segments(runs, first), size)


def write_range(path: PathLike, mem: PhysicalMemory, hdr: Header, dump_type: int = 0xA,
                pages: Iterable[int] | None = None) -> None:
    """Write an "RDMP" range dump (DumpType 8, 9 or 0xA; 64-bit only; section 1.7).

    Ranges are ``mem.runs`` (adjacent runs merged), or the stretches of ``pages`` if given.
    At 0x2000: Marker 0x40, "RDMP", "DUMP", MetadataSize, FirstPageOffset; at 0x2020 two
    zero u64 (types 8/9) or NumberOfRanges u32 + 2 x u16 + TotalNumberOfPages u64 (0xA);
    from 0x2030 the ``{first pfn u64, page count u64}`` table, ended by a zero entry.
    FirstPageOffset is page aligned and MetadataSize = FirstPageOffset - 0x2020, the relation
    kdmp-parser checks. A range starting at PFN 0 cannot be written: readers stop at PFN 0.
    """
    if dump_type not in RANGE_DUMP_TYPES:
        raise ValueError("range dumps have DumpType 8, 9 or 0xA")
    if not hdr.is64:
        raise ValueError("range (RDMP) dumps exist only with the 64-bit header")
    runs = _pfn_runs(mem, pages)
    if runs[0][0] == 0:
        raise ValueError("a range may not start at PFN 0 (readers take PFN 0 as the end)")
    table_at = HEADER64_SIZE + 0x30
    first = -(-(table_at + 16 * (len(runs) + 1)) // PAGE_SIZE) * PAGE_SIZE
    sub = bytearray(first - HEADER64_SIZE)
    struct.pack_into("<I4s4sIQQ", sub, 0, 0x40, b"RDMP", b"DUMP", 0,
                     first - (HEADER64_SIZE + 0x20), first)
    total = sum(c for _, c in runs)
    if dump_type == 0xA:
        struct.pack_into("<IHHQ", sub, 0x20, len(runs), 0, 0, total)
    for i, (base, count) in enumerate(runs):
        struct.pack_into("<QQ", sub, 0x30 + 16 * i, base, count)
    size = first + total * PAGE_SIZE
    header = build_header(hdr, dump_type, size)
    _write_body(path, header + sub, mem, _segments(runs, first), size)


def write_raw(path: PathLike, mem: PhysicalMemory) -> None:
    """Write a raw physical image: file offset == PA, size ``(highest_pfn + 1) * 4096`` bytes.

    Holes between runs read as zeros (there is no way to mark them in a raw image).
    """
    segments = [(0, mem.highest_pfn + 1, 0)]
    _write_body(path, b"", mem, segments, (mem.highest_pfn + 1) * PAGE_SIZE)
