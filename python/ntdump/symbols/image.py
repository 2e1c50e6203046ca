"""Image files from a symbol store: identity (TimeDateStamp, SizeOfImage) and their memory layout.

A downloaded ``amdppm.sys`` is a PE *file*; the native PE reader (``_native.pe_parse``) reads an
image laid out at its RVAs, as the loader maps it. :func:`layout` does that mapping (headers,
then each section's raw data at its VirtualAddress, bounded by SizeOfImage), so the same reader
that parses in-memory images gives the downloaded file's headers, exports, CodeView record and
``.pdata``. Fields follow the PE/COFF specification (Microsoft, "PE Format").
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import PeFormatError

MAX_IMAGE = 256 << 20
"""Largest SizeOfImage laid out (bytes), as for images in memory (docs/symbols.md)."""


@dataclass(frozen=True, slots=True)
class ImageIdentity:
    """What a symbol store files an image under."""

    machine: int
    timestamp: int
    size_of_image: int
    """Bytes."""
    e_lfanew: int
    optional_offset: int
    sections: tuple[tuple[int, int, int, int], ...]
    """(VirtualAddress, VirtualSize, PointerToRawData, SizeOfRawData) per section."""
    size_of_headers: int


def identity(data: bytes) -> ImageIdentity:
    """Read the file header, optional header and section table of the PE file ``data``.
    Raises :class:`PeFormatError` naming the offset of a bad field."""
    if len(data) < 0x40 or data[:2] != b"MZ":
        raise PeFormatError("image file: no MZ signature at offset 0")
    lfanew = struct.unpack_from("<I", data, 0x3C)[0]
    if lfanew > len(data) - 24 or lfanew >= 0x10000:
        raise PeFormatError(f"image file: e_lfanew {lfanew:#x} at offset 0x3c is out of range")
    if data[lfanew : lfanew + 4] != b"PE\0\0":
        raise PeFormatError(f"image file: no PE signature at offset {lfanew:#x}")
    machine, nsec, ts = struct.unpack_from("<HHI", data, lfanew + 4)
    opt_size = struct.unpack_from("<H", data, lfanew + 20)[0]
    opt = lfanew + 24
    if opt + 64 > len(data):
        raise PeFormatError(f"image file: optional header at {opt:#x} is cut short")
    magic = struct.unpack_from("<H", data, opt)[0]
    if magic not in (0x10B, 0x20B):
        raise PeFormatError(f"image file: optional-header magic {magic:#x} at offset {opt:#x}")
    size_of_image, size_of_headers = struct.unpack_from("<II", data, opt + 56)
    sec_off = opt + opt_size
    nsec = min(nsec, 96)
    secs = []
    for i in range(nsec):
        o = sec_off + 40 * i
        if o + 40 > len(data):
            raise PeFormatError(f"image file: section header {i} at {o:#x} runs past the file")
        vsize, va, rsize, rptr = struct.unpack_from("<IIII", data, o + 8)
        secs.append((va, vsize, rptr, rsize))
    return ImageIdentity(machine, ts, size_of_image, lfanew, opt, tuple(secs), size_of_headers)


def layout(data: bytes) -> tuple[bytes, ImageIdentity]:
    """The image as the loader maps it: ``SizeOfImage`` bytes (at most 256 MiB), headers first,
    each section's raw data at its RVA (zero-filled past the raw size)."""
    ident = identity(data)
    size = ident.size_of_image
    if not 0 < size <= MAX_IMAGE:
        raise PeFormatError(f"image file: SizeOfImage {size:#x} is 0 or over {MAX_IMAGE:#x}")
    out = bytearray(size)
    hdr = min(ident.size_of_headers or 0x1000, size, len(data))
    out[:hdr] = data[:hdr]
    for va, vsize, rptr, rsize in ident.sections:
        n = min(rsize, vsize or rsize)
        if va >= size or rptr >= len(data):
            continue
        n = min(n, size - va, len(data) - rptr)
        out[va : va + n] = data[rptr : rptr + n]
    return bytes(out), ident
