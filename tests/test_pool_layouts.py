"""Outside oracle for the pool layouts: the offsets in crates/ntdump-core pool/layout.rs (and the
forge's copy) equal Volatility 2's PDB-generated overlays (../shared/data/layouts) and the JSON
symbol tables shipped inside the installed ``volatility3`` package, field by field.

Where the two disagree — the Windows 10 ``_POOL_TRACKER_BIG_PAGES.PoolType`` width: 12 bits in
the PDB-generated Volatility 2 overlay, 8 bits in Volatility 3's JSON — the fact sheet's choice
(12, §5.7) is what ntdump reads, and the test says so explicitly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ntdump import _native
from ntdump.forge import pool as fpool

# Volatility 2 profile → (pool header, tracker layout, big-page layout) in ntdump's names.
VOL2 = {
    "xp_sp2_x86_vtypes.py": ("x86", "x86-0x1c", "xp-x86-12"),
    "xp_sp3_x86_vtypes.py": ("x86", "x86-0x1c", "xp-x86-12"),
    "win2003_sp2_x64_vtypes.py": ("x64", "x64-0x28", "2003-x64"),
    "win7_sp1_x64_vtypes.py": ("x64", "x64-0x28", "vista-x64"),
    "win10_x64_19041_vtypes.py": ("x64", "x64-0x38", "win10-x64"),
    "win10_x86_19041_vtypes.py": ("x86", "x86-0x30", "win10-x86"),
}
# Volatility 3 JSON (under symbols/windows/) → ntdump's layout.
VOL3_BIG = {
    "bigpools/bigpools-x86.json": "xp-x86-8",
    "bigpools/bigpools-x64.json": "2003-x64",
    "bigpools/bigpools-vista-x86.json": "vista-x86",
    "bigpools/bigpools-vista-x64.json": "vista-x64",
    "bigpools/bigpools-win10-x86.json": "win10-x86",
    "bigpools/bigpools-win10-x64.json": "win10-x64",
}
VOL3_HEADER = {"poolheader-x86.json": "x86", "poolheader-x64.json": "x64",
               "poolheader-x64-win7.json": "x64"}
SIZES = {"bigpools/bigpools-x64.json": 24}  # see test_vol3_big_pages


@pytest.fixture(scope="module")
def ours() -> dict[str, dict[str, Any]]:
    lay = _native.pool_layouts()
    return {kind: {x["name"]: x for x in lay[kind]} for kind in lay}


@pytest.fixture(scope="module")
def vol2(shared_data: Path) -> dict[str, Any]:
    return json.loads((shared_data / "layouts" / "volatility2-vtypes-selected.json").read_text())


@pytest.fixture(scope="module")
def vol3_dir() -> Path:
    v3 = pytest.importorskip("volatility3")
    return Path(v3.__file__).parent / "framework" / "symbols" / "windows"


def _abs_bits(offset: int, start: int, bits: int) -> tuple[int, int]:
    """A bit field as (first bit counted from the structure start, width)."""
    return offset * 8 + start, bits


def _ours_bits(f: tuple[int, Any]) -> tuple[int, int]:
    off, b = f
    return _abs_bits(off, b[0], b[1])


def test_vol2_pool_header(ours: dict, vol2: dict) -> None:
    for profile, (hname, _, _) in VOL2.items():
        size, fields = vol2[profile]["_POOL_HEADER"]
        h = ours["pool_header"][hname]
        assert h["size"] == size, profile
        for name in ("PreviousSize", "PoolIndex", "BlockSize", "PoolType"):
            off, (_, bf) = fields[name]
            want = _abs_bits(off, bf["start_bit"], bf["end_bit"] - bf["start_bit"])
            assert _ours_bits(h["fields"][name]) == want, (profile, name)
        assert h["fields"]["PoolTag"][0] == fields["PoolTag"][0]
        if "ProcessBilled" in h["fields"] and hname == "x64":
            assert h["fields"]["ProcessBilled"][0] == fields["ProcessBilled"][0]


def test_vol2_tracker_table(ours: dict, vol2: dict) -> None:
    width = {"unsigned long": 4, "long": 4, "unsigned long long": 8}
    for profile, (_, tname, _) in VOL2.items():
        size, fields = vol2[profile]["_POOL_TRACKER_TABLE"]
        t = ours["tracker"][tname]
        assert t["size"] == size, profile
        assert set(t["fields"]) == set(fields)
        for name, (off, typ) in fields.items():
            assert tuple(t["fields"][name]) == (off, width[typ[0]]), (profile, name)
        # The forge writes the same layout.
        fsize, ffields = fpool.TRACKER_LAYOUTS[tname]
        assert fsize == size and {k: tuple(v) for k, v in ffields.items()} == \
            {k: tuple(v) for k, v in t["fields"].items()}


def test_vol2_big_pages(ours: dict, vol2: dict) -> None:
    width = {"unsigned long": 4, "unsigned long long": 8, "pointer": 4, "pointer64": 8}
    for profile, (_, _, bname) in VOL2.items():
        size, fields = vol2[profile]["_POOL_TRACKER_BIG_PAGES"]
        b = ours["big_pages"][bname]
        assert b["size"] == size, profile
        for name, (off, typ) in fields.items():
            if name == "QuotaObject":
                continue  # not read by ntdump
            if typ[0] == "BitField":
                if name in ("Pattern", "SlushSize"):
                    continue  # not read by ntdump
                bf = typ[1]
                want = _abs_bits(off, bf["start_bit"], bf["end_bit"] - bf["start_bit"])
                assert _ours_bits(b["fields"][name]) == want, (profile, name)
                if name == "PoolType":  # the PDB-derived width: 12 bits
                    assert want[1] == 12
                continue
            assert tuple(b["fields"][name]) == (off, width[typ[0]]), (profile, name)
        fsize, ffields = fpool.BIG_LAYOUTS[bname]
        assert fsize == size
        for name, (off, w) in ffields.items():
            if name == "PoolTypeBits":
                assert b["fields"]["PoolType"][0] == off
            else:
                assert tuple(b["fields"][name]) == (off, w), (bname, name)


def _vol3(path: Path) -> tuple[int, dict[str, Any]]:
    (struct,) = json.loads(path.read_text())["user_types"].values()
    return struct["size"], struct["fields"]


def test_vol3_pool_header(ours: dict, vol3_dir: Path) -> None:
    for fname, hname in VOL3_HEADER.items():
        size, fields = _vol3(vol3_dir / fname)
        h = ours["pool_header"][hname]
        assert h["size"] == size, fname
        for name, f in fields.items():
            t = f["type"]
            if t["kind"] == "bitfield":
                want = _abs_bits(f["offset"], t["bit_position"], t["bit_length"])
                assert _ours_bits(h["fields"][name]) == want, (fname, name)
            else:
                assert h["fields"][name][0] == f["offset"], (fname, name)


def test_vol3_big_pages(ours: dict, vol3_dir: Path) -> None:
    widths = {"unsigned long": 4, "unsigned long long": 8}
    for fname, bname in VOL3_BIG.items():
        size, fields = _vol3(vol3_dir / fname)
        b = ours["big_pages"][bname]
        # bigpools-x64.json declares only Va and Key (12 bytes); Volatility 2's PDB overlay for
        # 2003 x64 gives the real 24-byte entry (Va, Key, NumberOfPages, QuotaObject).
        assert b["size"] == SIZES.get(fname, size), fname
        for name, f in fields.items():
            t = f["type"]
            if name in ("Pattern", "SlushSize"):
                continue
            if t["kind"] == "bitfield":
                assert name == "PoolType"
                ob = _ours_bits(b["fields"]["PoolType"])
                assert ob[0] == f["offset"] * 8 + t["bit_position"], fname
                # The disagreement: Volatility 3 says 8 bits, the PDB listing (and Volatility
                # 2's PDB-generated overlay) 12. The sheet (§5.7) says read 12.
                assert t["bit_length"] == 8 and ob[1] == 12
                continue
            assert tuple(b["fields"][name]) == (f["offset"], widths[t["name"]]), (fname, name)


def test_every_layout_has_a_source(ours: dict) -> None:
    for kind in ours.values():
        for lay in kind.values():
            assert lay["source"].startswith("["), lay["name"]
