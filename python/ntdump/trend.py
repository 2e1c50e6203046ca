"""Pool growth across dumps: :func:`diff` (two dumps) and :func:`trend` (every machine's dumps
over time), with :func:`series` (the tidy time series behind both) and :func:`trend_plot`.

A leak shows as a tag whose outstanding bytes grow from one dump of a machine to the next. The
time of each dump is the header's SystemTime; a dump's machine is the name of the folder that
holds it (``srv1/2024-05-01.dmp`` → ``srv1``; for an archive member the folder inside the
archive, else the archive's name without its extension) unless ``machine=`` maps a dump name to
a machine.

Units: bytes; rates per hour. "Outstanding allocations" are allocations minus frees (the
``Diff`` column of ``!poolused``), nonpaged + paged.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import batch
from .batch._analyses import machine_of
from .batch.cli import engine_args
from .batch.cli import run_kw as engine_run_kw
from .dump import Dump
from .dump import open as nt_open

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
else:
    from ._lazy import np, pd  # imported on first use (start-up time)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Source = Any
"""Batch results (``{"info": …, "poolused": …}``), dumps (:class:`ntdump.Dump`), or paths
(files, directories, archives: run through :func:`ntdump.batch.run`)."""

FILETIME_PER_HOUR = 36_000_000_000

SERIES_COLUMNS = ("machine", "dump", "dump_sha256", "system_time", "time", "tag",
                  "nonpaged_bytes", "paged_bytes", "bytes", "nonpaged_outstanding",
                  "paged_outstanding", "outstanding")
TREND_COLUMNS = ("machine", "tag", "first_bytes", "last_bytes", "bytes_per_hour",
                 "allocs_per_hour", "monotonic", "dumps", "hours", "first_time", "last_time",
                 "first_outstanding", "last_outstanding")
DIFF_COLUMNS = ("tag", "bytes_a", "bytes_b", "bytes_delta", "outstanding_a", "outstanding_b",
                "outstanding_delta", "nonpaged_bytes_delta", "paged_bytes_delta",
                "nonpaged_allocs_delta", "nonpaged_frees_delta", "paged_allocs_delta",
                "paged_frees_delta", "bytes_per_hour", "description")
_COUNTS = ("nonpaged_allocs", "nonpaged_frees", "nonpaged_bytes", "paged_allocs", "paged_frees",
           "paged_bytes")


# -- inputs ---------------------------------------------------------------------------------------
def _used_of(d: Dump) -> pd.DataFrame:
    return d.pool.used(sort="tag", owners=0)


def _from_dumps(dumps: list[Dump]) -> tuple[pd.DataFrame, pd.DataFrame]:
    info, used = [], []
    for d in dumps:
        info.append({"dump": d.path, "dump_sha256": None, "system_time": d.info.system_time})
        u = _used_of(d).copy()
        u.insert(0, "dump", d.path)
        used.append(u)
    return pd.DataFrame(info), (pd.concat(used, ignore_index=True) if used else
                                pd.DataFrame(columns=["dump", "tag", *_COUNTS]))


def _tables(source: Source, **run_kw: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(info[dump, dump_sha256, system_time], poolused[dump, tag, counts…]) of a source."""
    if isinstance(source, Mapping):
        if "info" not in source or "poolused" not in source:
            raise ValueError("batch results need the 'info' and 'poolused' analyses")
        return source["info"], source["poolused"]
    if isinstance(source, Dump):
        return _from_dumps([source])
    if isinstance(source, str | os.PathLike):
        source = [source]
    items = list(source)
    if items and all(isinstance(x, Dump) for x in items):
        return _from_dumps(items)
    run_kw.setdefault("engine", "serial")
    run_kw.setdefault("progress", False)
    res = batch.run(items, analyses=("info", "poolused"), **run_kw)
    return res["info"], res["poolused"]


def series(source: Source, machine: Callable[[str], str] | None = None,
           **run_kw: Any) -> pd.DataFrame:
    """Per machine, dump and tag: the outstanding bytes and allocations at the dump's time.

    Every tag seen in any dump of a machine has a row for every dump of that machine (0 where
    the tag is absent). A dump seen twice (same ``dump_sha256``) counts once. Dumps without
    pool data or without a system time are left out. Sorted by machine, time, dump, tag.
    ``run_kw`` go to :func:`ntdump.batch.run` when ``source`` is paths (default: serial).
    """
    if _is_series(source):
        return source
    mach = machine or machine_of
    info, used = _tables(source, **run_kw)
    info = info[["dump", "dump_sha256", "system_time"]].copy()
    info["dump"] = info["dump"].astype(str)
    info["system_time"] = info["system_time"].astype("uint64")
    info = info[info["system_time"] > 0]
    info = info.sort_values("dump", kind="stable")
    sha = info["dump_sha256"].astype(object)
    info = info[~(sha.notna() & sha.duplicated(keep="first"))].copy()
    info["machine"] = [str(mach(d)) for d in info["dump"]]
    u = used[["dump", "tag", *_COUNTS]].copy()
    u["dump"] = u["dump"].astype(str)
    u["tag"] = u["tag"].astype(str)
    u = u[u["dump"].isin(set(info["dump"]))]
    for c in _COUNTS:
        u[c] = u[c].astype("int64")
    u = u.groupby(["dump", "tag"], sort=True, as_index=False)[list(_COUNTS)].sum()
    u = u.merge(info[["dump", "machine"]], on="dump", how="inner")
    # The full grid: each machine's tags at each of its dumps.
    tags = u[["machine", "tag"]].drop_duplicates()
    grid = info[["machine", "dump", "dump_sha256", "system_time"]].merge(tags, on="machine")
    s = grid.merge(u.drop(columns="machine"), on=["dump", "tag"], how="left")
    for c in _COUNTS:
        s[c] = s[c].fillna(0).astype("int64")
    s["bytes"] = s["nonpaged_bytes"] + s["paged_bytes"]
    s["nonpaged_outstanding"] = s["nonpaged_allocs"] - s["nonpaged_frees"]
    s["paged_outstanding"] = s["paged_allocs"] - s["paged_frees"]
    s["outstanding"] = s["nonpaged_outstanding"] + s["paged_outstanding"]
    ft = s["system_time"].astype("int64").to_numpy()
    s["time"] = pd.to_datetime((ft - 116444736000000000) * 100, utc=True).as_unit("ns")
    s = s.sort_values(["machine", "system_time", "dump", "tag"], kind="stable")
    s = s[list(SERIES_COLUMNS)].reset_index(drop=True)
    s["machine"] = s["machine"].astype("string")
    s["dump"] = s["dump"].astype("string")
    s["dump_sha256"] = s["dump_sha256"].astype("string")
    s["tag"] = s["tag"].astype("category")
    return s


def trend(source: Source, machine: Callable[[str], str] | None = None,
          **run_kw: Any) -> pd.DataFrame:
    """Pool growth per machine and tag between the first and the last dump of each machine.

    Returns machine, tag, first_bytes, last_bytes (outstanding nonpaged + paged bytes at the
    first and last dump), bytes_per_hour (their difference over the hours between the two
    dumps' system times), allocs_per_hour (the same for outstanding allocations), monotonic
    (True when the bytes grow at every step from one dump to the next), dumps, hours,
    first_time, last_time, first_outstanding, last_outstanding; sorted by bytes_per_hour,
    largest first (then machine, tag). Machines with fewer than two dumps at distinct times are
    left out (``df.attrs["skipped"]`` names them). ``source``: see :func:`series`.
    """
    return _trend_of(series(source, machine, **run_kw))


def _trend_of(s: pd.DataFrame) -> pd.DataFrame:
    cols = list(TREND_COLUMNS)
    if s.empty:
        out = pd.DataFrame({c: [] for c in cols})
        out.attrs["skipped"] = []
        return _trend_types(out)
    span = s.groupby("machine", observed=True)["system_time"].agg(["min", "max"])
    skipped = sorted(span.index[span["min"] == span["max"]].astype(str))
    s = s[~s["machine"].isin(skipped)]
    s = s.sort_values(["machine", "tag", "system_time", "dump"], kind="stable")
    s["tag"] = s["tag"].astype(str)
    g = s.groupby(["machine", "tag"], sort=True, observed=True)
    step = g["bytes"].diff()
    s["_up"] = step.isna() | (step > 0)
    agg = g.agg(first_bytes=("bytes", "first"), last_bytes=("bytes", "last"),
                first_time=("time", "first"), last_time=("time", "last"),
                t0=("system_time", "first"), t1=("system_time", "last"),
                first_outstanding=("outstanding", "first"),
                last_outstanding=("outstanding", "last"), dumps=("dump", "size"))
    agg["monotonic"] = s.groupby(["machine", "tag"], sort=True, observed=True)["_up"].all()
    agg = agg.reset_index()
    hours = (agg["t1"].astype("float64") - agg["t0"].astype("float64")) / FILETIME_PER_HOUR
    agg["hours"] = hours
    agg["bytes_per_hour"] = (agg["last_bytes"] - agg["first_bytes"]) / hours
    agg["allocs_per_hour"] = (agg["last_outstanding"] - agg["first_outstanding"]) / hours
    agg["monotonic"] = agg["monotonic"] & (agg["dumps"] > 1)
    out = agg.sort_values(["bytes_per_hour", "machine", "tag"], ascending=[False, True, True],
                          kind="stable")[cols].reset_index(drop=True)
    out.attrs["skipped"] = skipped
    return _trend_types(out)


def _trend_types(df: pd.DataFrame) -> pd.DataFrame:
    types = {"machine": "string", "tag": "category", "first_bytes": "int64",
             "last_bytes": "int64", "bytes_per_hour": "float64", "allocs_per_hour": "float64",
             "monotonic": "bool", "dumps": "int64", "hours": "float64",
             "first_time": "datetime64[ns, UTC]", "last_time": "datetime64[ns, UTC]",
             "first_outstanding": "int64", "last_outstanding": "int64"}
    attrs = dict(df.attrs)
    df = df.astype(types)
    df.attrs = attrs
    return df


# -- two dumps ------------------------------------------------------------------------------------
def _used_and_time(x: Any) -> tuple[pd.DataFrame, int | None]:
    if isinstance(x, pd.DataFrame):
        if "dump" in x.columns and x["dump"].nunique() > 1:
            raise ValueError("a poolused frame of several dumps: select one dump first")
        return x, None
    if isinstance(x, Dump):
        return _used_of(x), x.info.system_time or None
    with nt_open(os.fspath(x)) as d:
        return _used_of(d), d.info.system_time or None


def diff(a: Any, b: Any) -> pd.DataFrame:
    """Per-tag change of pool use from ``a`` to ``b`` (each a :class:`ntdump.Dump`, a dump's
    path, or a ``poolused`` frame of one dump).

    Returns tag, bytes_a, bytes_b, bytes_delta (outstanding nonpaged + paged bytes), the same
    for outstanding allocations (``outstanding_*``), the per-pool deltas of bytes, allocs and
    frees, bytes_per_hour (bytes_delta over the hours between the two dumps' system times;
    NaN when a side is a frame or the times are equal) and description; every tag of either
    side, sorted by bytes_delta (largest growth first), then tag. ``df.attrs["hours"]`` is the
    time between the dumps (None when unknown).
    """
    (ua, ta), (ub, tb) = _used_and_time(a), _used_and_time(b)

    def prep(u: pd.DataFrame) -> pd.DataFrame:
        x = u[["tag", *_COUNTS]].copy()
        x["tag"] = x["tag"].astype(str)
        for c in _COUNTS:
            x[c] = x[c].astype("int64")
        x = x.groupby("tag", sort=True)[list(_COUNTS)].sum()
        x["bytes"] = x["nonpaged_bytes"] + x["paged_bytes"]
        x["outstanding"] = (x["nonpaged_allocs"] - x["nonpaged_frees"] + x["paged_allocs"]
                            - x["paged_frees"])
        return x

    pa, pb = prep(ua), prep(ub)
    j = pa.add_suffix("_a").join(pb.add_suffix("_b"), how="outer").fillna(0).astype("int64")
    out = pd.DataFrame({"tag": j.index.astype(str)})
    for c in ("bytes", "outstanding"):
        out[f"{c}_a"] = j[f"{c}_a"].to_numpy()
        out[f"{c}_b"] = j[f"{c}_b"].to_numpy()
        out[f"{c}_delta"] = out[f"{c}_b"] - out[f"{c}_a"]
    for c in ("nonpaged_bytes", "paged_bytes", "nonpaged_allocs", "nonpaged_frees",
              "paged_allocs", "paged_frees"):
        out[f"{c}_delta"] = (j[f"{c}_b"] - j[f"{c}_a"]).to_numpy()
    hours = (tb - ta) / FILETIME_PER_HOUR if ta and tb and tb != ta else None
    out["bytes_per_hour"] = out["bytes_delta"] / hours if hours else np.nan
    desc: dict[str, str] = {}
    for u in (ub, ua):
        if "description" in u.columns:
            for t, dsc in zip(u["tag"].astype(str), u["description"], strict=True):
                if isinstance(dsc, str) and dsc and t not in desc:
                    desc[t] = dsc
    out["description"] = pd.array([desc.get(t, "") for t in out["tag"]], dtype="string")
    out = out.sort_values(["bytes_delta", "tag"], ascending=[False, True], kind="stable")
    out = out[list(DIFF_COLUMNS)].reset_index(drop=True)
    out["tag"] = out["tag"].astype("category")
    out.attrs["hours"] = hours
    return out


# -- plot -----------------------------------------------------------------------------------------
def trend_plot(source: Source, top: int = 5, machine: Callable[[str], str] | None = None, *,
               ax: Any = None, **run_kw: Any) -> Figure:
    """A line plot of the outstanding bytes (MiB) over time of the ``top`` fastest-growing
    (machine, tag) pairs of :func:`trend`; returns the matplotlib Figure (made without pyplot
    unless ``ax`` is given, so it works with any backend)."""
    from matplotlib.figure import Figure

    s = series(source, machine, **run_kw)
    t = _trend_of(s)
    if ax is None:
        fig = Figure(figsize=(9, 4.5), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    pick = t[t["bytes_per_hour"] > 0].head(top)
    for _, r in pick.iterrows():
        m = s[(s["machine"] == r["machine"]) & (s["tag"].astype(str) == str(r["tag"]))]
        ax.plot(m["time"].dt.tz_localize(None), m["bytes"] / 2**20, marker="o",
                label=f"{r['machine']}: {r['tag']} ({r['bytes_per_hour'] / 1024:+,.0f} KiB/h)")
    ax.set_xlabel("system time (UTC)")
    ax.set_ylabel("outstanding pool (MiB)")
    ax.set_title(f"Top {len(pick)} growing pool tags" if len(pick) else "No growing pool tags")
    if len(pick):
        ax.legend(fontsize="small", loc="upper left")
    ax.grid(True, alpha=0.3)
    fig.autofmt_xdate()
    return fig


def _is_series(x: Any) -> bool:
    return isinstance(x, pd.DataFrame) and set(SERIES_COLUMNS) <= set(x.columns)


__all__ = ["DIFF_COLUMNS", "SERIES_COLUMNS", "TREND_COLUMNS", "diff", "machine_of", "series",
           "trend", "trend_plot"]



# -- the ``ntdump trend`` sub-command -------------------------------------------------------------
def _trend_source(args: argparse.Namespace) -> Any:
    """Saved batch results (a folder with info.parquet and poolused.parquet) or dumps."""
    if len(args.inputs) == 1:
        p = Path(args.inputs[0])
        if (p / "info.parquet").is_file() and (p / "poolused.parquet").is_file():
            return batch.read_parquet(p)
    return batch.run(args.inputs, analyses=("info", "poolused"), sha256=True, **engine_run_kw(args))


def cmd_trend(args: argparse.Namespace) -> int:
    """``ntdump trend``: pool growth per machine and tag; optionally a plot."""
    src = _trend_source(args)
    s = series(src)
    t = trend(s)
    top = t.head(args.top)
    if args.json:
        print(top.to_json(orient="records", date_format="iso"))
    elif args.csv:
        print(top.to_csv(index=False), end="")
    else:
        print(f"{'machine':<16} {'tag':<4} {'first MiB':>10} {'last MiB':>10} "
              f"{'KiB/hour':>11} {'allocs/hour':>12} {'dumps':>5}  monotonic")
        for _, r in top.iterrows():
            print(f"{r['machine']!s:<16} {r['tag']!s:<4} {r['first_bytes'] / 2**20:>10.2f} "
                  f"{r['last_bytes'] / 2**20:>10.2f} {r['bytes_per_hour'] / 1024:>+11,.1f} "
                  f"{r['allocs_per_hour']:>+12,.1f} {r['dumps']:>5}  "
                  f"{'yes' if r['monotonic'] else 'no'}")
        if t.attrs.get("skipped"):
            print(f"(machines with fewer than two dumps: {', '.join(t.attrs['skipped'])})")
    if args.plot:
        fig = trend_plot(s, top=args.top)
        fig.savefig(args.plot, dpi=100)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def add_command(sub: Any) -> None:
    """Register ``trend`` on the ``ntdump`` sub-command parser."""
    sp = sub.add_parser("trend", help="pool growth per machine and tag across dumps",
                        description="Which pool tag grows, per machine, per hour, across a "
                        "series of dumps of the same machines (the !poolused of each, fitted "
                        "over the dumps' system times).")
    engine_args(sp)
    sp.add_argument("--top", type=int, default=10, help="rows (and plotted lines)")
    sp.add_argument("--plot", metavar="PNG", help="write a plot of the top growing tags")
    g = sp.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true")
    g.add_argument("--csv", action="store_true")
    sp.set_defaults(func=cmd_trend)
