"""The founding story end to end, on forged dumps of three families: triage names the tag and the
driver; the same machines without the leak are called healthy."""

from __future__ import annotations

import pytest

import ntdump
from ntdump import forge
from ntdump.forge.scenario import CULPRIT_NAME

FAMILIES = [("x86", "full"), ("x64-win7", "bitmap"), ("x64", "full")]


@pytest.mark.parametrize(("machine", "fmt"), FAMILIES)
def test_leak_is_found(tmp_path, machine, fmt):
    st = forge.founding_story(tmp_path / "leak.dmp", machine=machine, fmt=fmt)
    with ntdump.open(st.path) as d:
        d.add_symbols(st.symbols)
        r = ntdump.triage(d)
    doc = r.to_dict()
    assert doc["suspect_tags"][0]["tag"] == "None"
    assert doc["suspect_tags"][0]["nonpaged_bytes"] == 50_827_424
    owners = [o["module"] for o in doc["suspect_tags"][0]["owners"]]
    assert owners and owners[0].lower().startswith(CULPRIT_NAME.lower().removesuffix(".sys"))
    assert doc["suspect_drivers"][0]["name"] == CULPRIT_NAME
    assert any("GUID" in x for x in doc["suspect_drivers"][0]["reasons"])
    assert "nonpaged" in doc["pool"]["depleted"]
    assert doc["pool"]["failures"] == 3
    assert "depletion" in doc["verdicts"][-1]["text"]
    assert CULPRIT_NAME in doc["verdicts"][-1]["text"]


@pytest.mark.parametrize(("machine", "fmt"), FAMILIES)
def test_healthy_machine(tmp_path, machine, fmt):
    st = forge.founding_story(tmp_path / "ok.dmp", machine=machine, fmt=fmt, leak=False)
    with ntdump.open(st.path) as d:
        d.add_symbols(st.symbols)
        r = ntdump.triage(d)
    doc = r.to_dict()
    assert doc["pool"]["depleted"] == []
    assert not doc["pool"]["failures"]
    assert doc["pool"]["verdict"].startswith("pool is healthy")
    assert doc["suspect_drivers"] == []


def test_story_numbers_through_vm_and_poolused(tmp_path):
    st = forge.founding_story(tmp_path / "story.dmp")
    with ntdump.open(st.path) as d:
        v = d.vm()
        assert (v.nonpaged_pool_usage_kb, v.nonpaged_pool_max_kb) == (125_476, 127_944)
        assert v.pool_allocation_failures is None  # needs the symbol
        d.add_symbols(st.symbols)
        assert d.vm().pool_allocation_failures == 3
        u = d.pool.used(sort="nonpaged", top=2)
        assert list(u["tag"]) == ["None", "MmCm"]
        row = u.iloc[0]
        assert row["nonpaged_allocs"] - row["nonpaged_frees"] == 246_479
        assert row["nonpaged_bytes"] == 50_827_424
        # Paged pool usage comes from the tracker sums, and says so.
        assert v.paged_pool_usage_pages is not None
        assert v.source("paged_pool_usage").startswith("PoolTrackTable")
