"""Pool: tracker tables, big pool table, pool pages and tag scans, forge → reader round trips for
every layout, the real triage dump, and bad input (bounded, typed errors)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pandas as pd
import pytest

import ntdump
from ntdump import forge
from ntdump.forge import pool as fpool
from ntdump.pool import PoolTableError

# (machine, build, tracker layout the forge writes, big-page layout)
CASES = [
    ("x86", 2600, "x86-0x1c", "xp-x86-12"),
    ("x86", 3790, "x86-0x1c", "2003-x86"),
    ("x64", 3790, "x64-0x28", "2003-x64"),
    ("x86", 7601, "x86-0x1c", "vista-x86"),
    ("x64", 7601, "x64-0x28", "vista-x64"),
    ("x64", 9200, "x64-0x28", "vista-x64"),
    ("x64", 9600, "x64-0x28", "vista-x64"),
    ("x64", 10586, "x64-0x28", "win10-x64"),
    ("x64", 17134, "x64-0x38", "win10-x64"),
    ("x64", 19041, "x64-0x38", "win10-x64"),
    ("x86", 19041, "x86-0x30", "win10-x86"),
    ("x86", 21292, "x86-0x40", "win10-x86"),
    ("x64", 22621, "x64-0x50", "win11-x64"),
    ("x64", 20348, "x64-0x38", "win11-x64"),
]


def forge_pool(path: Path, machine: str = "x64", build: int = 19041, *, processors: int = 2,
               fmt: str = "full", **kw) -> fpool.PoolLayout:
    """A small dump holding only a bare KDBG and the pool structures."""
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
        forge.write_bitmap(path, mem, hdr, kind="kernel", pages=sorted(mem.pages))
    return lay


def used_tuple(df: pd.DataFrame, tag: str) -> tuple[int, ...]:
    row = df[df["tag"] == tag].iloc[0]
    return tuple(int(row[c]) for c in ("nonpaged_allocs", "nonpaged_frees", "nonpaged_bytes",
                                       "paged_allocs", "paged_frees", "paged_bytes"))


@pytest.mark.parametrize(("machine", "build", "tracker", "big"), CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_round_trip_every_layout(tmp_path: Path, machine: str, build: int, tracker: str,
                                 big: str) -> None:
    p = tmp_path / "p.dmp"
    lay = forge_pool(p, machine, build, tracker_layout=tracker, big_layout=big)
    with ntdump.open(p) as d:
        u = d.pool.used(owners=0)
        assert u.attrs["layout"] == tracker
        assert u.attrs["variable"] == lay.track_variable == d.pool.track_table_address
        assert u.attrs["table"] == lay.track_table
        assert u.attrs["entries"] == lay.track_entries
        assert sorted(u.attrs["per_cpu"]) == sorted(lay.per_cpu_tables)
        for tag, want in lay.expected_used.items():
            assert used_tuple(u, tag) == want, tag
        assert len(u) == len(lay.expected_used)
        # Big pool: every forged allocation, with its freed bit.
        b = d.pool.big()
        assert b.attrs["layout"] == big and b.attrs["table"] == lay.big_table
        got = {(int(r.va), str(r.tag), bool(r.freed)) for r in b.itertuples()}
        assert got == {(a.va, a.tag.decode(), a.freed) for a in lay.big}
        for a in lay.big:
            row = b[b["va"] == a.va].iloc[0]
            if "NumberOfBytes" in fpool.BIG_LAYOUTS[big][1]:
                assert int(row["bytes"]) == a.bytes
            elif "NumberOfPages" in fpool.BIG_LAYOUTS[big][1]:
                assert int(row["bytes"]) == -(-a.bytes // 4096) * 4096
            if "PoolType" in fpool.BIG_LAYOUTS[big][1] or "PoolTypeBits" in \
                    fpool.BIG_LAYOUTS[big][1]:
                assert row["pool_type"] == ntdump.pool.pool_type_name(a.pool_type)
        # Scan: exactly the forged blocks.
        s = d.pool.scan(progress=False)
        truth = {(bl.address, bl.tag.decode(), bl.size, bl.allocated) for bl in lay.blocks}
        got_s = {(int(a), str(t), int(z), bool(al)) for a, t, z, al in
                 zip(s["address"], s["tag"], s["size"], s["allocated"], strict=True)}
        assert got_s == truth


def test_frame_types_and_sorting(tmp_path: Path) -> None:
    p = tmp_path / "p.dmp"
    forge_pool(p)
    d = ntdump.open(p)
    u = d.pool.used(owners=0)
    assert list(u.columns) == ["tag", "nonpaged_allocs", "nonpaged_frees", "nonpaged_bytes",
                               "paged_allocs", "paged_frees", "paged_bytes", "description",
                               "owners"]
    assert u["tag"].dtype == "category" and u["nonpaged_bytes"].dtype == "uint64"
    assert list(u["tag"][:2]) == ["None", "MmCm"]  # the founding story's order
    assert used_tuple(u, "None")[:3] == (251_203, 4_724, 50_827_424)
    assert list(d.pool.used(sort="paged", owners=0)["tag"][:2]) == ["MmSt", "CM31"]
    assert list(d.pool.used(flags=0x4, owners=0)["tag"][:1]) == ["MmSt"]
    by_tag = d.pool.used(sort="tag", owners=0)
    assert list(by_tag["tag"]) == sorted(by_tag["tag"])
    assert list(d.pool.used(tags="Thr*", owners=0)["tag"]) == ["Thre"]
    assert len(d.pool.used(top=2, owners=0)) == 2
    with pytest.raises(PoolTableError, match="ExpSessionPoolTrackTable"):
        d.pool.used(session=True)
    with pytest.raises(ValueError):
        d.pool.used(sort="bytes")
    b = d.pool.big()
    assert b["va"].dtype == "uint64" and b["tag"].dtype == "category"
    assert b["freed"].dtype == "bool"
    s = d.pool.scan(progress=False)
    assert s["address"].dtype == "uint64" and s["tag"].dtype == "category"
    assert list(s["address"]) == sorted(s["address"])


def test_used_text_layout(tmp_path: Path) -> None:
    p = tmp_path / "p.dmp"
    forge_pool(p)
    t = ntdump.open(p).pool.used_text(top=2)
    lines = t.splitlines()
    assert lines[0] == "   Sorting by  NonPaged Pool Consumed"
    assert "NonPaged" in lines[3] and "Paged" in lines[3]
    assert lines[4] == " Tag    Allocs     Used    Allocs     Used"
    # Allocs is outstanding allocations: 251,203 - 4,724.
    assert lines[5].split()[:4] == ["None", "246479", "50827424", "0"]
    assert lines[6].startswith(" MmCm")
    assert "Sorting by  Paged Pool Consumed" in ntdump.open(p).pool.used_text(flags=4)


def test_page_walk_legacy_and_segment_heap(tmp_path: Path) -> None:
    p = tmp_path / "old.dmp"
    lay = forge_pool(p, "x64", 7601)
    d = ntdump.open(p)
    blk = lay.blocks[4]
    pg = d.pool.page(blk.address + 0x18)
    assert pg.status == "ok"
    assert sum(b.size for b in pg.blocks) == 0x1000
    assert pg.block is not None and pg.block.address == blk.address
    assert [b.address for b in pg.blocks if b.contains] == [blk.address]
    text = str(pg)
    assert text.startswith("Pool page ") and f"*{blk.address:016x}" in text
    # 19H1+: no walk, the nearest header instead.
    p2 = tmp_path / "new.dmp"
    lay2 = forge_pool(p2, "x64", 19041)
    d2 = ntdump.open(p2)
    blk2 = lay2.blocks[7]
    pg2 = d2.pool.page(blk2.address + 0x20)
    assert pg2.status == "not walked" and "segment heap" in pg2.why
    assert pg2.nearest is not None and pg2.nearest.address == blk2.address
    assert "not available" in str(pg2)
    # An address inside a big allocation names its big-pool entry.
    big = next(a for a in lay2.big if not a.freed)
    assert d2.pool.page(big.va + 0x10).big["tag"] == big.tag.decode()


def _raw_page(tmp_path: Path, headers: list[bytes], build: int = 7601) -> tuple[ntdump.Dump, int]:
    mem = forge.PhysicalMemory(runs=[(0x1, 0x9F), (0x100, 0x800)])
    pt = forge.PageTables(mem, mode="x64")
    va = 0xFFFFC08000000000
    pas = pt.map_data(va, b"".join(headers).ljust(0x1000, b"\0"))
    assert pas
    hdr = forge.Header(machine="x64", build=build, dtb=pt.dtb)
    forge.write_full(tmp_path / "raw.dmp", mem, hdr)
    return ntdump.open(tmp_path / "raw.dmp"), va


def _h(prev: int, size: int, tag: bytes = b"Test", raw_type: int = 2) -> bytes:
    return fpool.pool_header_bytes("x64", 7601, previous_size=prev, block_size=size,
                                   pool_type=0, allocated=True, tag=tag,
                                   raw_type=raw_type).ljust(size or 16, b"\0")


def test_page_walk_corruption(tmp_path: Path) -> None:
    d, va = _raw_page(tmp_path, [_h(0, 0x40), _h(0x40, 0)])
    pg = d.pool.page(va)
    assert pg.status == "corrupt" and "zero" in pg.why and len(pg.blocks) == 1
    assert pg.corrupt_at == va + 0x40
    d, va = _raw_page(tmp_path, [_h(0, 0x40), _h(0x30, 0x40)])
    assert "PreviousSize" in d.pool.page(va).why
    d, va = _raw_page(tmp_path, [_h(0, 0x40), _h(0x40, 0x40, raw_type=0x81)])
    assert "PoolType" in d.pool.page(va).why
    d, va = _raw_page(tmp_path, [_h(0, 0x40), _h(0x40, 0x40)])  # rest of page is zero
    pg = d.pool.page(va + 0x50)
    assert pg.status == "corrupt" and len(pg.blocks) == 2
    with pytest.raises(ntdump.TranslationError):
        d.pool.page(0xFFFFC08000400000)


def test_scan_filters_progress_threads(tmp_path: Path) -> None:
    p = tmp_path / "p.dmp"
    lay = forge_pool(p, "x64", 7601, sample=32)
    d = ntdump.open(p)
    calls: list[tuple[int, int]] = []
    thr = d.pool.scan("Thr*", progress=lambda a, b: calls.append((a, b)))
    assert set(thr["tag"]) == {"Thre"} and calls and calls[-1][0] == calls[-1][1]
    assert len(thr) == sum(1 for b in lay.blocks if b.tag == b"Thre")
    paged = d.pool.scan(pool="paged", progress=False)
    assert set(paged["tag"]) == {b.tag.decode() for b in lay.blocks
                                 if b.allocated and b.pool_type & 1}
    assert paged["allocated"].all()
    q = d.pool.scan(["T?re", "MmCm"], pool="nonpaged", progress=False)
    assert set(q["tag"]) == {"Thre", "MmCm"}
    results: list[pd.DataFrame] = []
    ts = [threading.Thread(target=lambda: results.append(d.pool.scan(progress=False)))
          for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    pd.testing.assert_frame_equal(results[0], results[1])
    summ = d.pool.scan_summary(progress=False)
    row = summ[summ["tag"] == "VndC"].iloc[0]
    assert row["nonpaged_blocks"] == 32 and row["nonpaged_bytes"] == 32 * 0x60
    with pytest.raises(ValueError):
        d.pool.scan(pool="both")
    with pytest.raises(ValueError):
        d.pool.scan("*abc")


def test_scan_matches_tracker_when_exact(tmp_path: Path) -> None:
    """Tags with a block size and few allocations are written whole: the scan's per-tag totals
    equal the tracker table's."""
    tags = [fpool.PoolTag(b"AbCd", nonpaged_allocs=9, nonpaged_frees=2, block_size=0x40),
            fpool.PoolTag(b"EfGh", paged_allocs=20, paged_frees=5, block_size=0x100)]
    p = tmp_path / "p.dmp"
    forge_pool(p, "x86", 7601, tags=tags)
    d = ntdump.open(p)
    u = d.pool.used(owners=0).set_index("tag")
    s = d.pool.scan_summary(progress=False).set_index("tag")
    for t in ("AbCd", "EfGh"):
        assert s.loc[t, "nonpaged_bytes"] == u.loc[t, "nonpaged_bytes"]
        assert s.loc[t, "paged_bytes"] == u.loc[t, "paged_bytes"]
        assert s.loc[t, "nonpaged_blocks"] + s.loc[t, "paged_blocks"] == (
            u.loc[t, "nonpaged_allocs"] - u.loc[t, "nonpaged_frees"]
            + u.loc[t, "paged_allocs"] - u.loc[t, "paged_frees"])


def test_kernel_bitmap_dump_and_scenario(tmp_path: Path) -> None:
    """A sparse kernel (SDMP) dump reads the same; the forge kernel's own KDBG works too."""
    p = tmp_path / "k.dmp"
    lay = forge_pool(p, "x64", 19041, fmt="kernel")
    u = ntdump.open(p).pool.used(owners=0)
    assert used_tuple(u, "MmCm") == lay.expected_used["MmCm"]
    sc = forge.win10_x64(tmp_path / "story.dmp", fmt="kernel")
    pl = fpool.add_to_scenario(sc)
    d = ntdump.open(sc.path)
    assert d.info.dump_type == 6
    assert d.pool.track_table_address == pl.track_variable
    u = d.pool.used()
    assert list(u["tag"][:2]) == ["None", "MmCm"]
    # The founding story: the untagged pool's owners are ExAllocatePool's importers.
    assert "{6B1A3E41-8C52-4E0F-9A3D-2C7F1B9E0D55}" in u["owners"][0]


def test_triage_dump(triage_dump: Path) -> None:
    d = ntdump.open(triage_dump)
    # The KDBG copy in the triage dump names the variable; nothing past it is captured.
    assert d.pool.track_table_address == 0xFFFFF8047C6168A8
    with pytest.raises(PoolTableError, match="triage dump") as e:
        d.pool.used()
    assert e.value.table == "PoolTrackTable" and e.value.reason == "unavailable"
    assert e.value.va == 0xFFFFF8047C6168A8
    with pytest.raises(PoolTableError, match="triage dump"):
        d.pool.big()
    # The scan reads the captured ranges only: it works and is small.
    s = d.pool.scan(progress=False)
    assert s.attrs["pages"] > 0 and len(s) < 100


# -- bad input ---------------------------------------------------------------------------------

def test_absurd_track_table_size(tmp_path: Path) -> None:
    p = tmp_path / "p.dmp"
    forge_pool(p, track_size_value=0x7FFFFFFF)
    with pytest.raises(PoolTableError, match="power of two") as e:
        ntdump.open(p).pool.used()
    assert e.value.reason == "invalid"


def test_unmapped_track_table_pointer(tmp_path: Path) -> None:
    p = tmp_path / "p.dmp"
    forge_pool(p, track_pointer_value=0xFFFFC0FF00000000)
    with pytest.raises(PoolTableError, match="not readable"):
        ntdump.open(p).pool.used()
    p2 = tmp_path / "q.dmp"
    forge_pool(p2, track_pointer_value=0x1234)
    with pytest.raises(PoolTableError, match="not a kernel address"):
        ntdump.open(p2).pool.used()


def test_no_kdbg(tmp_path: Path) -> None:
    mem = forge.PhysicalMemory(runs=[(0x1, 0x9F), (0x100, 0x800)])
    pt = forge.PageTables(mem, mode="x64")
    forge.write_full(tmp_path / "n.dmp", mem, forge.Header(machine="x64", build=19041,
                                                             dtb=pt.dtb))
    d = ntdump.open(tmp_path / "n.dmp")
    with pytest.raises(PoolTableError, match="KDBG"):
        d.pool.used()
    with pytest.raises(PoolTableError):
        _ = d.pool.track_table_address


def test_huge_big_page_table_is_bounded(tmp_path: Path) -> None:
    p = tmp_path / "p.dmp"
    forge_pool(p, big_entries=1 << 22, big_table_mapped_pages=1,
               big=[fpool.BigAlloc(0, b"Huge", 0x2000, 0)])
    t = time.perf_counter()
    b = ntdump.open(p).pool.big()
    assert time.perf_counter() - t < 20
    assert list(b["tag"]) == ["Huge"]
    assert any("unreadable" in w for w in b.attrs["warnings"])
    p2 = tmp_path / "q.dmp"
    forge_pool(p2, big_size_value=0x7FFFFFFF)
    with pytest.raises(PoolTableError, match="PoolBigPageTable"):
        ntdump.open(p2).pool.big()
    # A table given by hand with an absurd size is refused.
    with pytest.raises(PoolTableError, match="bound"):
        ntdump.open(p).pool.big(table=(0xFFFFC08100000000, 1 << 40))


def test_wrong_stride_is_not_chosen(tmp_path: Path) -> None:
    """A Windows 10 x64 table written with the 0x28 layout at a build expecting 0x38: validation
    picks 0x28 (the `[?]` switch build), and says what each layout scored."""
    p = tmp_path / "p.dmp"
    lay = forge_pool(p, "x64", 19041, tracker_layout="x64-0x28")
    u = ntdump.open(p).pool.used(owners=0)
    assert u.attrs["layout"] == "x64-0x28"
    assert {s[0] for s in u.attrs["layout_scores"]} == {"x64-0x28", "x64-0x38", "x64-0x50"}
    assert used_tuple(u, "Ntfx") == lay.expected_used["Ntfx"]
