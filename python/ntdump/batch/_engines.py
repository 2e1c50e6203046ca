"""Engines that run :func:`~._analyses.process` over units: ``serial`` (this process),
``local`` (a process pool on this machine) and ``dask`` (a ``dask.distributed`` cluster).

Every engine hands each finished unit to a :class:`Collector`; results are put in order only at
the end (:func:`assemble`), so the completion order never shows in the output.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import logging
import multiprocessing
import os
import signal
import sys
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ._analyses import Spec, UnitResult, process, status_row
from ._inputs import Unit

ProgressArg = bool | Callable[[int, int], Any] | None


def cores() -> int:
    """CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def _in_notebook() -> bool:
    ip = sys.modules.get("IPython")
    if ip is None:
        return False
    try:
        shell = ip.get_ipython()
        return shell is not None and "IPKernelApp" in shell.config
    except Exception:  # an unusual IPython
        return False


def _bar(total: int, desc: str) -> Any:
    """A tqdm bar counting dumps (a widget in a notebook with ipywidgets), or None without
    tqdm."""
    try:
        if _in_notebook():
            try:
                import ipywidgets  # noqa: F401
                from tqdm.notebook import tqdm
            except ImportError:
                from tqdm.std import tqdm
        else:
            from tqdm.std import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="dump", desc=desc, smoothing=0.1)


class Collector:
    """Receives unit results as they finish: keeps them, moves the progress bar, calls the
    progress callback ``f(done, total)`` (which may raise KeyboardInterrupt to stop the run)."""

    def __init__(self, total: int, progress: ProgressArg, desc: str = "ntdump batch") -> None:
        self.total = total
        self.results: dict[int, UnitResult] = {}
        self.callback = progress if callable(progress) else None
        self.bar: Any = None
        want = progress is True or (progress is None and (sys.stderr.isatty() or _in_notebook()))
        if want and total:
            self.bar = _bar(total, desc)

    def add(self, r: UnitResult, *, notify: bool = True) -> None:
        """Record one result; ``notify=False`` skips the callback (while stopping)."""
        self.results[r.index] = r
        if self.bar is not None:
            self.bar.update(1)
        if notify and self.callback is not None:
            self.callback(len(self.results), self.total)

    def close(self) -> None:
        """Close the progress bar."""
        if self.bar is not None:
            self.bar.close()


def _died(index: int, unit: Unit, e: BaseException, what: str) -> UnitResult:
    msg = f"{what}: {type(e).__name__}: {e}".rstrip(": ")
    r = UnitResult(index)
    r.status = status_row(unit, "error", error=(type(e).__name__, msg))
    r.errors.append({"dump": unit.name, "dump_sha256": None, "analysis": "worker",
                     "error_type": type(e).__name__, "message": msg})
    return r


# -- serial ---------------------------------------------------------------------------------------
def run_serial(units: Sequence[Unit], spec: Spec, col: Collector) -> bool:
    """Analyse the units one by one in this process. Returns True when interrupted."""
    for i, u in enumerate(units):
        try:
            col.add(process(i, u, spec))
        except KeyboardInterrupt:
            return True
    return False


# -- local process pool ---------------------------------------------------------------------------
def _init_worker(rayon_threads: int) -> None:
    """Worker initializer: cap rayon's pool (read when rayon first builds it, i.e. at the
    worker's first parallel ntdump call, so this is in time), leave Ctrl-C to the parent."""
    os.environ["RAYON_NUM_THREADS"] = str(rayon_threads)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _report_env() -> dict[str, str | None]:
    """What a worker sees (used by tests): its RAYON_NUM_THREADS and start method."""
    return {"RAYON_NUM_THREADS": os.environ.get("RAYON_NUM_THREADS"),
            "start_method": multiprocessing.get_start_method(allow_none=True)}


def _new_pool(workers: int, context: str, rayon_threads: int) -> cf.ProcessPoolExecutor:
    return cf.ProcessPoolExecutor(max_workers=workers,
                                  mp_context=multiprocessing.get_context(context),
                                  initializer=_init_worker, initargs=(rayon_threads,))


def _kill(pool: cf.ProcessPoolExecutor) -> None:
    for p in list((getattr(pool, "_processes", None) or {}).values()):
        if p.is_alive():
            p.terminate()
    pool.shutdown(wait=True, cancel_futures=True)


def run_local(units: Sequence[Unit], spec: Spec, col: Collector, workers: int,
              context: str = "spawn") -> bool:
    """Analyse the units on a pool of ``workers`` processes (``spawn``/``forkserver``: rayon's
    threads and ``fork`` do not mix). At most ``2 * workers`` units are in flight, so stopping
    is quick. On Ctrl-C (or a KeyboardInterrupt from the progress callback): nothing more is
    submitted, the units already running finish and are kept (a second Ctrl-C abandons them),
    and the function returns True. A worker that dies (a crash in native code) breaks the pool:
    the units that were in flight are run again one at a time in a fresh pool, so only the one
    that kills its worker gets an error row."""
    rayon_threads = max(1, cores() // workers)
    pool = _new_pool(workers, context, rayon_threads)
    todo: collections.deque[int] = collections.deque(range(len(units)))
    suspects: collections.deque[int] = collections.deque()
    running: dict[cf.Future[UnitResult], int] = {}
    alone = -1  # the unit running by itself (isolation), if any
    try:
        while todo or suspects or running:
            if suspects:  # isolation: one suspect at a time, nothing else in flight
                if not running:
                    alone = suspects.popleft()
                    running[pool.submit(process, alone, units[alone], spec)] = alone
            else:
                alone = -1
                while todo and len(running) < 2 * workers:
                    i = todo.popleft()
                    running[pool.submit(process, i, units[i], spec)] = i
            done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            broken = False
            for f in sorted(done, key=lambda f: running[f]):
                i = running.pop(f)
                try:
                    r = f.result()
                except BrokenProcessPool as e:
                    broken = True
                    if i == alone:
                        col.add(_died(i, units[i], e, "the worker process died on this dump"))
                    else:
                        suspects.append(i)
                    continue
                except Exception as e:  # e.g. a result that cannot be unpickled
                    r = _died(i, units[i], e, "the worker failed")
                col.add(r)
            if broken:
                suspects.extend(running.values())
                running.clear()
                pool.shutdown(wait=True, cancel_futures=True)
                pool = _new_pool(workers, context, rayon_threads)
        return False
    except KeyboardInterrupt:
        try:
            for f in cf.as_completed(list(running)):
                i = running.pop(f)
                try:
                    col.add(f.result(), notify=False)
                except Exception:  # reported as cancelled
                    continue
        except KeyboardInterrupt:
            _kill(pool)
        return True
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# -- dask -----------------------------------------------------------------------------------------
def run_dask(units: Sequence[Unit], spec: Spec, col: Collector, client: Any) -> bool:
    """Analyse the units as tasks on a ``dask.distributed`` client. Returns True when
    interrupted (the unfinished tasks are cancelled)."""
    from dask.distributed import as_completed

    token = uuid.uuid4().hex[:12]
    futs = {client.submit(process, i, u, spec, key=f"ntdump-batch-{token}-{i}", pure=False): i
            for i, u in enumerate(units)}
    try:
        for f in as_completed(list(futs)):
            i = futs[f]
            try:
                r = f.result()
            except Exception as e:  # KilledWorker (the unit kills its workers) …
                r = _died(i, units[i], e, "the task failed on the cluster")
            col.add(r)
            f.release()
        return False
    except KeyboardInterrupt:
        client.cancel([f for f in futs if not f.done()])
        for f in futs:
            if f.done() and f.status == "finished" and futs[f] not in col.results:
                try:
                    col.add(f.result(), notify=False)
                except Exception:
                    continue
        return True


def local_cluster(workers: int) -> tuple[Any, Any]:
    """A loopback-only ``LocalCluster`` of ``workers`` single-threaded processes (no dashboard;
    every listening socket on 127.0.0.1) and a client for it."""
    from dask.distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address=None,
                           # the scheduler's HTTP endpoints (/health, /metrics) still listen:
                           # loopback, on a free port (not 8787, which a second cluster wants)
                           scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                           silence_logs=logging.CRITICAL,
                           env={"RAYON_NUM_THREADS": str(max(1, cores() // workers))})
    return cluster, Client(cluster)
