"""``!vm`` on Windows 10/11 from ``nt!MiState`` / ``nt!MiSystemPartition`` members and
``nt!ExPoolFailures``, through the kernel's PDB.

The dump: the forge's Windows 10 19041 x64 machine (128 MiB) with the KDBG fields a real 19041
kernel leaves 0 left 0 (``kdbg_real_zeros``), pool tracker tables (``forge.pool``), and
``MiState`` / ``MiSystemPartition`` / ``ExPoolFailures`` written by ``forge.mistate`` at the
offsets of the 19041 public symbols with values consistent with the machine. The PDB: linked for
that kernel by yaml2obj + lld-link (tests/kernel_pdb.py), its publics naming the three variables
and its types the ``_MI_*`` structs of ``forge.mistate.LAYOUT_19041_X64``. Hostile PDBs change
that layout (a member taken out, an offset beyond its struct, absurd sizes, a type left
undefined) and must give "not available" with a reason, never an exception.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

import pytest
from kernel_pdb import build, mistate_types, tools_present

import ntdump
from ntdump.forge import machine, scenario
from ntdump.forge import mistate as fm
from ntdump.forge import pool as fpool
from ntdump.forge.writers import write_full
from ntdump.kd import KdSession
from ntdump.symbols.mistate import MEMBER_PATHS, rows_for

PAGE = 4096
DOCS = Path(__file__).parents[1] / "docs"

# !vm field -> (variable, member path) the forge writes it to.
EXPECT = {
    "physical_memory": ("MiSystemPartition", "Vp.NumberOfPhysicalPages"),
    "available_pages": ("MiSystemPartition", "Vp.AvailablePages"),
    "resavail_pages": ("MiSystemPartition", "Vp.ResidentAvailablePages"),
    "modified_pages": ("MiSystemPartition", "Vp.ModifiedPageListHead.Total"),
    "shared_commit": ("MiSystemPartition", "Vp.SharedCommit"),
    "committed_pages": ("MiSystemPartition", "Vp.TotalCommittedPages"),
    "commit_limit": ("MiSystemPartition", "Vp.TotalCommitLimit"),
    "free_system_ptes": ("MiState", "Vs.SystemPteInfo.TotalFreeSystemPtes"),
    "nonpaged_pool_usage": ("MiState", "Pools.AllocatedNonPagedPool"),
    "nonpaged_pool_max": ("MiState", "Vs.MaximumNonPagedPoolInPages"),
    "nonpaged_pool_commit": ("MiState", "Vs.NonPagedPoolCommit"),
    "paged_pool_usage": ("MiState", "Vs.PagedPoolInfo.AllocatedPagedPool"),
    "paged_pool_max": ("MiState", "Vs.SizeOfPagedPoolInPages"),
    "driver_commit": ("MiState", "Vs.DriverCommit"),
    "pool_allocation_failures": ("ExPoolFailures", ""),
}


class Forged:
    """The written dump and its ground truth."""

    def __init__(self, tmp: Path, layouts_json: Path) -> None:
        s = scenario.win10_x64(tmp / "w10.dmp", kdbg_real_zeros=True)
        base = s.layout.kernel_base
        pl = fpool.add_to_scenario(s, region_base=base + 0x0100_0000)
        used = pl.expected_used.values()
        self.np_bytes = sum(u[2] for u in used)
        self.paged_bytes = sum(u[5] for u in used)
        self.tags = len(pl.expected_used)
        self.values = fm.counters(s.mem.page_count, s.mem.highest_pfn, s.mem.runs[0][0],
                                  tracker_nonpaged_bytes=self.np_bytes,
                                  tracker_paged_bytes=self.paged_bytes, failures=3)
        self.lay = fm.plant(s.pt, s.mem, base + 0x0140_0000, self.values)
        # nt!ExpSessionPoolTrackTable / …Size (pointer, SIZE_T: WRK ex/pool.c): naming the global
        # tracker table, so the session pool's expected counts are known
        sess = base + 0x0141_0000
        s.pt.map(sess, s.mem.alloc_page() << 12)
        for va, value in ((sess, pl.track_table), (sess + 8, pl.track_entries)):
            pa = s.pt.translate(va)
            assert pa is not None
            s.mem.write_u64(pa, value)
        write_full(s.path, s.mem, s.header)
        self.s, self.pl, self.base, self.layouts_json = s, pl, base, layouts_json
        self.rvas = {n: va - base for n, va in self.lay.variables.items()}
        self.rvas.update(ExpSessionPoolTrackTable=sess - base,
                         ExpSessionPoolTrackTableSize=sess + 8 - base)
        self.pdb = self.pdb_for(tmp / "good", fm.LAYOUT_19041_X64)

    def pdb_for(self, out: Path, layout: dict) -> Path:
        out.mkdir(parents=True, exist_ok=True)
        pdb, _, _ = build(out, self.layouts_json, self.rvas,
                          extra_types=functools.partial(mistate_types, layout=layout))
        return pdb

    def planted(self, key: str) -> int:
        var, path = EXPECT[key]
        v = self.values[var][path]
        return sum(v) if isinstance(v, list) else v


@pytest.fixture(scope="module")
def forged(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Forged:
    if not tools_present():
        pytest.skip("yaml2obj (Debian llvm) and lld-link/rust-lld are needed to build the PDB")
    return Forged(tmp_path_factory.mktemp("mistate"),
                  shared_data / "layouts" / "volatility2-vtypes-selected.json")


def test_the_forged_machine_is_possible(forged: Forged) -> None:
    """The planted values obey the forge's machine rules (available ≤ physical - nonpaged, the
    maximum as Windows 10 x64 sizes it, usage = the tracker's bytes in pages …)."""
    s = forged.s
    problems = machine.check_counters(
        fm.vm_counters(forged.values), family="win10", machine="x64",
        physical_pages=s.mem.page_count, highest_pfn=s.mem.highest_pfn,
        tracker_nonpaged_bytes=forged.np_bytes, tracker_paged_bytes=forged.paged_bytes,
        tags=forged.tags)
    assert problems == []
    assert forged.planted("nonpaged_pool_max") == s.mem.page_count  # Windows 8.1+ x64: RAM
    assert forged.planted("nonpaged_pool_usage") == -(-forged.np_bytes // PAGE)


def test_the_forge_writes_at_the_listed_offsets(forged: Forged) -> None:
    """Bytes in the dump's memory at the 19041 listing's offsets (ntdiff/headers 2004 x64):
    Vs at 0x25C0, NonPagedPoolCommit at Vs+0xA0, Vp at 0x1B00, AvailablePages at Vp+0xC0."""
    s, lay = forged.s, forged.lay
    ms, mp = lay.variables["MiState"], lay.variables["MiSystemPartition"]
    assert int.from_bytes(s.read(ms + 0x25C0 + 0xA0, 8), "little") == \
        forged.planted("nonpaged_pool_commit")
    assert int.from_bytes(s.read(mp + 0x1B00 + 0xC0, 8), "little") == \
        forged.planted("available_pages")
    assert int.from_bytes(s.read(lay.variables["ExPoolFailures"], 4), "little") == 3


def test_without_the_pdb_fields_say_why(forged: Forged) -> None:
    with ntdump.open(forged.s.path, symbols="") as d:
        v = d.vm()
        for key in ("available_pages", "commit_limit", "free_system_ptes", "nonpaged_pool_max",
                    "nonpaged_pool_commit", "pool_allocation_failures"):
            assert v[key].pages is None, key
        assert "needs the kernel's PDB" in v.source("available_pages")
        assert "KDBG.MmAvailablePages" in v.source("available_pages")
        assert "nt!MiState.Vs.NonPagedPoolCommit" in v.source("nonpaged_pool_commit")
        assert "nt!ExPoolFailures needs the kernel's PDB" in v.source("pool_allocation_failures")
        # usage comes from the tracker sums, as before
        assert v.nonpaged_pool_usage_pages == -(-forged.np_bytes // PAGE)
        assert v.source("nonpaged_pool_usage").startswith("PoolTrackTable: sum of")
        assert v.physical_memory_pages == forged.s.mem.page_count  # the dump header's block
        text = str(v)
        assert "Available Pages:" in text and "(not available: " in text


def test_symbols_from_a_map_give_the_untyped_counter_only(forged: Forged) -> None:
    """A symbol map (add_symbols) names the variables but carries no types: ExPoolFailures (a
    plain ULONG) is read, the struct members say they need the PDB's types."""
    with ntdump.open(forged.s.path, symbols="") as d:
        d.add_symbols({f"nt!{n}": va for n, va in forged.lay.variables.items()})
        v = d.vm()
        assert v.pool_allocation_failures == 3
        assert v.source("pool_allocation_failures").startswith(
            f"nt!ExPoolFailures at {forged.lay.variables['ExPoolFailures']:#x}")
        assert v.available_pages_pages is None
        assert "no PDB types for _MI_PARTITION" in v.source("available_pages")


def test_with_the_pdb_every_field_is_the_planted_member(forged: Forged) -> None:
    with ntdump.open(forged.s.path, symbols="") as d:
        d.load_pdb(forged.pdb, module="nt")
        v = d.vm()
        for key, (var, path) in EXPECT.items():
            assert v[key].pages == forged.planted(key), (key, v.source(key))
            sym = f"nt!{var}" + (f".{path}" if path else "")
            assert v.source(key).startswith(f"{sym} at {forged.lay.va(var, path):#x}"), key
            assert f"pdb {forged.pdb}" in v.source(key), key
        assert "+0x2660 in _MI_SYSTEM_INFORMATION" in v.source("nonpaged_pool_commit")
        assert "+0x1bc0 in _MI_PARTITION" in v.source("available_pages")
        assert v.pool_allocation_failures == 3
        assert v.warnings == ["3 pool allocations have failed"]
        # read back, the counters still describe a possible machine
        read = {"MmMaximumNonPagedPoolInBytes": v.nonpaged_pool_max_pages * PAGE,
                "MmAllocatedNonPagedPool": v.nonpaged_pool_usage_pages,
                "MmAvailablePages": v.available_pages_pages,
                "MmResidentAvailablePages": v.resavail_pages_pages,
                "MmModifiedPageListHead": v.modified_pages_pages,
                "MmSizeOfPagedPoolInBytes": v.paged_pool_max_pages * PAGE,
                "MmSharedCommit": v.shared_commit_pages, "MmDriverCommit": v.driver_commit_pages,
                "MmTotalCommittedPages": v.committed_pages_pages,
                "MmTotalCommitLimit": v.commit_limit_pages}
        s = forged.s
        assert machine.check_counters(
            read, family="win10", machine="x64", physical_pages=s.mem.page_count,
            highest_pfn=s.mem.highest_pfn, tracker_nonpaged_bytes=forged.np_bytes,
            tracker_paged_bytes=forged.paged_bytes, tags=forged.tags) == []


def test_kd_vm_prints_the_members(forged: Forged) -> None:
    with ntdump.open(forged.s.path, symbols="") as d:
        d.load_pdb(forged.pdb, module="nt")
        out = KdSession(d).run("!vm")
    np = forged.planted("nonpaged_pool_usage")
    assert f"NonPagedPool Usage:{np:>{26 - len('NonPagedPool Usage:')}}   ({np * 4:>8} Kb)" in out
    assert f"({forged.planted('nonpaged_pool_max') * 4:>8} Kb)" in out
    assert "NonPagedPool Commit:" in out and "PagedPool Maximum:" in out
    assert "3 pool allocations have failed" in out
    for label in ("Available Pages", "ResAvail Pages", "Free System PTEs", "Modified Pages",
                  "NonPagedPool Max", "PagedPool Usage", "Shared Commit", "Driver Commit",
                  "Committed pages", "Commit limit"):
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(label + ":"))
        assert "not available" not in line and line.rstrip().endswith("Kb)"), line


def test_triage_json_gives_usage_maximum_and_failures(forged: Forged, capsys) -> None:
    from ntdump.cli import main

    assert main(["triage", str(forged.s.path), "--json", "--pdb", str(forged.pdb)]) == 0
    doc = json.loads(capsys.readouterr().out)
    pool = doc["pool"]
    assert pool["failures"] == 3
    np, mx = forged.planted("nonpaged_pool_usage"), forged.planted("nonpaged_pool_max")
    assert pool["nonpaged"]["usage_kb"] == np * 4 and pool["nonpaged"]["max_kb"] == mx * 4
    assert pool["nonpaged"]["ratio"] == pytest.approx(np / mx)
    assert "nt!MiState.Pools.AllocatedNonPagedPool" in pool["nonpaged"]["source"]
    assert "nt!MiState.Vs.MaximumNonPagedPoolInPages" in pool["nonpaged"]["source"]
    pp, pmx = forged.planted("paged_pool_usage"), forged.planted("paged_pool_max")
    assert pool["paged"]["usage_kb"] == pp * 4 and pool["paged"]["max_kb"] == pmx * 4
    assert "nt!MiState.Vs.PagedPoolInfo.AllocatedPagedPool" in pool["paged"]["source"]
    assert not any("pool allocation failures" in n for n in doc["notes"])
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(doc, json.loads((DOCS / "triage-schema.json").read_text()))


def test_the_pdb_names_the_session_tracker_table(forged: Forged) -> None:
    pl = forged.pl
    cols = ["tag", "nonpaged_allocs", "nonpaged_bytes", "paged_allocs", "paged_bytes"]
    with ntdump.open(forged.s.path, symbols="") as d:
        with pytest.raises(ntdump.PoolTableError, match="ExpSessionPoolTrackTable"):
            d.pool.used(session=True, owners=0)
        explicit = d.pool.used(session=True, session_table=(pl.track_table, pl.track_entries),
                               owners=0)
        d.load_pdb(forged.pdb, module="nt")
        via_pdb = d.pool.used(session=True, owners=0)
        src = via_pdb.attrs["session_source"]
        assert src.startswith(f"nt!ExpSessionPoolTrackTable at {forged.base + 0x0141_0000:#x}")
        assert f"= {pl.track_entries} (pdb {forged.pdb})" in src
        assert len(via_pdb) > 0
        assert via_pdb[cols].astype(str).equals(explicit[cols].astype(str))


def _mutated(change) -> dict:
    layout = copy.deepcopy(fm.LAYOUT_19041_X64)
    change(layout)
    return layout


def _drop(struct: str, member: str):
    def f(lay: dict) -> None:
        size, members = lay[struct]
        lay[struct] = (size, [m for m in members if m[0] != member])
    return f


def _retype(struct: str, member: str, *, offset: int | None = None, mtype=None):
    def f(lay: dict) -> None:
        size, members = lay[struct]
        lay[struct] = (size, [(n, o if offset is None or n != member else offset,
                               t if mtype is None or n != member else mtype)
                              for n, o, t in members])
    return f


def _resize(struct: str, size: int):
    def f(lay: dict) -> None:
        lay[struct] = (size, lay[struct][1])
    return f


def _undefine(struct: str):
    def f(lay: dict) -> None:
        del lay[struct]
    return f


HOSTILE = {
    "member taken out": (_drop("_MI_VISIBLE_STATE", "NonPagedPoolCommit"),
                         ["nonpaged_pool_commit"],
                         "the PDB's _MI_VISIBLE_STATE has no member NonPagedPoolCommit"),
    "offset beyond the struct": (
        _retype("_MI_VISIBLE_STATE", "MaximumNonPagedPoolInPages", offset=0x5000),
        ["nonpaged_pool_max"], "extends beyond the end of _MI_VISIBLE_STATE"),
    "absurd struct size": (_resize("_MI_SYSTEM_INFORMATION", 1 << 40),
                           ["nonpaged_pool_usage", "paged_pool_max", "free_system_ptes"],
                           "an absurd size"),
    "absurd array": (_retype("_MI_VISIBLE_STATE", "SizeOfPagedPoolInPages", mtype=("u32", 100)),
                     ["paged_pool_max"], "array of 100 elements"),
    "struct where a count is": (
        _retype("_MI_VISIBLE_PARTITION", "AvailablePages", mtype="_MM_PAGED_POOL_INFO"),
        ["available_pages"], "not an integer"),
    "nested type undefined": (_undefine("_MI_VISIBLE_PARTITION"),
                              ["available_pages", "commit_limit"],
                              "_MI_VISIBLE_PARTITION has no members (declared, not defined)"),
    "variable's type absent": (_undefine("_MI_SYSTEM_INFORMATION"),
                               ["nonpaged_pool_max", "driver_commit"],
                               "the PDB has no type _MI_SYSTEM_INFORMATION"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_pdb_gives_reasons_not_crashes(forged: Forged, tmp_path: Path, case: str,
                                               capsys) -> None:
    change, keys, reason = HOSTILE[case]
    intact = "driver_commit" if "PARTITION" in reason or "available_pages" in keys \
        else "shared_commit"
    pdb = forged.pdb_for(tmp_path, _mutated(change))
    with ntdump.open(forged.s.path, symbols="") as d:
        d.load_pdb(pdb, module="nt")
        v = d.vm()
        for key in keys:
            f = v[key]
            if key in ("nonpaged_pool_usage", "paged_pool_usage"):
                # the tracker sums still answer; the member's reason is kept in the source
                assert f.source.startswith("PoolTrackTable: sum of"), (key, f.source)
            else:
                assert f.pages is None, (key, f.source)
            assert reason in f.source, (key, f.source)
        # the fields the change does not touch still come from their members
        assert v.pool_allocation_failures == 3
        assert v[intact].pages == forged.planted(intact), v.source(intact)
        text = str(v)
        assert "(not available: " in text
        r = ntdump.triage(d)
        assert r.to_dict()["pool"]["failures"] == 3


def test_member_paths_are_data_with_sources() -> None:
    """Every row cites a source; the rows covering 19041 resolve in the forge's 19041 layout (the
    listing), and the failure counter changes with the build: MiState.Pools.PoolFailures up to
    1809 (17763), nt!ExPoolFailures from 19H1 (18362)."""
    assert all(r.source and r.first_build >= 10240 for r in MEMBER_PATHS)
    types = {"MiState": "_MI_SYSTEM_INFORMATION", "MiSystemPartition": "_MI_PARTITION"}
    for r in MEMBER_PATHS:
        if r.covers(19041) and r.type_name is not None:
            _off, t = fm.member_offset(r.path, types[r.variable])
            assert isinstance(t, str) and t in ("u8", "u16", "u32", "i32", "u64"), r
    assert [r.symbol for r in rows_for("pool_allocation_failures", 17763)] == \
        ["nt!MiState.Pools.PoolFailures"]
    assert [r.symbol for r in rows_for("pool_allocation_failures", 19041)] == \
        ["nt!ExPoolFailures"]
    assert rows_for("available_pages", 7601) == []
    assert rows_for("available_pages", 22621)[0].symbol == \
        "nt!MiSystemPartition.Vp.AvailablePages"


def test_1809_pool_failures_are_summed(tmp_path: Path, shared_data: Path) -> None:
    """Build 17763 keeps the failure counters in MiState.Pools.PoolFailures, ULONG [3][3] at +0x30
    of _MI_POOL_STATE (ntdiff/headers Win10_1809 _MI_POOL_STATE.h): nine counters, summed. The
    PDB's _MI_POOL_STATE here is 1809's (its members at 1809's offsets, 0x148 bytes) inside the
    19041 frame of the other structs: enough to exercise a two-level array through the PDB."""
    if not tools_present():
        pytest.skip("yaml2obj (Debian llvm) and lld-link/rust-lld are needed to build the PDB")
    s = scenario.win10_x64(tmp_path / "rs5.dmp", build=17763, kdbg_real_zeros=True)
    base = s.layout.kernel_base
    layout = copy.deepcopy(fm.LAYOUT_19041_X64)
    layout["_MI_POOL_STATE"] = (0x148, [("AllocatedNonPagedPool", 0x18, "u64"),
                                        ("PoolFailures", 0x30, (("u32", 3), 3))])
    lay = fm.plant(s.pt, s.mem, base + 0x0140_0000, {"MiState": {}, "MiSystemPartition": {},
                                                      "ExPoolFailures": {"": 0}})
    counts = [1, 0, 2, 0, 0, 4, 0, 0, 1]
    pa = s.pt.translate(lay.variables["MiState"] + 0x30)
    assert pa is not None
    s.mem.write(pa, b"".join(c.to_bytes(4, "little") for c in counts))
    write_full(s.path, s.mem, s.header)
    rvas = {n: va - base for n, va in lay.variables.items()}
    pdb, _, _ = build(tmp_path, shared_data / "layouts" / "volatility2-vtypes-selected.json",
                      rvas, extra_types=functools.partial(mistate_types, layout=layout))
    with ntdump.open(s.path, symbols="") as d:
        d.load_pdb(pdb, module="nt")
        v = d.vm()
        assert v.pool_allocation_failures == sum(counts)
        assert "nt!MiState.Pools.PoolFailures" in v.source("pool_allocation_failures")
        assert "9 counters summed" in v.source("pool_allocation_failures")
        # before 19H1 the member paths start at MiState; Vp (18362+) is not tried
        assert "MiSystemPartition" not in v.source("available_pages")
