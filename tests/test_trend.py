"""ntdump.trend: diff / series / trend / trend_plot recover the leaks forged into a fleet archive
(which machine leaks which tag, at what rate per hour: set by ntdump.batch.fleet)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

import ntdump
import ntdump.batch as batch
from ntdump import trend as T
from ntdump.batch.fleet import FILETIME_PER_HOUR, Leak, write_fleet


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory):
    return write_fleet(tmp_path_factory.mktemp("fleet"), compress={"srv-app2": "zip"})


@pytest.fixture(scope="module")
def results(fleet):
    return batch.run(fleet.root, analyses=("info", "poolused"), engine="serial",
                     progress=False)


def test_trend_finds_the_leak_at_its_rate(fleet, results):
    t = T.trend(results)
    assert list(t.columns[:7]) == ["machine", "tag", "first_bytes", "last_bytes",
                                   "bytes_per_hour", "allocs_per_hour", "monotonic"]
    (m, tag), (bph, aph) = next(iter(fleet.leaks.items()))
    top = t.iloc[0]
    assert (top["machine"], top["tag"]) == (m, tag) == ("srv-db1", "None")
    assert top["bytes_per_hour"] == pytest.approx(bph, rel=1e-9)
    assert top["allocs_per_hour"] == pytest.approx(aph, rel=1e-9)
    assert bool(top["monotonic"]) and top["dumps"] == 4
    dumps = sorted((d for d in fleet.dumps if d.machine == m), key=lambda d: d.system_time)
    assert top["first_bytes"] == dumps[0].counts[tag][2]
    assert top["last_bytes"] == dumps[-1].counts[tag][2]
    assert top["hours"] == pytest.approx(
        (dumps[-1].system_time - dumps[0].system_time) / FILETIME_PER_HOUR)
    # Healthy tags wobble: none grows at every step, and none comes near the leak's rate.
    rest = t.iloc[1:]
    assert not rest["monotonic"].any()
    assert (rest["bytes_per_hour"].abs() < bph / 10).all()
    assert set(t["machine"]) == set(fleet.machines)
    assert list(t["bytes_per_hour"]) == sorted(t["bytes_per_hour"], reverse=True)


def test_trend_of_paths_with_two_leaks_and_a_machine_function(tmp_path):
    leaks = {"web1": [Leak("Ntfx", 40_960, 200)],
             "web2": [Leak("CM31", 409_600, 1_000, start_bytes=8 << 20, paged=True),
                      Leak("VndC", 4_096, 32, start_bytes=4096, start_allocs=16)]}
    f = write_fleet(tmp_path / "raw", ("web1", "web2", "web3"), days=3, leaks=leaks,
                    x86=("web3",), bad_files=False)
    t = T.trend([f.root], machine=lambda p: "host-" + p.split("/")[-2][-1])
    got = {(r.machine, r.tag): (r.bytes_per_hour, r.allocs_per_hour, r.monotonic)
           for r in t.itertuples()}
    for (m, tag), (bph, aph) in f.leaks.items():
        g = got[("host-" + m[-1], tag)]
        assert g[0] == pytest.approx(bph, rel=1e-9), (m, tag)
        assert g[1] == pytest.approx(aph, rel=1e-9), (m, tag)
        assert g[2]
    # Healthy tags wobble by up to 10 % (so a slow leak can rank below them by rate), but only
    # the leaks grow at every step; in rate order.
    mono = t[t["monotonic"]]
    assert [(r.machine, r.tag) for r in mono.itertuples()] == [
        ("host-2", "CM31"), ("host-1", "Ntfx"), ("host-2", "VndC")]
    assert (t.iloc[0]["machine"], t.iloc[0]["tag"]) == ("host-2", "CM31")


def test_series_is_a_full_grid_and_dedupes_copies(tmp_path, fleet, results):
    s = T.series(results)
    per = s.groupby(["machine", "dump"], observed=True)["tag"].nunique()
    per_machine = s.groupby("machine", observed=True)["tag"].nunique()
    for (m, _), n in per.items():
        assert n == per_machine[m]  # every tag of a machine at every dump of it
    # A copy of a dump (same sha256) under another name counts once.
    dup = dict(results)
    info = results["info"]
    first = info.iloc[[0]].copy()
    first["dump"] = pd.Categorical(["/elsewhere/" + str(first["dump"].iloc[0]).split("/")[-2]
                                    + "/copy.dmp"])
    dup["info"] = pd.concat([info.astype({"dump": str}), first.astype({"dump": str})])
    s2 = T.series(dup)
    assert s2["dump"].nunique() == s["dump"].nunique()


def test_single_dump_machines_are_skipped(tmp_path):
    f = write_fleet(tmp_path, ("solo", "pair"), days=1, bad_files=False, leaks={})
    t = T.trend(f.root)
    assert t.empty and t.attrs["skipped"] == ["pair", "solo"]
    assert list(t.columns) == list(T.TREND_COLUMNS)


def test_diff_of_two_dumps_and_of_two_frames(fleet):
    dumps = sorted((d for d in fleet.dumps if d.machine == "srv-db1"),
                   key=lambda d: d.system_time)
    a, b = dumps[0], dumps[-1]
    with ntdump.open(a.path) as da, ntdump.open(b.path) as db:
        df = T.diff(da, db)
        frames = T.diff(da.pool.used(), db.pool.used())
    top = df.iloc[0]
    na, nb = a.counts["None"], b.counts["None"]
    assert top["tag"] == "None"
    assert top["bytes_a"] == na[2] and top["bytes_b"] == nb[2]
    assert top["bytes_delta"] == nb[2] - na[2]
    assert top["outstanding_delta"] == (nb[0] - nb[1]) - (na[0] - na[1])
    assert top["nonpaged_allocs_delta"] == nb[0] - na[0]
    hours = (b.system_time - a.system_time) / FILETIME_PER_HOUR
    assert df.attrs["hours"] == pytest.approx(hours)
    assert top["bytes_per_hour"] == pytest.approx(fleet.leaks[("srv-db1", "None")][0],
                                                  rel=1e-9)
    assert list(df["bytes_delta"]) == sorted(df["bytes_delta"], reverse=True)
    assert set(df["tag"]) == set(a.counts) | set(b.counts)
    cols = [c for c in T.DIFF_COLUMNS if c != "bytes_per_hour"]
    pd.testing.assert_frame_equal(frames[cols], df[cols])
    assert frames["bytes_per_hour"].isna().all() and frames.attrs["hours"] is None
    # Paths work too, and the reverse diff is the negation.
    back = T.diff(b.path, a.path).set_index("tag")
    assert back.loc["None", "bytes_delta"] == -top["bytes_delta"]


def test_machine_of():
    assert T.machine_of("/dumps/srv1/2024-01-01.dmp") == "srv1"
    assert T.machine_of("/dumps/srv1/2024-01-01.dmp.gz") == "srv1"
    assert T.machine_of("/dumps/all.zip!srv2/MEMORY.DMP") == "srv2"
    assert T.machine_of("/dumps/srv3.zip!MEMORY.DMP") == "srv3"
    assert T.machine_of("/dumps/x.7z!a/b/c.dmp") == "b"


def test_trend_plot(results):
    mpl = pytest.importorskip("matplotlib")
    mpl.use("Agg")
    fig = T.trend_plot(results, top=3)
    ax = fig.axes[0]
    assert len(ax.lines) == 3
    assert ax.lines[0].get_label().startswith("srv-db1: None (+1,536 KiB/h)")
    ys = ax.lines[0].get_ydata()
    assert list(ys) == sorted(ys) and not any(math.isnan(y) for y in ys)


def test_reexported_as_ntdump_pool_diff_and_trend():
    assert ntdump.pool.diff is T.diff
    assert ntdump.pool.trend is T.trend
