"""Issue 9: pool tables as the kernel leaves them, and every locating heuristic at every placement.

The forge now writes the big page table as InitializePool does (zeroed, then every slot's ``Va``
= 1, ``POOL_BIG_TABLE_ENTRY_FREE``; WRK ``base/ntos/ex/pool.c``, ReactOS
``ntoskrnl/mm/ARM3/expool.c``), freed allocations as ExpFindAndRemoveTagBigPages leaves them
(bit 0 of ``Va`` set, Key and size kept) and the tracker table with its overflow entry
(``PoolTrackTableSize = 2^n + 1``). The raw table bytes are checked here independently of the
reader, then the reader is held to exactly the used entries.

Placements: the big page table at each of Volatility 2's ``bigpagepools.py`` distances, at the
edges of the Windows 10 search window and outside it; PoolTrackTableSize before (Volatility 2's
``pooltracker.py``) and after the variable; ExPoolTagTables at several offsets, in the sheet's
layout and in WRK's (slot 0 = the global table). Absent tables give a typed error, or for the
optional per-CPU tables a warning, naming the argument to pass instead.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import ntdump
from ntdump import forge
from ntdump.forge import pool as fpool
from ntdump.forge import scenario as scen
from ntdump.forge.pool import BigAlloc
from ntdump.pool import PoolTableError

# The three kernels the issue names: 2003 x86 PAE (full), 7 x64 (bitmap), 10 x64 (full).
KERNELS = [("x86", 3790, "full"), ("x64", 7601, "bitmap"), ("x64", 19041, "full")]

BIG = [BigAlloc(0, b"ObNm", 0x3000, 1), BigAlloc(0, b"MmCm", 0x10000, 0),
       BigAlloc(0, b"Thre", 0x2000, 0, freed=True), BigAlloc(0, b"Leak", 0x5000, 0),
       BigAlloc(0, b"Vnd1", 0x4000, 0, freed=True)]


def _forge(path: Path, machine: str, build: int, fmt: str = "full", *, processors: int = 2,
           **kw) -> fpool.PoolLayout:
    mem = forge.PhysicalMemory(runs=[(0x1, 0x9F), (0x100, 0x3000)])
    pt = forge.PageTables(mem, mode="x64" if machine == "x64" else "pae")
    kd = 0xFFFFF80000010000 if machine == "x64" else 0x80010000
    forge.write_minimal_kdbg(pt, mem, kd)
    lay = forge.build_pool(pt, mem, machine=machine, build=build, kdbg_va=kd,
                           processors=processors, **kw)
    hdr = forge.Header(machine=machine, pae=machine != "x64", build=build, dtb=pt.dtb,
                       kd_debugger_data_block=kd, processors=processors)
    if fmt == "full":
        forge.write_full(path, mem, hdr)
    else:
        forge.write_bitmap(path, mem, hdr, kind="full")
    return lay


def _raw_vas(d: ntdump.Dump, table: int, entries: int, layout: str) -> list[int]:
    """Every slot's Va read straight from the dump (not through the pool reader)."""
    size, fields = fpool.BIG_LAYOUTS[layout]
    off, width = fields["Va"]
    raw = d.read(table, entries * size)
    return [int.from_bytes(raw[i * size + off:i * size + off + width], "little")
            for i in range(entries)]


def _want(allocs: list[BigAlloc], layout: str) -> list[tuple[int, str, int, bool]]:
    pages = "NumberOfPages" in fpool.BIG_LAYOUTS[layout][1]
    return sorted((a.va, a.tag.decode(), -(-a.bytes // 4096) * 4096 if pages else a.bytes,
                   a.freed) for a in allocs)


def _got(df) -> list[tuple[int, str, int, bool]]:
    return sorted((int(r.va), str(r.tag), int(r.bytes), bool(r.freed)) for r in df.itertuples())


@pytest.mark.parametrize(("machine", "build", "fmt"), KERNELS,
                         ids=[f"{m}-{b}-{f}" for m, b, f in KERNELS])
def test_big_table_as_the_kernel_leaves_it(tmp_path: Path, machine: str, build: int,
                                           fmt: str) -> None:
    p = tmp_path / "k.dmp"
    lay = _forge(p, machine, build, fmt, big=BIG, big_entries=4096)
    with ntdump.open(p) as d:
        vas = _raw_vas(d, lay.big_table, lay.big_entries, lay.big_layout)
        used = {a.va for a in lay.big if not a.freed}
        freed = {a.va | 1 for a in lay.big if a.freed}
        # The table holds exactly: Va == 1 everywhere but the five allocations (99.9 % free).
        assert sum(v == 1 for v in vas) == 4096 - len(BIG)
        assert {v for v in vas if v != 1} == used | freed
        b = d.pool.big()
        assert _got(b) == _want(lay.big, lay.big_layout)
        assert int(b["va"].min()) > 1 and b["freed"].sum() == 2
        assert b.attrs["table"] == lay.big_table and b.attrs["entries"] == 4096


@pytest.mark.parametrize(("machine", "build"), [("x86", 3790), ("x64", 7601), ("x64", 19041)])
def test_untouched_table_is_found_and_empty(tmp_path: Path, machine: str, build: int) -> None:
    """A table with no allocation at all (every Va == 1) is still a valid table: no rows."""
    p = tmp_path / "k.dmp"
    lay = _forge(p, machine, build, big=[], big_entries=1024)
    with ntdump.open(p) as d:
        b = d.pool.big()
        assert len(b) == 0 and b.attrs["table"] == lay.big_table


def test_session_big_table(tmp_path: Path) -> None:
    """The session table is initialised the same way (WRK ExInitializePoolDescriptor)."""
    p = tmp_path / "k.dmp"
    sess = [BigAlloc(0, b"Gses", 0x2000, 0x21), BigAlloc(0, b"Gfre", 0x3000, 0x21, freed=True)]
    lay = _forge(p, "x64", 7601, big=BIG[:1], session_big=sess, session_big_entries=256)
    with ntdump.open(p) as d:
        assert lay.session_big_table is not None
        vas = _raw_vas(d, lay.session_big_table, 256, lay.big_layout)
        assert sum(v == 1 for v in vas) == 254
        b = d.pool.big(table=(lay.session_big_table, lay.session_big_entries))
        assert _got(b) == _want(lay.session_big, lay.big_layout)


def test_consumers_on_a_kernel_like_table(tmp_path: Path) -> None:
    """page(), owners(), triage and batch on a founding-story dump whose big table is 99 % free."""
    p = tmp_path / "story.dmp"
    s = scen.server2003_x86_pae(p, fmt="full")
    pl = fpool.add_to_scenario(s, big=BIG, big_entries=2048)
    live = next(a for a in pl.big if a.tag == b"MmCm")
    gone = next(a for a in pl.big if a.tag == b"Thre")
    with ntdump.open(p) as d:
        assert _got(d.pool.big()) == _want(pl.big, pl.big_layout)
        pg = d.pool.page(live.va + 0x100)
        assert pg.big is not None and pg.big["tag"] == "MmCm" and pg.big["va"] == live.va
        assert d.pool.page(gone.va).big is None  # a freed entry never answers for its address
        assert "MmCm" in str(pg)
        d.pool.owners("MmCm")  # runs over the module images; must not trip on the table
        rep = ntdump.triage(d)
        assert rep.to_dict()
    out = ntdump.batch.run([p], analyses=["triage", "poolused", _big_rows], engine="serial")
    assert "error" not in out or out["error"].empty
    rows = out["_big_rows"]
    assert sorted(rows["tag"].astype(str)) == sorted(a.tag.decode() for a in pl.big)


def _big_rows(d: ntdump.Dump):
    """A batch analysis (module level so it pickles): the big pool table."""
    return d.pool.big()


# -- PoolBigPageTable near PoolTrackTable: every Volatility 2 distance, the Win10 search --------

VOL2 = sorted(fpool.VOL2_DISTANCES)


@pytest.mark.parametrize(("build", "x64"), VOL2, ids=[f"{b}-{'x64' if x else 'x86'}"
                                                     for b, x in VOL2])
def test_big_table_at_each_volatility2_distance(tmp_path: Path, build: int, x64: bool) -> None:
    p = tmp_path / "k.dmp"
    machine = "x64" if x64 else "x86"
    lay = _forge(p, machine, build, big=BIG, big_entries=1024)
    d0, d1 = fpool.VOL2_DISTANCES[(build, x64)]
    assert lay.variables["PoolBigPageTable"] == lay.track_variable - d0
    assert lay.variables["PoolBigPageTableSize"] == lay.track_variable - d1
    with ntdump.open(p) as d:
        b = d.pool.big()
        assert b.attrs["how"] == "volatility2 distance"
        assert b.attrs["table"] == lay.big_table
        assert _got(b) == _want(lay.big, lay.big_layout)


@pytest.mark.parametrize("machine", ["x64", "x86"])
@pytest.mark.parametrize("where", ["far-below", "just-after", "far-above", "size-before"])
def test_big_table_search_window_windows10(tmp_path: Path, machine: str, where: str) -> None:
    """Windows 10+ has no published distance: the pair is searched within ±0x1800 bytes."""
    ptr = 8 if machine == "x64" else 4
    dist = {"far-below": (0x17F0, 0x17F0 + ptr), "just-after": (-4 * ptr, -5 * ptr),
            "far-above": (-0x17E0, -0x17E0 - ptr), "size-before": (-0x400, -0x400 + ptr)}[where]
    p = tmp_path / "k.dmp"
    lay = _forge(p, machine, 19041, big=BIG, big_entries=1024, big_distance=dist)
    with ntdump.open(p) as d:
        b = d.pool.big()
        assert b.attrs["how"] == "search near PoolTrackTable"
        assert b.attrs["table_variable"] == lay.variables["PoolBigPageTable"]
        assert _got(b) == _want(lay.big, lay.big_layout)


@pytest.mark.parametrize(("machine", "build"), [("x86", 3790), ("x64", 7601), ("x64", 19041)])
def test_big_table_absent_names_what_to_pass(tmp_path: Path, machine: str, build: int) -> None:
    p = tmp_path / "k.dmp"
    # The variables sit outside the searched window (and not at Volatility 2's distance).
    lay = _forge(p, machine, build, big=BIG, big_entries=1024, big_distance=(0x1900, 0x1908))
    with ntdump.open(p) as d:
        with pytest.raises(PoolTableError, match=r"big\(table=\(va, entries\)\)") as e:
            d.pool.big()
        assert e.value.table == "PoolBigPageTable" and e.value.reason == "unavailable"
        b = d.pool.big(table=(lay.big_table, lay.big_entries))
        assert _got(b) == _want(lay.big, lay.big_layout)


# -- the tracker-size slot ----------------------------------------------------------------------

@pytest.mark.parametrize(("machine", "build"), [("x86", 2600), ("x86", 3790), ("x64", 3790),
                                                ("x64", 7601), ("x64", 9600), ("x64", 19041),
                                                ("x86", 19041), ("x64", 22621)])
@pytest.mark.parametrize("slot", ["before", "after"])
def test_tracker_size_slot(tmp_path: Path, machine: str, build: int, slot: str) -> None:
    """Volatility 2 reads PoolTrackTableSize just before the variable for every version; the value
    is 2^n + 1 (InitializePool counts the overflow entry)."""
    p = tmp_path / "k.dmp"
    lay = _forge(p, machine, build, track_size_slot=slot)
    ptr = 8 if machine == "x64" else 4
    assert lay.track_entries == 1025
    with ntdump.open(p) as d:
        u = d.pool.used(owners=0)
        assert u.attrs["entries"] == 1025
        assert u.attrs["size_variable"] == lay.track_variable + (ptr if slot == "after" else -ptr)
        for tag, want in lay.expected_used.items():
            row = u[u["tag"] == tag].iloc[0]
            assert tuple(int(row[c]) for c in ("nonpaged_allocs", "nonpaged_frees",
                                               "nonpaged_bytes", "paged_allocs", "paged_frees",
                                               "paged_bytes")) == want


def test_tracker_size_absent_names_what_to_pass(tmp_path: Path) -> None:
    p = tmp_path / "k.dmp"
    lay = _forge(p, "x64", 7601, track_size_value=0)
    with ntdump.open(p) as d:
        with pytest.raises(PoolTableError, match=r"used\(track_entries=n\)") as e:
            d.pool.used(owners=0)
        assert e.value.table == "PoolTrackTable" and e.value.reason == "invalid"
        u = d.pool.used(owners=0, track_entries=lay.track_entries)
        assert u.attrs["entries"] == lay.track_entries
        assert len(u) == len(lay.expected_used)


# -- ExPoolTagTables ----------------------------------------------------------------------------

@pytest.mark.parametrize("machine", ["x64", "x86"])
@pytest.mark.parametrize("offset", [-0xF00, -0x800, 0x200, 0xF00])
@pytest.mark.parametrize("style", ["separate", "wrk"])
def test_per_cpu_tables_at_each_offset(tmp_path: Path, machine: str, offset: int,
                                       style: str) -> None:
    p = tmp_path / "k.dmp"
    lay = _forge(p, machine, 19041, processors=4, per_cpu_offset=offset, per_cpu_style=style)
    with ntdump.open(p) as d:
        u = d.pool.used(owners=0)
        assert u.attrs["per_cpu_array"] == lay.per_cpu_array
        assert sorted(u.attrs["per_cpu"]) == sorted(lay.per_cpu_tables)
        assert len(lay.per_cpu_tables) == (3 if style == "wrk" else 4)
        assert not any("ExPoolTagTables" in w for w in u.attrs["warnings"])
        for tag, want in lay.expected_used.items():
            row = u[u["tag"] == tag].iloc[0]
            assert int(row["nonpaged_allocs"]) == want[0] and int(row["paged_bytes"]) == want[5]


def test_per_cpu_tables_absent_names_what_to_pass(tmp_path: Path) -> None:
    p = tmp_path / "k.dmp"
    lay = _forge(p, "x64", 19041, processors=4, per_cpu_offset=-0x1F00)
    with ntdump.open(p) as d:
        u = d.pool.used(owners=0)
        assert u.attrs["per_cpu"] == []
        assert any("per_cpu=[" in w for w in u.attrs["warnings"])
        full = d.pool.used(owners=0, per_cpu=lay.per_cpu_tables)
        for tag, want in lay.expected_used.items():
            row = full[full["tag"] == tag].iloc[0]
            assert int(row["nonpaged_allocs"]) == want[0]


@pytest.mark.parametrize(("machine", "build"), [("x86", 3790), ("x64", 3790), ("x64", 7601)])
def test_multiprocessor_tables_before_windows10(tmp_path: Path, machine: str, build: int) -> None:
    """WRK (2003 SP1) multiprocessor kernels keep per-processor tag tables too, with
    ExPoolTagTables[0] = PoolTrackTable: the global table alone is processor 0's share."""
    p = tmp_path / "k.dmp"
    lay = _forge(p, machine, build, processors=4)
    assert len(lay.per_cpu_tables) == 3 and lay.per_cpu_array is not None
    with ntdump.open(p) as d:
        u = d.pool.used(owners=0)
        assert sorted(u.attrs["per_cpu"]) == sorted(lay.per_cpu_tables)
        for tag, want in lay.expected_used.items():
            row = u[u["tag"] == tag].iloc[0]
            assert int(row["nonpaged_allocs"]) == want[0] and int(row["paged_allocs"]) == want[3]
    q = tmp_path / "up.dmp"
    _forge(q, machine, build, processors=1)  # a uniprocessor kernel: the global table is all
    with ntdump.open(q) as d:
        u = d.pool.used(owners=0)
        assert u.attrs["per_cpu"] == [] and not any("ExPoolTagTables" in w
                                                    for w in u.attrs["warnings"])
