"""The crash stack of the real Windows 10 triage dump (../shared/data/dumps).

Facts of the dump: bug check 0x1000007E, the context's RIP 0xfffff8048b58334c in amdppm.sys, the
captured stack 0xffff8504`29890ee8 … 0xffff8504`29893000 (TRIAGE_DUMP.CallStackOffset /
TopOfStack). The triage dump holds no module images: amdppm.sys and Wdf01000.sys are in
../shared/data/pe/msft (same TimeDateStamp as the loaded modules), so the walk can unwind through
them when given the files; without them, it scans.

The judge of each frame here is independent of the walker: the instruction bytes before every
reported return address are decoded in this file (E8 rel32, or FF /2 with its ModRM/SIB/disp forms)
from the dump or the image file; a frame that is not just after a call must be marked "scan".
"""

from __future__ import annotations

from pathlib import Path

import pytest

import ntdump

pefile = pytest.importorskip("pefile")

RIP = 0xFFFFF8048B58334C


def _ff2_len(b: bytes) -> int | None:
    if len(b) < 2 or b[0] != 0xFF or (b[1] >> 3) & 7 != 2:
        return None
    mod, rm = b[1] >> 6, b[1] & 7
    if mod == 3:
        return 2
    n = 2
    if rm == 4:
        if len(b) < 3:
            return None
        n += 1
        if mod == 0 and b[2] & 7 == 5:
            n += 4
    n += {0: 4 if rm == 5 else 0, 1: 1, 2: 4}[mod]
    return n


def _is_after_call(code: bytes) -> bool:
    """``code`` = the 7 bytes before a return address."""
    if code[-5] == 0xE8:
        return True
    return any(_ff2_len(code[-n:]) == n for n in range(2, 8))


def _code_before(d: ntdump.Dump, va: int, files: dict[str, Path]) -> tuple[bytes, bool] | None:
    """The 7 bytes before ``va`` and whether they come from the image file (not the dump)."""
    try:
        return d.read(va - 7, 7), False
    except ntdump.NtdumpError:
        pass
    m = d.modules.at(va)
    if m is None or m.name not in files:
        return None
    p = pefile.PE(str(files[m.name]), fast_load=True)
    return p.get_data(va - 7 - m.base, 7), True


def _file_import_call(code: bytes) -> bool:
    """Windows 10 rewrites the import calls its dynamic value relocation table lists from the
    file's 6-byte ``FF 15 disp32`` to ``E8 rel32`` + 1 byte: in memory the return address is one
    byte before the end of the file's instruction (Wdf01000 has such a table)."""
    return code[-5:-3] == b"\xff\x15"


@pytest.fixture(scope="module")
def msft(shared_data) -> dict[str, Path]:
    d = shared_data / "pe" / "msft"
    return {n: d / n for n in ("amdppm.sys", "Wdf01000.sys") if (d / n).is_file()}


@pytest.mark.parametrize("with_images", [False, True])
def test_triage_stack_frames_are_return_addresses_or_scans(triage_dump, msft, with_images):
    if with_images and len(msft) < 2:
        pytest.skip("amdppm.sys / Wdf01000.sys not in the test data")
    with ntdump.open(triage_dump) as d:
        df = d.stack(images=msft if with_images else None)
        assert df["return_address"].iloc[0] == RIP
        assert df["how"].iloc[0] == "context"
        assert df["symbol"].iloc[0].startswith("amdppm")
        assert df["module"].iloc[0] == "amdppm"
        rng = d.stack_walk().stack_range
        assert rng is not None and rng[1] == 0xFFFF850429893000
        assert len(df) >= 5
        checked = 0
        for r in df.iloc[1:].itertuples():
            va = int(r.return_address)
            m = d.modules.at(va)
            assert m is not None, hex(va)  # a loaded module
            assert rng[0] <= int(r.sp) <= rng[1]
            got = _code_before(d, va, msft)
            if got is None:
                # No code bytes anywhere (ntoskrnl's code is not in a triage dump): the frame
                # must come from the unwind data of a module we hold (the previous frame's),
                # and lie in an executable section of its module (headers are in the dump).
                prev = df["module"].iloc[r.frame - 1]
                assert r.how == "scan" or prev + ".sys" in msft, (hex(va), r.how)
                secs = m.sections()
                rva = va - m.base
                inside = secs[(secs["rva"] <= rva) & (rva < secs["rva"] + secs["virtual_size"])]
                assert len(inside) == 1, hex(va)
                assert int(inside["characteristics"].iloc[0]) & 0x20000000, (hex(va), inside)
                continue
            code, from_file = got
            ok = _is_after_call(code) or (from_file and _file_import_call(code))
            assert ok or r.how == "scan", (hex(va), code.hex(), r.how)
            checked += ok
        assert checked >= (5 if with_images else 0)
        sps = df["sp"].tolist()
        assert sps == sorted(sps) and len(set(sps)) == len(sps)
        if with_images:
            # Unwound through amdppm and Wdf01000 with their own unwind data …
            assert set(df["how"].iloc[1:6]) == {"unwind"}
            assert {"amdppm", "Wdf01000"} <= set(df.loc[df["how"] == "unwind", "module"])
            # … until ntoskrnl, whose .pdata the triage dump does not hold: then a scan.
            assert any("ntoskrnl.exe" in w for w in df.attrs["warnings"])
        else:
            assert set(df["how"].iloc[1:]) == {"scan"}
            assert any("amdppm.sys" in w for w in df.attrs["warnings"])


def test_triage_unwind_agrees_with_the_scan(triage_dump, msft):
    """Every return address the scan finds in amdppm is one the unwinder reaches too."""
    if len(msft) < 2:
        pytest.skip("amdppm.sys / Wdf01000.sys not in the test data")
    with ntdump.open(triage_dump) as d:
        scan = d.stack()
        unwind = d.stack(images=msft)
        s = {int(v) for v, m in zip(scan["return_address"], scan["module"], strict=True)
             if m == "amdppm"}
        u = set(int(v) for v in unwind["return_address"])
        assert s and s <= u


def test_triage_k_text(triage_dump):
    from ntdump.kd import KdSession

    with ntdump.open(triage_dump) as d:
        out = KdSession(d).run("kn").splitlines()
        assert out[0].startswith("WARNING: Stack unwind information not available")
        assert out[1].startswith(" # Child-SP")
        assert out[2].startswith("00 ffff8504`29892120 ") and out[2].endswith("amdppm+0x334c")
        assert d.processors.empty or "prcb" in d.processors.columns
