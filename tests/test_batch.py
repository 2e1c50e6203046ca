"""ntdump.batch: inputs, status rows, engines (serial, local pool, Dask LocalCluster) giving the
same frames, Ctrl-C, worker crashes, Parquet, the CLI — on a forged fleet archive whose every
tracker count and system time is known (ntdump.batch.fleet)."""

from __future__ import annotations

import gzip
import hashlib
import os
import zipfile
from pathlib import Path

import pandas as pd
import pytest

import ntdump.batch as batch
from ntdump.batch import fleet as fleet_mod
from ntdump.batch._engines import cores

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

COMPRESS = {"srv-app2": "gz", "srv-file1": "zip"}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> fleet_mod.Fleet:
    return fleet_mod.write_fleet(tmp_path_factory.mktemp("fleet"), compress=COMPRESS)


@pytest.fixture(scope="module")
def serial(fleet: fleet_mod.Fleet) -> dict[str, pd.DataFrame]:
    return batch.run(fleet.root, engine="serial", progress=False)


@pytest.fixture(scope="module")
def local2(fleet: fleet_mod.Fleet) -> dict[str, pd.DataFrame]:
    return batch.run(fleet.root, engine="local", workers=2, progress=False)


@pytest.fixture(scope="module")
def dask_client():
    pytest.importorskip("dask.distributed")
    from ntdump.batch._engines import local_cluster

    cluster, client = local_cluster(2)
    yield client
    client.close()
    cluster.close()


def _comparable(res: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The frames without the one column that is a measurement (status.seconds)."""
    out = dict(res)
    out["status"] = res["status"].drop(columns="seconds")
    return out


def assert_same_results(a: dict[str, pd.DataFrame], b: dict[str, pd.DataFrame]) -> None:
    a, b = _comparable(a), _comparable(b)
    assert list(a) == list(b)
    for k in a:
        pd.testing.assert_frame_equal(a[k], b[k], check_exact=True, obj=k)


# -- per-dump frames against the forged truth -----------------------------------------------------
def test_status_has_one_row_per_input_and_bad_files_do_not_stop_the_batch(fleet, serial):
    st = serial["status"].set_index("dump")
    good = {d.path for d in fleet.dumps}
    assert set(st.index) == good | set(fleet.bad)
    assert (st.loc[sorted(good), "status"] == "ok").all()
    corrupt = next(p for p, w in fleet.bad.items() if w == "corrupt")
    notes = next(p for p, w in fleet.bad.items() if w == "not a dump")
    trunc = next(p for p, w in fleet.bad.items() if w == "truncated")
    assert st.loc[corrupt, "status"] == "error"
    assert st.loc[corrupt, "error_type"] == "DumpFormatError"
    assert st.loc[notes, "status"] == "error"
    assert st.loc[trunc, "status"] in ("partial", "error")
    assert "truncated" in st.loc[trunc, "warnings"] or st.loc[trunc, "status"] == "error"
    errs = serial["errors"]
    assert set(errs["dump"]) == set(fleet.bad)
    assert not serial["status"].attrs["interrupted"]


def test_poolused_rows_are_the_forged_counts(fleet, serial):
    pu = serial["poolused"]
    for d in fleet.dumps:
        got = pu[pu["dump"] == d.path].set_index(pu[pu["dump"] == d.path]["tag"].astype(str))
        assert set(got.index) == set(d.counts), d.path
        for tag, (na, nf, nb, pa, pf, pb) in d.counts.items():
            r = got.loc[tag]
            assert (r["nonpaged_allocs"], r["nonpaged_frees"], r["nonpaged_bytes"],
                    r["paged_allocs"], r["paged_frees"], r["paged_bytes"]) == \
                (na, nf, nb, pa, pf, pb), (d.path, tag)


def test_info_vm_modules_triage_frames(fleet, serial):
    info = serial["info"].set_index("dump")
    for d in fleet.dumps:
        assert info.loc[d.path, "system_time"] == d.system_time
    assert set(info.loc[[d.path for d in fleet.dumps], "machine"]) == {"x64", "x86"}
    for name in ("info", "vm", "poolused", "modules", "triage"):
        df = serial[name]
        assert list(df.columns[:2]) == ["dump", "dump_sha256"]
        assert isinstance(df["dump"].dtype, pd.CategoricalDtype)
        assert list(df["dump"].astype(str)) == sorted(df["dump"].astype(str)), name
    assert len(serial["triage"]) == len(info)
    vm = serial["vm"]
    assert set(vm["key"].astype(str)) >= {"nonpaged_pool_usage", "nonpaged_pool_max"}
    # The leaking machine's last dump is triaged as the founding story.
    leak_last = max((d for d in fleet.dumps if d.machine == "srv-db1"),
                    key=lambda d: d.system_time)
    tri = serial["triage"].set_index("dump").loc[leak_last.path]
    assert tri["top_tag"] == "None"
    assert "depletion" in tri["pool_verdict"].lower()
    others = serial["triage"][serial["triage"]["dump"].astype(str).isin(
        [d.path for d in fleet.dumps if d is not leak_last])]
    assert others["pool_verdict"].str.startswith("pool is healthy").all()
    assert "{6B1A3E41" in tri["suspect_drivers"]
    import json

    rep = json.loads(tri["json"])
    assert rep["schema"] == "ntdump.triage/1"
    assert rep["dump"]["path"] == leak_last.path  # the name, not a temp path
    mods = serial["modules"]
    assert (mods.groupby("dump", observed=True).size() >= 10).all()


def test_sha256_of_plain_and_compressed_dumps(fleet, serial):
    st = serial["status"].set_index("dump")
    for d in fleet.dumps:
        if d.path.endswith(".gz"):
            with gzip.open(d.path, "rb") as f:
                want = hashlib.sha256(f.read()).hexdigest()
        elif "!" in d.path:
            arc, member = d.path.split("!", 1)
            with zipfile.ZipFile(arc) as z:
                want = hashlib.sha256(z.read(member)).hexdigest()
        else:
            want = hashlib.sha256(Path(d.path).read_bytes()).hexdigest()
        assert st.loc[d.path, "dump_sha256"] == want
    info = serial["info"]
    assert (info["dump_sha256"].astype(str) == [st.loc[p, "dump_sha256"]
                                                 for p in info["dump"].astype(str)]).all()


# -- engines --------------------------------------------------------------------------------------
def test_local_pool_equals_serial(serial, local2):
    assert_same_results(serial, local2)


def test_dask_localcluster_equals_local(fleet, local2, dask_client):
    res = batch.run(fleet.root, engine="dask", client=dask_client, progress=False)
    assert_same_results(local2, res)
    assert dask_client.status == "running"  # a client that was given stays open


def test_dask_engine_starts_and_closes_its_own_loopback_cluster(tmp_path):
    pytest.importorskip("dask.distributed")
    f = fleet_mod.write_fleet(tmp_path, ("srv-a", "srv-b"), days=2, bad_files=False)
    own = batch.run(f.root, engine="dask", workers=2, progress=False)
    assert_same_results(batch.run(f.root, engine="serial", progress=False), own)


def test_results_do_not_depend_on_input_order_or_worker_count(fleet, serial):
    paths = sorted(p for p in fleet.root.iterdir())[::-1]  # the same inputs, reversed
    res = batch.run(paths, engine="local", workers=1, progress=False)
    assert_same_results(serial, res)


def _rayon_env(d) -> pd.DataFrame:
    return pd.DataFrame({"rayon": [os.environ.get("RAYON_NUM_THREADS")]})


@pytest.mark.parametrize("workers", [1, 2])
def test_workers_cap_the_rayon_pool(tmp_path, workers):
    f = fleet_mod.write_fleet(tmp_path, ("srv-a",), days=2, bad_files=False)
    res = batch.run(f.root, analyses=[_rayon_env], engine="local", workers=workers,
                    progress=False)
    want = str(max(1, cores() // min(workers, len(f.dumps))))
    assert list(res["_rayon_env"]["rayon"]) == [want] * len(f.dumps)


def _crash_on_day2(d) -> pd.DataFrame:
    if d.info.system_time and "2024-03-02" in str(d.info.system_datetime):
        os._exit(3)  # a worker dying (a native crash would look the same)
    return pd.DataFrame({"ok": [True]})


def test_a_dump_that_kills_its_worker_gets_an_error_row_and_the_rest_survive(tmp_path):
    f = fleet_mod.write_fleet(tmp_path, ("srv-a",), days=3, bad_files=False)
    res = batch.run(f.root, analyses=["info", _crash_on_day2], engine="local", workers=2,
                    progress=False)
    st = res["status"].set_index("dump")
    day2 = {d.path for d in f.dumps if "2024-03-02" in d.path}
    assert len(day2) == 1
    for d in f.dumps:
        if d.path in day2:
            assert st.loc[d.path, "status"] == "error"
            assert st.loc[d.path, "error_type"] == "BrokenProcessPool"
        else:
            assert st.loc[d.path, "status"] == "ok", st.loc[d.path].to_dict()
    assert set(res["_crash_on_day2"]["dump"]) == {d.path for d in f.dumps} - day2


def _fails(d) -> pd.DataFrame:
    raise RuntimeError("this analysis always fails")


def test_a_failing_analysis_is_an_error_row_and_loses_nothing_else(tmp_path):
    f = fleet_mod.write_fleet(tmp_path, ("srv-a",), days=2, bad_files=False)
    res = batch.run(f.root, analyses=["info", _fails, "poolused"], engine="serial",
                    progress=False)
    assert (res["status"]["status"] == "partial").all()
    assert (res["status"]["failed"] == "_fails").all()
    assert len(res["info"]) == 2 and res["poolused"]["dump"].nunique() == 2
    assert list(res["_fails"].columns) == ["dump", "dump_sha256"] and res["_fails"].empty
    e = res["errors"]
    assert list(e["analysis"].astype(str)) == ["_fails", "_fails"]
    assert (e["error_type"] == "RuntimeError").all()


# -- Ctrl-C ---------------------------------------------------------------------------------------
class _InterruptAfter:
    """A progress callback that raises KeyboardInterrupt after ``k`` results (what Ctrl-C does
    in the parent, without signals or timing)."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.calls = 0

    def __call__(self, done: int, total: int) -> None:
        self.calls += 1
        if done >= self.k:
            raise KeyboardInterrupt


def _check_interrupted(res: dict[str, pd.DataFrame], k: int, total: int) -> int:
    st = res["status"]
    assert st.attrs["interrupted"]
    assert len(st) == total
    finished = st[st["status"] != "cancelled"]
    assert len(finished) >= k
    # Frames hold exactly the dumps that finished; cancelled ones have no rows.
    done = set(finished["dump"])
    for name in set(res) - {"status", "errors"}:
        assert set(res[name]["dump"].astype(str)) <= done
    return len(st) - len(finished)


def test_ctrl_c_serial_stops_after_exactly_k(fleet):
    total = len(fleet.dumps) + len(fleet.bad)
    res = batch.run(fleet.root, analyses=("info", "poolused"), engine="serial",
                    progress=_InterruptAfter(3))
    assert _check_interrupted(res, 3, total) == total - 3


def test_ctrl_c_local_cancels_pending_and_keeps_what_finished(fleet, tmp_path):
    total = len(fleet.dumps) + len(fleet.bad)
    tmp = tmp_path / "work"
    res = batch.run(fleet.root, analyses=("info", "poolused"), engine="local", workers=1,
                    progress=_InterruptAfter(2), tmpdir=tmp)
    cancelled = _check_interrupted(res, 2, total)
    # One worker, at most 2 units in flight: at most 2 more finish while stopping.
    assert total - 4 <= cancelled <= total - 2
    assert list(tmp.iterdir()) == []  # the run's expansion folders are gone


def test_ctrl_c_dask_cancels_the_rest(fleet, dask_client):
    total = len(fleet.dumps) + len(fleet.bad)
    res = batch.run(fleet.root, analyses=("info",), engine="dask", client=dask_client,
                    progress=_InterruptAfter(2))
    _check_interrupted(res, 2, total)
    assert dask_client.status == "running"


# -- inputs ---------------------------------------------------------------------------------------
def test_expand_lists_units_deterministically(fleet):
    units = batch.expand([fleet.root])
    names = [u.name for u in units]
    assert len(names) == len(set(names)) == len(fleet.dumps) + len(fleet.bad)
    kinds = {u.kind for u in units}
    assert kinds == {"file", "gzip", "zip"}
    assert batch.expand([fleet.root, fleet.root]) == units  # named twice, listed once


def test_missing_path_and_bad_archives_are_status_rows(tmp_path, fleet):
    good = next(d.path for d in fleet.dumps if d.path.endswith(".dmp") and "!" not in d.path)
    raw = Path(good).read_bytes()
    (tmp_path / "cut.dmp.gz").write_bytes(gzip.compress(raw)[:5000])  # truncated gzip
    (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04" + b"\0" * 100)  # not a zip really
    with zipfile.ZipFile(tmp_path / "two.zip", "w") as z:
        z.writestr("a/MEMORY.DMP", raw)
        z.writestr("a/readme.txt", "x")
    res = batch.run([tmp_path, tmp_path / "missing.dmp"], analyses=("info",), engine="serial",
                    progress=False)
    st = res["status"].set_index("dump")
    assert st.loc[str(tmp_path / "missing.dmp"), "error_type"] == "FileNotFoundError"
    assert st.loc[str(tmp_path / "cut.dmp.gz"), "status"] == "error"
    assert st.loc[str(tmp_path / "cut.dmp.gz"), "error_type"] == "EOFError"
    assert st.loc[str(tmp_path / "bad.zip"), "status"] == "error"
    assert st.loc[f"{tmp_path / 'two.zip'}!a/MEMORY.DMP", "status"] == "ok"
    assert st.loc[f"{tmp_path / 'two.zip'}!a/readme.txt", "status"] == "error"
    assert len(res["info"]) == 1


def test_members_over_the_limit_are_skipped_and_nothing_is_left_behind(tmp_path, fleet):
    good = next(d.path for d in fleet.dumps if d.path.endswith(".dmp") and "!" not in d.path)
    src = tmp_path / "in"
    src.mkdir()
    with zipfile.ZipFile(src / "a.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.write(good, "m/x.dmp")
    with open(good, "rb") as f, gzip.open(src / "y.dmp.gz", "wb") as g:
        g.write(f.read())
    work = tmp_path / "work"
    res = batch.run(src, analyses=("info",), engine="serial", progress=False, tmpdir=work,
                    max_member_bytes=100_000)
    assert list(res["status"]["status"]) == ["skipped", "skipped"]
    assert set(res["status"]["error_type"]) == {"MemberTooLarge"}
    assert list(work.iterdir()) == []
    ok = batch.run(src, analyses=("info",), engine="serial", progress=False, tmpdir=work)
    assert list(ok["status"]["status"]) == ["ok", "ok"]
    assert ok["info"]["dump_sha256"].nunique() == 1  # same bytes, same hash
    assert list(work.iterdir()) == []


def test_7z_archives_with_py7zr(tmp_path, fleet):
    py7zr = pytest.importorskip("py7zr")
    good = next(d for d in fleet.dumps if d.path.endswith(".dmp") and "!" not in d.path)
    arc = tmp_path / "dumps.7z"
    with py7zr.SevenZipFile(arc, "w") as z:
        z.write(good.path, "host9/MEMORY.DMP")
    res = batch.run(arc, analyses=("info", "poolused"), engine="serial", progress=False)
    st = res["status"]
    assert list(st["dump"]) == [f"{arc}!host9/MEMORY.DMP"]
    assert list(st["status"]) == ["ok"]
    assert st["dump_sha256"][0] == hashlib.sha256(Path(good.path).read_bytes()).hexdigest()
    assert int(res["info"]["system_time"][0]) == good.system_time


def test_no_sha256(fleet):
    res = batch.run(fleet.dumps[0].path, analyses=("info",), engine="serial", progress=False,
                    sha256=False)
    assert res["info"]["dump_sha256"].isna().all()


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="engine"):
        batch.run([], engine="ray")
    with pytest.raises(ValueError, match="unknown analysis"):
        batch.run([], analyses=("nope",))
    with pytest.raises(ValueError, match="fork"):
        batch.run([], mp_context="fork")
    empty = batch.run([], engine="local", progress=False)
    assert set(empty) == {*batch.DEFAULT_ANALYSES, "status", "errors"}
    assert all(len(v) == 0 for v in empty.values())
    assert list(empty["poolused"].columns[:3]) == ["dump", "dump_sha256", "tag"]


# -- output ---------------------------------------------------------------------------------------
def test_parquet_round_trip(serial, tmp_path):
    pytest.importorskip("pyarrow")
    paths = batch.to_parquet(serial, tmp_path / "out")
    assert sorted(p.name for p in paths) == sorted(f"{k}.parquet" for k in serial)
    back = batch.read_parquet(tmp_path / "out")
    assert set(back) == set(serial)
    for k, df in serial.items():
        pd.testing.assert_frame_equal(back[k], df, obj=k)


def test_cli_batch_then_trend(fleet, tmp_path, capsys):
    from ntdump.cli import main

    out = tmp_path / "results"
    assert main(["batch", str(fleet.root), "--out", str(out), "--engine", "serial",
                 "--no-progress", "--analyses", "info,poolused,triage"]) == 0
    text = capsys.readouterr().out
    n = len(fleet.dumps) + len(fleet.bad)
    assert f"{n} dumps:" in text and "corrupt.dmp" in text
    assert sorted(p.name for p in out.iterdir()) == [
        "errors.parquet", "info.parquet", "poolused.parquet", "status.parquet",
        "triage.parquet"]
    png = tmp_path / "trend.png"
    assert main(["trend", str(out), "--top", "3", "--plot", str(png)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:2] == ["srv-db1", "None"]
    assert "+1,536.0" in lines[1] and lines[1].rstrip().endswith("yes")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["trend", str(fleet.root), "--engine", "serial", "--no-progress", "--top", "1",
                 "--csv"]) == 0
    csv = capsys.readouterr().out.splitlines()
    assert csv[0].startswith("machine,tag,first_bytes") and csv[1].startswith("srv-db1,None,")


def test_the_local_cluster_listens_on_loopback_only(dask_client):
    psutil = pytest.importorskip("psutil")
    me = psutil.Process()
    procs = [me, *me.children(recursive=True)]
    listening = []
    for p in procs:
        try:
            conns = p.net_connections(kind="inet")
        except (psutil.Error, AttributeError):
            continue
        listening += [c.laddr.ip for c in conns if c.status == psutil.CONN_LISTEN]
    assert listening  # the scheduler and the workers listen …
    assert set(listening) == {"127.0.0.1"}  # … on loopback only


def test_progress_bar_counts_dumps(fleet, capsys):
    pytest.importorskip("tqdm")
    paths = [d.path for d in fleet.dumps[:3]]
    batch.run(paths, analyses=("info",), engine="serial", progress=True)
    err = capsys.readouterr().err
    assert "ntdump batch" in err and "3/3" in err and "dump/s" in err
