"""A partial dump never gives a confident verdict: founding-story dumps cut at 25, 50 and 90 % of
their size, and a dump whose per-processor tag tables are missing, are never called healthy; the
text and the JSON name the cut (from the header's own size) and the analyses that met missing
pages."""

from __future__ import annotations

import json
import os
import pathlib

import pytest

import ntdump
from ntdump import forge
from ntdump.forge.writers import write_bitmap

SCHEMA = json.loads(
    (pathlib.Path(__file__).parents[1] / "docs" / "triage-schema.json").read_text())


def _validate(doc):
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(json.loads(json.dumps(doc)), SCHEMA)


@pytest.mark.parametrize("machine", ["x86", "x64", "x64-win7"])
@pytest.mark.parametrize("leak", [True, False])
@pytest.mark.parametrize("fraction", [0.25, 0.50, 0.90])
def test_cut_dump_is_never_healthy_and_names_the_cut(tmp_path, machine, leak, fraction):
    st = forge.founding_story(tmp_path / "cut.dmp", machine=machine, leak=leak)
    whole = os.path.getsize(st.path)
    with ntdump.open(st.path) as d:  # the whole file: no cut, no incompleteness
        assert d.info.cut is None
        d.add_symbols(st.symbols)
        assert ntdump.triage(d).to_dict()["incomplete"] is None
    os.truncate(st.path, int(whole * fraction))
    with ntdump.open(st.path) as d:
        cut = d.info.cut
        assert cut is not None and cut["truncated"]
        # The header says how big the file should be: RequiredDumpSpace = the whole file.
        assert cut["expected_size"] == whole
        assert cut["file_size"] == int(whole * fraction)
        assert abs(cut["present_fraction"] - fraction) < 1e-3
        d.add_symbols(st.symbols)
        r = ntdump.triage(d)
    text, doc = r.text(), r.to_dict()
    # (the temp path holds this test's name: leave it out)
    assert "healthy" not in text.replace(str(st.path), "").lower()
    assert "healthy" not in json.dumps({**doc, "dump": {}}).lower()
    named = (f"cut at {100 * fraction:.1f}% of its size: "
             f"{int(whole * fraction):,} of {whole:,} bytes")
    assert named in text
    assert named in doc["incomplete"]["reason"]
    assert doc["incomplete"]["expected_size"] == whole
    assert doc["incomplete"]["missing_pages"] == d.info.missing_pages > 0
    assert any(named in n for n in doc["notes"])
    if leak:  # what could be read still shows the depletion, as a lower bound
        assert "depletion" in doc["pool"]["verdict"] and "incomplete dump" in doc["pool"]["verdict"]
    else:
        assert doc["pool"]["verdict"].startswith("pool state unknown, because the dump file is cut")
        assert any(v["text"].startswith("Pool state unknown, because") for v in doc["verdicts"])
    _validate(doc)


def test_missing_per_processor_tables_are_reported_not_dropped(tmp_path):
    """Windows 10 sums the per-processor tag tables: when their pages are not in the dump,
    pool.used() warns, !vm says its sum is incomplete, and triage says "unknown, because"."""
    st = forge.founding_story(tmp_path / "whole.dmp", machine="x64", leak=False)
    sc = st.scenario
    assert st.pool.per_cpu_tables
    drop = {sc.pt.translate(t) >> 12 for t in st.pool.per_cpu_tables}
    path = tmp_path / "gap.dmp"
    write_bitmap(path, sc.mem, sc.header, "kernel", pages=sorted(set(sc.mem.pages) - drop))
    with ntdump.open(path) as d:
        assert d.info.cut is None  # nothing truncated: pages are simply not in this dump
        d.add_symbols(st.symbols)
        w = d.pool.used().attrs["warnings"]
        assert len(w) == len(st.pool.per_cpu_tables)
        assert all("unreadable" in x for x in w)
        assert "incomplete: per-processor tag table" in d.vm().source("nonpaged_pool_usage")
        r = ntdump.triage(d)
    doc = r.to_dict()
    assert doc["pool"]["verdict"].startswith("pool state unknown, because")
    assert "healthy" not in r.text().replace(str(path), "").lower()
    assert doc["incomplete"]["truncated"] is False
    details = [g["detail"] for g in doc["incomplete"]["inputs"]]
    assert all(x in details for x in w)
    assert any(g["analysis"] == "!vm" for g in doc["incomplete"]["inputs"])
    assert any(n.startswith("!poolused: per-processor tag table") for n in doc["notes"])
    _validate(doc)


def test_real_full_dump_head_names_its_cut(shared_data):
    """The first 16 KiB of a real Windows 10 full dump: the header's RequiredDumpSpace says how
    big the file was; triage says how little is left and gives no pool verdict."""
    with ntdump.open(shared_data / "dumps" / "win10-19045-x64-full-first16k.bin") as d:
        cut = d.info.cut
        assert cut["file_size"] == 16_384 and cut["expected_size"] == d.info.required_dump_space
        assert cut["expected_size"] > 1 << 30 and cut["missing_pages"] > 500_000
        r = ntdump.triage(d)
    doc = r.to_dict()
    assert "cut at 0.00076% of its size: 16,384 of" in doc["incomplete"]["reason"]
    assert doc["pool"]["verdict"].startswith("pool state unknown, because the dump file is cut")
    _validate(doc)


def test_unreadable_module_list_is_reported(tmp_path):
    """The loader entries' page is not in the dump: no module list, so no culprit; triage says why
    instead of a bare verdict."""
    st = forge.founding_story(tmp_path / "whole.dmp", machine="x64")
    sc = st.scenario
    drop = {sc.pt.translate(sc.layout.modules[-1].ldr_entry) >> 12}
    path = tmp_path / "nolist.dmp"
    write_bitmap(path, sc.mem, sc.header, "kernel", pages=sorted(set(sc.mem.pages) - drop))
    with ntdump.open(path) as d:
        d.add_symbols(st.symbols)
        r = ntdump.triage(d)
    doc = r.to_dict()
    assert any(g["analysis"] == "module list" and "unreadable" in g["detail"]
               for g in doc["incomplete"]["inputs"])
    assert "incomplete dump" in doc["pool"]["verdict"]
    assert any(n.startswith("module list: ") for n in doc["notes"])
    _validate(doc)


def test_real_triage_dump_is_not_called_cut(triage_dump):
    """A triage dump's RequiredDumpSpace is what its writer reserved (1,669,397 bytes for a file
    of 1,444,532 with a valid end marker): not a cut."""
    with ntdump.open(triage_dump) as d:
        assert d.info.required_dump_space > d.info.file_size
        assert d.info.cut is None
        assert ntdump.triage(d).to_dict()["incomplete"] is None
