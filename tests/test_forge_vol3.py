"""Volatility 3 (an outside reader) against the forge's 32- and 64-bit dumps.

Volatility 3's crash layer reads DumpType 1 and 5 with 32-bit (non-PAE and PAE) and 64-bit
headers. It must read the same physical bytes as the forge's ground truth. Its Windows
Intel layers (x86, PAE, x64) then check every prepared mapping, including what kdmp-parser
cannot: transition PTEs (valid for Volatility, PFN used directly) and paged-out PTEs
(reported as swapped, at PageFileHigh * 4096).
"""

from __future__ import annotations

import random

import pytest
from oracles import import_forge, require, vol3_read_phys, vol3_segments, vol3_translate

forge = import_forge()
PAGE = 0x1000
CASES = [("x86", "full"), ("x86", "bitmap"), ("pae", "full"), ("pae", "bitmap"),
         ("x64", "full"), ("x64", "bitmap")]


@pytest.fixture(autouse=True)
def _vol3():
    require("volatility3")


@pytest.fixture(scope="module", params=CASES, ids=["-".join(c) for c in CASES])
def forged(request, tmp_path_factory):
    mode, fmt = request.param
    path = tmp_path_factory.mktemp("vol3") / f"{mode}_{fmt}.dmp"
    if mode == "x64":
        return forge.minimal_x64(path, fmt=fmt, size=32 << 20)
    return forge.minimal_x86(path, pae=mode == "pae", fmt=fmt, size=32 << 20)


def test_segments_are_the_stored_runs(forged):
    segs = [(pa, length) for pa, _off, length in vol3_segments(forged.path)]
    assert segs == [(b * PAGE, c * PAGE) for b, c in forged.stored]


def test_physical_bytes(forged):
    for pfn, content in forged.mem.pages.items():
        assert vol3_read_phys(forged.path, pfn << 12, PAGE) == content, hex(pfn)
    rng = random.Random(5)
    for _ in range(64):
        base, count = rng.choice(forged.stored)
        pa = (base + rng.randrange(count)) * PAGE + rng.randrange(PAGE - 64)
        assert vol3_read_phys(forged.path, pa, 64) == forged.mem.read(pa, 64)
    from volatility3.framework import exceptions

    hole = forged.by_kind("hole")[0].pa
    with pytest.raises(exceptions.InvalidAddressException):
        vol3_read_phys(forged.path, hole, 8)


def test_translation_of_every_mapping_kind(forged):
    mode = forged.mode
    for va, pa in forged.sample_vas(100, seed=2):
        assert vol3_translate(forged.path, va, mode) == ("valid", pa)
    for m in forged.mappings:
        probe = m.va + 0x10
        state, value = vol3_translate(forged.path, probe, mode)
        if m.kind in ("4k", "2m", "4m", "1g", "hole", "transition"):
            assert (state, value) == ("valid", m.pa + 0x10), m
        elif m.kind == "pagefile":
            assert (state, value) == ("swapped", 0x1234 * PAGE), m
        else:  # demand_zero, prototype, none
            assert state == "invalid", m
    for m in forged.by_kind("4k"):
        assert vol3_read_phys(forged.path, m.pa, 16) == forge.stamp(m.va, m.pa)[:16]


def test_type6_is_not_read_by_volatility(tmp_path):
    res = forge.minimal_x64(tmp_path / "kernel.dmp", fmt="kernel", size=16 << 20)
    with pytest.raises(ValueError, match="unsupported dump format 0x6"):
        vol3_read_phys(res.path, 0x1000, 8)


@pytest.mark.parametrize("machine", ["x64", "x86"])
def test_bitmap_with_partial_last_byte(tmp_path, machine):
    """BitmapSize = highest PFN + 1 need not be a multiple of 8: Volatility must still see
    the last pages (kdmp-parser drops them, see docs/forge.md)."""
    mem = forge.PhysicalMemory([(0x1, 0x9F), (0x100, 0x1003)])  # BitmapSize 0x1103
    pt = forge.PageTables(mem, "x64" if machine == "x64" else "pae")
    for pfn in (0x10F8, 0x1100, 0x1102):
        mem.write(pfn << 12, forge.stamp(0, pfn << 12))
    path = tmp_path / "bmp.dmp"
    forge.write_bitmap(path, mem, forge.Header(machine=machine, pae=machine == "x86",
                                               dtb=pt.dtb))
    assert vol3_segments(path)[-1][0:3:2] == (0x100 * PAGE, 0x1003 * PAGE)
    for pfn in (0x10F8, 0x1100, 0x1102):
        assert vol3_read_phys(path, pfn << 12, PAGE) == mem.pages[pfn]
