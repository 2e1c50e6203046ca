"""The reader against outside readers: kdmp-parser (64-bit) and Volatility 3 (32- and 64-bit) on
every format the forge writes, plus the forge's own ground truth for what neither reads."""

from __future__ import annotations

import random

import pytest

import ntdump
from ntdump import forge
from tests.oracles import kdmp_open, kdmp_pages, require, vol3_read_phys

FORMATS64 = ["full", "bitmap", "kernel", "range_kernel", "range_kernel_user", "range_full"]


@pytest.fixture(scope="module", params=FORMATS64)
def forged64(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("f64") / f"{request.param}.dmp"
    return forge.minimal_x64(path, fmt=request.param, size=48 << 20)


def test_kdmp_parser_header_fields(forged64):
    require("kdmp_parser")
    k = kdmp_open(forged64.path)
    with ntdump.open(forged64.path) as d:
        i = d.info
        h = k.header
        assert i.dump_type == int(k.type)
        assert i.dtb == h.DirectoryTableBase
        assert i.build == h.MinorVersion
        assert i.processors == h.NumberProcessors
        assert i.bugcheck_code == h.BugCheckCode
        assert list(i.bugcheck_params) == list(h.BugCheckCodeParameter)
        assert i.kd_debugger_data_block == h.KdDebuggerDataBlock
        assert i.ps_loaded_module_list == h.PsLoadedModuleList
        assert i.ps_active_process_head == h.PsActiveProcessHead
        assert i.system_time == h.SystemTime
        assert i.context["rip"] == k.context.Rip
        assert i.context["rsp"] == k.context.Rsp


def test_kdmp_parser_same_pages_same_bytes(forged64):
    require("kdmp_parser")
    k = kdmp_open(forged64.path)
    theirs = kdmp_pages(k)
    with ntdump.open(forged64.path) as d:
        ours = {(b + j) << 12 for b, c in d.info.runs for j in range(c)}
        assert ours == theirs
        for pa in sorted(theirs):
            assert d.read_phys(pa, 0x1000) == bytes(k.read_physical_page(pa)), hex(pa)


def test_kdmp_parser_translations(forged64):
    require("kdmp_parser")
    k = kdmp_open(forged64.path)
    samples = forged64.sample_vas(1200, seed=7)
    assert len(samples) == 1200
    with ntdump.open(forged64.path) as d:
        ours = [d._d.translate(va) for va, _ in samples]
        for (va, pa), got in zip(samples, ours, strict=True):
            assert got == pa, hex(va)
            assert k.translate_virtual(va) == pa, hex(va)
        # Reads through the translation agree with kdmp-parser's virtual page reads.
        for va, _ in samples[:64]:
            page = va & ~0xFFF
            assert d.read(page, 0x1000) == bytes(k.read_virtual_page(page))


def test_software_ptes_typed_errors(forged64):
    with ntdump.open(forged64.path) as d:
        for m in forged64.mappings:
            if m.kind == "transition":
                assert d.translate(m.va) == m.pa
                assert d.read(m.va, 16) == forge.stamp(m.va, m.pa)[:16]
                assert d.walk(m.va).steps[-1].kind == "transition"
            elif m.kind in ("pagefile", "demand_zero", "prototype"):
                with pytest.raises(ntdump.PageNotPresentError) as e:
                    d.read(m.va, 8)
                want = {"pagefile": "paged out", "demand_zero": "demand zero"}.get(m.kind, m.kind)
                assert e.value.kind == want
                assert e.value.level == "pte"
                assert e.value.va == m.va
                assert isinstance(e.value.pte, int) and e.value.pte != 0
            elif m.kind == "hole":
                with pytest.raises(ntdump.PageNotInDumpError) as e:
                    d.read(m.va, 8)
                assert e.value.pa == m.pa


@pytest.mark.parametrize("pae", [True, False], ids=["pae", "nonpae"])
@pytest.mark.parametrize("fmt", ["full", "bitmap"])
def test_volatility3_reads_same_physical_bytes_32(tmp_path, pae, fmt):
    require("volatility3")
    r = forge.minimal_x86(tmp_path / "x86.dmp", pae=pae, fmt=fmt, size=32 << 20)
    rng = random.Random(3)
    with ntdump.open(r.path) as d:
        i = d.info
        assert i.machine == "x86" and i.pae == pae and i.dtb == r.dtb
        pas = [(b + rng.randrange(c)) << 12 for b, c in i.runs for _ in range(20)]
        pas += [m.pa for m in r.mappings if m.pa is not None and r.is_stored(m.pa)]
        for pa in pas:
            assert d.read_phys(pa, 64) == vol3_read_phys(r.path, pa, 64), hex(pa)
        for va, pa in r.sample_vas(300, seed=1):
            assert d.translate(va) == pa
        for m in r.mappings:
            if m.kind == "transition":
                assert d.translate(m.va) == m.pa


@pytest.mark.parametrize("fmt", ["full", "bitmap"])
def test_volatility3_reads_same_physical_bytes_64(tmp_path, fmt):
    require("volatility3")
    r = forge.minimal_x64(tmp_path / "x64.dmp", fmt=fmt, size=32 << 20)
    rng = random.Random(5)
    with ntdump.open(r.path) as d:
        pas = [(b + rng.randrange(c)) << 12 for b, c in d.info.runs for _ in range(30)]
        for pa in pas:
            assert d.read_phys(pa, 128) == vol3_read_phys(r.path, pa, 128), hex(pa)


def _selfmapped_raw(path, mode):
    """A raw image whose top-level table maps itself as Windows does (WINDOWS_INTERNALS §2.5)."""
    mem = forge.PhysicalMemory(runs=[(0, 0x1000)])
    pt = forge.PageTables(mem, mode=mode)
    if mode == "x64":
        vas = [0xFFFFF80000000000 + i * 0x1000 for i in range(4)] + [0xFFFFFA8000000000]
    else:
        vas = [0x00400000, 0x40000000, 0x80400000, 0x80401000, 0xC1000000]
    truth = {}
    for va in vas:
        (pa,) = pt.map_data(va, va.to_bytes(8, "little") * 512)
        truth[va] = pa
    if mode == "x64":
        pt.set_entry(0xFFFFF68000000000, "pml4e", pt.dtb | 0x63)  # PML4 index 0x1ED
    elif mode == "x86":
        pt.set_entry(0xC0000000, "pde", pt.dtb | 0x63)  # PD index 0x300
    else:
        root = pt.dtb & ~0x1F
        pdpt = [int.from_bytes(mem.read(root + 8 * i, 8), "little") for i in range(4)]
        for i, e in enumerate(pdpt):
            pt.set_entry(0xC0000000 + i * 0x200000, "pde", (e & ~0xFFF) | 0x63)
    forge.write_raw(path, mem)
    return pt, truth


@pytest.mark.parametrize("mode", ["x64", "pae", "x86"])
def test_raw_images_dtb_discovered(tmp_path, mode):
    path = tmp_path / "img.raw"
    pt, truth = _selfmapped_raw(path, mode)
    with ntdump.open(path) as d:
        assert d.info.layout == "raw"
        assert d.mode == mode
        assert d.info.dtb == pt.dtb
        for va, pa in truth.items():
            assert d.translate(va + 0x18) == pa + 0x18
            assert d.read(va, 8) == va.to_bytes(8, "little")
    machine = "x64" if mode == "x64" else "x86"
    with ntdump.open(path, raw=True, machine=machine, pae=mode == "pae", dtb=pt.dtb) as d:
        for va, pa in truth.items():
            assert d.translate(va) == pa
    # Without a self-map there is nothing to find: a clear error, not a guess.
    r = forge.minimal_x64(tmp_path / "noself.raw", fmt="raw", size=16 << 20)
    with pytest.raises(ntdump.DumpFormatError, match="dtb="):
        ntdump.open(r.path)


def test_triage_shaped_forged(tmp_path):
    r = forge.minimal_x64(tmp_path / "t.dmp", fmt="triage")
    with ntdump.open(r.path) as d:
        assert d.info.dump_type == 4
        for va, data in r.triage_blocks:
            assert d.read(va, len(data)) == data
