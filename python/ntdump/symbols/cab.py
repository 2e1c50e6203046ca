"""Reading the compressed files of a symbol store (``name.pd_``, ``name.sy_``): Microsoft cabinets.

A store (symstore ``/compress``, or a server) may hold a file as a one-file cabinet. The format is
Microsoft's "Cabinet File Format" ([MS-CAB]): a CFHEADER (``MSCF``), CFFOLDER entries, CFFILE
entries and, per folder, CFDATA blocks. MSZIP folders (``typeCompress & 0xF == 1``) hold blocks that
are ``CK`` + a raw deflate stream whose window is primed with the previous block's output (at most
32 KiB of output per block), so zlib with a preset dictionary decodes them. Uncompressed folders
(type 0) are copied. LZX and Quantum folders raise :class:`~ntdump.errors.SymbolError` (the
stores and servers ntdump has met serve the uncompressed file too).

Every count and size comes from an untrusted file: folders, files and blocks are bounded, the
output is capped at ``max_bytes`` and each block at 32 KiB + 6 KiB of input.
"""

from __future__ import annotations

import struct
import zlib

from ..errors import SymbolError

CAB_MAGIC = b"MSCF"
MAX_FOLDERS = 64
MAX_FILES = 1024
BLOCK_OUT = 0x8000
"""Most bytes of output one CFDATA block may hold ([MS-CAB] §2.5)."""
BLOCK_IN = BLOCK_OUT + 6144
"""Most compressed bytes one block may hold (32 KiB + 6 KiB for MSZIP, as [MS-CAB] allows)."""


def is_cab(data: bytes) -> bool:
    """True when ``data`` starts like a cabinet."""
    return data[:4] == CAB_MAGIC


def _cstr(data: bytes, off: int, what: str) -> tuple[str, int]:
    end = data.find(b"\0", off, off + 1024)
    if end < 0:
        raise SymbolError(f"cabinet: {what} at offset {off:#x} is not terminated within 1 KiB")
    return data[off:end].decode("latin-1"), end + 1


def extract(
    data: bytes, *, max_bytes: int = 1 << 30, want: str | None = None
) -> tuple[str, bytes]:
    """The (name, bytes) of one file of the cabinet ``data``: the one named ``want`` (compared
    case-insensitively) when given and present, else the first. Output at most ``max_bytes``
    bytes. Raises :class:`SymbolError` naming the offset of a bad structure."""
    if len(data) < 36 or not is_cab(data):
        raise SymbolError("cabinet: no MSCF signature at offset 0")
    (cb_cabinet, coff_files, c_folders, c_files, flags) = (
        struct.unpack_from("<I", data, 8)[0],
        struct.unpack_from("<I", data, 16)[0],
        *struct.unpack_from("<HHH", data, 26),
    )
    if c_folders == 0 or c_folders > MAX_FOLDERS:
        raise SymbolError(f"cabinet: {c_folders} folders (offset 0x1a), expected 1..{MAX_FOLDERS}")
    if c_files == 0 or c_files > MAX_FILES:
        raise SymbolError(f"cabinet: {c_files} files (offset 0x1c), expected 1..{MAX_FILES}")
    if flags & 0x3:
        raise SymbolError("cabinet: spans several cabinets (flags at offset 0x1e); "
                          "not a store file")
    off = 36
    cb_folder_res = cb_data_res = 0
    if flags & 0x4:
        if len(data) < 40:
            raise SymbolError("cabinet: reserve fields cut short at offset 0x24")
        cb_header_res, cb_folder_res, cb_data_res = struct.unpack_from("<HBB", data, 36)
        off = 40 + cb_header_res
    folders = []
    for i in range(c_folders):
        if off + 8 + cb_folder_res > len(data):
            raise SymbolError(f"cabinet: folder {i} at offset {off:#x} runs past the file")
        start, n_blocks, ctype = struct.unpack_from("<IHH", data, off)
        folders.append((start, n_blocks, ctype))
        off += 8 + cb_folder_res
    files = []
    off = coff_files
    for i in range(c_files):
        if off + 16 > len(data):
            raise SymbolError(f"cabinet: file entry {i} at offset {off:#x} runs past the file")
        size, folder_off, ifolder = struct.unpack_from("<IIH", data, off)
        name, off = _cstr(data, off + 16, f"file name {i}")
        files.append((name, size, folder_off, ifolder))
    pick = files[0]
    if want is not None:
        pick = next((f for f in files if f[0].lower() == want.lower()), files[0])
    name, size, folder_off, ifolder = pick
    if ifolder >= len(folders):
        raise SymbolError(f"cabinet: {name!r} names folder {ifolder} of {len(folders)}")
    if size > max_bytes:
        raise SymbolError(f"cabinet: {name!r} declares {size} bytes, over the cap of {max_bytes}")
    if folder_off + size > max_bytes:
        raise SymbolError(f"cabinet: {name!r} ends past the cap of {max_bytes} bytes")
    start, n_blocks, ctype = folders[ifolder]
    kind = ctype & 0xF
    if kind not in (0, 1):
        names = {2: "Quantum", 3: "LZX"}
        raise SymbolError(f"cabinet: folder {ifolder} uses {names.get(kind, f'type {kind}')} "
                          "compression; only MSZIP and stored folders are read")
    out = bytearray()
    need = folder_off + size
    prev = b""
    pos = start
    for b in range(n_blocks):
        if len(out) >= need:
            break
        if pos + 8 + cb_data_res > len(data):
            raise SymbolError(f"cabinet: data block {b} at offset {pos:#x} runs past the file")
        _csum, cb_data, cb_uncomp = struct.unpack_from("<IHH", data, pos)
        body = pos + 8 + cb_data_res
        chunk = data[body : body + cb_data]
        if len(chunk) != cb_data or cb_data > BLOCK_IN or cb_uncomp > BLOCK_OUT:
            raise SymbolError(f"cabinet: data block {b} at offset {pos:#x} has a bad size "
                              f"({cb_data} in, {cb_uncomp} out)")
        if kind == 0:
            block = chunk
        else:
            if chunk[:2] != b"CK":
                raise SymbolError(f"cabinet: MSZIP block {b} at offset {body:#x} lacks 'CK'")
            dec = zlib.decompressobj(-15, zdict=prev) if prev else zlib.decompressobj(-15)
            try:
                block = dec.decompress(chunk[2:], BLOCK_OUT)
            except zlib.error as e:
                raise SymbolError(f"cabinet: MSZIP block {b} at offset {body:#x}: {e}") from None
        if len(block) != cb_uncomp:
            raise SymbolError(f"cabinet: data block {b} at offset {pos:#x} gave {len(block)} "
                              f"bytes, declares {cb_uncomp}")
        out += block
        prev = block
        pos = body + cb_data
        if len(out) > max_bytes + BLOCK_OUT:
            raise SymbolError(f"cabinet: output passes the cap of {max_bytes} bytes")
    if len(out) < need:
        raise SymbolError(f"cabinet: {name!r} needs {need} bytes of folder {ifolder}, its blocks "
                          f"give {len(out)} (cabinet declares {cb_cabinet} bytes)")
    return name, bytes(out[folder_off:need])
