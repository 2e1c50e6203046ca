"""Who owns a pool tag, on real driver binaries mapped into a forged kernel.

How the tags were chosen (by reading the drivers with outside tools, not with ntdump):

* ``objdump -d winpmem_x64.sys`` (binutils) shows ``41 b8 50 4d 45 4d  mov $0x4d454d50,%r8d``
  at RVAs 0x113f0 and 0x1300d, each followed within three instructions by
  ``call *…(%rip) # 0x15000``; ``pefile`` names IAT slot 0x15000 ``ntoskrnl.exe!
  ExAllocatePoolWithTag``. 0x4d454d50 is the tag ``PMEM``. The same tag is pushed
  (``68 50 4d 45 4d``) four times in winpmem_x86.sys.
* Wine's drivers use no tagged pool: ``objdump -d`` finds no ``mov $imm32,%r8d`` with a printable
  tag, and ``pefile`` shows hidclass, hidparse, usbd, winebus, wineusb and winexinput importing
  the untagged ``ExAllocatePool`` (as ../shared/data/README.md also says). They are the owners of
  ``None`` and the distractors for ``PMEM``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import ntdump
from ntdump import forge

WINE_UNTAGGED = {"hidclass", "hidparse", "usbd", "winebus", "wineusb", "winexinput"}


def _dump(tmp_path: Path, shared: Path, arch: str) -> Path:
    machine = "x64" if arch == "x86_64" else "x86"
    wine = shared / "pe" / f"wine-{arch}"
    pmem = shared / "pe" / "winpmem" / f"winpmem_{'x64' if machine == 'x64' else 'x86'}.sys"
    names = ["ntoskrnl.exe", "hal.dll", "hidclass.sys", "winebus.sys", "usbd.sys", "ndis.sys"]
    files = [(n, wine / n) for n in names] + [("winpmem.sys", pmem)]
    if not all(f.is_file() for _, f in files):
        pytest.skip("Wine or WinPmem binaries missing")
    mem = forge.PhysicalMemory(runs=[(0x1, 0x9F), (0x100, 0x8000)])
    pt = forge.PageTables(mem, mode="x64" if machine == "x64" else "pae")
    base = 0xFFFFF80270000000 if machine == "x64" else 0xF5000000
    mods = []
    for name, f in files:
        data = f.read_bytes()
        mods.append((name, "\\SystemRoot\\system32\\drivers\\" + name, data, base))
        size = forge.image.parse_pe(data).size_of_image
        base = -(-(base + size + 0x1000) // 0x10000) * 0x10000
    build = 19041 if machine == "x64" else 7601
    lay = forge.build_kernel_space(pt, mem, machine=machine,
                                   family="win10" if machine == "x64" else "win7",
                                   build=build, modules=mods)
    forge.build_pool(pt, mem, machine=machine, build=build, kdbg_va=lay.kdbg,
                     tags=[*forge.STORY_TAGS, forge.PoolTag(b"PMEM", nonpaged_allocs=5,
                                                             nonpaged_frees=1, block_size=0x80)])
    path = tmp_path / f"owners-{machine}.dmp"
    forge.write_full(path, mem, lay.header())
    return path


@pytest.mark.parametrize("arch", ["x86_64", "i386"])
def test_owner_of_a_tag_is_the_driver(tmp_path: Path, shared_data: Path, arch: str) -> None:
    d = ntdump.open(_dump(tmp_path, shared_data, arch))
    o = d.pool.owners("PMEM")
    assert o["module"].iloc[0] == "winpmem"
    assert "mov r8d, imm32" in o["evidence"].iloc[0] if arch == "x86_64" else \
        "push imm32" in o["evidence"].iloc[0]
    assert o["score"].iloc[0] >= 20  # at least two code references
    assert list(o["score"]) == sorted(o["score"], reverse=True)
    u = d.pool.used()
    assert u[u["tag"] == "PMEM"]["owners"].iloc[0].startswith("winpmem")


@pytest.mark.parametrize("arch", ["x86_64", "i386"])
def test_owners_of_untagged_pool(tmp_path: Path, shared_data: Path, arch: str) -> None:
    d = ntdump.open(_dump(tmp_path, shared_data, arch))
    o = d.pool.owners("None")
    assert set(o["module"]) == WINE_UNTAGGED & {"hidclass", "winebus", "usbd"}
    assert all("ExAllocatePool" in e for e in o["evidence"])
    assert "winpmem" not in set(o["module"])


def test_owners_of_unknown_tag_is_empty(tmp_path: Path, shared_data: Path) -> None:
    d = ntdump.open(_dump(tmp_path, shared_data, "x86_64"))
    o = d.pool.owners("Zq9!")
    assert list(o.columns) == ["module", "evidence", "score"] and len(o) == 0
    with pytest.raises(ValueError):
        d.pool.owners("toolong")
