"""Triage dumps (DumpType 4): no outside library reads them (kdmp-parser and Volatility 3
refuse them), so the judge here is a real Windows 10 x64 triage dump from shared/data.

A small parser written from WINDOWS_INTERNALS.md section 1.9 is first run on the real dump,
where its results must be plausible and self-consistent (TRGD marker, CONTEXT and exception
inside the header, data blocks inside the file, driver names from the string pool, string
pool laid out as "u32 count of characters, UTF-16, NUL, 8-aligned", driver records of 0x90
bytes). The same parser then reads the forged x64 and x86 triage dumps, which must satisfy
the same invariants and give back exactly what was written.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from oracles import import_forge

forge = import_forge()
DATA = Path(os.environ.get("NTDUMP_TEST_DATA",
                           Path(__file__).resolve().parents[2] / "shared" / "data"))
REAL_TRIAGE = DATA / "dumps" / "win10-19041-x64-triage.dmp"
FIELDS = ("ServicePackBuild SizeOfDump ValidOffset ContextOffset ExceptionOffset MmOffset "
          "UnloadedDriversOffset PrcbOffset ProcessOffset ThreadOffset CallStackOffset "
          "SizeOfCallStack DriverListOffset DriverCount StringPoolOffset StringPoolSize "
          "BrokenDriverOffset TriageOptions").split()


def parse_triage(data: bytes) -> dict:
    """Read a triage dump per the fact sheet (x64: TRIAGE_DUMP at 0x2000, x86: 0x1000)."""
    assert data[:4] == b"PAGE"
    is64 = data[4:8] == b"DU64"
    hs = 0x2000 if is64 else 0x1000
    t = dict(zip(FIELDS, struct.unpack_from("<18I", data, hs), strict=True))
    t["is64"] = is64
    t["DumpType"] = struct.unpack_from("<I", data, 0xF98 if is64 else 0xF88)[0]
    t["MiniDumpFields"] = struct.unpack_from("<I", data, 0x1038 if is64 else 0xF8C)[0]
    t["RequiredDumpSpace"] = struct.unpack_from("<Q", data, 0xFA0)[0]
    if is64:
        t["TopOfStack"] = struct.unpack_from("<Q", data, hs + 0x48)[0]
        (t["DebuggerDataOffset"], t["DebuggerDataSize"], t["DataBlocksOffset"],
         t["DataBlocksCount"]) = struct.unpack_from("<4I", data, hs + 0x70)
        rec, base_at, size_at = 0x90, 0x38, 0x48
    else:
        t["TopOfStack"] = struct.unpack_from("<I", data, hs + 0x48)[0]
        (t["DebuggerDataOffset"], t["DebuggerDataSize"], t["DataBlocksOffset"],
         t["DataBlocksCount"]) = struct.unpack_from("<4I", data, hs + 0x58)
        rec, base_at, size_at = 0x4C, 0x1C, 0x24
    t["blocks"] = [struct.unpack_from("<QII", data, t["DataBlocksOffset"] + 16 * i)
                   for i in range(t["DataBlocksCount"])]
    drivers = []
    for i in range(t["DriverCount"]):
        at = t["DriverListOffset"] + rec * i
        name_at = struct.unpack_from("<I", data, at)[0]
        nchars = struct.unpack_from("<I", data, name_at)[0]
        name = data[name_at + 4:name_at + 4 + 2 * nchars].decode("utf-16-le")
        assert data[name_at + 4 + 2 * nchars:name_at + 6 + 2 * nchars] == b"\0\0"
        base = struct.unpack_from("<Q" if is64 else "<I", data, at + base_at)[0]
        size = struct.unpack_from("<I", data, at + size_at)[0]
        drivers.append((name_at, name, base, size))
    t["drivers"] = drivers
    return t


def check_invariants(data: bytes, t: dict) -> None:
    """What holds in the real dump and must hold in ours."""
    assert t["DumpType"] == 4
    assert data[t["ValidOffset"]:t["ValidOffset"] + 4] == b"TRGD"
    assert t["SizeOfDump"] == t["ValidOffset"] + 4 <= len(data)
    assert t["ContextOffset"] == (0x348 if t["is64"] else 0x320)
    assert t["ExceptionOffset"] == (0xF00 if t["is64"] else 0x7D0)
    fields = t["MiniDumpFields"]
    assert fields & 0x1 and fields & 0x2  # CONTEXT, EXCEPTION
    assert bool(fields & 0x800) == (t["DataBlocksCount"] > 0)
    assert bool(fields & 0x40) == (t["DriverCount"] > 0)
    assert struct.unpack_from("<II", data, t["MmOffset"])[0] == 1  # DUMP_MM_STORAGE.Version
    for _va, offset, size in t["blocks"]:
        assert t["DataBlocksOffset"] < offset and offset + size <= t["ValidOffset"]
    pool_end = t["StringPoolOffset"] + t["StringPoolSize"]
    names = sorted(d[0] for d in t["drivers"])
    for here, nxt in zip(names, [*names[1:], pool_end], strict=True):
        nchars = struct.unpack_from("<I", data, here)[0]
        assert nxt == (here + 4 + 2 * nchars + 2 + 7) & ~7  # packed, 8-aligned
        assert t["StringPoolOffset"] <= here < pool_end


def test_parser_on_real_windows_triage_dump():
    if not REAL_TRIAGE.exists():
        pytest.skip(f"real triage dump not found at {REAL_TRIAGE} (set NTDUMP_TEST_DATA)")
    data = REAL_TRIAGE.read_bytes()
    t = parse_triage(data)
    check_invariants(data, t)
    assert t["DriverCount"] == 151 and t["DataBlocksCount"] > 0
    _name_at, name, base, size = t["drivers"][0]
    assert name == "\\SystemRoot\\system32\\ntoskrnl.exe"
    assert base >> 44 == 0xFFFFF and size > 0x100000
    assert t["DriverListOffset"] + 0x90 * t["DriverCount"] <= t["StringPoolOffset"]


@pytest.mark.parametrize("machine", ["x64", "x86"])
def test_forged_triage_round_trip(tmp_path, machine):
    is64 = machine == "x64"
    base = 0xFFFFF80012300000 if is64 else 0x80400000
    hdr = forge.Header(machine=machine, pae=not is64, build=19041 if is64 else 7601,
                       bugcheck_code=0x1000007E, context_rsp=base + 0x8000)
    blocks = [(base + 0x1000 * i + 0x10 * i, os.urandom(0x100 + 0x333 * i)) for i in range(5)]
    drivers = [forge.TriageDriver("\\SystemRoot\\system32\\ntoskrnl.exe", base, 0x1046000,
                                  0x5F3E2A1B, 0xA5938C),
               ("\\SystemRoot\\System32\\drivers\\{guid}.sys", base + 0x2000000, 0x7000)]
    stack = (base + 0x7F00, os.urandom(0x200))
    kdbg = b"\0" * 0x10 + b"KDBG" + os.urandom(0x36C)
    path = tmp_path / "triage.dmp"
    layout = forge.write_triage(path, hdr, blocks, context_rip=base + 0x1234, drivers=drivers,
                                stack=stack, debugger_data=kdbg)
    data = path.read_bytes()
    t = parse_triage(data)
    check_invariants(data, t)
    assert len(data) == t["SizeOfDump"] == t["RequiredDumpSpace"] == layout.size
    assert len(data) >= (0x20000 if is64 else 0x10000)
    assert t["MiniDumpFields"] == 0x1 | 0x2 | 0x20 | 0x40 | 0x100 | 0x400 | 0x800
    ctx = t["ContextOffset"]
    rip, rsp = (struct.unpack_from("<Q", data, ctx + off)[0] for off in (0xF8, 0x98)) if is64 \
        else (struct.unpack_from("<I", data, ctx + off)[0] for off in (0xB8, 0xC4))
    assert (rip, rsp) == (base + 0x1234, base + 0x8000)
    assert [(va, size) for va, _o, size in t["blocks"]] == [(va, len(b)) for va, b in blocks]
    for (_va, offset, size), (_v, blob) in zip(t["blocks"], blocks, strict=True):
        assert data[offset:offset + size] == blob
    assert [(n, b, s) for _a, n, b, s in t["drivers"]] == [
        (drivers[0].name, base, 0x1046000), (drivers[1][0], base + 0x2000000, 0x7000)]
    so, ss = t["CallStackOffset"], t["SizeOfCallStack"]
    assert data[so:so + ss] == stack[1] and t["TopOfStack"] == stack[0] + ss
    dd = t["DebuggerDataOffset"]
    assert data[dd:dd + t["DebuggerDataSize"]] == kdbg
    assert data[0x2000 if is64 else 0x1000:][:4] != b"PAGE"
    runs_area = data[0x88:0x88 + 700] if is64 else data[0x64:0x64 + 700]
    assert runs_area == b"PAGE" * 175


def test_minimal_triage(tmp_path):
    for res in (forge.minimal_x64(tmp_path / "a.dmp", fmt="triage"),
                forge.minimal_x86(tmp_path / "b.dmp", fmt="triage")):
        data = res.path.read_bytes()
        t = parse_triage(data)
        check_invariants(data, t)
        assert res.stored == () and res.dump_type == 4
        for (va, offset, size), (bva, blob) in zip(t["blocks"], res.triage_blocks,
                                                   strict=True):
            assert va == bva and data[offset:offset + size] == blob
            m = next(m for m in res.mappings if m.va == va)
            assert blob == res.mem.read(m.pa, size)
