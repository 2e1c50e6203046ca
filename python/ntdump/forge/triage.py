"""Triage ("small memory", DumpType 4) dump writer (WINDOWS_INTERNALS.md section 1.9).

A triage dump has no physical memory: after the main header comes a ``TRIAGE_DUMP`` header
(at 0x2000 for x64, 0x1000 for x86) whose fields are absolute file offsets of the parts.
Layout written here, in file order (each part 8-byte aligned):

====================  ===========================================================
part                  content
====================  ===========================================================
main header           CONTEXT (ContextOffset → 0x348 / 0x320), EXCEPTION
                      (ExceptionOffset → 0xF00 / 0x7D0), MiniDumpFields
TRIAGE_DUMP           0x80 (x64) / 0x68 (x86) bytes
DUMP_MM_STORAGE       Version 1, Size, rest zero (MmOffset)
unloaded drivers      a pointer-sized count of 0 (UnloadedDriversOffset)
call stack            optional raw bytes (CallStackOffset, TopOfStack = VA + size)
debugger data         optional raw KDBG copy (DebuggerDataOffset/Size)
driver list           ``DUMP_DRIVER_ENTRY64`` (0x90 bytes) / ``DUMP_DRIVER_ENTRY32`` (0x4C)
string pool           ``DUMP_STRING``: u32 length in characters, UTF-16LE, NUL, 8-aligned
data block table      ``TRIAGE_DATA_BLOCK`` {Address u64, Offset u32, Size u32}
data block bytes      each block's bytes, in table order
"TRGD"                the last 4 bytes of the file (ValidOffset); SizeOfDump = file size
====================  ===========================================================

As in a real Windows 10 triage dump, SizeOfDump is the offset just past "TRGD" and the file
is at least the classic 128 KiB (x64) / 64 KiB (x86).
"""

from __future__ import annotations

import dataclasses
import os
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .header import (
    CONTEXT32_OFFSET,
    CONTEXT64_OFFSET,
    EXCEPTION32_OFFSET,
    EXCEPTION64_OFFSET,
    Header,
    build_header,
)

DUMP_TYPE_TRIAGE = 4
TRIAGE_DUMP_SIZE64 = 0x20000
TRIAGE_DUMP_SIZE32 = 0x10000
# MiniDumpFields flags (TRIAGE_DUMP_*).
CONTEXT, EXCEPTION, STACK, DRIVER_LIST = 0x1, 0x2, 0x20, 0x40
MMINFO, DEBUGGER_DATA, DATA_BLOCKS = 0x100, 0x400, 0x800
DRIVER_ENTRY64_SIZE = 0x90
DRIVER_ENTRY32_SIZE = 0x4C


@dataclass(frozen=True)
class TriageDriver:
    """A loaded driver for the triage driver list: full path name, DllBase (VA), SizeOfImage
    (bytes), PE TimeDateStamp and CheckSum."""

    name: str
    base: int
    size: int
    timestamp: int = 0
    checksum: int = 0


@dataclass(frozen=True)
class TriageLayout:
    """Where :func:`write_triage` put things (absolute file offsets), for tests."""

    triage_offset: int
    blocks: tuple[tuple[int, int, int], ...]  # (va, file offset, size)
    drivers_offset: int
    string_offsets: tuple[int, ...]
    valid_offset: int
    size: int


def _align8(n: int) -> int:
    return (n + 7) & ~7


def _driver_record(d: TriageDriver, name_offset: int, is64: bool) -> bytes:
    if is64:
        rec = bytearray(DRIVER_ENTRY64_SIZE)
        struct.pack_into("<I", rec, 0, name_offset)
        struct.pack_into("<QQI", rec, 0x38, d.base, 0, d.size)  # DllBase, EntryPoint, Size
        struct.pack_into("<II", rec, 0x80, d.checksum, 0)
        struct.pack_into("<I", rec, 0x88, d.timestamp)
        return bytes(rec)
    rec = bytearray(DRIVER_ENTRY32_SIZE)
    struct.pack_into("<I", rec, 0, name_offset)
    struct.pack_into("<III", rec, 0x1C, d.base, 0, d.size)
    struct.pack_into("<II", rec, 0x44, d.checksum, d.timestamp)
    return bytes(rec)


def _dump_string(text: str) -> bytes:
    raw = text.encode("utf-16-le")
    blob = struct.pack("<I", len(text)) + raw + b"\0\0"
    return blob + b"\0" * (_align8(len(blob)) - len(blob))


def write_triage(path: str | os.PathLike[str], hdr: Header,
                 blocks: Iterable[tuple[int, bytes]] = (),
                 context_rip: int | None = None,
                 drivers: Sequence[TriageDriver | tuple] | None = None, *,
                 stack: tuple[int, bytes] | None = None,
                 debugger_data: bytes | None = None) -> TriageLayout:
    """Write a triage dump (DumpType 4) for ``hdr.machine`` ("x64" or "x86").

    ``blocks`` are ``(va, bytes)`` ranges captured verbatim (TRIAGE_DATA_BLOCK entries);
    ``context_rip`` overrides ``hdr.context_rip``; ``drivers`` are :class:`TriageDriver` or
    tuples of its fields; ``stack`` is ``(stack pointer VA, bytes)``; ``debugger_data`` a
    KDBG copy. MiniDumpFields gets CONTEXT | EXCEPTION | MMINFO plus STACK, DRIVER_LIST,
    DEBUGGER_DATA and DATA_BLOCKS for the parts present. Returns the offsets used.
    """
    if context_rip is not None:
        hdr = dataclasses.replace(hdr, context_rip=context_rip)
    is64 = hdr.is64
    ptr = 8 if is64 else 4
    blocks = [(int(va), bytes(data)) for va, data in blocks]
    entries = [d if isinstance(d, TriageDriver) else TriageDriver(*d) for d in drivers or ()]
    tri_at = hdr.header_size
    tri = bytearray(0x80 if is64 else 0x68)
    fields = CONTEXT | EXCEPTION | MMINFO
    parts: list[tuple[int, bytes]] = []
    pos = tri_at + len(tri)

    def place(blob: bytes) -> int:
        nonlocal pos
        at = pos
        parts.append((at, blob))
        pos = _align8(at + len(blob))
        return at

    mm = bytearray(0x50 if is64 else 0x34)
    struct.pack_into("<II", mm, 0, 1, len(mm))
    mm_at = place(bytes(mm))
    unloaded_at = place(b"\0" * ptr)
    stack_at = stack_size = top = 0
    if stack is not None:
        stack_at, stack_size = place(stack[1]), len(stack[1])
        top = stack[0] + stack_size
        fields |= STACK
    kdbg_at = kdbg_size = 0
    if debugger_data is not None:
        kdbg_at, kdbg_size = place(debugger_data), len(debugger_data)
        fields |= DEBUGGER_DATA
    rec_size = DRIVER_ENTRY64_SIZE if is64 else DRIVER_ENTRY32_SIZE
    drivers_at = pos
    pos = _align8(drivers_at + rec_size * len(entries))
    pool_at = pos
    strings = [_dump_string(d.name) for d in entries]
    string_offsets = []
    for s in strings:
        string_offsets.append(place(s))
    pool_size = pos - pool_at
    parts.append((drivers_at, b"".join(
        _driver_record(d, off, is64) for d, off in zip(entries, string_offsets, strict=True))))
    if entries:
        fields |= DRIVER_LIST
    table_at = pos
    pos = _align8(table_at + 16 * len(blocks))
    placed_blocks = []
    for va, data in blocks:
        placed_blocks.append((va, place(data), len(data)))
    parts.append((table_at, b"".join(struct.pack("<QII", va, off, size)
                                     for va, off, size in placed_blocks)))
    if blocks:
        fields |= DATA_BLOCKS
    size = max(pos + 4, TRIAGE_DUMP_SIZE64 if is64 else TRIAGE_DUMP_SIZE32)
    valid_at = size - 4

    ctx_at, exc_at = ((CONTEXT64_OFFSET, EXCEPTION64_OFFSET) if is64
                      else (CONTEXT32_OFFSET, EXCEPTION32_OFFSET))
    struct.pack_into("<15I", tri, 0, 0, size, valid_at, ctx_at, exc_at, mm_at,
                     unloaded_at, 0, 0, 0, stack_at, stack_size, drivers_at, len(entries),
                     pool_at)
    struct.pack_into("<III", tri, 0x3C, pool_size, 0, 0)  # StringPoolSize, Broken, Options
    if is64:
        struct.pack_into("<Q", tri, 0x48, top)
        struct.pack_into("<QIIIIII", tri, 0x60, 0, 0, 0, kdbg_at, kdbg_size, table_at,
                         len(blocks))
    else:
        struct.pack_into("<I", tri, 0x48, top & 0xFFFFFFFF)
        struct.pack_into("<IIIIIII", tri, 0x4C, 0, 0, 0, kdbg_at, kdbg_size, table_at,
                         len(blocks))
    header = build_header(hdr, DUMP_TYPE_TRIAGE, size, minidump_fields=fields)
    with open(path, "wb") as f:
        f.write(header)
        f.write(tri)
        for at, blob in sorted(parts):
            f.seek(at)
            f.write(blob)
        f.seek(valid_at)
        f.write(b"TRGD")
    return TriageLayout(tri_at, tuple(placed_blocks), drivers_at, tuple(string_offsets),
                        valid_at, size)
