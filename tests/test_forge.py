"""Unit tests of ntdump.forge: memory model, page tables, headers and file layouts.

These check the forge against the layouts written down in WINDOWS_INTERNALS.md, byte by
byte; test_forge_kdmp.py and test_forge_vol3.py check the files with outside readers.
"""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path

import pytest
from oracles import import_forge, kdmp_open, require, vol3_read_phys

forge = import_forge()
PAGE = 0x1000
DATA = Path(os.environ.get("NTDUMP_TEST_DATA",
                           Path(__file__).resolve().parents[2] / "shared" / "data"))


def u32(b: bytes, off: int) -> int:
    return struct.unpack_from("<I", b, off)[0]


def u64(b: bytes, off: int) -> int:
    return struct.unpack_from("<Q", b, off)[0]


# -- PhysicalMemory ---------------------------------------------------------------------------

def test_memory_geometry_and_validation():
    mem = forge.PhysicalMemory(runs=[(0x1, 0x9F), (0x100, 0x3FF00)])
    assert mem.runs == ((0x1, 0x9F), (0x100, 0x3FF00))
    assert mem.page_count == 0x9F + 0x3FF00
    assert mem.highest_pfn == 0x3FFFF
    assert mem.contains(0x1000) and not mem.contains(0) and not mem.contains(0xA0000)
    for bad in ([(0x10, 5), (0x12, 5)], [(0x100, 1), (0x10, 1)], [(0x1, 0)], []):
        with pytest.raises(ValueError):
            forge.PhysicalMemory(bad)


def test_memory_write_read_spanning_pages_and_runs():
    mem = forge.PhysicalMemory([(0x1, 2), (0x3, 2)])  # adjacent runs
    data = bytes(range(256)) * 40  # 10240 bytes: pages 1-3, across the run boundary
    mem.write(0x1800, data)
    assert mem.read(0x1800, len(data)) == data
    assert sorted(mem.pages) == [1, 2, 3]
    assert mem.read(0x1000, 0x800) == bytes(0x800)  # unwritten part of a page
    fresh = forge.PhysicalMemory([(0x1, 4)])
    assert fresh.read(0x2000, 0x2000) == bytes(0x2000) and not fresh.pages
    with pytest.raises(ValueError):
        mem.write(0x4FFF, b"ab")  # crosses the end of the last run
    with pytest.raises(ValueError):
        mem.read(0, 1)  # pfn 0 is a hole
    assert mem.read(0x4FFF, 1) == bytes(1)


def test_alloc_page_rule_is_lowest_free_above_0x10():
    mem = forge.PhysicalMemory([(0x1, 0x12), (0x20, 3)])  # pfns 0x1-0x12, 0x20-0x22
    mem.write(0x11 << 12, b"x")  # populated: skipped
    assert mem.alloc_page() == 0x10
    assert mem.alloc_page() == 0x12
    mem.reserve(0x20)
    assert mem.alloc_page() == 0x21
    assert mem.pages[0x21] == bytearray(PAGE)
    assert mem.alloc_page() == 0x22
    with pytest.raises(MemoryError):
        mem.alloc_page()


def test_alloc_pages_aligned_block_is_reserved_not_populated():
    mem = forge.PhysicalMemory([(0x1, 0x9F), (0x100, 0x2000)])
    mem.alloc_page()
    base = mem.alloc_pages(0x200, 0x200)
    assert base == 0x200 and 0x200 not in mem.pages
    assert mem.alloc_pages(0x200, 0x200) == 0x400
    assert mem.alloc_page() == 0x11  # single pages keep coming from the bottom
    with pytest.raises(MemoryError):
        mem.alloc_pages(0x4000, 1)


# -- PageTables -------------------------------------------------------------------------------

def _mem():
    return forge.PhysicalMemory([(0x1, 0x9F), (0x100, 0x7F00)])


def test_x64_valid_mappings_and_entries():
    mem = _mem()
    pt = forge.PageTables(mem, "x64")
    assert pt.dtb == 0x10 << 12
    pt.map(0xFFFFF80000001000, 0x123000, writable=False, nx=True)
    pt.map(0xFFFFF80000200000, 0x400000, 0x200000)
    pt.map(0xFFFFF88000000000, 0, 0x40000000)
    walk = pt.entries(0xFFFFF80000001234)
    assert [w[0] for w in walk] == ["pml4e", "pdpte", "pde", "pte"]
    assert walk[0][1] == pt.dtb + 0x1F0 * 8  # PML4 index of 0xFFFFF8... is 0x1F0
    for _name, epa, value in walk:
        assert mem.read_u64(epa) == value
    assert walk[-1][2] == 0x123000 | 0x61 | (1 << 63)  # P|A|D, not RW, NX
    assert walk[2][2] & 0xFFF == 0x63  # table entries: P|RW|A|D
    assert pt.entries(0xFFFFF80000200000)[-1][2] == 0x400000 | 0xE3  # PS
    assert [w[0] for w in pt.entries(0xFFFFF88000000000)] == ["pml4e", "pdpte"]
    assert pt.translate(0xFFFFF80000001234) == 0x123234
    assert pt.translate(0xFFFFF80000212345) == 0x412345
    assert pt.translate(0xFFFFF8803FFFFFFF) == 0x3FFFFFFF
    assert pt.translate(0xFFFFF80000002000) is None


def test_x64_software_entries():
    mem = _mem()
    pt = forge.PageTables(mem, "x64")
    pt.map_transition(0xFFFFF80000003000, 0x55000)
    value = pt.entries(0xFFFFF80000003000)[-1][2]
    assert value == 0x55000 | (1 << 11) | (4 << 5)
    assert value & 1 == 0 and value & (1 << 10) == 0
    epa = pt.set_entry(0xFFFFF80000004000, "pte", 0x1234_0000_0080)
    assert pt.entries(0xFFFFF80000004000)[-1] == ("pte", epa, 0x1234_0000_0080)
    pt.set_entry(0xFFFFF80000600000, "pde", 0x80)  # a demand-zero PDE
    assert pt.entries(0xFFFFF80000600000)[-1][0] == "pde"
    assert pt.translate(0xFFFFF80000003000) is None  # transition is not hardware-valid


def test_page_table_errors():
    pt = forge.PageTables(_mem(), "x64")
    pt.map(0xFFFFF80000200000, 0x400000, 0x200000)
    with pytest.raises(ValueError):
        pt.map(0xFFFFF80000201000, 0x1000)  # below a 2 MiB leaf
    with pytest.raises(ValueError):
        pt.map(0xFFFFF80000001000, 0x1800)  # unaligned pa
    with pytest.raises(ValueError):
        pt.map(0x0000800000000000, 0x1000)  # not canonical
    with pytest.raises(ValueError):
        pt.map(0xFFFFF80000400000, 0x400000, 0x400000)  # 4 MiB pages are x86 only
    with pytest.raises(ValueError):
        pt.set_entry(0x1000, "pml5e", 0)
    pae = forge.PageTables(_mem(), "pae")
    with pytest.raises(ValueError):
        pae.map(0x40000000, 0x40000000, 0x40000000)  # no 1 GiB pages in PAE
    with pytest.raises(ValueError):
        pae.set_entry(0x1000, "pml4e", 0)
    x86 = forge.PageTables(_mem(), "x86")
    with pytest.raises(ValueError):
        x86.map(0x1000, 0x1000, nx=True)
    with pytest.raises(ValueError):
        x86.map(0x1_0000_0000, 0x1000)


def test_pae_dtb_offset_and_pdpte_flags():
    mem = _mem()
    pt = forge.PageTables(mem, "pae", pdpt_offset=0x20)
    assert pt.dtb == (0x10 << 12) + 0x20 and pt.dtb % 32 == 0
    pt.map(0x80401000, 0x77000)
    pt.map(0x81000000, 0x600000, 0x200000)
    walk = pt.entries(0x80401000)
    assert [w[0] for w in walk] == ["pdpte", "pde", "pte"]
    assert walk[0][1] == pt.dtb + 2 * 8  # VA bits 31:30 = 2
    assert walk[0][2] & 0xFFF == 0x1  # only P in a PAE PDPTE
    assert pt.translate(0x81012345) == 0x612345
    with pytest.raises(ValueError):
        forge.PageTables(_mem(), "pae", pdpt_offset=0x10)


def test_x86_nonpae_four_byte_entries_and_4m_pages():
    mem = _mem()
    pt = forge.PageTables(mem, "x86")
    pt.map(0x80400000, 0x400000, 0x400000)
    pt.map(0x80001000, 0x9000)
    pde = pt.entries(0x80400000)
    assert pde == [("pde", pt.dtb + (0x80400000 >> 22) * 4, 0x4000E3)]
    pte = pt.entries(0x80001000)[-1]
    assert pte[1] % 4 == 0 and pte[2] == 0x9063
    assert mem.read(pte[1], 4) == struct.pack("<I", 0x9063)
    assert pt.translate(0x807FFFFF) == 0x7FFFFF


def test_map_data_returns_pas_and_copies():
    mem = _mem()
    pt = forge.PageTables(mem, "x64")
    data = os.urandom(PAGE + 10)
    pas = pt.map_data(0xFFFFF80000010000, data)
    assert len(pas) == 2
    assert mem.read(pas[0], PAGE) == data[:PAGE] and mem.read(pas[1], 10) == data[PAGE:]
    assert pt.translate(0xFFFFF80000011005) == pas[1] + 5
    big = pt.map_data(0xFFFFF80000200000, b"big", 0x200000)
    assert big[0] % 0x200000 == 0 and mem.read(big[0], 3) == b"big"


# -- Header -----------------------------------------------------------------------------------

def test_header64_fields_and_fill():
    hdr = forge.Header(dtb=0x1AD000, bugcheck_code=0x7E, bugcheck_params=(1, 2, 3, 4),
                       processors=4, ps_loaded_module_list=0xFFFFF80012340000,
                       kd_debugger_data_block=0xFFFFF80012350000, context_rip=0xAA,
                       context_rsp=0xBB, comment=b"hi")
    b = forge.build_header(hdr, 1, 0x12345000, runs=[(1, 2), (0x100, 3)])
    assert len(b) == 0x2000 and b[:8] == b"PAGEDU64"
    assert (u32(b, 8), u32(b, 0xC), u64(b, 0x10)) == (0xF, 19041, 0x1AD000)
    assert (u32(b, 0x30), u32(b, 0x34), u32(b, 0x38)) == (0x8664, 4, 0x7E)
    assert [u64(b, 0x40 + 8 * i) for i in range(4)] == [1, 2, 3, 4]
    assert u64(b, 0x80) == 0xFFFFF80012350000
    assert (u32(b, 0x88), u64(b, 0x90)) == (2, 5)
    assert (u64(b, 0x98), u64(b, 0xA0), u64(b, 0xA8), u64(b, 0xB0)) == (1, 2, 0x100, 3)
    assert u64(b, 0x348 + 0xF8) == 0xAA and u64(b, 0x348 + 0x98) == 0xBB
    assert u32(b, 0x348 + 0x34) == u32(b, 0x348 + 0x118) == 0x1F80  # MxCsr == FltSave.MxCsr
    assert u32(b, 0xF98) == 1 and u64(b, 0xFA0) == 0x12345000
    assert u64(b, 0xFA8) == forge.DEFAULT_SYSTEM_TIME
    assert b[0xFB0:0xFB3] == b"hi\0"
    # untouched fields keep the fill
    for off in (0x3C, 0x8C, 0x60, 0xFB4, 0xF9C, 0x103C, 0x1048, 0x1050, 0x1FFC):
        assert b[off:off + 4] == b"PAGE", hex(off)
    bitmap_hdr = forge.build_header(hdr, 5, 0x5000)
    assert bitmap_hdr[0x88:0x88 + 700] == b"PAGE" * 175


def test_header32_fields_and_fill():
    hdr = forge.Header(machine="x86", pae=True, build=2600, dtb=0x31F020, context_rip=0x804D1234,
                       context_rsp=0xF0000000, bugcheck_params=(5, 6, 7, 8))
    b = forge.build_header(hdr, 1, 0x9000, runs=[(1, 0x9F)])
    assert len(b) == 0x1000 and b[:8] == b"PAGEDUMP"
    assert (u32(b, 0xC), u32(b, 0x10), u32(b, 0x20)) == (2600, 0x31F020, 0x14C)
    assert [u32(b, 0x2C + 4 * i) for i in range(4)] == [5, 6, 7, 8]
    assert b[0x5C] == 1
    assert (u32(b, 0x64), u32(b, 0x68), u32(b, 0x6C), u32(b, 0x70)) == (1, 0x9F, 1, 0x9F)
    assert u32(b, 0x320 + 0xB8) == 0x804D1234 and u32(b, 0x320 + 0xC4) == 0xF0000000
    assert u32(b, 0xF88) == 1 and u64(b, 0xFA0) == 0x9000
    assert u64(b, 0xFC0) == forge.DEFAULT_SYSTEM_TIME
    for off in (0x3C, 0x74, 0x820, 0xF8C, 0xF90, 0xF9C, 0xFFC):
        assert b[off:off + 4] == b"PAGE", hex(off)
    with pytest.raises(ValueError):
        forge.build_header(forge.Header(machine="x86", dtb=1 << 32), 1, 0)
    with pytest.raises(ValueError):
        forge.Header(machine="arm64")


# -- File layouts -----------------------------------------------------------------------------

def _small(mode="x64"):
    mem = forge.PhysicalMemory([(0x1, 0x9F), (0x100, 0x100), (0x300, 0x40)])
    pt = forge.PageTables(mem, mode)
    for pfn in (0x1, 0x9F, 0x100, 0x1FF, 0x300, 0x33F):
        mem.write(pfn << 12, forge.stamp(0, pfn << 12))
    return mem, pt


def _offset_full(mem, header_size, pfn):
    offset = header_size
    for base, count in mem.runs:
        if base <= pfn < base + count:
            return offset + (pfn - base) * PAGE
        offset += count * PAGE
    raise AssertionError


@pytest.mark.parametrize("machine", ["x64", "x86"])
def test_full_layout(tmp_path, machine):
    mem, pt = _small("x64" if machine == "x64" else "pae")
    hdr = forge.Header(machine=machine, pae=machine == "x86", dtb=pt.dtb)
    path = tmp_path / "full.dmp"
    forge.write_full(path, mem, hdr)
    data = path.read_bytes()
    hs = hdr.header_size
    assert len(data) == hs + mem.page_count * PAGE
    assert u64(data, 0xFA0) == len(data)
    for pfn, page in mem.pages.items():
        off = _offset_full(mem, hs, pfn)
        assert data[off:off + PAGE] == page
    assert data[_offset_full(mem, hs, 0x120):][:PAGE] == bytes(PAGE)


@pytest.mark.parametrize("kind", ["full", "kernel"])
def test_bitmap_layout(tmp_path, kind):
    mem, pt = _small()
    pages = None if kind == "full" else [0x9F, 0x1, 0x300, 0x10, 0x301]
    path = tmp_path / "bmp.dmp"
    forge.write_bitmap(path, mem, forge.Header(dtb=pt.dtb), kind, pages=pages)
    data = path.read_bytes()
    assert u32(data, 0xF98) == (5 if kind == "full" else 6)
    sub = 0x2000
    assert data[sub:sub + 8] == (b"FDMP" if kind == "full" else b"SDMP") + b"DUMP"
    first, stored, bits = u64(data, sub + 0x20), u64(data, sub + 0x28), u64(data, sub + 0x30)
    assert bits == mem.highest_pfn + 1 and first % PAGE == 0
    want = sorted(mem.iter_pfns()) if pages is None else sorted(set(pages))
    assert stored == len(want) and len(data) == first + stored * PAGE == u64(data, 0xFA0)
    bitmap = data[sub + 0x38:sub + 0x38 + (bits + 31) // 32 * 4]
    got = [i for i in range(len(bitmap) * 8) if bitmap[i // 8] >> (i % 8) & 1]
    assert got == want
    for rank, pfn in enumerate(want):
        page = mem.pages.get(pfn, bytes(PAGE))
        assert data[first + rank * PAGE:first + (rank + 1) * PAGE] == page
    with pytest.raises(ValueError):
        forge.write_bitmap(path, mem, forge.Header(dtb=pt.dtb), "kernel", pages=[0xA0])


@pytest.mark.parametrize("dump_type", [8, 9, 0xA])
def test_range_layout(tmp_path, dump_type):
    mem, pt = _small()
    path = tmp_path / "rdmp.dmp"
    forge.write_range(path, mem, forge.Header(dtb=pt.dtb), dump_type)
    data = path.read_bytes()
    assert u32(data, 0xF98) == dump_type
    assert data[0x2000:0x200C] == struct.pack("<I", 0x40) + b"RDMPDUMP"
    meta, first = u64(data, 0x2010), u64(data, 0x2018)
    assert meta - 0x20 == first - 0x2040 and first % PAGE == 0 and meta % 16 == 0
    if dump_type == 0xA:
        assert u32(data, 0x2020) == 3 and u64(data, 0x2028) == mem.page_count
    table = [struct.unpack_from("<QQ", data, 0x2030 + 16 * i) for i in range(4)]
    assert table == [*mem.runs, (0, 0)]
    offset = first
    for base, count in mem.runs:
        for pfn in (base, base + count - 1):
            at = offset + (pfn - base) * PAGE
            assert data[at:at + PAGE] == mem.pages[pfn]
        offset += count * PAGE
    assert len(data) == offset == u64(data, 0xFA0)
    zero_run = forge.PhysicalMemory([(0, 4)])
    with pytest.raises(ValueError):
        forge.write_range(path, zero_run, forge.Header(), dump_type)
    with pytest.raises(ValueError):
        forge.write_range(path, mem, forge.Header(machine="x86"), dump_type)


def test_raw_layout(tmp_path):
    mem, _ = _small()
    path = tmp_path / "raw.bin"
    forge.write_raw(path, mem)
    data = path.read_bytes()
    assert len(data) == (mem.highest_pfn + 1) * PAGE
    for pfn, page in mem.pages.items():
        assert data[pfn * PAGE:(pfn + 1) * PAGE] == page


def test_minimal_results_are_deterministic(tmp_path):
    a = forge.minimal_x64(tmp_path / "a.dmp")
    b = forge.minimal_x64(tmp_path / "b.dmp")
    assert a.path.read_bytes() == b.path.read_bytes()
    assert a.sample_vas(50, seed=3) == b.sample_vas(50, seed=3)
    kinds = {m.kind for m in a.mappings}
    assert kinds == {"4k", "2m", "1g", "transition", "pagefile", "demand_zero", "prototype",
                     "none", "hole"}
    for va, pa in a.sample_vas(200, seed=1):
        assert a.pt.translate(va) == pa and a.is_stored(pa)
    x86 = forge.minimal_x86(tmp_path / "c.dmp", pae=False)
    assert {m.kind for m in x86.mappings} >= {"4k", "4m", "transition", "prototype"}
    for m in a.by_kind("4k") + x86.by_kind("4k"):
        res = a if m in a.mappings else x86
        assert res.expected_virtual(m.va, 16) == struct.pack("<QQ", m.va, m.pa)


def test_four_gib_full_dump_is_fast_and_sparse(tmp_path):
    """The one large test: a 4 GiB x64 full and bitmap dump, written sparse."""
    for fmt in ("full", "bitmap"):
        start = time.perf_counter()
        res = forge.minimal_x64(tmp_path / f"big_{fmt}.dmp", fmt=fmt, size=4 << 30)
        elapsed = time.perf_counter() - start
        st = os.stat(res.path)
        assert st.st_size > 4 * 10**9 and elapsed < 5
        assert st.st_blocks * 512 < 64 << 20  # sparse: only the written pages use disk
        base, count = res.mem.runs[-1]
        last = (base + count - 1) << 12
        require("kdmp_parser")
        parser = kdmp_open(res.path)
        assert parser.read_physical_page(last) == res.mem.read(last, PAGE)
        assert parser.read_physical_page(last - PAGE) == bytes(PAGE)
        require("volatility3")
        assert vol3_read_phys(res.path, last, PAGE) == res.mem.read(last, PAGE)
        os.unlink(res.path)


def test_header_fill_map_matches_a_real_full_dump():
    """Which 4-byte words of a 64-bit full-dump header keep the "PAGE" fill: the forge's
    header against the head of a real Windows 10 full dump (shared/data). They differ only
    where that writer set MiniDumpFields and Attributes/BootId, and where it left the tail of
    the EXCEPTION_RECORD unfilled (the forge zeroes the whole record, as dbgeng does)."""
    real_path = DATA / "dumps" / "win10-19045-x64-full-first16k.bin"
    if not real_path.exists():
        pytest.skip(f"real full-dump head not found at {real_path} (set NTDUMP_TEST_DATA)")
    real = real_path.read_bytes()[:0x2000]
    assert real[:8] == b"PAGEDU64" and u32(real, 0xF98) == 1
    runs = [struct.unpack_from("<QQ", real, 0x98 + 16 * i) for i in range(u32(real, 0x88))]
    ours = forge.build_header(forge.Header(dtb=u64(real, 0x10)), 1, 0x1000, runs=runs)

    def filled(buf):
        return {off for off in range(0, 0x2000, 4) if buf[off:off + 4] == b"PAGE"}

    assert filled(real) - filled(ours) == set(range(0xF1C, 0xF98, 4))
    assert filled(ours) - filled(real) == {0x1038, 0x1050, 0x1054}
    assert u32(real, 0x348 + 0x34) == u32(real, 0x348 + 0x118) == 0x1F80  # MxCsr twice
