"""Issue 9: forge structures that follow the kernel — the page-table self-map and the loader's
removal of a driver's trailing discardable sections — and the reader on them.

Sources: the self-map (MiInitMachineDependent; PXE_SELFMAP 0x1ED on x64, PDE_BASE 0xC0300000 on
x86) and WRK ``base/ntos/mm/sysload.c`` MmFreeDriverInitialization ("all discardable sections at
the end of the driver are deleted"). pefile judges which sections are discardable.
"""

from __future__ import annotations

from pathlib import Path

import pefile
import pytest

import ntdump
from ntdump import forge
from ntdump.errors import TranslationError
from ntdump.forge import pe as fpe
from ntdump.forge import scenario as scen


def test_x64_self_map_translates_to_the_pml4(tmp_path: Path) -> None:
    p = tmp_path / "k.dmp"
    s = scen.win10_x64(p, fmt="full")
    assert s.pt.self_map_va == 0xFFFFF68000000000
    pml4_va = 0xFFFFF6FB7DBED000  # the PML4 seen through its own entry 0x1ED, four times
    with ntdump.open(p) as d:
        assert d.translate(pml4_va) == s.pt.dtb & ~0xFFF
        assert d.read(pml4_va, 0x1000) == d.read_phys(s.pt.dtb & ~0xFFF, 0x1000)
        # The PTE of the kernel's first page, through the self-map, is the hardware's entry.
        kb = s.layout.kernel_base
        pte_va = 0xFFFFF68000000000 + ((kb & 0xFFFFFFFFFFFF) >> 12) * 8
        want = s.pt.entries(kb)[-1][2]
        assert int.from_bytes(d.read(pte_va, 8), "little") == want


def test_pae_self_map(tmp_path: Path) -> None:
    """2003 x86 PAE: the four PDs at 0xC0600000 (PDE_BASE), page tables from 0xC0000000."""
    p = tmp_path / "k.dmp"
    s = scen.server2003_x86_pae(p, fmt="full")
    kb = s.layout.kernel_base
    walk = s.pt.entries(kb)  # [(level, entry PA, value)] pdpte, pde, pte
    with ntdump.open(p) as d:
        pde_va = 0xC0600000 + (kb >> 21) * 8
        pte_va = 0xC0000000 + (kb >> 12) * 8
        assert d.translate(pde_va) == walk[1][1]
        assert int.from_bytes(d.read(pde_va, 8), "little") == walk[1][2]
        assert int.from_bytes(d.read(pte_va, 8), "little") == walk[2][2]


def test_x86_self_map(tmp_path: Path) -> None:
    mem = forge.PhysicalMemory([(0x1, 0x9F), (0x100, 0x800)])
    pt = forge.PageTables(mem, "x86", self_map=True)
    pt.map(0x80400000, mem.alloc_page() << 12)
    assert pt.translate(0xC0300000) == pt.dtb  # PDE_BASE: the PD maps itself
    pt_page = pt.entries(0x80400000)[0][2] & ~0xFFF  # the page table behind the PDE
    assert pt.translate(0xC0000000 + (0x80400000 >> 12) * 4) == pt_page


def _driver(machine: str) -> bytes:
    return fpe.build_driver(
        "init.sys", machine=machine, imports={"ntoskrnl.exe": ["ExAllocatePool"]},
        exports=["Keep"],
        sections=[fpe.Section("INIT", b"\xcc" * 0x1800, fpe.CODE | fpe.DISCARDABLE)])


@pytest.mark.parametrize(("machine", "mode", "family"), [("x64", "x64", "win10"),
                                                         ("x86", "pae", "2003")])
def test_trailing_discardable_sections_are_gone(tmp_path: Path, machine: str, mode: str,
                                                family: str) -> None:
    drv = _driver(machine)
    pe = pefile.PE(data=drv)
    secs = sorted(pe.sections, key=lambda x: x.VirtualAddress)
    tail = []
    for sec in reversed(secs):
        if not sec.Characteristics & 0x02000000:
            break
        tail.append(sec.Name.rstrip(b"\0").decode())
    assert set(tail) >= {"INIT", ".reloc"}  # INIT and .reloc close the image
    first_gone = min(x.VirtualAddress for x in secs if x.Name.rstrip(b"\0").decode() in tail)
    x64 = machine == "x64"
    kbase, dbase = (0xFFFFF80002A00000, 0xFFFFF88000E00000) if x64 else (0x804D7000, 0xF7000000)
    mem = forge.PhysicalMemory([(0x1, 0x9F), (0x100, 0x2000)])
    pt = forge.PageTables(mem, mode)
    lay = forge.build_kernel_space(pt, mem, machine=machine, family=family, modules=[
        ("ntoskrnl.exe", r"\SystemRoot\system32\ntoskrnl.exe", fpe.build_kernel(machine=machine),
         kbase),
        ("hal.dll", r"\SystemRoot\system32\hal.dll", fpe.build_hal(machine=machine),
         kbase + 0x400000),
        ("init.sys", r"\SystemRoot\system32\drivers\init.sys", drv, dbase)])
    p = tmp_path / "k.dmp"
    forge.write_full(p, mem, lay.header())
    gone = lay.discarded["init.sys"]
    assert gone and gone[0] == dbase + first_gone
    with ntdump.open(p) as d:
        for va in gone:
            with pytest.raises(TranslationError):
                d.read(va, 1)
        m = d.modules["init.sys"]
        assert list(m.exports()["name"]) == ["Keep"]  # headers and kept sections still read
        assert m.timestamp == pe.FILE_HEADER.TimeDateStamp
