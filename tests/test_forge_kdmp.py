"""kdmp-parser (an outside reader) against every 64-bit format the forge writes.

kdmp-parser reads 64-bit DumpTypes 1, 5, 6, 8, 9 and 0xA. For each, it must agree with the
forge's ground truth on the header fields, on the exact set of stored pages, on the bytes of
every populated page (and of a sample of zero pages), and on the translation of valid
4 KiB / 2 MiB / 1 GiB mappings. kdmp-parser follows only Present entries, so transition and
other software PTEs must come back untranslated. It reads neither 32-bit headers nor triage
dumps: the tests check that it refuses those, as it refuses the real Windows triage dump.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from oracles import import_forge, kdmp_open, kdmp_pages, require

forge = import_forge()
PAGE = 0x1000
FORMATS64 = ["full", "bitmap", "kernel", "range_kernel", "range_kernel_user", "range_full"]
REAL_TRIAGE = Path(os.environ.get("NTDUMP_TEST_DATA", Path(__file__).resolve().parents[2]
                                  / "shared" / "data")) / "dumps" / "win10-19041-x64-triage.dmp"


@pytest.fixture(autouse=True)
def _kdmp():
    require("kdmp_parser")


def _stored_pas(res) -> set[int]:
    return {pfn << 12 for base, count in res.stored for pfn in range(base, base + count)}


@pytest.fixture(scope="module", params=FORMATS64)
def forged(request, tmp_path_factory):
    res = forge.minimal_x64(tmp_path_factory.mktemp("kdmp") / f"{request.param}.dmp",
                            fmt=request.param, size=32 << 20)
    return res, kdmp_open(res.path)


def test_header_fields(forged):
    res, parser = forged
    h, hdr = parser.header, res.header
    assert parser.type == res.dump_type
    assert h.DirectoryTableBase == res.dtb == hdr.dtb
    assert h.BugCheckCode == hdr.bugcheck_code
    assert list(h.BugCheckCodeParameter) == list(hdr.bugcheck_params)
    assert h.KdDebuggerDataBlock == hdr.kd_debugger_data_block
    assert h.PsLoadedModuleList == hdr.ps_loaded_module_list
    assert h.PsActiveProcessHead == hdr.ps_active_process_head
    assert h.PfnDatabase == hdr.pfn_database
    assert (h.MajorVersion, h.MinorVersion) == (hdr.major_version, hdr.build)
    assert h.NumberProcessors == hdr.processors and h.MachineImageType == 0x8664
    assert h.RequiredDumpSpace == os.path.getsize(res.path)
    assert h.SystemTime == hdr.system_time
    assert (parser.context.Rip, parser.context.Rsp) == (hdr.context_rip, hdr.context_rsp)


def test_page_set_and_bytes(forged):
    res, parser = forged
    pages = kdmp_pages(parser)
    assert pages == _stored_pas(res)
    for pfn, content in res.mem.pages.items():
        pa = pfn << 12
        got = parser.read_physical_page(pa)
        if res.is_stored(pa):
            assert got == content, hex(pa)
        else:
            assert got is None
    rng = random.Random(7)
    zero = [pa for pa in sorted(pages) if pa >> 12 not in res.mem.pages]
    for pa in rng.sample(zero, min(64, len(zero))):
        assert parser.read_physical_page(pa) == bytes(PAGE)


def test_translation_of_valid_mappings(forged):
    res, parser = forged
    for va, pa in res.sample_vas(300, seed=11):
        assert parser.translate_virtual(va) == pa
    for m in res.mappings:
        probe = m.va + 0x7F8
        got = parser.translate_virtual(probe)
        if m.kind in ("4k", "2m", "1g", "hole"):
            assert got == m.pa + 0x7F8, m
            assert got == res.pt.translate(probe)
        else:  # transition, pagefile, demand_zero, prototype, none: not Present
            assert got is None, m
    for m in res.by_kind("4k"):
        page = parser.read_virtual_page(m.va)
        if res.is_stored(m.pa):
            assert page == res.mem.read(m.pa, PAGE)


def test_hand_built_memory_all_formats(tmp_path):
    """The write_* functions directly, on a layout with many runs and explicit page sets."""
    runs = [(0x1, 0x9F)] + [(0x100 + 0x80 * i, 0x40) for i in range(40)]
    mem = forge.PhysicalMemory(runs)
    pt = forge.PageTables(mem, "x64")
    data_pas = pt.map_data(0xFFFFF80000000000, os.urandom(20 * PAGE))
    pt.map(0xFFFFF80000400000, 0x200000 * 3, 0x200000)
    for base, count in runs:
        mem.write(((base + count) << 12) - 8, b"lastpage")
    hdr = forge.Header(dtb=pt.dtb, bugcheck_code=0x1E, bugcheck_params=(9, 8, 7, 6))
    subset = sorted(mem.pages)[::2]
    cases = {
        "full": (lambda p: forge.write_full(p, mem, hdr), mem.runs),
        "bitmap5": (lambda p: forge.write_bitmap(p, mem, hdr), mem.runs),
        "bitmap6": (lambda p: forge.write_bitmap(p, mem, hdr, "kernel", pages=subset),
                    [(pfn, 1) for pfn in subset]),
        "range8": (lambda p: forge.write_range(p, mem, hdr, 8, pages=subset),
                   [(pfn, 1) for pfn in subset]),
        "range9": (lambda p: forge.write_range(p, mem, hdr, 9), mem.runs),
        "rangeA": (lambda p: forge.write_range(p, mem, hdr, 0xA), mem.runs),
    }
    for name, (write, stored) in cases.items():
        path = tmp_path / f"{name}.dmp"
        write(path)
        parser = kdmp_open(path)
        want = {pfn << 12 for b, c in stored for pfn in range(b, b + c)}
        assert kdmp_pages(parser) == want, name
        for pa in want & {pfn << 12 for pfn in mem.pages}:
            assert parser.read_physical_page(pa) == mem.read(pa, PAGE), (name, hex(pa))
        if stored is mem.runs:  # the subsets leave page tables out
            assert parser.translate_virtual(0xFFFFF80000003123) == data_pas[3] + 0x123
            assert parser.translate_virtual(0xFFFFF800004ABCDE) == 0x600000 + 0xABCDE
        assert parser.header.BugCheckCode == 0x1E


@pytest.mark.parametrize("fmt", ["full", "triage"])
def test_refuses_what_it_cannot_read(tmp_path, fmt):
    """kdmp-parser reads neither 32-bit dumps nor triage dumps (also real ones)."""
    x86 = forge.minimal_x86(tmp_path / "x86.dmp", fmt=fmt)
    with pytest.raises(RuntimeError):
        kdmp_open(x86.path)
    if fmt == "triage":
        x64 = forge.minimal_x64(tmp_path / "x64_triage.dmp", fmt="triage")
        with pytest.raises(RuntimeError):
            kdmp_open(x64.path)
        if REAL_TRIAGE.exists():
            with pytest.raises(RuntimeError):
                kdmp_open(REAL_TRIAGE)
