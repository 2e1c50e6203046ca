"""Issue 9: !vm "Physical Memory" when KDBG.MmNumberOfPhysicalPages is 0 (Windows 10 19041+).

The real Windows 10 19041 KDBG (the copy inside shared/data's triage dump) leaves
MmNumberOfPhysicalPages and eleven other memory-manager fields 0 but keeps MmPhysicalMemoryBlock;
``build_kernel_space(kdbg_real_zeros=True)`` forges exactly that. Physical Memory then comes from
the dump header's PhysicalMemoryBlock.NumberOfPages, or, where the header has none, from the
descriptor KDBG.MmPhysicalMemoryBlock points to — each named as the source.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

import ntdump
from ntdump.forge import kernel as fkernel
from ntdump.forge import scenario as scen


def test_real_19041_kdbg_leaves_these_fields_zero(triage_dump: Path) -> None:
    """The forge's list of zero fields is what the real kernel does."""
    with ntdump.open(triage_dump) as d:
        b = d.kdbg["bytes"]
        off = {n: o for n, o in fkernel._KDBG_FIELDS.items()}
        for name in fkernel.KDBG_ZERO_19041:
            assert struct.unpack_from("<Q", b, off[name])[0] == 0, name
        assert struct.unpack_from("<Q", b, 0x270)[0] != 0  # MmPhysicalMemoryBlock is kept


@pytest.mark.parametrize(("fmt", "source"), [("full", "dump header PhysicalMemoryBlock"),
                                             ("kernel", "KDBG.MmPhysicalMemoryBlock (0x270)")])
def test_physical_memory_on_19041(tmp_path: Path, fmt: str, source: str) -> None:
    p = tmp_path / "k.dmp"
    s = scen.win10_x64(p, fmt=fmt, kdbg_real_zeros=True)
    with ntdump.open(p) as d:
        kd = d.kdbg["bytes"]
        assert struct.unpack_from("<Q", kd, 0xF8)[0] == 0
        f = d.vm()["physical_memory"]
        assert f.pages == s.mem.page_count
        assert f.source.startswith(source), f.source
        assert d.vm().physical_memory_kb == s.mem.page_count * 4


def test_physical_memory_kdbg_first_when_set(tmp_path: Path) -> None:
    p = tmp_path / "k.dmp"
    s = scen.server2003_x86_pae(p, fmt="full")
    with ntdump.open(p) as d:
        f = d.vm()["physical_memory"]
        assert f.pages == s.mem.page_count
        assert f.source.startswith("KDBG.MmNumberOfPhysicalPages")


def test_real_full_dump_head(full_head: Path) -> None:
    """The head of a real Windows 10 19045 full dump: five runs, NumberOfPages 523,910 (the runs'
    sum, checked here from the raw bytes)."""
    raw = full_head.read_bytes()
    n, _, total = struct.unpack_from("<IIQ", raw, 0x88)
    runs = [struct.unpack_from("<QQ", raw, 0x98 + 16 * i) for i in range(n)]
    assert n == 5 and total == sum(c for _, c in runs) == 523_910
    with ntdump.open(full_head) as d:
        f = d.vm()["physical_memory"]
        assert f.pages == 523_910 and "PhysicalMemoryBlock" in f.source
