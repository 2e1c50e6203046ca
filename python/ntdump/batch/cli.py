"""The ``ntdump batch`` sub-command (registered by ``ntdump.cli``; ``ntdump trend`` is in
:mod:`ntdump.trend`, which uses the engine arguments defined here)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import run, to_parquet

if TYPE_CHECKING:
    import pandas as pd
else:
    from .._lazy import pd  # imported on first use (start-up time)


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
    sp.add_argument("--symbols", metavar="PATH",
                    help="symbol path (_NT_SYMBOL_PATH syntax) for every worker; workers share "
                    "its caches safely")
    sp.add_argument("--offline", action="store_true", help="never contact a symbol server")


def _symbol_env(args: argparse.Namespace) -> None:
    """Hand ``--symbols`` / ``--offline`` to the workers through the environment they inherit."""
    import os

    if getattr(args, "symbols", None) is not None:
        os.environ["_NT_SYMBOL_PATH"] = args.symbols
    if getattr(args, "offline", False):
        os.environ["NTDUMP_OFFLINE"] = "1"


def run_kw(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of :func:`ntdump.batch.run` from parsed engine arguments (``--symbols``
    and ``--offline`` reach the workers through the environment they inherit)."""
    _symbol_env(args)
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
    _check_out(Path(args.out))  # before any dump is analysed
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
    if "buckets" in res and len(res["buckets"]):
        b = res["buckets"]
        print(f"{len(b)} crash buckets (most dumps first):")
        for _, r in b.head(args.show_buckets).iterrows():
            seen = ""
            if pd.notna(r["first_seen"]):
                seen = f"  {r['first_seen']:%Y-%m-%d %H:%M} .. {r['last_seen']:%Y-%m-%d %H:%M}"
            print(f"  {r['dumps']:>6} dumps {r['machines']:>5} machines  {r['bucket']}{seen}")
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
    sp.add_argument("--analyses", default="info,vm,poolused,modules,triage,analyze",
                    help="comma-separated: info, vm, poolused, modules, triage, analyze "
                    "(analyze adds buckets.parquet: dumps per crash bucket)")
    sp.add_argument("--show-buckets", type=int, default=10, help="bucket lines to print")
    sp.add_argument("--max-member-bytes", type=int, default=64 << 30,
                    help="skip compressed dumps larger than this when expanded (bytes)")
    sp.add_argument("--no-sha256", action="store_true", help="do not hash the dumps")
    sp.add_argument("--show-errors", type=int, default=20, help="error lines to print")
    sp.set_defaults(func=cmd_batch)
