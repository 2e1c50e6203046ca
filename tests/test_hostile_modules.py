"""Issue 12, case 2: one loader entry at the top of the address space (DllBase
0xFFFFFFFFFFFFF000, or 0xFFFFF000 on x86) or a triage dump declaring DriverCount 0xFFFFFFFF is
reported (kernel warning, flagged row) and skipped by range-based analyses; everything else
still answers."""

from __future__ import annotations

import json
import shutil
import struct

import pytest

import ntdump
from ntdump import _native
from ntdump.cli import main
from ntdump.forge import founding_story, scenario
from ntdump.kd import KdSession


def file_offset(path, pa: int) -> int:
    """File offset of physical address ``pa`` in a run-based dump."""
    for base, pages, off in _native.Dump(str(path)).info()["file_runs"]:
        if base * 4096 <= pa < (base + pages) * 4096:
            return off + pa - base * 4096
    raise AssertionError(f"PA {pa:#x} not stored")


def patch_dll_base(src, dst, module: str, value: int) -> None:
    """Copy ``src`` to ``dst`` with ``module``'s LDR_DATA_TABLE_ENTRY.DllBase set to ``value``
    (x64 +0x30, x86 +0x18: WRK ntldr.h / Volatility's _LDR_DATA_TABLE_ENTRY)."""
    shutil.copy(src, dst)
    with ntdump.open(src) as d:
        m = d.modules[module]
        x64 = d.info.pointer_size == 8
        pa = d.translate(m.ldr_entry + (0x30 if x64 else 0x18))
    off = file_offset(src, pa)
    with open(dst, "r+b") as f:
        f.seek(off)
        f.write(struct.pack("<Q" if x64 else "<I", value))


@pytest.fixture(scope="module")
def story_top(tmp_path_factory):
    """The founding story (x86 PAE, pool and a culprit) with disk.sys moved to 0xFFFFF000."""
    tmp = tmp_path_factory.mktemp("top")
    st = founding_story(tmp / "story.dmp")
    patch_dll_base(st.path, tmp / "top.dmp", "disk", 0xFFFFF000)
    return st, tmp / "top.dmp"


@pytest.fixture(scope="module")
def w10_top(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("top64")
    st = scenario.win10_x64(tmp / "w10.dmp", size=32 << 20)
    patch_dll_base(st.path, tmp / "top.dmp", "disk", 0xFFFFFFFFFFFFF000)
    return st, tmp / "top.dmp"


def _check_flagged(d, name: str) -> None:
    mods = d.modules
    bad = [m for m in mods if not m.range_ok]
    assert [m.name for m in bad] == [name]
    assert any("past the top of the address space" in w and name in w
               for w in d.kernel_warnings), d.kernel_warnings
    df = mods.to_frame()  # was OverflowError
    row = df[df["name"] == name].iloc[0]
    assert not row["range_ok"] and int(row["end"]) == 2 ** (8 * d.info.pointer_size) - 1
    assert df["range_ok"].sum() == len(df) - 1
    lm = mods.lm_text()
    assert "runs past the top of the address space" in lm


def test_x64_module_at_top_is_flagged_and_skipped(w10_top):
    st, path = w10_top
    with ntdump.open(path) as d:
        _check_flagged(d, "disk.sys")
        nt = d.modules["nt"]
        # Search over every module (was ValueError: bad range): the good modules are searched.
        hits = d.search(st.ex_allocate_pool, width=8, within=d.modules)
        assert st.culprit.name in set(hits["module"].astype(str))
        out = KdSession(d).run(f"!for_each_module s-q @#Base @#End {st.ex_allocate_pool:x}")
        assert "error" not in out.lower() and out.strip()
        assert d.symbol("nt!ExAllocatePool") == st.ex_allocate_pool
        assert nt.range_ok


def test_x86_module_at_top_pool_analyses_still_answer(story_top):
    st, path = story_top
    with ntdump.open(path) as d:
        _check_flagged(d, "disk.sys")
        used = d.pool.used(sort="nonpaged", top=2)  # was ValueError: bad range
        assert list(used["tag"].astype(str))[:1] == ["None"]
        owners = d.pool.owners("Leak")  # was ValueError: bad range
        assert owners is not None
        report = ntdump.triage(d).to_dict()
        assert st.culprit.name in json.dumps(report)


def test_cli_lm_json_with_module_at_top(story_top, capsys):
    _, path = story_top
    assert main(["lm", str(path), "--json"]) == 0  # was a traceback
    rows = json.loads(capsys.readouterr().out)
    flagged = [r for r in rows if not r["range_ok"]]
    assert [r["name"] for r in flagged] == ["disk.sys"]


def test_triage_driver_count_all_ones(triage_dump, tmp_path):
    """The real Windows 10 triage dump with DriverCount (TRIAGE_DUMP +0x34) set to 0xFFFFFFFF:
    records past the real list are garbage; bad ranges are flagged, the rest answers."""
    dst = tmp_path / "triage.dmp"
    shutil.copy(triage_dump, dst)
    with ntdump.open(triage_dump) as d:
        real = len(d.modules)
    with open(dst, "r+b") as f:
        f.seek(0x2000 + 0x34)
        f.write(struct.pack("<I", 0xFFFFFFFF))
    with ntdump.open(dst) as d:
        mods = d.modules
        assert len(mods) >= real
        assert any("DriverCount" in w or "drivers" in w for w in d.info.warnings + tuple(
            d.kernel_warnings))
        df = mods.to_frame()  # never OverflowError
        assert len(df) == len(mods)
        assert all(int(e) >= int(b) for b, e in zip(df["base"], df["end"], strict=True)
                   if bool(df["range_ok"].iloc[0]) or True)
        for m in mods:
            if not m.range_ok:
                assert any(m.name in w for w in d.kernel_warnings)
        d.search(0x41414141, width=4, within=mods)  # no ValueError
        KdSession(d).run("!for_each_module s-d @#Base @#End 41414141")
        assert main(["lm", str(dst), "--json"]) == 0


def test_batch_is_not_partial_because_of_a_module_at_top(story_top):
    from ntdump import batch

    _, path = story_top
    res = batch.run(path, analyses=["modules", "poolused", "triage"], engine="serial",
                    progress=False)
    st = res["status"].iloc[0]
    assert st["status"] == "ok", (st["failed"], st["message"])  # was "partial"
    assert (~res["modules"]["range_ok"]).sum() == 1
