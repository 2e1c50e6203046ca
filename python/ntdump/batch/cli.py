"""The ``ntdump batch`` sub-command (registered by ``ntdump.cli``; ``ntdump trend`` is in
:mod:`ntdump.trend`, which uses the engine arguments defined here)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from typing import Any

from . import run, to_parquet


def engine_args(sp: argparse.ArgumentParser) -> None:
    """The input and engine arguments ``batch`` and ``trend`` share."""
    sp.add_argument("inputs", nargs="+", metavar="INPUT",
                    help="dump files, folders (recursive), .zip/.gz/.7z archives")
    sp.add_argument("--engine", choices=["local", "dask", "serial"], default="local",
                    help="local process pool (default), a Dask cluster, or this process")
    sp.add_argument("--scheduler", metavar="ADDR",
                    help="Dask scheduler to use (tcp://host:8786); implies --engine dask")
    sp.add_argument("--workers", type=int, help="worker processes (default: one per core)")
    sp.add_argument("--tmpdir", help="where compressed dumps are expanded, one at a time")
    sp.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_kw(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of :func:`ntdump.batch.run` from parsed engine arguments."""
    engine = "dask" if args.scheduler else args.engine
    return {"engine": engine, "workers": args.workers, "scheduler": args.scheduler,
            "tmpdir": args.tmpdir, "progress": False if args.no_progress else None}


BATCH_EXTRA = "pip install 'ntdump[batch]'"
"""How to install what ``batch`` (Parquet: pyarrow) and ``--engine dask`` need."""


def missing_extra(engine: str) -> list[str]:
    """The modules of the ``batch`` extra this run needs and cannot import: ``pyarrow`` (Parquet
    output) always, ``dask``/``distributed`` for the Dask engine."""
    need = ["pyarrow"] + (["dask", "distributed"] if engine == "dask" else [])
    out = []
    for name in need:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a stubbed-out module (sys.modules[name] = None)
            found = False
        if not found:
            out.append(name)
    return out


def cmd_batch(args: argparse.Namespace) -> int:
    """``ntdump batch``: run the analyses over an archive, write Parquet, print a summary."""
    missing = missing_extra("dask" if args.scheduler else args.engine)
    if missing:
        print(f"ntdump batch: needs the batch extra ({', '.join(missing)} missing): {BATCH_EXTRA}",
              file=sys.stderr)
        return 2
    analyses = [a.strip() for a in args.analyses.split(",") if a.strip()]
    res = run(args.inputs, analyses=analyses, sha256=not args.no_sha256,
              max_member_bytes=args.max_member_bytes, **run_kw(args))
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


def add_commands(sub: Any) -> None:
    """Register ``batch`` on the ``ntdump`` sub-command parser."""
    sp = sub.add_parser("batch", help="analyse an archive of dumps; Parquet out",
                        description="Run analyses over an archive of dumps (files, folders, "
                        ".zip/.gz/.7z) on local processes or a Dask cluster and write one Parquet "
                        f"file per analysis. Needs the batch extra: {BATCH_EXTRA}.")
    engine_args(sp)
    sp.add_argument("--out", required=True, help="folder for <analysis>.parquet files")
    sp.add_argument("--analyses", default="info,vm,poolused,modules,triage",
                    help="comma-separated: info, vm, poolused, modules, triage")
    sp.add_argument("--max-member-bytes", type=int, default=64 << 30,
                    help="skip compressed dumps larger than this when expanded (bytes)")
    sp.add_argument("--no-sha256", action="store_true", help="do not hash the dumps")
    sp.add_argument("--show-errors", type=int, default=20, help="error lines to print")
    sp.set_defaults(func=cmd_batch)
