"""Issue 9: module timestamps and LoadedImports as the kernel leaves its loader entries.

Before Windows 8, LDR_DATA_TABLE_ENTRY's TimeDateStamp shares its slot with LoadedImports (a union:
Volatility 2's PDB-generated xp_sp3_x86 / win2003_sp2_x64 / win7_sp1_x64 overlays give both names
one offset), and in a kernel module list the slot holds LoadedImports. The forge writes it as the
memory manager does (ReactOS ``ntoskrnl/mm/ARM3/sysldr.c`` MiBuildImportsForBootDrivers; WRK
``base/ntos/mm/sysload.c``): the kernel and the HAL ``(ULONG_PTR)-1``, no import beyond them
``(ULONG_PTR)-2``, one import = its entry | 1, more = ``LOAD_IMPORTS {Count, Entry[]}``. The
reader must take the timestamp from the image's PE header (pefile is the judge here) and decode
LoadedImports.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pefile
import pytest

import ntdump
from ntdump import forge
from ntdump.forge import pe as fpe

FAMILIES = [("xp", "x86", "x86"), ("2003", "x86", "pae"), ("win7", "x64", "x64"),
            ("win10", "x64", "x64")]


def _build(path: Path, family: str, machine: str, mode: str, *, missing: dict | None = None):
    x64 = machine == "x64"
    kbase, dbase = (0xFFFFF80002A00000, 0xFFFFF88000E00000) if x64 else (0x804D7000, 0xF7000000)
    step = 0x40000
    drv = [
        ("lib.sys", fpe.build_driver("lib.sys", machine=machine, dll=True,
                                     exports=["LibA", "LibB"], timestamp=0x4A5BC111)),
        ("lib2.sys", fpe.build_driver("lib2.sys", machine=machine, dll=True, exports=["Lib2"],
                                      imports={"ntoskrnl.exe": ["KeBugCheckEx"]},
                                      timestamp=0x4A5BC222)),
        ("one.sys", fpe.build_driver("one.sys", machine=machine,
                                     imports={"ntoskrnl.exe": ["ExAllocatePool"],
                                              "lib.sys": ["LibA"]}, timestamp=0x4A5BC333)),
        ("two.sys", fpe.build_driver("two.sys", machine=machine,
                                     imports={"lib.sys": ["LibB"], "lib2.sys": ["Lib2"],
                                              "hal.dll": ["HalX"]}, timestamp=0x4A5BC444)),
        ("ntonly.sys", fpe.build_driver("ntonly.sys", machine=machine,
                                        imports={"ntoskrnl.exe": ["ExFreePool"]},
                                        timestamp=0x4A5BC555)),
        ("none.sys", fpe.build_driver("none.sys", machine=machine, imports={},
                                      timestamp=0x4A5BC666)),
        ("boot.sys", fpe.build_driver("boot.sys", machine=machine,
                                      imports={"lib.sys": ["LibA"]}, timestamp=0x4A5BC777)),
    ]
    mods = [("ntoskrnl.exe", r"\SystemRoot\system32\ntoskrnl.exe",
             fpe.build_kernel(machine=machine), kbase),
            ("hal.dll", r"\SystemRoot\system32\hal.dll",
             fpe.build_driver("hal.dll", machine=machine, dll=True, exports=["HalX"],
                              imports={"ntoskrnl.exe": ["KeBugCheckEx"]}, timestamp=0x4A5BC000),
             kbase + 0x400000)]
    mods += [(n, rf"\SystemRoot\system32\drivers\{n}", b, dbase + i * step)
             for i, (n, b) in enumerate(drv)]
    mem = forge.PhysicalMemory([(0x1, 0x9F), (0x100, 0x4000)])
    pt = forge.PageTables(mem, mode)
    lay = forge.build_kernel_space(pt, mem, machine=machine, family=family, modules=mods,
                                   boot_loaded=("boot.sys",), missing_pages=missing)
    forge.write_full(path, mem, lay.header())
    return lay, {n: b for n, _, b, _ in mods}


WANT = {"ntoskrnl.exe": "boot loaded", "hal.dll": "boot loaded", "lib.sys": "no imports",
        "lib2.sys": "no imports", "one.sys": ("lib",), "two.sys": ("lib", "lib2"),
        "ntonly.sys": "no imports", "none.sys": "no imports", "boot.sys": "boot loaded"}


@pytest.mark.parametrize(("family", "machine", "mode"), FAMILIES, ids=[f[0] for f in FAMILIES])
def test_timestamps_and_loaded_imports(tmp_path: Path, family: str, machine: str,
                                       mode: str) -> None:
    p = tmp_path / "k.dmp"
    lay, files = _build(p, family, machine, mode)
    # The forge's ground truth follows MiBuildImportsForBootDrivers' rule.
    assert {m.name: m.loaded_imports for m in lay.modules} == {
        k: (tuple(f"{x}.sys" for x in v) if isinstance(v, tuple) else v)
        for k, v in WANT.items()}
    with ntdump.open(p) as d:
        ms = d.modules
        assert [m.name for m in ms] == [m.name for m in lay.modules]
        for m in ms:
            # pefile is the judge of the image's TimeDateStamp.
            assert m.timestamp == pefile.PE(data=files[m.name]).FILE_HEADER.TimeDateStamp
            assert m.timestamp_source == "pe header"
            assert m.loaded_imports == WANT[m.name], m.name
        assert [m.name for m in ms.dependents("lib")] == ["one.sys", "two.sys"]
        assert ms.dependents("nt") == []
        df = ms.to_frame()
        assert list(df["loaded_imports"]) == [", ".join(v) if isinstance(v, tuple) else v
                                              for v in (WANT[n] for n in df["name"])]
        assert set(df["timestamp_source"]) == {"pe header"}


@pytest.mark.parametrize(("family", "machine", "mode"), FAMILIES, ids=[f[0] for f in FAMILIES])
def test_loader_slot_raw_values(tmp_path: Path, family: str, machine: str, mode: str) -> None:
    """The union slot holds the kernel's LoadedImports values, not a timestamp."""
    p = tmp_path / "k.dmp"
    lay, _ = _build(p, family, machine, mode)
    ptr = 8 if machine == "x64" else 4
    off = {"xp": 0x44, "2003": 0x44, "win7": 0x80, "win10": 0x88}[family]
    with ntdump.open(p) as d:
        by = {m.name: m for m in lay.modules}
        raw = {n: int.from_bytes(d.read(m.ldr_entry + off, ptr), "little") for n, m in by.items()}
        full = (1 << 8 * ptr) - 1
        assert raw["ntoskrnl.exe"] == raw["hal.dll"] == raw["boot.sys"] == full
        assert raw["none.sys"] == raw["ntonly.sys"] == full - 1
        assert raw["one.sys"] == by["lib.sys"].ldr_entry | 1
        arr = raw["two.sys"]
        assert arr & 1 == 0
        count, e0, e1 = struct.unpack("<QQQ" if ptr == 8 else "<III", d.read(arr, 3 * ptr))
        assert (count, e0, e1) == (2, by["lib.sys"].ldr_entry, by["lib2.sys"].ldr_entry)
        # LoadCount: one per importer listing the module (lib: one.sys, two.sys).
        lc_off = 0x6C if ptr == 8 else 0x38
        assert struct.unpack("<H", d.read(by["lib.sys"].ldr_entry + lc_off, 2))[0] == 3


@pytest.mark.parametrize(("family", "machine", "mode", "source"),
                         [("xp", "x86", "x86", "unavailable"),
                          ("win7", "x64", "x64", "unavailable"),
                          ("win10", "x64", "x64", "loader entry")])
def test_header_paged_out(tmp_path: Path, family: str, machine: str, mode: str,
                          source: str) -> None:
    """No readable PE header: Windows 10's entry has a real TimeDateStamp field; before Windows 8
    the slot is LoadedImports, so there is no timestamp (0) rather than a wrong one."""
    p = tmp_path / "k.dmp"
    _, files = _build(p, family, machine, mode, missing={"lib2.sys": [0]})
    with ntdump.open(p) as d:
        m = d.modules["lib2.sys"]
        assert m.timestamp_source == source
        want = pefile.PE(data=files["lib2.sys"]).FILE_HEADER.TimeDateStamp
        assert m.timestamp == (want if source == "loader entry" else 0)
        assert d.modules["one.sys"].timestamp_source == "pe header"


def test_story_scenarios_timestamps(tmp_path: Path) -> None:
    """The founding-story dumps (2003 x86 PAE and 10 x64): every module's timestamp is its
    image's."""
    from ntdump.forge import scenario as scen
    for make in (scen.server2003_x86_pae, scen.win10_x64):
        p = tmp_path / f"{make.__name__}.dmp"
        s = make(p, fmt="full")
        with ntdump.open(p) as d:
            for m, truth in zip(d.modules, s.layout.modules, strict=True):
                assert m.timestamp == truth.image.timestamp, m.name
                assert m.loaded_imports == (truth.loaded_imports if isinstance(
                    truth.loaded_imports, str) else tuple(
                    n.rsplit(".", 1)[0] for n in truth.loaded_imports))


def test_real_triage_dump(triage_dump: Path) -> None:
    with ntdump.open(triage_dump) as d:
        m = d.modules["amdppm"]
        assert m.timestamp == 0xC9C03000 and m.timestamp_source == "triage driver list"
        assert m.loaded_imports == "not recorded"
