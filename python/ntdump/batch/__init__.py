"""Batch analysis over archives of dumps: ``ntdump.batch.run(inputs) -> {analysis: DataFrame}``.

>>> import ntdump.batch
>>> res = ntdump.batch.run(["/archive/dumps"], engine="local")     # doctest: +SKIP
>>> res["status"].value_counts("status")                           # doctest: +SKIP
>>> ntdump.batch.to_parquet(res, "results/")                       # doctest: +SKIP

Inputs are files, directories (recursive) and archives (``.zip``, ``.gz``; ``.7z`` with
``py7zr``), recognised by their magic bytes. Each dump gives rows in the frame of every
analysis that ran on it, each row starting with ``dump`` (the path, or ``archive!member``) and
``dump_sha256`` (of the decompressed bytes); ``status`` has one row per input dump and
``errors`` one per failure. A file that is not a dump, a corrupt or truncated dump, a bad
archive member: each gives status/error rows and the batch goes on. Rows are ordered by dump
name (and within a dump as the analysis returns them), so the output is the same whatever the
engine, the number of workers or the order in which dumps finish. See docs/batch.md.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import _schema
from ._analyses import (
    ANALYSES,
    ANALYZE_SCHEMA,
    BUCKETS_SCHEMA,
    ERRORS_SCHEMA,
    INFO_SCHEMA,
    STATUS_SCHEMA,
    TRIAGE_SCHEMA,
    VM_SCHEMA,
    Analysis,
    Spec,
    UnitResult,
    analysis_name,
    buckets_frame,
    empty_frame,
    status_row,
)
from ._inputs import DEFAULT_MAX_MEMBER_BYTES, MemberTooLarge, Unit, expand

if TYPE_CHECKING:
    import pandas as pd

    from ._engines import ProgressArg
else:
    from .._lazy import pd  # imported on first use (start-up time)

DEFAULT_ANALYSES: tuple[str, ...] = ("info", "vm", "poolused", "modules", "triage")
"""What :func:`run` does by default."""

ENGINES = ("local", "dask", "serial")


def _categorical(df: pd.DataFrame, like: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Concatenation turns categoricals with different categories into plain values; make them
    categorical again, with sorted categories (so they do not depend on the order of the
    parts)."""
    cats: set[str] = set()
    for p in like:
        cats.update(c for c, t in p.dtypes.items() if isinstance(t, pd.CategoricalDtype))
    for col in df.columns:
        if col in cats:
            vals = df[col].astype(object)
            uniq = list(pd.unique(vals[vals.notna()]))
            try:
                uniq.sort()
            except TypeError:
                uniq.sort(key=lambda v: (type(v).__name__, str(v)))
            df[col] = pd.Categorical(vals, categories=pd.Index(uniq))
    return df


def _concat(parts: list[pd.DataFrame], name: str) -> pd.DataFrame:
    if not parts:
        return empty_frame(name)
    df = pd.concat(parts, ignore_index=True) if len(parts) > 1 else \
        parts[0].reset_index(drop=True)
    return _categorical(df, parts)


def assemble(units: Sequence[Unit], results: Mapping[int, UnitResult], names: Sequence[str],
             interrupted: bool = False) -> dict[str, pd.DataFrame]:
    """The result frames from per-unit results, in dump-name order (units never run are
    ``cancelled`` in ``status``)."""
    order = sorted(range(len(units)), key=lambda i: (units[i].name, i))
    out: dict[str, pd.DataFrame] = {}
    for name in names:
        out[name] = _concat([results[i].frames[name] for i in order
                             if i in results and name in results[i].frames], name)
    if "analyze" in out:
        out["buckets"] = buckets_frame(out["analyze"])
    rows = [results[i].status if i in results else status_row(units[i], "cancelled")
            for i in order]
    out["status"] = _schema.frame({k: [r[k] for r in rows] for k in STATUS_SCHEMA},
                                  STATUS_SCHEMA)
    errs = [e for i in order if i in results for e in results[i].errors]
    out["errors"] = _schema.frame({k: [e[k] for e in errs] for k in ERRORS_SCHEMA},
                                  ERRORS_SCHEMA)
    out["status"].attrs["interrupted"] = interrupted
    return out


def run(
    inputs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    analyses: Sequence[Analysis] = DEFAULT_ANALYSES,
    engine: str = "local",
    workers: int | None = None,
    client: Any = None,
    progress: ProgressArg = None,
    *,
    scheduler: str | None = None,
    tmpdir: str | os.PathLike[str] | None = None,
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
    sha256: bool = True,
    mp_context: str = "spawn",
    follow_symlinks: bool = False,
) -> dict[str, pd.DataFrame]:
    """Run ``analyses`` on every dump of ``inputs``; one tidy DataFrame per analysis.

    Args:
        inputs: a path or paths: dump files, directories (searched recursively; every file is
            tried, so non-dumps give ``error`` rows), ``.zip`` / ``.7z`` archives (each member a
            dump) and ``.gz`` files (one dump each).
        analyses: names from ``"info"``, ``"vm"``, ``"poolused"``, ``"modules"``, ``"triage"``,
            ``"analyze"`` (which adds a ``buckets`` table: dumps per bucket id), or picklable
            callables ``f(dump) -> DataFrame`` (keyed by ``__name__``).
        engine: ``"local"`` (a process pool here), ``"dask"`` (a ``dask.distributed`` cluster)
            or ``"serial"`` (this process, one dump after the other).
        workers: processes for ``local`` (default: the number of cores, never more than the
            number of dumps) or the size of the LocalCluster that ``dask`` starts when neither
            ``client`` nor ``scheduler`` is given. Each local worker's rayon pool gets
            ``max(1, cores // workers)`` threads.
        client: a ``dask.distributed.Client`` to use (``engine="dask"``); it stays open.
        progress: a tqdm bar (dumps/s) when True; none when False; None = a bar on a terminal
            or in a notebook. A callable ``f(done, total)`` is called after each dump instead;
            raising KeyboardInterrupt from it stops the run like Ctrl-C.
        scheduler: address of a running Dask scheduler (``"tcp://host:8786"``) to connect to
            for this run, when no ``client`` is given.
        tmpdir: where compressed dumps are expanded (default: the system temp dir). Each worker
            expands one dump at a time into its own folder and removes it after the dump.
        max_member_bytes: larger decompressed dumps are not written (status ``skipped``).
        sha256: hash every dump (``dump_sha256``); False leaves it <NA> and saves one read of
            each file.
        mp_context: start method of the local pool, ``"spawn"`` or ``"forkserver"``.
        follow_symlinks: follow symbolic links that leave the folder they are found in (by
            default they give ``error`` rows). Only regular files are read either way: a FIFO
            or a device is an ``error`` row, never opened.

    Returns:
        ``{analysis: DataFrame, "status": ..., "errors": ...}``; see docs/batch.md for the
        columns. Ctrl-C returns what finished, the rest ``cancelled`` in ``status``
        (``status.attrs["interrupted"]`` is True).
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, not {engine!r}")
    if mp_context not in ("spawn", "forkserver"):
        raise ValueError("mp_context must be 'spawn' or 'forkserver' (fork and rayon do not mix)")
    if isinstance(analyses, str):
        analyses = (analyses,)
    names = [analysis_name(a) for a in analyses]
    if len(set(names)) != len(names):
        raise ValueError(f"analysis names repeat: {names}")
    if workers is not None and workers < 1:
        raise ValueError("workers must be at least 1")
    base_tmp = os.fspath(tmpdir) if tmpdir is not None else None
    own_tmp: str | None = None
    if base_tmp is not None:
        os.makedirs(base_tmp, exist_ok=True)
    if engine != "dask":  # a run folder that this process removes even if a worker is killed
        own_tmp = tempfile.mkdtemp(prefix="ntdump-batch-", dir=base_tmp)
    spec = Spec(tuple(analyses), own_tmp or base_tmp, max_member_bytes, sha256)
    own_client: Any = None
    own_cluster: Any = None
    try:
        # The engines (multiprocessing, concurrent.futures, Dask glue) are imported when a run
        # starts, not with the package: `ntdump info` registers the batch sub-command only.
        from ._engines import Collector, cores, local_cluster, run_dask, run_local, run_serial

        if engine == "dask":
            if client is None:
                if scheduler is not None:
                    from dask.distributed import Client

                    client = own_client = Client(scheduler)
                else:
                    own_cluster, own_client = local_cluster(workers or cores())
                    client = own_client
            # The inputs are listed where the dumps are visible: on a worker.
            units = client.submit(expand, [os.fspath(x) for x in _as_list(inputs)],
                                  pure=False).result()
        else:
            units = expand(inputs, follow_symlinks=follow_symlinks)
        col = Collector(len(units), progress)
        try:
            if engine == "serial":
                interrupted = run_serial(units, spec, col)
            elif engine == "local":
                n = max(1, min(workers or cores(), len(units)))
                interrupted = run_local(units, spec, col, n, mp_context) if units else False
            else:
                interrupted = run_dask(units, spec, col, client)
        finally:
            col.close()
        return assemble(units, col.results, names, interrupted)
    finally:
        if own_client is not None:
            own_client.close()
        if own_cluster is not None:
            own_cluster.close()
        if own_tmp is not None:
            shutil.rmtree(own_tmp, ignore_errors=True)


def _as_list(inputs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]
             ) -> list[str | os.PathLike[str]]:
    if isinstance(inputs, str | os.PathLike):
        return [inputs]
    return list(inputs)


def to_parquet(results: Mapping[str, pd.DataFrame],
               directory: str | os.PathLike[str]) -> list[Path]:
    """Write each frame of ``results`` to ``directory/<analysis>.parquet`` (pyarrow); returns the
    paths. Column types (categories, uint64, nullable ints, UTC times) survive the round trip
    through :func:`read_parquet`."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, df in results.items():
        p = out / f"{name}.parquet"
        df = df.copy(deep=False)
        df.attrs = {}
        df.to_parquet(p, engine="pyarrow", index=False)
        paths.append(p)
    return paths


def read_parquet(directory: str | os.PathLike[str]) -> dict[str, pd.DataFrame]:
    """The frames :func:`to_parquet` wrote to ``directory``, by analysis name (as
    :class:`ntdump._frame.Frame`, the class of every table ntdump returns)."""
    from .._frame import Frame  # imports pandas: only when frames are read (start-up time)

    return {p.stem: Frame(pd.read_parquet(p, engine="pyarrow"))
            for p in sorted(Path(directory).glob("*.parquet"))}


__all__ = [
    "ANALYSES", "ANALYZE_SCHEMA", "BUCKETS_SCHEMA", "DEFAULT_ANALYSES",
    "DEFAULT_MAX_MEMBER_BYTES", "ENGINES", "ERRORS_SCHEMA",
    "INFO_SCHEMA", "STATUS_SCHEMA", "TRIAGE_SCHEMA", "VM_SCHEMA", "MemberTooLarge", "Unit",
    "expand", "read_parquet", "run", "to_parquet",
]
