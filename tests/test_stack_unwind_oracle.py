"""The x64 unwind-data decoder against pefile, function by function, on every x64 PE in
../shared/data (Wine, Microsoft, WinPmem, corkami) and on synthetic functions covering every
unwind code the forge writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from ntdump import _native
from ntdump.forge import pe as fpe
from ntdump.forge.unwind import Function

pefile = pytest.importorskip("pefile")


def _x64_files(data_dir: Path) -> list[Path]:
    out = []
    for f in sorted((data_dir / "pe").rglob("*")):
        if not f.is_file():
            continue
        head = f.read_bytes()[:0x400]
        if head[:2] != b"MZ":
            continue
        try:
            p = pefile.PE(data=f.read_bytes(), fast_load=True)
        except pefile.PEFormatError:
            continue
        if p.FILE_HEADER.Machine == 0x8664:
            out.append(f)
    return out


def _pefile_codes(ui) -> list[tuple[int, int, int, int]]:
    """(CodeOffset, op, OpInfo, value) the way our decoder reports them, from pefile's objects."""
    out = []
    for c in ui.UnwindCodes:
        s = c.struct
        op = s.UnwindOp
        name = type(c).__name__
        if name == "PrologEpilogOpEpilogMarker":
            out.append((None, op, None, None))  # compared by op only (pefile's layout differs)
            continue
        info = getattr(s, "OpInfo", None)
        if info is None:
            info = getattr(s, "Reg", None)
        if info is None:
            info = getattr(s, "AllocSizeInQwordsMinus8", 0)
        if name in ("PrologEpilogOpAllocLarge", "PrologEpilogOpAllocSmall"):
            value = c.get_alloc_size()
        elif name in ("PrologEpilogOpSaveReg", "PrologEpilogOpSaveRegFar",
                      "PrologEpilogOpSaveXMM", "PrologEpilogOpSaveXMMFar"):
            value = c.get_offset()
        elif name == "PrologEpilogOpPushFrame":
            value = s.OpInfo
        else:
            value = 0
        out.append((s.CodeOffset, op, info, value))
    return out


def _compare(data: bytes) -> tuple[int, int, list[str]]:
    """Compare every function; returns (functions, codes compared, mismatches)."""
    p = pefile.PE(data=data, fast_load=True)
    p.parse_data_directories(directories=[pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_EXCEPTION"]])
    theirs = {e.struct.BeginAddress: e for e in getattr(p, "DIRECTORY_ENTRY_EXCEPTION", [])}
    ours = {row[0]: row for row in _native.unwind_functions(data)}
    bad: list[str] = []
    codes = 0
    if set(theirs) != set(ours):
        bad.append(f"function sets differ: {sorted(set(theirs) ^ set(ours))[:5]}")
    for begin in sorted(set(theirs) & set(ours)):
        e, (_, end, unwind, info, err) = theirs[begin], ours[begin]
        if (e.struct.EndAddress, e.struct.UnwindData) != (end, unwind):
            bad.append(f"{begin:#x}: bounds")
            continue
        ui = e.unwindinfo
        if ui is None or info is None:
            if (ui is None) != (info is None):
                bad.append(f"{begin:#x}: one side failed ({err})")
            continue
        ver, flags, prolog, count, fr, fo, ourcodes, chained, handler = info
        head = (ui.Version, ui.Flags, ui.SizeOfProlog, ui.CountOfCodes, ui.FrameRegister,
                ui.FrameOffset * 16)
        if head != (ver, flags, prolog, count, fr, fo):
            bad.append(f"{begin:#x}: header {head} != {(ver, flags, prolog, count, fr, fo)}")
        theirs_codes = _pefile_codes(ui)
        has_long_epilog = any(c[1] == 6 for c in theirs_codes) and ver == 2
        mine = [(o, op, i, v) for o, op, i, v in ourcodes]
        if has_long_epilog:
            # Version-2 epilog codes: pefile reads the first one as two slots when its OpInfo bit 0
            # is clear; compare the prologue codes (op != 6) only.
            theirs_codes = [c for c in theirs_codes if c[1] != 6]
            mine = [c for c in mine if c[1] != 6]
        else:
            mine = [(None, op, None, None) if op == 6 and ver == 2 else (o, op, i, v)
                    for o, op, i, v in mine]
        codes += len(mine)
        if theirs_codes != mine:
            bad.append(f"{begin:#x}: codes {theirs_codes} != {mine}")
        if ui.Flags & 4:
            fe = getattr(ui, "FunctionEntry", None)
            # pefile keeps the RVA of the chained RUNTIME_FUNCTION's BeginAddress field only.
            if chained is None or fe is None:
                bad.append(f"{begin:#x}: chained entry missing")
        elif ui.Flags & 3 and handler != getattr(ui, "ExceptionHandler", None):
            bad.append(f"{begin:#x}: handler {handler} != {getattr(ui, 'ExceptionHandler', None)}")
    return len(ours), codes, bad


def test_every_shared_x64_pe_agrees_with_pefile(shared_data):
    files = _x64_files(shared_data)
    assert len(files) >= 20, [f.name for f in files]  # Wine x64 (19), msft (2), WinPmem x64
    total = total_codes = 0
    for f in files:
        n, codes, bad = _compare(f.read_bytes())
        assert not bad, (f.name, bad[:5])
        total += n
        total_codes += codes
    # every RUNTIME_FUNCTION of every file was compared (7,168 functions, 21,130 codes)
    assert total > 6000 and total_codes > 20000


def test_chained_entries_match_the_parent_runtime_function(shared_data):
    """UNW_FLAG_CHAININFO: the parent RUNTIME_FUNCTION we decode is the one stored after the
    codes (read independently here from the raw file bytes through pefile's RVA mapping)."""
    f = shared_data / "pe" / "msft" / "Wdf01000.sys"
    if not f.is_file():
        pytest.skip("Wdf01000.sys not in the test data")
    data = f.read_bytes()
    p = pefile.PE(data=data, fast_load=True)
    seen = 0
    for begin, _end, unwind, info, _ in _native.unwind_functions(data):
        if info is None or not info[1] & 4:
            continue
        count = info[3]
        tail = unwind + 4 + 2 * ((count + 1) & ~1)
        raw = p.get_data(tail, 12)
        want = tuple(int.from_bytes(raw[i:i + 4], "little") for i in (0, 4, 8))
        assert info[7] == want, hex(begin)
        seen += 1
    assert seen > 500


def test_synthetic_functions_cover_every_code():
    """The forge's unwind zoo: every operation and both sizes of each, judged by pefile."""
    zoo = [
        Function("Trap", [("machframe", True), ("push", "rbp"), ("alloc", 0x158),
                          ("setfp", "rbp", 0x80)], calls=["Big"]),
        Function("Trap2", [("machframe", False), ("alloc", 0x28)], calls=["Big"]),
        Function("Big", [("push", "rbx"), ("push", "r12"), ("alloc", 0x80008),
                         ("save", "rsi", 0x20), ("save", "rdi", 0x80000),
                         ("savexmm", 6, 0x30), ("savexmm", 15, 0x100000)],
                 calls=["ntoskrnl.exe!KeBugCheckEx"]),
        Function("Mid", [("push", "r15"), ("alloc", 0x200)], calls=["Big"],
                 chain_saves=[("save", "r13", 0x30)]),
    ]
    data = fpe.build_driver("zoo.sys", functions=zoo)
    n, codes, bad = _compare(data)
    assert not bad, bad
    assert codes == 17
    assert n == 6  # DriverEntry, Trap, Trap2, Big, Mid and Mid's chained part
    ops = {c[1] for row in _native.unwind_functions(data) for c in row[3][6]}
    assert ops == {0, 1, 2, 3, 4, 5, 8, 9, 10}
    infos = {c[2] for row in _native.unwind_functions(data) for c in row[3][6] if c[1] == 1}
    assert infos == {0, 1}  # ALLOC_LARGE, 16- and 32-bit forms


def test_truncated_and_hostile_unwind_data_fail_cleanly():
    data = bytearray(fpe.build_driver("zoo.sys", functions=[
        Function("F", [("push", "rbx"), ("alloc", 0x28)], calls=["ntoskrnl.exe!KeBugCheckEx"])]))
    p = pefile.PE(data=bytes(data), fast_load=True)
    p.parse_data_directories(directories=[3])
    e = p.DIRECTORY_ENTRY_EXCEPTION[-1]
    off = p.get_offset_from_rva(e.struct.UnwindData)
    bad = bytearray(data)
    bad[off] = 0x07  # version 7
    rows = _native.unwind_functions(bytes(bad))
    assert any(r[3] is None and "version 7" in r[4] for r in rows)
    bad = bytearray(data)
    bad[off + 5] = 0x0B  # an undefined op (11) in the first code
    rows = _native.unwind_functions(bytes(bad))
    assert any(r[3] is None and "unknown unwind operation 11" in r[4] for r in rows)
    bad = bytearray(data)
    bad[off + 2] = 0xFF  # 255 code slots, running off the end of the section
    rows = _native.unwind_functions(bytes(bad))
    assert len(rows) == 2
