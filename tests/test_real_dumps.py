"""Real Windows dumps (../shared/data/dumps): facts checked by others with Microsoft's debugger."""

from __future__ import annotations

import struct

import pytest

import ntdump


def test_triage_header(triage_dump):
    with ntdump.open(triage_dump) as d:
        i = d.info
        assert i.machine == "x64"
        assert i.pae is False
        assert i.build == 19041
        assert i.dump_type == 4
        assert i.layout == "triage"
        assert i.dtb == 0x1AD000
        assert i.ps_loaded_module_list == 0xFFFFF8047C62A390
        assert i.kd_debugger_data_block == 0xFFFFF8047C600B20
        assert i.bugcheck_code == 0x1000007E
        assert i.bugcheck_params == (
            0xFFFFFFFFC0000005,
            0xFFFFF8048B58334C,
            0xFFFF850429891EE8,
            0xFFFF850429891720,
        )
        assert i.processors == 16
        assert i.context["rip"] == 0xFFFFF8048B58334C
        assert i.system_datetime is not None and i.system_datetime.year == 2021
        assert i.runs == []


def _data_blocks(path):
    """Parse the TRIAGE_DATA_BLOCK table independently (struct, offsets from ntiodump.h)."""
    b = path.read_bytes()
    off, count = struct.unpack_from("<II", b, 0x2000 + 0x78)
    for k in range(count):
        va, foff, size = struct.unpack_from("<QII", b, off + 16 * k)
        yield va, b[foff : foff + size]


def test_triage_data_blocks_by_va(triage_dump):
    blocks = list(_data_blocks(triage_dump))
    assert len(blocks) == 0x727
    with ntdump.open(triage_dump) as d:
        checked = 0
        for va, data in blocks[::7]:
            assert d.read(va, len(data)) == data
            checked += 1
        assert checked > 200
        # The KDBG copy is readable at the header's KDBG VA and carries its owner tag.
        kdbg = d.read(d.info.kd_debugger_data_block, 0x20)
        assert kdbg[0x10:0x14] == b"KDBG"
        # Memory nobody captured: a typed error naming the VA.
        with pytest.raises(ntdump.TranslationError) as e:
            d.read(0xFFFFF80000000000, 8)
        assert e.value.va == 0xFFFFF80000000000


def test_triage_stack_copy(triage_dump):
    with ntdump.open(triage_dump) as d:
        rsp = d.info.context["rsp"]
        # The captured stack holds RSP; an 8-byte read there succeeds.
        assert len(d.read(rsp, 8)) == 8


def test_full_head_parses_and_fails_cleanly(full_head):
    with ntdump.open(full_head) as d:
        i = d.info
        assert i.dump_type == 1 and i.machine == "x64" and i.build == 19045
        assert i.header_runs is not None and len(i.header_runs) == 5
        assert sum(c for _, c in i.header_runs) == struct.unpack_from(
            "<Q", full_head.read_bytes(), 0x90
        )[0]
        assert i.truncated
        # Only two pages of run 0 fit in the 16 KiB head (0x2000 header + 2 pages).
        assert i.runs == [(2, 2)]
        assert d.read_phys(0x2000, 0x2000) == full_head.read_bytes()[0x2000:0x4000]
        for base, count in i.header_runs:
            for pfn in (base + 2, base + count - 1):
                if pfn < 4:
                    continue
                with pytest.raises(ntdump.PageNotInDumpError) as e:
                    d.read_phys(pfn << 12, 16)
                assert e.value.pa == pfn << 12
        assert d.read_phys(0x4000, 0x10, pad=True) == bytes(16)
        # Translation needs the PML4 at the DTB, which the head does not hold.
        with pytest.raises(ntdump.PageNotInDumpError):
            d.translate(0xFFFFF8071EC422B0)


def test_kdmp_parser_agrees_on_real_full_head(full_head):
    pytest.importorskip("kdmp_parser")
    import kdmp_parser

    try:
        k = kdmp_parser.KernelDumpParser(full_head)
    except RuntimeError:
        pytest.skip("kdmp-parser refuses the truncated head (it requires the whole file)")
    with ntdump.open(full_head) as d:
        assert k.header.MinorVersion == d.info.build
        assert k.header.BugCheckCode == d.info.bugcheck_code
