"""The ``ntdump batch`` and ``ntdump trend`` sub-commands (registered by ``ntdump.cli``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any


def _engine_args(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("inputs", nargs="+", metavar="INPUT",
                    help="dump files, folders (recursive), .zip/.gz/.7z archives")
    sp.add_argument("--engine", choices=["local", "dask", "serial"], default="local",
                    help="local process pool (default), a Dask cluster, or this process")
    sp.add_argument("--scheduler", metavar="ADDR",
                    help="Dask scheduler to use (tcp://host:8786); implies --engine dask")
    sp.add_argument("--workers", type=int, help="worker processes (default: one per core)")
    sp.add_argument("--tmpdir", help="where compressed dumps are expanded, one at a time")
    sp.add_argument("--no-progress", action="store_true", help="no progress bar")


def _run_kw(args: argparse.Namespace) -> dict[str, Any]:
    engine = "dask" if args.scheduler else args.engine
    return {"engine": engine, "workers": args.workers, "scheduler": args.scheduler,
            "tmpdir": args.tmpdir, "progress": False if args.no_progress else None}


def _check_out(out: Path) -> None:
    """Fail now (OSError, one line from ``ntdump``) if ``out`` cannot become the results folder:
    it is a file, or it cannot be created or written."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK | os.X_OK):
        raise PermissionError(f"--out {out} is not writable")


def cmd_batch(args: argparse.Namespace) -> int:
    """``ntdump batch``: run the analyses over an archive, write Parquet, print a summary."""
    from . import run, to_parquet

    _check_out(Path(args.out))  # before any dump is analysed
    analyses = [a.strip() for a in args.analyses.split(",") if a.strip()]
    res = run(args.inputs, analyses=analyses, sha256=not args.no_sha256,
              max_member_bytes=args.max_member_bytes, **_run_kw(args))
    paths = to_parquet(res, args.out)
    st = res["status"]
    counts = st["status"].astype(str).value_counts().sort_index()
    print(f"{len(st)} dumps: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    bad = st[~st["status"].astype(str).isin(["ok", "cancelled"])]
    for _, r in bad.head(args.show_errors).iterrows():
        what = f" [{r['failed']}]" if r["failed"] else ""
        print(f"  {r['status']}: {r['dump']}{what}: {r['error_type']}: {r['message']}")
    if len(bad) > args.show_errors:
        print(f"  ... and {len(bad) - args.show_errors} more (see errors.parquet)")
    print(f"wrote {len(paths)} files to {args.out}: " + ", ".join(p.name for p in paths))
    if st.attrs.get("interrupted"):
        print("interrupted: unfinished dumps are 'cancelled' in status.parquet", file=sys.stderr)
        return 130
    return 0


def _trend_source(args: argparse.Namespace) -> Any:
    """Saved batch results (a folder with info.parquet and poolused.parquet) or dumps."""
    if len(args.inputs) == 1:
        p = Path(args.inputs[0])
        if (p / "info.parquet").is_file() and (p / "poolused.parquet").is_file():
            from . import read_parquet

            return read_parquet(p)
    from . import run

    return run(args.inputs, analyses=("info", "poolused"), sha256=True, **_run_kw(args))


def cmd_trend(args: argparse.Namespace) -> int:
    """``ntdump trend``: pool growth per machine and tag; optionally a plot."""
    from ..trend import series, trend, trend_plot

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


def add_commands(sub: Any) -> None:
    """Register ``batch`` and ``trend`` on the ``ntdump`` sub-command parser."""
    sp = sub.add_parser("batch", help="analyse an archive of dumps; Parquet out")
    _engine_args(sp)
    sp.add_argument("--out", required=True, help="folder for <analysis>.parquet files")
    sp.add_argument("--analyses", default="info,vm,poolused,modules,triage",
                    help="comma-separated: info, vm, poolused, modules, triage")
    sp.add_argument("--max-member-bytes", type=int, default=64 << 30,
                    help="skip compressed dumps larger than this when expanded (bytes)")
    sp.add_argument("--no-sha256", action="store_true", help="do not hash the dumps")
    sp.add_argument("--show-errors", type=int, default=20, help="error lines to print")
    sp.set_defaults(func=cmd_batch)
    sp = sub.add_parser("trend", help="pool growth per machine and tag across dumps")
    _engine_args(sp)
    sp.add_argument("--top", type=int, default=10, help="rows (and plotted lines)")
    sp.add_argument("--plot", metavar="PNG", help="write a plot of the top growing tags")
    g = sp.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true")
    g.add_argument("--csv", action="store_true")
    sp.set_defaults(func=cmd_trend)
