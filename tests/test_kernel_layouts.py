"""Struct layouts from the kernel PDB override the built-in profiles (issue 11 §3).

Forged dumps with PDBs linked for their kernels (yaml2obj + lld-link, tests/kernel_pdb.py):

* **A layout Windows really varies, which the profile misreads.** The PDB of the x86 Insider build
  21292 gives ``_POOL_TRACKER_BIG_PAGES`` 0x14 bytes: the Windows 10 entry plus an ``EPROCESS``
  pointer ``ProcessBilled`` at 0x10 (ntdiff/headers ``Win10_XXXX_21292/x86/System32/ntoskrnl.exe/
  Standalone/_POOL_TRACKER_BIG_PAGES.h``), where Windows 10 19041 x86 has 16 bytes
  ([vol2] ``win10_x86_19041``) — the only x86 layout ntdump's profile has from Windows 10 on. The
  forge writes the 21292 table as its PDB says; without the PDB ``pool.big()`` reads it at a
  16-byte stride and returns rows that are not the planted allocations; with it, exactly them.
* **A PDB equal to the profile** (Volatility 2's overlays of 19041, generated from Microsoft's
  PDBs; x86 and x64) gives the same tables, scan, page walk and module list as the profile, and
  every result names the PDB as its layout's source.
* **Hostile PDB layouts** (a field past the entry's end, size 0, a huge size, a missing field) are
  refused one by one with a warning; the profile's results stay.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kernel_pdb import build_with_structs, tools_present, vol2_structs

import ntdump
from ntdump.errors import NtdumpWarning
from ntdump.forge import pool as fpool
from ntdump.forge import scenario
from ntdump.pool import pool_type_name

TYPES = ["_POOL_HEADER", "_POOL_TRACKER_TABLE", "_POOL_TRACKER_BIG_PAGES",
         "_KLDR_DATA_TABLE_ENTRY"]
VARIABLES = ["PoolBigPageTable", "PoolBigPageTableSize", "PoolTrackTable", "PoolTrackTableSize"]

# x86 build 21292, from that build's PDB as ntdiff/headers lists it
# (Win10_XXXX_21292/x86/System32/ntoskrnl.exe/Standalone/):
# _POOL_TRACKER_BIG_PAGES.h: Va @0, Key @4, {Pattern:8, PoolType:12, SlushSize:12} @8,
# NumberOfBytes @0xC, ProcessBilled (struct _EPROCESS*) @0x10; size 0x14.
BIG_21292_X86 = (0x14, [("Va", 0, "u32"), ("Key", 4, "u32"),
                        ("Pattern", 8, ("bits", "u32", 0, 8)),
                        ("PoolType", 8, ("bits", "u32", 8, 12)),
                        ("SlushSize", 8, ("bits", "u32", 20, 12)),
                        ("NumberOfBytes", 0xC, "u32"), ("ProcessBilled", 0x10, "ptr")])
# _POOL_TRACKER_TABLE.h: Key @0, NonPagedBytes (u32) @4, NonPagedAllocs @8, NonPagedFrees @0x10,
# PagedBytes (u32) @0x18, PagedAllocs @0x20, PagedFrees @0x28, AvailableLimit long[2] @0x30,
# LimitInfo @0x38; size 0x40 (AvailableLimit as two u32s here).
TRACKER_21292_X86 = (0x40, [("Key", 0, "u32"), ("NonPagedBytes", 4, "u32"),
                            ("NonPagedAllocs", 8, "u64"), ("NonPagedFrees", 0x10, "u64"),
                            ("PagedBytes", 0x18, "u32"), ("PagedAllocs", 0x20, "u64"),
                            ("PagedFrees", 0x28, "u64"), ("AvailableLimit0", 0x30, "u32"),
                            ("AvailableLimit1", 0x34, "u32"), ("LimitInfo", 0x38, "ptr")])


def _forge(tmp: Path, machine: str, build: int) -> tuple[Any, Any]:
    if machine == "x86":
        s = scenario.win10_x86(tmp / f"{machine}-{build}.dmp", build=build)
    else:
        s = scenario.win10_x64(tmp / f"{machine}-{build}.dmp", build=build)
    base = s.layout.kernel_base
    # The pool's variables 16 MiB past the kernel's base: RVAs inside a large kernel's .data.
    pl = fpool.add_to_scenario(s, region_base=base + 0x0100_0000)
    return s, pl


def _rvas(s: Any, pl: Any) -> dict[str, int]:
    return {n: pl.variables[n] - s.layout.kernel_base for n in VARIABLES}


@pytest.fixture(scope="module")
def layouts_json(shared_data: Path) -> Path:
    if not tools_present():
        pytest.skip("yaml2obj (Debian llvm) and lld-link/rust-lld are needed to build the PDB")
    return shared_data / "layouts" / "volatility2-vtypes-selected.json"


@pytest.fixture(scope="module")
def x86_21292(tmp_path_factory: pytest.TempPathFactory, layouts_json: Path):
    tmp = tmp_path_factory.mktemp("lay86")
    s, pl = _forge(tmp, "x86", 21292)
    assert pl.big_layout == "win10-x86-21292" and pl.tracker_layout == "x86-0x40"
    # _POOL_HEADER and the loader entry as [vol2] win10_x86_19041 has them (the sheet §5.1 and
    # §4.1: unchanged on x86 Windows 10); the tracker and big-page entries as 21292's PDB.
    structs = vol2_structs(layouts_json, "win10_x86_19041_vtypes.py",
                           ["_POOL_HEADER", "_KLDR_DATA_TABLE_ENTRY"])
    structs["_POOL_TRACKER_TABLE"] = TRACKER_21292_X86
    structs["_POOL_TRACKER_BIG_PAGES"] = BIG_21292_X86
    pdb = build_with_structs(tmp, structs, _rvas(s, pl), machine="x86")
    return s, pl, pdb


@pytest.fixture(scope="module")
def x64_19041(tmp_path_factory: pytest.TempPathFactory, layouts_json: Path):
    tmp = tmp_path_factory.mktemp("lay64")
    s, pl = _forge(tmp, "x64", 19041)
    structs = vol2_structs(layouts_json, "win10_x64_19041_vtypes.py", TYPES)
    (tmp / "equal").mkdir()
    equal = build_with_structs(tmp / "equal", structs, _rvas(s, pl))
    # Hostile: each of the four broken in its own way.
    bad = dict(structs)
    size, members = structs["_POOL_TRACKER_TABLE"]
    bad["_POOL_TRACKER_TABLE"] = (size, [(n, 0x34 if n == "PagedFrees" else o, k)
                                         for n, o, k in members])  # 8 bytes at 0x34 of 0x38
    bad["_POOL_TRACKER_BIG_PAGES"] = (0, structs["_POOL_TRACKER_BIG_PAGES"][1])
    bad["_POOL_HEADER"] = (0x7FFF_FFFF, structs["_POOL_HEADER"][1])
    size, members = structs["_KLDR_DATA_TABLE_ENTRY"]
    bad["_KLDR_DATA_TABLE_ENTRY"] = (size, [m for m in members if m[0] != "DllBase"])
    (tmp / "hostile").mkdir()
    hostile = build_with_structs(tmp / "hostile", bad, _rvas(s, pl))
    return s, pl, equal, hostile


def _big_rows(df: Any) -> list[tuple[int, str, int, str, bool]]:
    return sorted((int(r.va), str(r.tag), int(r.bytes), str(r.pool_type), bool(r.freed))
                  for r in df.itertuples())


def _planted(pl: Any) -> list[tuple[int, str, int, str, bool]]:
    return sorted((a.va, a.tag.decode("latin-1"), a.bytes, pool_type_name(a.pool_type), a.freed)
                  for a in pl.big)


def _frame_text(df: Any) -> Any:
    return df.reset_index(drop=True).astype(str)


def test_21292_big_pages_misread_without_the_pdb_read_with_it(x86_21292) -> None:
    s, pl, pdb = x86_21292
    want = _planted(pl)
    assert len(want) == 3
    with ntdump.open(s.path, symbols="") as d:
        # The profile's only x86 Windows 10 layout: 16-byte entries, read across the 0x14-byte
        # ones. The rows it returns are not the allocations: VAs made of tag bytes, sizes 0.
        plain = d.pool.big()
        assert plain.attrs["layout"] == "win10-x86"
        assert plain.attrs["layout_source"].startswith("profile win10-x86: ")
        got = _big_rows(plain)
        assert got != want
        assert not {(va, tag) for va, tag, *_ in want} <= {(va, tag) for va, tag, *_ in got}
        assert any(va & 0xFFF for va, *_ in got)  # not even page aligned

        d.load_pdb(pdb, module="nt")
        assert d.layout_warnings == []
        big = d.pool.big()
        assert big.attrs["how"] == "given"  # the PDB names the table
        assert big.attrs["layout"] == "pdb"  # equal to no built-in layout
        assert big.attrs["layout_source"] == f"pdb nt!_POOL_TRACKER_BIG_PAGES ({pdb})"
        assert _big_rows(big) == want
        # !pool of a page inside a big allocation finds it through the same table
        live = next(a for a in pl.big if not a.freed)
        page = d.pool.page(live.va + 0x10)
        assert page.big is not None and page.big["tag"] == live.tag.decode("latin-1")


def test_21292_equal_layouts_give_the_same_results_named_after_the_pdb(x86_21292) -> None:
    s, pl, pdb = x86_21292
    with ntdump.open(s.path, symbols="") as d:
        used0 = d.pool.used(owners=0)
        scan0 = d.pool.scan(progress=False)
        mods0 = d.modules.to_frame()
        page0 = d.pool.page(pl.blocks[0].address)
        assert used0.attrs["layout_source"].startswith("profile x86-0x40: ")
        assert scan0.attrs["layout_source"].startswith("profile x86: ")
        assert d.modules.layout_source.startswith("profile win10 x86: ")
        d.load_pdb(pdb, module="nt")
        assert d.layout_sources == {
            "pool_header": f"pdb nt!_POOL_HEADER ({pdb})",
            "tracker": f"pdb nt!_POOL_TRACKER_TABLE ({pdb})",
            "big_pages": f"pdb nt!_POOL_TRACKER_BIG_PAGES ({pdb})",
            "ldr": f"pdb nt!_KLDR_DATA_TABLE_ENTRY ({pdb})"}
        used = d.pool.used(owners=0)
        assert used.attrs["layout"] == "x86-0x40"  # the PDB's layout is the built-in one
        assert used.attrs["layout_source"] == f"pdb nt!_POOL_TRACKER_TABLE ({pdb})"
        assert _frame_text(used).equals(_frame_text(used0))
        want = {t: v for t, v in pl.expected_used.items()}
        got = {r.tag: (r.nonpaged_allocs, r.nonpaged_frees, r.nonpaged_bytes, r.paged_allocs,
                       r.paged_frees, r.paged_bytes) for r in used.itertuples()}
        assert got == want
        scan = d.pool.scan(progress=False)
        assert scan.attrs["layout_source"] == f"pdb nt!_POOL_HEADER ({pdb})"
        assert _frame_text(scan).equals(_frame_text(scan0))
        assert {int(a) for a in scan["address"]} >= {b.address for b in pl.blocks}
        page = d.pool.page(pl.blocks[0].address)
        assert page.layout_source == f"pdb nt!_POOL_HEADER ({pdb})"
        assert page0.layout_source.startswith("profile x86: ")
        assert (page.status, page.blocks, page.nearest) == (page0.status, page0.blocks,
                                                            page0.nearest)
        # the loader entry layout changed hands: the list was walked again, with the same result
        assert d.modules.layout_source == f"pdb nt!_KLDR_DATA_TABLE_ENTRY ({pdb})"
        mods = d.modules.to_frame()
        assert mods.attrs["layout_source"] == d.modules.layout_source
        assert _frame_text(mods).equals(_frame_text(mods0))
        assert [m.base for m in d.modules] == [m.base for m in s.layout.modules]
        assert [m.timestamp for m in d.modules] == [m.timestamp for m in s.layout.modules]


def test_19041_x64_pdb_equal_to_the_profile(x64_19041) -> None:
    s, pl, equal, _ = x64_19041
    with ntdump.open(s.path, symbols="") as d:
        before = (d.pool.used(owners=0), d.pool.big(), d.pool.scan(progress=False),
                  d.modules.to_frame())
        d.load_pdb(equal, module="nt")
        assert set(d.layout_sources) == {"pool_header", "tracker", "big_pages", "ldr"}
        after = (d.pool.used(owners=0), d.pool.big(), d.pool.scan(progress=False),
                 d.modules.to_frame())
        for a, b in zip(before, after, strict=True):
            assert _frame_text(a).equals(_frame_text(b))
        used, big, scan, mods = after
        assert (used.attrs["layout"], big.attrs["layout"]) == ("x64-0x38", "win10-x64")
        assert used.attrs["layout_source"] == f"pdb nt!_POOL_TRACKER_TABLE ({equal})"
        assert big.attrs["layout_source"] == f"pdb nt!_POOL_TRACKER_BIG_PAGES ({equal})"
        assert scan.attrs["layout_source"] == f"pdb nt!_POOL_HEADER ({equal})"
        assert mods.attrs["layout_source"] == f"pdb nt!_KLDR_DATA_TABLE_ENTRY ({equal})"
        assert _big_rows(big) == _planted(pl)


def test_hostile_pdb_layouts_fall_back_with_warnings(x64_19041) -> None:
    s, pl, equal, hostile = x64_19041
    with ntdump.open(s.path, symbols="") as d:
        before = (d.pool.used(owners=0), d.pool.scan(progress=False), d.modules.to_frame())
        with pytest.warns(NtdumpWarning) as caught:
            d.load_pdb(hostile, module="nt")
        text = [str(w.message) for w in caught]
        assert len(text) == 4
        for ty, why in (("_POOL_TRACKER_TABLE", "PagedFrees at 0x34 (8 bytes) runs past"),
                        ("_POOL_TRACKER_BIG_PAGES", "has size 0"),
                        ("_POOL_HEADER", "is 0x7fffffff bytes, above"),
                        ("_KLDR_DATA_TABLE_ENTRY", "has no field DllBase")):
            assert any(ty in t and why in t and "built-in layout kept" in t for t in text), ty
        assert len(d.layout_warnings) == 4
        assert d.layout_sources == {}
        after = (d.pool.used(owners=0), d.pool.scan(progress=False), d.modules.to_frame())
        for a, b in zip(before, after, strict=True):
            assert _frame_text(a).equals(_frame_text(b))
        used, scan, mods = after
        assert used.attrs["layout_source"].startswith("profile x64-0x38: ")
        assert scan.attrs["layout_source"].startswith("profile x64: ")
        assert mods.attrs["layout_source"].startswith("profile win10 x64: ")
        # the big page table is still named by the PDB's variables, read with the profile
        big = d.pool.big()
        assert big.attrs["how"] == "given"
        assert big.attrs["layout_source"].startswith("profile win10-x64: ")
        assert _big_rows(big) == _planted(pl)
        # a good PDB afterwards replaces them; the module list is walked again with its entry
        d.load_pdb(equal, module="nt")
        assert d.layout_warnings == []
        assert d.modules.layout_source == f"pdb nt!_KLDR_DATA_TABLE_ENTRY ({equal})"
