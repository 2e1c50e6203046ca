"""The kernel layer on forged kernels of each family: module lists, unloaded drivers, corruptions,
and !vm counters — compared with the forge's ground truth (written independently in Python)."""

from __future__ import annotations

import pytest

import ntdump
from ntdump.forge import machine, scenario, story

SCENARIOS = {
    "win10-x64": lambda p, **kw: scenario.win10_x64(p, **kw),
    "2003-x86-pae": lambda p, **kw: scenario.server2003_x86_pae(p, **kw),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
@pytest.mark.parametrize("fmt", ["full", "bitmap"])
def test_module_list_matches_ground_truth(tmp_path, name, fmt):
    s = SCENARIOS[name](tmp_path / "m.dmp", fmt=fmt)
    with ntdump.open(s.path) as d:
        ms = d.modules
        assert ms.source == "PsLoadedModuleList"
        truth = s.layout.modules
        assert [m.name for m in ms] == [t.name for t in truth]
        for m, t in zip(ms, truth, strict=True):
            assert (m.path, m.base, m.size, m.entry_point) == (t.path, t.base, t.size, t.entry)
            assert (m.timestamp, m.checksum, m.ldr_entry) == (t.timestamp, t.checksum, t.ldr_entry)
        assert ms[0].kd_name == "nt" and ms[1].kd_name == "hal"
        assert d.kernel_base == s.layout.kernel_base
        assert d.kdbg is not None and d.kdbg["va"] == s.layout.kdbg
        assert d.kdbg["size"] == s.layout.kdbg_size
        culprit = ms.at(s.culprit_iat_slot)
        assert culprit is not None and culprit.name == s.culprit.name
        u = d.unloaded_modules()
        assert list(u["name"]) == [x.name for x in s.layout.unloaded]
        assert list(u["start"]) == [x.start for x in s.layout.unloaded]
        assert list(u["time"]) == [x.time for x in s.layout.unloaded]
        assert d.kernel_warnings == []


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_corrupt_module_lists_are_bounded(tmp_path, name):
    n = 5
    s = SCENARIOS[name](tmp_path / "loop.dmp", loop_after=n)
    with ntdump.open(s.path) as d:
        assert len(d.modules) == n
        assert any("loops" in w for w in d.kernel_warnings)
    s = SCENARIOS[name](tmp_path / "unmapped.dmp", unmapped_entry=3)
    with ntdump.open(s.path) as d:
        assert len(d.modules) == 3
        assert any("unreadable" in w for w in d.kernel_warnings)
    s = SCENARIOS[name](tmp_path / "names.dmp", bad_name_length=2)
    with ntdump.open(s.path) as d:
        assert len(d.modules) == len(s.layout.modules)
        assert any("clipped" in w for w in d.kernel_warnings)
        assert len(d.modules[1].name) <= 512
    s = SCENARIOS[name](tmp_path / "huge.dmp", huge_size_of_image=4)
    with ntdump.open(s.path) as d:
        assert d.modules[3].size == 0x7FFF0000
        assert any("implausible" in w for w in d.kernel_warnings)


def test_no_kdbg_still_lists_modules_from_the_header(tmp_path):
    s = scenario.win10_x64(tmp_path / "nokdbg.dmp", kdbg=False)
    with ntdump.open(s.path) as d:
        assert d.kdbg is None
        assert len(d.modules) == len(s.layout.modules)


def test_vm_counters_and_symbol_only_fields(tmp_path):
    vm = {
        "MmAvailablePages": 12345,
        "MmResidentAvailablePages": 23456,
        "MmAllocatedNonPagedPool": 31369,
        "MmMaximumNonPagedPoolInBytes": 31986 * 4096,
        "MmSizeOfPagedPoolInBytes": 40960 * 4096,
        "MmTotalCommittedPages": 43366,
        "MmTotalCommitLimit": 320368,
        "MmModifiedPageListHead": 462,
        "MmPoolFailures": 3,
    }
    # A machine on which Server 2003 sizes its nonpaged pool maximum to 127,944 KB (the story's).
    s = scenario.server2003_x86_pae(tmp_path / "vm.dmp", vm=vm, runs=story.X86_RUNS)
    assert machine.check_counters(vm, family="2003", machine="x86",
                                  physical_pages=s.mem.page_count,
                                  highest_pfn=s.mem.highest_pfn) == []
    with ntdump.open(s.path) as d:
        v = d.vm()
        assert v.available_pages_pages == 12345
        assert v.resavail_pages_pages == 23456
        assert v.nonpaged_pool_usage_pages == 31369
        assert v.nonpaged_pool_usage_kb == 125476
        assert v.nonpaged_pool_max_pages == 31986
        assert v.nonpaged_pool_max_kb == 127944
        assert v.paged_pool_max_pages == 40960
        assert v.committed_pages_pages == 43366
        assert v.commit_limit_pages == 320368
        assert v.modified_pages_pages == 462
        assert v.physical_memory_pages == s.mem.page_count
        assert "KDBG.MmAllocatedNonPagedPool" in v.source("nonpaged_pool_usage")
        # Failures need a symbol: absent until one is loaded, never a made-up zero.
        assert v.pool_allocation_failures is None
        assert "symbols" in v.source("pool_allocation_failures")
        assert v.warnings == ["Excessive NonPaged Pool Usage"]
        d.add_symbols(s.layout.kernel_symbols)
        v = d.vm()
        assert v.pool_allocation_failures == 3
        assert v.warnings == ["Excessive NonPaged Pool Usage", "3 pool allocations have failed"]
        text = str(v)
        assert "NonPagedPool Usage:" in text and "125476 Kb" in text
        assert "********** 3 pool allocations have failed **********" in text


@pytest.mark.parametrize("kind", ["win10", "2003"])
def test_raw_image_finds_kdbg_by_its_owner_tag(tmp_path, kind):
    """A raw image has no header pointer to the KDBG: the kernel view finds the block by scanning
    physical memory for its owner tag, says so, and lists the same modules as the full dump."""
    make = scenario.win10_x64 if kind == "win10" else scenario.server2003_x86_pae
    full = make(tmp_path / "f.dmp")
    raw = make(tmp_path / "r.raw", fmt="raw")
    machine, pae = ("x64", None) if kind == "win10" else ("x86", True)
    with ntdump.open(raw.path, raw=True, machine=machine, pae=pae, dtb=raw.pt.dtb) as d:
        assert d.kdbg is not None and d.kdbg["va"] == raw.layout.kdbg
        assert f"KDBG found at {raw.layout.kdbg:#x} by scanning physical memory" in " ".join(
            d.kernel_warnings)
        with ntdump.open(full.path) as f:
            assert list(d.modules.to_frame()["name"]) == list(f.modules.to_frame()["name"])
