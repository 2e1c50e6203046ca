"""A small PE32 / PE32+ writer for synthetic native drivers, kernels and HALs.

Everything is generated here (no Microsoft or Wine bytes). :func:`build_driver` writes a file
a Windows loader would accept: DOS header and stub, NT headers, ``.text`` (a DriverEntry that
calls every import through its IAT slot and loads each pool tag as a 32-bit immediate), ``.rdata``
(IAT first, import descriptors, ILT, hint/name table, export directory, debug directory with a
CodeView "RSDS" record), ``.data`` (data exports and two absolute code pointers, so that every
image has base relocations; x86 IAT calls are absolute too), extra sections, ``.reloc``.
:func:`build_kernel` and :func:`build_hal` are drivers with the export tables of a kernel and
a HAL.

Units: an *RVA* is a byte offset from the image base; a *VA* is ``image_base + RVA``; file
offsets are bytes. Layout: FileAlignment 0x200, SectionAlignment 0x1000, headers 0x400 bytes.
WINDOWS_INTERNALS.md section 6 is the reference for every offset; the matching reader (files
and mapped images) is :mod:`.image`.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .unwind import (
    UWOP_ALLOC_SMALL,
    AssembledFunction,
    Function,
    RuntimeFunction,
    assemble,
    encode_unwind_info,
)

MACHINES = {"x64": 0x8664, "x86": 0x14C}
FILE_ALIGN, SECTION_ALIGN, HEADERS_SIZE = 0x200, 0x1000, 0x400
E_LFANEW = 0x80
# Section characteristics (WINDOWS_INTERNALS.md 6.1).
SCN_CODE, SCN_IDATA, DISCARDABLE, NOT_PAGED = 0x20, 0x40, 0x02000000, 0x08000000
SCN_EXECUTE, SCN_READ, SCN_WRITE = 0x20000000, 0x40000000, 0x80000000
CODE = SCN_CODE | SCN_EXECUTE | SCN_READ | NOT_PAGED
RDATA = SCN_IDATA | SCN_READ | NOT_PAGED
DATA = SCN_IDATA | SCN_READ | SCN_WRITE | NOT_PAGED
_DOS_STUB = (bytes.fromhex("0e1fba0e00b409cd21b8014ccd21")
             + b"This program cannot be run in DOS mode.\r\r\n$")

#: Functions :func:`build_kernel` exports by default (names as ntoskrnl.exe exports them).
KERNEL_EXPORTS = (
    "DbgBreakPointWithStatus", "DbgPrint", "ExAllocatePool", "ExAllocatePoolWithQuota",
    "ExAllocatePoolWithQuotaTag", "ExAllocatePoolWithTag", "ExAllocatePool2", "ExFreePool",
    "ExFreePoolWithTag", "IoAllocateIrp", "IoCreateDevice", "IoCreateSymbolicLink",
    "IoDeleteDevice", "IoDeleteSymbolicLink", "IoFreeIrp", "IofCallDriver",
    "IofCompleteRequest", "KeBugCheckEx", "KeInitializeEvent", "KeInitializeSpinLock",
    "KeSetEvent", "KeWaitForSingleObject", "MmGetSystemRoutineAddress", "MmMapIoSpace",
    "MmUnmapIoSpace", "ObReferenceObjectByHandle", "ObfDereferenceObject",
    "PsCreateSystemThread", "PsTerminateSystemThread", "RtlCompareUnicodeString",
    "RtlCopyUnicodeString", "RtlInitUnicodeString", "ZwClose", "ZwCreateFile", "ZwOpenKey",
    "ZwQueryValueKey", "ZwReadFile", "_stricmp", "_wcsnicmp", "memcpy", "memset", "wcslen",
)
#: Data exports of :func:`build_kernel`: name -> size in bytes on x64 (pointers shrink on x86).
KERNEL_DATA_EXPORTS = {"PsLoadedModuleList": 16, "NtBuildNumber": 4,
                       "MmHighestUserAddress": 8, "MmSystemRangeStart": 8,
                       "MmUserProbeAddress": 8, "PsInitialSystemProcess": 8,
                       "KdDebuggerEnabled": 1}
HAL_EXPORTS = ("HalGetBusDataByOffset", "HalGetInterruptVector", "HalMakeBeep",
               "HalQueryRealTimeClock", "HalReturnToFirmware", "HalSetBusDataByOffset",
               "KeGetCurrentIrql", "KeQueryPerformanceCounter", "KeStallExecutionProcessor",
               "KfLowerIrql", "KfRaiseIrql", "READ_PORT_UCHAR", "WRITE_PORT_UCHAR")


def _align(value: int, to: int) -> int:
    return -(-value // to) * to


def default_rsds(name: str) -> tuple[bytes, int, str]:
    """Deterministic CodeView data for ``name``: (GUID bytes as stored, age 1, "<stem>.pdb")."""
    stem = name.rsplit(".", 1)[0]
    return hashlib.md5(name.lower().encode()).digest(), 1, stem + ".pdb"


def default_timestamp(name: str) -> int:
    """A deterministic TimeDateStamp (2016-2023) derived from ``name``."""
    h = int.from_bytes(hashlib.md5(b"ts" + name.lower().encode()).digest()[:4], "little")
    return 0x56000000 + h % 0x0C000000


@dataclass(frozen=True)
class Section:
    """An extra section for :func:`build_driver`: ``name`` (<= 8 bytes), raw ``data``,
    ``characteristics`` (e.g. :data:`CODE`, ``CODE | DISCARDABLE`` for INIT), and an optional
    ``virtual_size`` (bytes) larger than the data (the rest is zero-filled in memory)."""

    name: str
    data: bytes
    characteristics: int = DATA
    virtual_size: int | None = None


def pe_checksum(data: bytes | bytearray, checksum_offset: int) -> int:
    """The PE CheckSum of ``data``: 16-bit one's-complement style sum of the file with the
    CheckSum field (at ``checksum_offset``) taken as zero, plus the file length in bytes."""
    buf = bytes(data) + b"\0" * (len(data) & 1)
    buf = buf[:checksum_offset] + bytes(4) + buf[checksum_offset + 4:]
    total = sum(struct.unpack(f"<{len(buf) // 2}H", buf))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total + len(data)


class _Text:
    """Machine code of ``.text`` with fix-ups resolved once the section RVAs are known."""

    def __init__(self, is64: bool) -> None:
        self.is64 = is64
        self.code = bytearray()
        # Offsets of the 4-byte operands of ``call [IAT slot]`` (rel32 on x64, abs32 + reloc
        # on x86) with the import they name, and of ``call rel32`` to the local stub.
        self.iat_calls: list[tuple[int, tuple[str, str | int]]] = []
        self.local_calls: list[int] = []

    def call_iat(self, key: tuple[str, str | int]) -> None:
        self.code += b"\xff\x15"
        self.iat_calls.append((len(self.code), key))
        self.code += bytes(4)

    def call_local(self) -> None:
        self.code += b"\xe8"
        self.local_calls.append(len(self.code))
        self.code += bytes(4)


def _hint_name(name: str) -> bytes:
    blob = struct.pack("<H", 0) + name.encode() + b"\0"
    return blob + b"\0" * (len(blob) & 1)


def build_driver(name: str, *, machine: str = "x64", image_base: int | None = None,
                 imports: Mapping[str, Sequence[str | int]] | None = None,
                 exports: Sequence[str] = (), data_exports: Mapping[str, int] | None = None,
                 forwarders: Mapping[str, str] | None = None,
                 fixed_rvas: Mapping[str, int] | None = None,
                 code: bytes = b"", data: bytes = b"", pool_tags: Sequence[bytes] = (),
                 rsds: tuple[bytes, int, str] | None = None, timestamp: int | None = None,
                 sections: Sequence[Section] = (), relocs: bool = True,
                 dll: bool = False, os_version: tuple[int, int] = (10, 0),
                 functions: Sequence[Function] = (), pdata: bool | None = None) -> bytes:
    """Bytes of a native-subsystem PE file (``machine`` "x64" → PE32+, "x86" → PE32).

    ``imports``: DLL name → functions (a str imports by name, an int by ordinal), in IAT order.
    ``exports``: function names (16-byte ``xor eax, eax; ret`` stubs in .text, ordinals from 1
    in the given order); ``fixed_rvas`` places chosen exports at chosen .text RVAs (bytes);
    ``data_exports``: name → size (bytes) of a zeroed variable in .data; ``forwarders``: name →
    "dll.Function". ``pool_tags``: each 4-byte tag is loaded as an immediate before a call,
    as compilers emit ``mov r8d, 'Tag'`` (x64 ``41 B8 <tag>``) / ``push 'Tag'`` (x86
    ``68 <tag>``). ``rsds``: (GUID as its 16 stored bytes, age, PDB name), default
    :func:`default_rsds`. ``sections``: extra :class:`Section` s after .data. ``relocs``: write
    a .reloc section (x86 IAT calls and the .data pointer table are absolute). ``dll`` sets
    IMAGE_FILE_DLL (hal.dll, export drivers). The PE CheckSum is computed.

    ``functions``: synthetic :class:`~.unwind.Function` s (real prologues, calls, epilogues)
    placed after the export stubs; their ``"dll!Name"`` calls add the import when missing.
    ``pdata`` (default: on for x64): write the exception directory — a ``.pdata`` section
    right after ``.data`` with a RUNTIME_FUNCTION for DriverEntry (``sub rsp, 28h``:
    UWOP_ALLOC_SMALL 0x28) and for each function (two, chained, with ``chain_saves``), their
    UNWIND_INFOs at the end of ``.rdata``. Leaf stubs get none, as compilers do.
    """
    if machine not in MACHINES:
        raise ValueError(f"machine must be one of {sorted(MACHINES)}")
    is64 = machine == "x64"
    image_base = image_base if image_base is not None else (0x140000000 if is64 else 0x10000)
    imps = _all_imports(imports, functions)
    pdata = is64 if pdata is None else pdata
    if pdata and not is64:
        raise ValueError("pdata (x64 unwind data) needs machine='x64'")
    data_exports = dict(data_exports or {})
    forwarders = dict(forwarders or {})
    rsds = rsds or default_rsds(name)
    timestamp = default_timestamp(name) if timestamp is None else timestamp
    for tag in pool_tags:
        if len(tag) != 4:
            raise ValueError(f"pool tag {tag!r} is not 4 bytes")

    text = _build_text(is64, imps, pool_tags, code, exports, dict(fixed_rvas or {}), functions)
    text_rva = SECTION_ALIGN
    rdata_rva = _align(text_rva + len(text.t.code), SECTION_ALIGN)
    rd = _Rdata(rdata_rva)
    imp = _import_tables(rd, imps, is64)
    export_dir, data_slots = _export_directory(rd, name, timestamp, text.exports, data_exports,
                                               forwarders, text_rva, text.func_off)
    dbg_off, cv_off, cv_len = _debug_record(rd, rsds)
    runtime = _unwind_records(rd, text_rva, text.entry_end, text.assembled) if pdata else []

    data_rva = _align(rdata_rva + len(rd.b), SECTION_ALIGN)
    dd, abs_rvas = _data_section(rd, data_rva, data_exports, data_slots, data, is64,
                                 image_base + text_rva, text.local)
    abs_rvas += _resolve_text(text, text_rva, image_base, imp.slot_rva, is64)

    layout: list[Section] = [Section(".text", bytes(text.t.code), CODE),
                             Section(".rdata", bytes(rd.b), RDATA), Section(".data", dd, DATA)]
    rva = _align(data_rva + len(dd), SECTION_ALIGN)
    rvas = [text_rva, rdata_rva, data_rva]
    pdata_dir = (0, 0)
    if runtime:
        pd = b"".join(struct.pack("<III", f.begin, f.end, f.unwind)
                      for f in sorted(runtime, key=lambda f: f.begin))
        layout.append(Section(".pdata", pd, RDATA))
        pdata_dir = (rva, len(pd))
        rvas.append(rva)
        rva = _align(rva + len(pd), SECTION_ALIGN)
    for sec in sections:
        layout.append(sec)
        rvas.append(rva)
        rva = _align(rva + max(sec.virtual_size or 0, len(sec.data), 1), SECTION_ALIGN)
    reloc_dir = (0, 0)
    if relocs:
        rel = _relocations(abs_rvas, is64)
        layout.append(Section(".reloc", rel, RDATA | DISCARDABLE))
        reloc_dir = (rva, len(rel))
        rvas.append(rva)

    dirs = [(0, 0)] * 16
    dirs[0] = export_dir
    dirs[1] = (rdata_rva + imp.desc_off, 20 * (len(imps) + 1)) if imps else (0, 0)
    dirs[3] = pdata_dir
    dirs[5] = reloc_dir
    dirs[6] = (rdata_rva + dbg_off, 0x1C)
    dirs[12] = (rdata_rva + imp.iat_off, imp.iat_size) if imps else (0, 0)
    buf, file_parts = _pe_file(machine, layout, rvas, dirs, image_base=image_base,
                               entry=text_rva, base_of_data=data_rva, timestamp=timestamp,
                               dll=dll, os_version=os_version)
    # Debug directory entry: AddressOfRawData (RVA) and PointerToRawData (file offset).
    rd_raw = file_parts[1][1]
    struct.pack_into("<IIHHIIII", buf, rd_raw + dbg_off, 0, timestamp, 0, 0, 2, cv_len,
                     rdata_rva + cv_off, rd_raw + cv_off)
    o = E_LFANEW + 0x18
    struct.pack_into("<I", buf, o + 0x40, pe_checksum(buf, o + 0x40))
    return bytes(buf)


def _all_imports(imports: Mapping[str, Sequence[str | int]] | None,
                 functions: Sequence[Function]) -> dict[str, list[str | int]]:
    """``imports`` in IAT order, plus the ``"dll!Name"`` calls of ``functions`` not in it."""
    imps: dict[str, list[str | int]] = {d: list(fs) for d, fs in (imports or {}).items()}
    for fn in functions:
        for c in fn.calls:
            if isinstance(c, str) and "!" in c:
                dll_name, func = c.split("!", 1)
                if func not in imps.setdefault(dll_name, []):
                    imps[dll_name].append(func)
    return imps


@dataclass
class _TextLayout:
    """``.text`` as built: the code with its fix-ups, where DriverEntry ends, the local stub, each
    function's offset, the export names (fixed-RVA and exported functions appended) and the
    assembled functions."""

    t: _Text
    entry_end: int
    local: int
    func_off: dict[str, int]
    exports: list[str]
    assembled: list[AssembledFunction]


def _build_text(is64: bool, imports: Mapping[str, Sequence[str | int]],
                pool_tags: Sequence[bytes], code: bytes, exports: Sequence[str],
                fixed: Mapping[str, int], functions: Sequence[Function]) -> _TextLayout:
    """``.text``: DriverEntry (a pool-tag load and call per tag, a call through every IAT slot),
    a local stub, the user's code, the export stubs, stubs at fixed RVAs, then ``functions``."""
    t = _Text(is64)
    t.code += b"\x48\x83\xec\x28" if is64 else b"\x55\x8b\xec"
    alloc_key = ("ntoskrnl.exe", "ExAllocatePoolWithTag")
    has_alloc = "ExAllocatePoolWithTag" in imports.get("ntoskrnl.exe", [])
    for tag in pool_tags:
        if is64:
            t.code += b"\xb9\x00\x02\x00\x00\xba\x00\x01\x00\x00\x41\xb8" + tag
        else:
            t.code += b"\x68" + tag + b"\x68\x00\x01\x00\x00\x6a\x00"
        if has_alloc:
            t.call_iat(alloc_key)
        else:
            t.call_local()
    for dll_name, funcs in imports.items():
        for f in funcs:
            t.call_iat((dll_name, f))
    t.code += b"\x33\xc0\x48\x83\xc4\x28\xc3" if is64 else b"\x33\xc0\x5d\xc2\x08\x00"
    t.code += b"\xcc" * (-len(t.code) % 16)
    entry_end = len(t.code)
    local = len(t.code)
    t.code += b"\x33\xc0\xc3" + b"\xcc" * 13 + bytes(code)
    t.code += b"\xcc" * (-len(t.code) % 16)
    func_off: dict[str, int] = {}
    names = list(exports)
    for e in exports:
        if e not in fixed:
            func_off[e] = len(t.code)
            t.code += b"\x33\xc0\xc3" + b"\xcc" * 13
    for e, rva in sorted(fixed.items(), key=lambda kv: kv[1]):
        off = rva - SECTION_ALIGN
        if off < len(t.code):
            raise ValueError(f"fixed RVA {rva:#x} of {e} collides with earlier .text code")
        t.code += b"\xcc" * (off - len(t.code))
        func_off[e] = off
        t.code += b"\x33\xc0\xc3" + b"\xcc" * 13
        if e not in names:
            names.append(e)
    assembled: list[AssembledFunction] = []
    for fn in functions:
        a = assemble(fn, len(t.code), is64=is64)
        assembled.append(a)
        t.code += a.code
        func_off[fn.name] = a.start
        if fn.export and fn.name not in names:
            names.append(fn.name)
    for a in assembled:
        for off, callee in a.fixups:
            at = a.start + off
            if "!" in callee:
                dll_name, func = callee.split("!", 1)
                t.iat_calls.append((at, (dll_name, func)))
            elif callee in func_off:
                struct.pack_into("<i", t.code, at, func_off[callee] - (at + 4))
            else:
                raise ValueError(f"{a.fn.name} calls unknown local function {callee!r}")
    return _TextLayout(t, entry_end, local, func_off, names, assembled)


class _Rdata:
    """``.rdata`` being written, at RVA ``rva``."""

    def __init__(self, rva: int) -> None:
        self.rva = rva
        self.b = bytearray()

    def here(self) -> int:
        """RVA of the next byte written."""
        return self.rva + len(self.b)

    def pad(self, n: int) -> None:
        self.b += bytes(-len(self.b) % n)


@dataclass
class _ImportTables:
    """Where the import tables landed in ``.rdata`` (offsets in bytes) and each slot's RVA."""

    iat_off: int
    iat_size: int
    desc_off: int
    slot_rva: dict[tuple[str, str | int], int]


def _import_tables(rd: _Rdata, imports: Mapping[str, Sequence[str | int]],
                   is64: bool) -> _ImportTables:
    """IAT, import descriptors, ILT, hint/name entries and DLL names, at the start of ``.rdata``
    (the IAT first, as the linker puts it)."""
    ptr = 8 if is64 else 4
    n_thunks = sum(len(f) + 1 for f in imports.values())
    iat_off, iat_size = len(rd.b), n_thunks * ptr
    rd.b += bytes(iat_size)
    desc_off = len(rd.b)
    rd.b += bytes(20 * (len(imports) + 1))
    ilt_off = len(rd.b)
    rd.b += bytes(iat_size)
    slot_rva: dict[tuple[str, str | int], int] = {}
    thunk = 0
    descs = []
    for dll_name, funcs in imports.items():
        first = thunk
        for f in funcs:
            if isinstance(f, int):
                value = (1 << (8 * ptr - 1)) | (f & 0xFFFF)
            else:
                value = rd.here()
                rd.b += _hint_name(f)
            for base in (iat_off, ilt_off):
                struct.pack_into("<Q" if is64 else "<I", rd.b, base + thunk * ptr, value)
            slot_rva[(dll_name, f)] = rd.rva + iat_off + thunk * ptr
            thunk += 1
        thunk += 1
        descs.append((first, dll_name))
    for i, (first, dll_name) in enumerate(descs):
        name_rva = rd.here()
        rd.b += dll_name.encode() + b"\0"
        struct.pack_into("<IIIII", rd.b, desc_off + 20 * i, rd.rva + ilt_off + first * ptr,
                         0, 0, name_rva, rd.rva + iat_off + first * ptr)
    rd.pad(4)
    return _ImportTables(iat_off, iat_size, desc_off, slot_rva)


def _export_directory(rd: _Rdata, name: str, timestamp: int, exports: Sequence[str],
                      data_exports: Mapping[str, int], forwarders: Mapping[str, str],
                      text_rva: int, func_off: Mapping[str, int]
                      ) -> tuple[tuple[int, int], dict[str, int]]:
    """The export directory (functions, then data exports, then forwarders, ordinals from 1,
    names sorted). Returns its data directory (RVA, size) and, per data export, the offset in
    ``.rdata`` of its function-table entry (filled once ``.data`` is placed)."""
    all_exports = [*exports, *data_exports, *forwarders]
    if not all_exports:
        return (0, 0), {}
    slots: dict[str, int] = {}
    ed_off = len(rd.b)
    n = len(all_exports)
    rd.b += bytes(0x28 + 4 * n + 4 * n + 2 * n)
    funcs_off, names_off, ords_off = ed_off + 0x28, ed_off + 0x28 + 4 * n, ed_off + 0x28 + 8 * n
    mod_name_rva = rd.here()
    rd.b += name.encode() + b"\0"
    for j, i in enumerate(sorted(range(n), key=lambda i: all_exports[i].encode())):
        struct.pack_into("<I", rd.b, names_off + 4 * j, rd.here())
        struct.pack_into("<H", rd.b, ords_off + 2 * j, i)
        rd.b += all_exports[i].encode() + b"\0"
    for i, e in enumerate(all_exports):
        if e in forwarders:
            struct.pack_into("<I", rd.b, funcs_off + 4 * i, rd.here())
            rd.b += forwarders[e].encode() + b"\0"
        elif e in data_exports:
            slots[e] = funcs_off + 4 * i
        else:
            struct.pack_into("<I", rd.b, funcs_off + 4 * i, text_rva + func_off[e])
    struct.pack_into("<IIHHIIIIII", rd.b, ed_off, 0, timestamp, 0, 0, mod_name_rva, 1, n, n,
                     rd.rva + funcs_off, rd.rva + names_off)
    struct.pack_into("<I", rd.b, ed_off + 0x24, rd.rva + ords_off)
    export_dir = (rd.rva + ed_off, len(rd.b) - ed_off)
    rd.pad(4)
    return export_dir, slots


def _debug_record(rd: _Rdata, rsds: tuple[bytes, int, str]) -> tuple[int, int, int]:
    """Room for one debug directory entry and its CodeView (RSDS) record: (entry offset, record
    offset, record length) in ``.rdata``; the entry is written with the file offsets."""
    guid, age, pdb = rsds
    cv = b"RSDS" + bytes(guid) + struct.pack("<I", age) + pdb.encode() + b"\0"
    dbg_off = len(rd.b)
    rd.b += bytes(0x1C)
    cv_off = len(rd.b)
    rd.b += cv + bytes(-len(cv) % 4)
    return dbg_off, cv_off, len(cv)


def _unwind_records(rd: _Rdata, text_rva: int, entry_end: int,
                    assembled: Sequence[AssembledFunction]) -> list[RuntimeFunction]:
    """UNWIND_INFOs at the end of ``.rdata`` and the RUNTIME_FUNCTIONs naming them: DriverEntry
    (``sub rsp, 28h``) and each function (two, chained, when it saves registers after a split)."""

    def xdata(blob: bytes) -> int:
        rd.pad(4)
        at = rd.here()
        rd.b += blob
        return at

    runtime = [RuntimeFunction(text_rva, text_rva + entry_end, xdata(
        encode_unwind_info([(4, UWOP_ALLOC_SMALL, 4, b"")], 4)))]
    for a in assembled:
        begin, end = text_rva + a.start, text_rva + a.start + len(a.code)
        split = begin + a.split if a.split is not None else end
        main = RuntimeFunction(begin, split, xdata(encode_unwind_info(
            a.codes, a.prolog_size, frame_register=a.frame_register,
            frame_offset=a.frame_offset)))
        runtime.append(main)
        if a.split is not None:
            runtime.append(RuntimeFunction(split, end, xdata(encode_unwind_info(
                a.chain_codes, a.chain_prolog, chained=main))))
    rd.pad(4)
    return runtime


def _data_section(rd: _Rdata, data_rva: int, data_exports: Mapping[str, int],
                  data_slots: Mapping[str, int], data: bytes, is64: bool, entry_va: int,
                  local: int) -> tuple[bytes, list[int]]:
    """``.data``: the data exports (their export entries in ``.rdata`` filled now), the user's
    data, and two absolute pointers, to DriverEntry and to the local stub only (a search for an
    export's VA must find nothing but IAT slots). Returns the bytes and the RVAs to relocate."""
    dd = bytearray()
    for e, size in data_exports.items():
        size = size if is64 or size < 8 else size // 2
        dd += bytes(-len(dd) % 8)
        struct.pack_into("<I", rd.b, data_slots[e], data_rva + len(dd))
        dd += bytes(size)
    dd += bytes(-len(dd) % 16) + bytes(data) + bytes(-len(data) % 16)
    abs_rvas: list[int] = []
    for target in (0, local):
        abs_rvas.append(data_rva + len(dd))
        dd += struct.pack("<Q" if is64 else "<I", entry_va + target)
    return bytes(dd), abs_rvas


def _resolve_text(text: _TextLayout, text_rva: int, image_base: int,
                  slot_rva: Mapping[tuple[str, str | int], int], is64: bool) -> list[int]:
    """Fill the calls in ``.text``: rel32 to the local stub; through the IAT, rel32 on x64 and an
    absolute address on x86. Returns the RVAs of the absolute ones (to relocate)."""
    t, abs_rvas = text.t, []
    for off in t.local_calls:
        struct.pack_into("<i", t.code, off, text.local - (off + 4))
    for off, key in t.iat_calls:
        if is64:
            disp = slot_rva[key] - (text_rva + off + 4)
        else:
            disp = image_base + slot_rva[key]
            abs_rvas.append(text_rva + off)
        struct.pack_into("<I", t.code, off, disp & 0xFFFFFFFF)
    return abs_rvas


def _relocations(abs_rvas: Sequence[int], is64: bool) -> bytes:
    """A ``.reloc`` section: one block per page, DIR64 (x64) or HIGHLOW (x86) entries, padded
    to an even count."""
    rel = bytearray()
    rtype = 10 if is64 else 3
    pages: dict[int, list[int]] = {}
    for r in sorted(abs_rvas):
        pages.setdefault(r & ~0xFFF, []).append(r & 0xFFF)
    for page, offs in sorted(pages.items()):
        entries = [(rtype << 12) | o for o in offs]
        entries += [0] * (len(entries) & 1)
        rel += struct.pack("<II", page, 8 + 2 * len(entries))
        rel += struct.pack(f"<{len(entries)}H", *entries)
    return bytes(rel)


def _pe_file(machine: str, layout: Sequence[Section], rvas: Sequence[int],
             dirs: Sequence[tuple[int, int]], *, image_base: int, entry: int, base_of_data: int,
             timestamp: int, dll: bool, os_version: tuple[int, int]
             ) -> tuple[bytearray, list[tuple[int, int, int]]]:
    """The file: DOS header and stub, PE and optional headers, the section table and each
    section's raw data (file-aligned). Returns the bytes and, per section, (RVA, file offset,
    raw size). The CheckSum is left zero."""
    if len(rvas) != len(layout):
        raise AssertionError("section RVAs out of step")
    is64 = machine == "x64"
    raw_at, file_parts = HEADERS_SIZE, []
    for sec, r in zip(layout, rvas, strict=True):
        raw_size = _align(len(sec.data), FILE_ALIGN)
        file_parts.append((r, raw_at if raw_size else 0, raw_size))
        raw_at += raw_size
    last = layout[-1]
    size_of_image = _align(rvas[-1] + max(last.virtual_size or 0, len(last.data), 1),
                           SECTION_ALIGN)
    is_code = [bool(sec.characteristics & SCN_CODE) for sec in layout]
    size_code = sum(p[2] for c, p in zip(is_code, file_parts, strict=True) if c)
    size_idata = sum(p[2] for c, p in zip(is_code, file_parts, strict=True) if not c)
    chars = 0x0002 | (0x0020 if is64 else 0x0100) | (0x2000 if dll else 0)
    dllchars = 0x0160 if is64 else 0x0140
    buf = bytearray(raw_at)
    struct.pack_into("<HHHHHHHHHHHHH", buf, 0, 0x5A4D, 0x90, 3, 0, 4, 0, 0xFFFF, 0, 0xB8,
                     0, 0, 0, 0x40)
    struct.pack_into("<I", buf, 0x3C, E_LFANEW)
    buf[0x40:0x40 + len(_DOS_STUB)] = _DOS_STUB
    opt_size = 0xF0 if is64 else 0xE0
    struct.pack_into("<4sHHIIIHH", buf, E_LFANEW, b"PE\0\0", MACHINES[machine], len(layout),
                     timestamp, 0, 0, opt_size, chars)
    o = E_LFANEW + 0x18
    head = (0x20B if is64 else 0x10B, 14, 0, size_code, size_idata, 0, entry, rvas[0])
    mid = (SECTION_ALIGN, FILE_ALIGN, *os_version, *os_version, *os_version, 0, size_of_image,
           HEADERS_SIZE, 0, 1, dllchars)
    if is64:
        struct.pack_into("<HBBIIIIIQ", buf, o, *head, image_base)
        struct.pack_into("<IIHHHHHHIIIIHH", buf, o + 0x20, *mid)
        struct.pack_into("<QQQQII", buf, o + 0x48, 0x40000, 0x1000, 0x100000, 0x1000, 0, 16)
    else:
        struct.pack_into("<HBBIIIIIII", buf, o, *head, base_of_data, image_base)
        struct.pack_into("<IIHHHHHHIIIIHH", buf, o + 0x20, *mid)
        struct.pack_into("<IIIIII", buf, o + 0x48, 0x40000, 0x1000, 0x100000, 0x1000, 0, 16)
    for i, (r, size) in enumerate(dirs):
        struct.pack_into("<II", buf, o + opt_size - 0x80 + 8 * i, r, size)
    sh = o + opt_size
    for i, (sec, (r, raw_ptr, raw_size)) in enumerate(zip(layout, file_parts, strict=True)):
        vsize = max(sec.virtual_size or 0, len(sec.data))
        struct.pack_into("<8sIIIIIIHHI", buf, sh + 0x28 * i, sec.name.encode()[:8], vsize, r,
                         raw_size, raw_ptr, 0, 0, 0, 0, sec.characteristics)
        buf[raw_ptr:raw_ptr + len(sec.data)] = sec.data
    return buf, file_parts


def kernel_functions(machine: str = "x64") -> tuple[Function, ...]:
    """The kernel's default non-stub functions: ``ExAllocatePoolWithTag`` with a real prologue
    (x64: push rbx, push rsi, sub rsp 28h; x86: an EBP frame) that calls ``KeBugCheckEx`` —
    the call a pool-exhaustion bug check (0x41) makes, giving forged stacks a kernel frame."""
    if machine == "x64":
        pro: tuple = (("push", "rbx"), ("push", "rsi"), ("alloc", 0x28))
    else:
        pro = (("push", "ebp"), ("setfp", "ebp"), ("alloc", 0x10), ("push", "esi"))
    return (Function("ExAllocatePoolWithTag", pro, calls=("KeBugCheckEx",)),)


def build_kernel(*, machine: str = "x64", image_base: int | None = None,
                 name: str = "ntoskrnl.exe", exports: Sequence[str] = KERNEL_EXPORTS,
                 fixed_rvas: Mapping[str, int] | None = None, timestamp: int | None = None,
                 rsds: tuple[bytes, int, str] | None = None,
                 functions: Sequence[Function] | None = None) -> bytes:
    """A fake ``ntoskrnl.exe``: exports ``exports`` (functions) and the variables of
    :data:`KERNEL_DATA_EXPORTS` (PsLoadedModuleList, NtBuildNumber, …) in .data, imports a few
    HAL functions, PDB name ``ntkrnlmp.pdb``. ``fixed_rvas`` pins chosen functions to RVAs
    (e.g. ``{"ExAllocatePool": 0x94D1F}``). ``functions`` (default :func:`kernel_functions`)
    replace export stubs of the same name with real functions."""
    is64 = machine == "x64"
    base = image_base if image_base is not None else (0xFFFFF80000000000 if is64 else 0x80800000)
    guid = hashlib.md5(f"{name}/{machine}".encode()).digest()
    return build_driver(name, machine=machine, image_base=base,
                        imports={"HAL.dll": ["KfRaiseIrql", "KfLowerIrql",
                                             "HalReturnToFirmware"]},
                        exports=list(exports), data_exports=KERNEL_DATA_EXPORTS,
                        fixed_rvas=fixed_rvas, pool_tags=[b"MmCm", b"Thre"],
                        timestamp=timestamp, rsds=rsds or (guid, 1, "ntkrnlmp.pdb"),
                        functions=kernel_functions(machine) if functions is None else functions)


def build_hal(*, machine: str = "x64", image_base: int | None = None, name: str = "hal.dll",
              timestamp: int | None = None) -> bytes:
    """A fake HAL (IMAGE_FILE_DLL) exporting :data:`HAL_EXPORTS`, importing from ntoskrnl."""
    is64 = machine == "x64"
    base = image_base if image_base is not None else (0xFFFFF80000400000 if is64 else 0x806D0000)
    return build_driver(name, machine=machine, image_base=base, dll=True,
                        imports={"ntoskrnl.exe": ["ExAllocatePoolWithTag", "ExFreePoolWithTag",
                                                  "KeBugCheckEx"]},
                        exports=HAL_EXPORTS, pool_tags=[b"HalM"], timestamp=timestamp)
