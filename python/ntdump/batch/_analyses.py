"""The analyses a batch runs on each dump, as tidy DataFrames, and the work on one unit.

Each analysis takes an open :class:`ntdump.Dump` and the dump's name (the ``dump`` column: the
input path, or ``archive!member``) and returns a DataFrame without the ``dump`` /
``dump_sha256`` columns (:func:`process` adds them). A user analysis is any picklable callable
``f(dump) -> DataFrame`` (a module-level function), named by its ``__name__``.
"""

from __future__ import annotations

import json
import os
import time
import warnings as _warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import _schema
from ..dump import Dump, filetime_to_datetime
from ..errors import NtdumpWarning
from ..modules import MODULE_SCHEMA
from ..pool import USED_SCHEMA
from ..triage import triage
from ._inputs import DEFAULT_MAX_MEMBER_BYTES, MemberTooLarge, Unit, materialise

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
else:
    from .._lazy import np, pd  # imported on first use (start-up time)

if TYPE_CHECKING:
    Analysis = str | Callable[[Dump], pd.DataFrame]
else:  # the same alias without reading pandas at import time (start-up time)
    Analysis = str | Callable

INFO_SCHEMA = {
    "machine": _schema.LABEL,
    "pae": _schema.BOOL,
    "build": _schema.INT64,
    "dump_type": _schema.INT64,
    "layout": _schema.LABEL,
    "bugcheck_code": _schema.UINT64,
    "bugcheck_p1": _schema.UINT64,
    "bugcheck_p2": _schema.UINT64,
    "bugcheck_p3": _schema.UINT64,
    "bugcheck_p4": _schema.UINT64,
    "processors": _schema.INT64,
    "system_time": _schema.UINT64,
    "system_datetime": "datetime64[ns, UTC]",
    "system_up_time": _schema.UINT64,
    "dtb": _schema.ADDRESS,
    "kd_debugger_data_block": _schema.ADDRESS,
    "ps_loaded_module_list": _schema.ADDRESS,
    "present_pages": _schema.INT64,
    "missing_pages": _schema.INT64,
    "truncated": _schema.BOOL,
    "file_size": _schema.BYTES,
    "product_type": _schema.INT64,
    "comment": _schema.NAME,
    "warnings": _schema.NAME,
}
"""``info``: one row per dump, the header (:class:`ntdump.DumpInfo`). ``system_time`` is the
FILETIME; ``system_datetime`` the same as UTC time (NaT when absent)."""

VM_SCHEMA = {
    "key": _schema.LABEL,
    "label": _schema.NAME,
    "pages": "Int64",
    "kb": "Int64",
    "source": _schema.NAME,
}
"""``vm``: one row per ``!vm`` field and dump; ``pages``/``kb`` are <NA> where the dump does not
provide the field (``source`` says why)."""

TRIAGE_SCHEMA = {
    "bugcheck_code": _schema.UINT64,
    "bugcheck_name": _schema.NAME,
    "bugcheck_module": _schema.NAME,
    "pool_verdict": _schema.NAME,
    "verdicts": _schema.NAME,
    "top_tag": _schema.NAME,
    "top_tag_nonpaged_bytes": "Int64",
    "top_tag_paged_bytes": "Int64",
    "top_tag_owners": _schema.NAME,
    "suspect_tags": _schema.NAME,
    "suspect_drivers": _schema.NAME,
    "notes": _schema.NAME,
    "json": _schema.NAME,
}
"""``triage``: one row per dump: the key fields of :func:`ntdump.triage` (lists joined by
``", "``, verdict and note texts by newlines) and the whole report as JSON
(``docs/triage-schema.json``), with ``dump.path`` = the ``dump`` column."""

ANALYZE_SCHEMA = {
    "bucket": _schema.LABEL,
    "bugcheck_code": _schema.UINT64,
    "bugcheck_name": _schema.NAME,
    "bugcheck_p1": _schema.UINT64,
    "bugcheck_p2": _schema.UINT64,
    "bugcheck_p3": _schema.UINT64,
    "bugcheck_p4": _schema.UINT64,
    "faulting_ip": "UInt64",
    "faulting_symbol": _schema.NAME,
    "probably_caused_by": _schema.NAME,
    "probably_caused_by_symbol": _schema.NAME,
    "frames": "Int64",
    "system_datetime": "datetime64[ns, UTC]",
    "notes": _schema.NAME,
}
"""``analyze``: one row per dump: :func:`ntdump.analyze.analyze` (``!analyze -v``): the bucket id,
the bug check, the faulting IP and its symbol (<NA> when the code defines none), the image the
crash is probably caused by, the number of stack frames walked (<NA> without a stack), the dump's
time (for the ``buckets`` table) and the notes (one per line)."""

BUCKETS_SCHEMA = {
    "bucket": _schema.LABEL,
    "dumps": _schema.INT64,
    "machines": _schema.INT64,
    "first_seen": "datetime64[ns, UTC]",
    "last_seen": "datetime64[ns, UTC]",
}
"""``buckets`` (made when ``analyze`` runs): one row per bucket id, most dumps first: how many
dumps, on how many machines (:func:`ntdump.trend.machine_of`: the dump's folder, or the archive),
and the earliest and latest dump time (the header's SystemTime; NaT when no dump has one)."""

STATUS_SCHEMA = {
    "dump": _schema.NAME,
    "dump_sha256": _schema.NAME,
    "source": _schema.NAME,
    "member": _schema.NAME,
    "status": _schema.LABEL,
    "error_type": _schema.NAME,
    "message": _schema.NAME,
    "failed": _schema.NAME,
    "warnings": _schema.NAME,
    "bytes": "Int64",
    "seconds": "float64",
}
"""``status``: one row per input dump. ``status`` is ``ok`` (every analysis ran), ``partial``
(some failed: ``failed`` names them, ``errors`` has the details), ``error`` (not a readable
dump, or the archive member could not be extracted), ``skipped`` (larger than the extraction
limit) or ``cancelled`` (the run was interrupted first). ``seconds`` is the wall time on the
worker, the only column that differs from run to run."""

ERRORS_SCHEMA = {
    "dump": _schema.NAME,
    "dump_sha256": _schema.NAME,
    "analysis": _schema.LABEL,
    "error_type": _schema.NAME,
    "message": _schema.NAME,
}
"""``errors``: one row per failure: the analysis (``open`` / ``extract`` for the dump itself),
the exception type and message."""

KEY_COLUMNS = {"dump": _schema.LABEL, "dump_sha256": _schema.LABEL}
"""The two columns every analysis frame starts with (category: a path repeats on every row)."""


def _filetime_ts(ft: int) -> pd.Timestamp | None:
    dt = filetime_to_datetime(ft)
    if dt is None:
        return None
    try:
        return pd.Timestamp(dt).as_unit("ns")
    except (OverflowError, ValueError):
        return None


def info_frame(d: Dump, name: str) -> pd.DataFrame:
    """``info``: the header of one dump as one row (:data:`INFO_SCHEMA`)."""
    i = d.info
    p = list(i.bugcheck_params) + [0] * 4
    row: dict[str, Any] = {
        "machine": [i.machine], "pae": [i.pae], "build": [i.build], "dump_type": [i.dump_type],
        "layout": [i.layout], "bugcheck_code": [i.bugcheck_code],
        "bugcheck_p1": [p[0]], "bugcheck_p2": [p[1]], "bugcheck_p3": [p[2]],
        "bugcheck_p4": [p[3]], "processors": [i.processors], "system_time": [i.system_time],
        "system_datetime": [_filetime_ts(i.system_time)],
        "system_up_time": [i.system_up_time], "dtb": [i.dtb],
        "kd_debugger_data_block": [i.kd_debugger_data_block],
        "ps_loaded_module_list": [i.ps_loaded_module_list],
        "present_pages": [i.present_pages], "missing_pages": [i.missing_pages],
        "truncated": [i.truncated], "file_size": [i.file_size],
        "product_type": [i.product_type], "comment": [i.comment],
        "warnings": ["; ".join(i.warnings)],
    }
    return _schema.frame(row, INFO_SCHEMA)


def vm_frame(d: Dump, name: str) -> pd.DataFrame:
    """``vm``: the ``!vm`` fields of one dump, one row each (:data:`VM_SCHEMA`)."""
    v = d.vm()
    fs = [f for f in v.fields]
    return _schema.frame({"key": [f.key for f in fs], "label": [f.label for f in fs],
                          "pages": [f.pages for f in fs], "kb": [f.kb for f in fs],
                          "source": [f.source for f in fs]}, VM_SCHEMA)


def poolused_frame(d: Dump, name: str) -> pd.DataFrame:
    """``poolused``: :meth:`ntdump.Pool.used` (``!poolused``), nonpaged bytes first."""
    return d.pool.used()


def modules_frame(d: Dump, name: str) -> pd.DataFrame:
    """``modules``: :meth:`ntdump.ModuleList.to_frame` (``lm``)."""
    return d.modules.to_frame()


def triage_frame(d: Dump, name: str) -> pd.DataFrame:
    """``triage``: :func:`ntdump.triage` as one row (:data:`TRIAGE_SCHEMA`)."""
    r = triage(d)
    r.dump["path"] = name  # the logical name, not where a compressed dump was expanded
    top = r.suspect_tags[0] if r.suspect_tags else None
    row: dict[str, Any] = {
        "bugcheck_code": [r.bugcheck.get("code", 0)],
        "bugcheck_name": [r.bugcheck.get("name")],
        "bugcheck_module": [r.bugcheck.get("module")],
        "pool_verdict": [r.pool.get("verdict")],
        "verdicts": ["\n".join(v.text for v in r.verdicts)],
        "top_tag": [top["tag"] if top else None],
        "top_tag_nonpaged_bytes": [top["nonpaged_bytes"] if top else None],
        "top_tag_paged_bytes": [top["paged_bytes"] if top else None],
        "top_tag_owners": [", ".join(o["module"] for o in top["owners"]) if top else None],
        "suspect_tags": [", ".join(t["tag"] for t in r.suspect_tags)],
        "suspect_drivers": [", ".join(s["name"] for s in r.suspect_drivers)],
        "notes": ["\n".join(r.notes)],
        "json": [json.dumps(r.to_dict(), sort_keys=True)],
    }
    return _schema.frame(row, TRIAGE_SCHEMA)


def analyze_frame(d: Dump, name: str) -> pd.DataFrame:
    """``analyze``: :func:`ntdump.analyze.analyze` as one row (:data:`ANALYZE_SCHEMA`)."""
    from ..analyze import analyze

    a = analyze(d)
    p = [*list(a.bugcheck["params"]), 0, 0, 0, 0]
    pc = a.probably_caused_by or {}
    row: dict[str, Any] = {
        "bucket": [a.bucket], "bugcheck_code": [a.bugcheck["code"]],
        "bugcheck_name": [a.bugcheck["name"]], "bugcheck_p1": [p[0]], "bugcheck_p2": [p[1]],
        "bugcheck_p3": [p[2]], "bugcheck_p4": [p[3]], "faulting_ip": [a.faulting_ip],
        "faulting_symbol": [a.faulting_symbol], "probably_caused_by": [pc.get("image")],
        "probably_caused_by_symbol": [pc.get("symbol")],
        "frames": [None if a.stack is None else len(a.stack)],
        "system_datetime": [_filetime_ts(d.info.system_time)], "notes": ["\n".join(a.notes)],
    }
    return _schema.frame(row, ANALYZE_SCHEMA)


_ARCHIVE_SUFFIXES = (".zip", ".7z", ".gz")


def machine_of(dump: str) -> str:
    """The default machine of a dump name: its folder's name (for ``archive!member``, the
    member's folder inside the archive, else the archive's name less its extension). One rule
    for the ``buckets`` table here and for :mod:`ntdump.trend` (which re-exports it)."""
    from pathlib import PurePath, PurePosixPath

    if "!" in dump:
        archive, member = dump.split("!", 1)
        parent = PurePosixPath(member.replace("\\", "/")).parent
        if parent.name:
            return parent.name
        name = PurePath(archive).name
        for suf in _ARCHIVE_SUFFIXES:
            if name.lower().endswith(suf):
                return name[: -len(suf)]
        return name
    return PurePath(dump).parent.name


def buckets_frame(analyzed: pd.DataFrame) -> pd.DataFrame:
    """``buckets``: the ``analyze`` frame counted by bucket (:data:`BUCKETS_SCHEMA`); a dump
    present twice (same SHA-256) counts once."""
    df = analyzed
    if "dump_sha256" in df and df["dump_sha256"].notna().any():
        has = df["dump_sha256"].notna()
        df = pd.concat([df[has].drop_duplicates("dump_sha256"), df[~has]])
    rows: dict[str, list[Any]] = {k: [] for k in BUCKETS_SCHEMA}
    for bucket, g in df.groupby(df["bucket"].astype(str), sort=True, observed=True):
        times = g["system_datetime"].dropna()
        rows["bucket"].append(bucket)
        rows["dumps"].append(len(g))
        rows["machines"].append(len({machine_of(str(x)) for x in g["dump"]}))
        rows["first_seen"].append(times.min() if len(times) else None)
        rows["last_seen"].append(times.max() if len(times) else None)
    out = _schema.frame(rows, BUCKETS_SCHEMA)
    order = sorted(range(len(out)), key=lambda i: (-int(out["dumps"].iloc[i]),
                                                   str(out["bucket"].iloc[i])))
    return out.iloc[order].reset_index(drop=True)


ANALYSES: dict[str, Callable[[Dump, str], pd.DataFrame]] = {
    "info": info_frame,
    "vm": vm_frame,
    "poolused": poolused_frame,
    "modules": modules_frame,
    "triage": triage_frame,
    "analyze": analyze_frame,
}
"""The built-in analyses by name."""


def _schemas() -> dict[str, Mapping[str, str]]:
    return {"info": INFO_SCHEMA, "vm": VM_SCHEMA, "poolused": USED_SCHEMA,
            "modules": MODULE_SCHEMA, "triage": TRIAGE_SCHEMA, "analyze": ANALYZE_SCHEMA,
            "buckets": BUCKETS_SCHEMA}


def analysis_name(a: Analysis) -> str:
    """The key of an analysis in the results: its name, or a callable's ``__name__``."""
    if isinstance(a, str):
        if a not in ANALYSES:
            raise ValueError(f"unknown analysis {a!r}; known: {', '.join(ANALYSES)}")
        return a
    if callable(a):
        return str(getattr(a, "__name__", type(a).__name__))
    raise TypeError(f"an analysis is a name or a callable, not {type(a).__name__}")


def empty_frame(name: str) -> pd.DataFrame:
    """A frame with no rows and the columns of analysis ``name`` (key columns only if unknown)."""
    schema = {**KEY_COLUMNS, **_schemas().get(name, {})}
    return _schema.frame({}, schema)


@dataclass(frozen=True)
class Spec:
    """What every worker needs to know besides the unit (picklable)."""

    analyses: tuple[Analysis, ...]
    tmpdir: str | None = None
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES
    sha256: bool = True
    rayon_threads: int | None = None


@dataclass
class UnitResult:
    """What one unit produced: a frame per analysis that ran, a status row, error rows."""

    index: int
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)


def _key_column(value: str | None, n: int) -> pd.Categorical:
    if value is None:
        return pd.Categorical.from_codes(np.full(n, -1, np.int8),
                                         dtype=pd.CategoricalDtype(pd.Index([], dtype=str)))
    return pd.Categorical.from_codes(np.zeros(n, np.int8),
                                     dtype=pd.CategoricalDtype(pd.Index([value], dtype=str)))


def _keyed(df: pd.DataFrame, name: str, sha: str | None) -> pd.DataFrame:
    """``df`` with the ``dump`` and ``dump_sha256`` columns in front (categoricals built from
    codes: this runs once per dump and analysis, so it is kept cheap)."""
    df = df.drop(columns=[c for c in KEY_COLUMNS if c in df.columns])
    if not isinstance(df.index, pd.RangeIndex) or df.index.start != 0 or df.index.step != 1:
        df = df.reset_index(drop=True)
    n = len(df)
    keys = pd.DataFrame({"dump": _key_column(name, n), "dump_sha256": _key_column(sha, n)},
                        index=df.index)
    out = pd.concat([keys, df], axis=1)
    out.attrs = {}
    return out


def status_row(unit: Unit, status: str, *, sha: str | None = None,
               error: tuple[str, str] | None = None, failed: Sequence[str] = (),
               warnings: str = "", size: int | None = None,
               seconds: float = 0.0) -> dict[str, Any]:
    """One row of the status frame (:data:`STATUS_SCHEMA`)."""
    return {"dump": unit.name, "dump_sha256": sha, "source": unit.path, "member": unit.member,
            "status": status, "error_type": error[0] if error else None,
            "message": error[1] if error else None, "failed": ", ".join(failed),
            "warnings": warnings, "bytes": size, "seconds": seconds}


def process(index: int, unit: Unit, spec: Spec) -> UnitResult:
    """Analyse one unit. Never raises for a bad input: every failure becomes a status or an
    error row. (KeyboardInterrupt propagates.)"""
    if spec.rayon_threads is not None and "RAYON_NUM_THREADS" not in os.environ:
        # rayon builds its global pool on first use: this is early enough when the worker has
        # not run any ntdump analysis yet (the local engine sets it in its initializer).
        os.environ["RAYON_NUM_THREADS"] = str(spec.rayon_threads)
    t0 = time.perf_counter()
    res = UnitResult(index)
    if unit.kind == "error":
        res.status = status_row(unit, "error", error=unit.error)
        res.errors.append({"dump": unit.name, "dump_sha256": None, "analysis": "open",
                           "error_type": unit.error[0] if unit.error else "Error",
                           "message": unit.error[1] if unit.error else ""})
        return res
    sha: str | None = None
    size: int | None = None
    stage = "extract" if unit.kind != "file" else "open"
    try:
        with materialise(unit, spec.tmpdir, spec.max_member_bytes, spec.sha256) as (path, sha,
                                                                                    size):
            stage = "open"
            with Dump(path) as d:
                warnings = list(d.info.warnings)
                if d.info.truncated:
                    warnings.insert(0, f"truncated: {d.info.missing_pages} pages missing")
                failed: list[str] = []
                for a in spec.analyses:
                    aname = analysis_name(a)
                    try:
                        # An NtdumpWarning (e.g. an empty module list) goes to the status row's
                        # warnings, the same in every engine (never an exception under -W error).
                        with _warnings.catch_warnings(record=True) as said:
                            _warnings.simplefilter("always", NtdumpWarning)
                            df = ANALYSES[a](d, unit.name) if isinstance(a, str) else a(d)
                        for w in said:
                            if issubclass(w.category, NtdumpWarning) and str(w.message) not in \
                                    warnings:
                                warnings.append(str(w.message))
                            elif not issubclass(w.category, NtdumpWarning):
                                _warnings.warn_explicit(w.message, w.category, w.filename,
                                                        w.lineno)
                        if not isinstance(df, pd.DataFrame):
                            raise TypeError(f"analysis {aname} returned {type(df).__name__}, "
                                            "not a DataFrame")
                        res.frames[aname] = _keyed(df, unit.name, sha)
                    except Exception as e:  # any failure is a row, not a stop
                        failed.append(aname)
                        res.errors.append({"dump": unit.name, "dump_sha256": sha,
                                           "analysis": aname, "error_type": type(e).__name__,
                                           "message": str(e)})
        res.status = status_row(
            unit, "partial" if failed else "ok", sha=sha, failed=failed,
            warnings="; ".join(warnings), size=size,
            error=(res.errors[0]["error_type"], res.errors[0]["message"]) if failed else None)
    except MemberTooLarge as e:
        res.status = status_row(unit, "skipped", sha=sha, error=(type(e).__name__, str(e)),
                                size=size)
        res.errors.append({"dump": unit.name, "dump_sha256": sha, "analysis": stage,
                           "error_type": type(e).__name__, "message": str(e)})
    except Exception as e:  # not a dump, corrupt, unreadable, bad archive
        res.status = status_row(unit, "error", sha=sha, error=(type(e).__name__, str(e)),
                                size=size)
        res.errors = [{"dump": unit.name, "dump_sha256": sha, "analysis": stage,
                       "error_type": type(e).__name__, "message": str(e)}]
    res.status["seconds"] = time.perf_counter() - t0
    return res
