"""Every forge scenario describes a possible machine: its ``!vm`` counters, as written and as ntdump
reads them back, obey :func:`ntdump.forge.machine.check_counters` (available ≤ physical - nonpaged,
the nonpaged maximum as Windows sizes it for that RAM and below it, usage = the tracker sums within
page rounding, commit parts ≤ committed ≤ limit …)."""

from __future__ import annotations

import pytest

import ntdump
from ntdump import forge
from ntdump.errors import NtdumpError
from ntdump.forge import fleet as fleet_mod
from ntdump.forge import machine, scenario, story

# !vm field → the kernel variable it shows (and the factor to its unit).
FIELDS = {
    "available_pages": ("MmAvailablePages", 1), "resavail_pages": ("MmResidentAvailablePages", 1),
    "locked_io_pages": ("MmSystemLockPagesCount", 1),
    "modified_pages": ("MmModifiedPageListHead", 1),
    "nonpaged_pool_max": ("MmMaximumNonPagedPoolInBytes", 4096),
    "paged_pool_max": ("MmSizeOfPagedPoolInBytes", 4096),
    "shared_commit": ("MmSharedCommit", 1), "paged_pool_commit": ("MmPagedPoolCommit", 1),
    "driver_commit": ("MmDriverCommit", 1), "committed_pages": ("MmTotalCommittedPages", 1),
    "commit_limit": ("MmTotalCommitLimit", 1),
}


def _family(d) -> str:
    i = d.info
    if i.machine == "x86":
        return "2003"
    return "win7" if i.build < 9200 else "win10"


def _check_dump(path, *, physical: int, highest: int, symbols=None, family=None) -> dict:
    """Read the counters back with ntdump and check them; returns them."""
    with ntdump.open(path) as d:
        if symbols:
            d.add_symbols(symbols)
        v = d.vm()
        assert v.physical_memory_pages == physical
        read = {}
        for key, (var, unit) in FIELDS.items():
            if v[key].pages is not None:
                read[var] = v[key].pages * unit
        if v["nonpaged_pool_usage"].source.startswith("KDBG.MmAllocatedNonPagedPool"):
            read["MmAllocatedNonPagedPool"] = v.nonpaged_pool_usage_pages
        try:
            used = d.pool.used(owners=0)
            np_bytes, p_bytes, tags = (int(used["nonpaged_bytes"].sum()),
                                       int(used["paged_bytes"].sum()), len(used))
        except NtdumpError:  # no tracker table in this scenario
            np_bytes = p_bytes = None
            tags = 0
        fam = family or _family(d)
        problems = machine.check_counters(
            read, family=fam, machine=d.info.machine, physical_pages=physical,
            highest_pfn=highest, pae=d.info.pae, tracker_nonpaged_bytes=np_bytes,
            tracker_paged_bytes=p_bytes, tags=tags)
    assert problems == [], f"{path}: {problems}"
    return read


@pytest.mark.parametrize("make", [scenario.win10_x64, scenario.win7_x64,
                                  scenario.server2003_x86_pae])
def test_plain_scenarios(tmp_path, make):
    s = make(tmp_path / "s.dmp")
    _check_dump(s.path, physical=s.mem.page_count, highest=s.mem.highest_pfn,
                symbols=s.layout.kernel_symbols, family=s.layout.family)


@pytest.mark.parametrize("arch", ["x86_64", "i386"])
def test_wine_scenarios(tmp_path, shared_data, arch):
    s = scenario.wine_drivers(tmp_path / "w.dmp", arch, wine_dir=shared_data / "pe")
    _check_dump(s.path, physical=s.mem.page_count, highest=s.mem.highest_pfn,
                family=s.layout.family)


@pytest.mark.parametrize("leak", [True, False])
@pytest.mark.parametrize("which", ["x86", "x64", "x64-win7"])
def test_founding_story_machines(tmp_path, which, leak):
    st = forge.founding_story(tmp_path / "st.dmp", machine=which, leak=leak)
    mem, lay = st.scenario.mem, st.scenario.layout
    # The ground truth first, then what ntdump reads back.
    tracker_np = sum(t.bytes_of(False) for t in st.pool.tags)
    tracker_p = sum(t.bytes_of(True) for t in st.pool.tags)
    assert machine.check_counters(
        st.vm, family=lay.family, machine=lay.machine, physical_pages=mem.page_count,
        highest_pfn=mem.highest_pfn, tracker_nonpaged_bytes=tracker_np,
        tracker_paged_bytes=tracker_p, tags=len(st.pool.tags)) == []
    read = _check_dump(st.path, physical=mem.page_count, highest=mem.highest_pfn,
                       symbols=st.symbols, family=lay.family)
    assert read["MmAvailablePages"] <= mem.page_count
    if which != "x64":  # the DESIGN numbers: 125,476 KB of 127,944 KB (a quarter healthy)
        assert read["MmMaximumNonPagedPoolInBytes"] == 127_944 * 1024
        assert read["MmAllocatedNonPagedPool"] * 4 == (125_476 if leak else 31_984)


def test_fleet_machines(tmp_path):
    f = fleet_mod.write_fleet(tmp_path, ("srv-app1", "srv-db1"), days=2, bad_files=False,
                              x86=("srv-db1",))
    assert {d.machine for d in f.dumps} == {"srv-app1", "srv-db1"}
    for fd in f.dumps:
        with ntdump.open(fd.path) as d:
            physical = d.vm().physical_memory_pages
        # Scenario memory: pages 1-0x9F and 0x100 up, so the highest page is 0x61 pages above
        # the count (a kernel dump's own runs list only the pages it stores).
        _check_dump(fd.path, physical=physical, highest=physical + 0x61 - 1)


def test_wrk_formula_against_its_own_comments():
    """WRK init386.c: "the old formula gave machines with 512MB of RAM 128MB of nonpaged pool"
    (the new one keeps that), before the PFN allocation is added."""
    for pages in (0x1F000, 0x20000):
        hp = pages - 1
        pfn_alloc = 1 + ((pages * 0x1C + 64 * 12 * 2) >> 12)
        assert machine.wrk_x86_nonpaged_pool_maximum(pages, hp) - pfn_alloc * 4096 == 128 << 20
    # ~1.2 GB and more: 256 MB (large pages), 128 MB booted /3GB.
    big = 0x50000
    pfn_alloc = 1 + ((big * 0x1C + 64 * 12 * 2) >> 12)
    assert machine.wrk_x86_nonpaged_pool_maximum(big, big - 1) - pfn_alloc * 4096 == 256 << 20
    assert machine.wrk_x86_nonpaged_pool_maximum(big, big - 1, boot_3gb=True) - \
        pfn_alloc * 4096 == 128 << 20
    # The story's Server 2003 machine: 127,944 KB.
    assert machine.nonpaged_pool_maximum("2003", "x86", 79_615, 82_615) == 127_944 * 1024
    assert machine.nonpaged_pool_maximum("win7", "x64", 42_648, 42_648) == 127_944 * 1024
    with pytest.raises(ValueError, match="INSTALL_MORE_MEMORY"):
        machine.wrk_x86_nonpaged_pool_maximum(1000, 1000)


def test_the_old_demo_machine_is_impossible():
    """The numbers issue 9 found in the demo break the rules."""
    old = {"MmAvailablePages": 73_305, "MmMaximumNonPagedPoolInBytes": 31_986 * 4096,
           "MmAllocatedNonPagedPool": 31_369, "MmResidentAvailablePages": 93_804}
    problems = machine.check_counters(old, family="2003", machine="x86", physical_pages=32_671,
                                      highest_pfn=32_767)
    text = "\n".join(problems)
    assert "available 73,305 pages > physical 32,671" in text
    assert "MmResidentAvailablePages 93,804 > physical" in text
    assert "is not what 2003 x86 sets" in text
    assert story.STORY_VM["MmAvailablePages"] < 79_615 - 31_369


def _vm_lines(out: str) -> dict[str, int]:
    vals = {}
    for line in out.splitlines():
        if ":" in line and "Kb)" in line:
            label, rest = line.strip().split(":", 1)
            vals[label] = int(rest.split()[0])
    return vals


def test_demo_shows_a_possible_machine_and_keeps_the_dump(tmp_path, capsys):
    from ntdump.cli import main

    out_file = tmp_path / "MEMORY.DMP"
    assert main(["demo", "--out", str(out_file)]) == 0
    out = capsys.readouterr().out
    assert out_file.is_file()  # kept
    vm = _vm_lines(out)
    assert vm["Available Pages"] <= vm["Physical Memory"] - vm["NonPagedPool Usage"]
    assert vm["ResAvail Pages"] <= vm["Physical Memory"]
    assert vm["NonPagedPool Usage"] <= vm["NonPagedPool Max"] < vm["Physical Memory"]
    assert vm["PagedPool Usage"] <= vm["PagedPool Commit"] <= vm["PagedPool Maximum"]
    # It says what it supplies in place of symbols …
    assert "In place of symbols" in out and "nt!MmPoolFailures" in out
    # … and its last lines point at the kept file.
    tail = "\n".join(out.strip().splitlines()[-2:])
    assert f"ntdump triage {out_file}" in tail
    with ntdump.open(out_file) as d:  # the kept file is the demo's dump
        assert ntdump.triage(d).to_dict()["pool"]["depleted"] == ["nonpaged"]
    # Without --out the file goes, and the demo says how to keep it.
    assert main(["demo"]) == 0
    tail = capsys.readouterr().out.strip().splitlines()[-1]
    assert "deleted" in tail and "ntdump demo --out" in tail
