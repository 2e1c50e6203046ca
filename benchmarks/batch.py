"""Benchmark: ``ntdump.batch.run`` over many small dumps — dumps/s per engine, and the per-dump
overhead of the batch machinery over a bare ``ntdump.open`` + ``d.pool.used()`` loop.

The archive: ``--n`` kernel dumps (DumpType 6, only populated pages, ~0.6 MiB each, Windows 10
x64) from 50 forged machines (``ntdump.batch.fleet.write_fleet``, no leaks, no bad files),
written once into ``--dir`` (reused when it already holds them) or a temp dir.

Measured: wall time (``time.perf_counter``) and CPU time (user + system of this process and of
its reaped children: the pool's and the cluster's workers), warm page cache (one untimed pass
reads every file first), the best of ``--repeat`` rounds (default 3; this machine is shared),
``analyses=("poolused",)`` unless said otherwise:

1. bare loop, this process: ``with ntdump.open(p) as d: d.pool.used()`` for every dump;
2. bare loop + SHA-256 of each file (what ``dump_sha256`` costs);
3. ``engine="serial"`` (this process): 2 minus 3 is the batch bookkeeping per dump;
4. ``engine="local"``, 1 and 2 workers: pool start-up included (spawn, import ntdump);
5. ``engine="dask"`` with a 2-worker ``LocalCluster`` (loopback), cluster start-up timed apart;
6. ``engine="local"``, 2 workers, all five default analyses (info, vm, poolused, modules,
   triage) — first round only;
7. a calibration per round: a fixed pure-Python CPU loop on a spawned pool of 1 and of 2
   processes, i.e. how much a second process can help on this machine at that moment.

    python benchmarks/batch.py                 # 1000 dumps
    python benchmarks/batch.py --n 200 --dir /tmp/bench-fleet
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, versions


def _paths(root: Path) -> list[Path]:
    return sorted(root.rglob("*.dmp"))


def _generate(root: Path, n: int) -> list[Path]:
    from ntdump.batch.fleet import write_fleet

    have = _paths(root)
    if len(have) == n:
        return have
    for p in have:  # an incomplete or different archive: write it again
        p.unlink()
    machines = [f"m{i:03d}" for i in range(50)]
    days = -(-n // len(machines))
    t = time.perf_counter()
    write_fleet(root, machines, days, leaks={}, x86=(), bad_files=False)
    paths = _paths(root)
    for extra in paths[n:]:
        extra.unlink()
    print(f"forged {n} dumps in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    return paths[:n]


def _spin(_: int) -> float:
    """A fixed pure-Python CPU load (the calibration unit); returns its wall seconds."""
    t = time.perf_counter()
    x = 0
    for i in range(4_000_000):
        x += i * i
    return time.perf_counter() - t


def calibrate() -> tuple[float, float]:
    """Wall seconds for 8 calibration units on 1 and on 2 spawned processes: how much a second
    process helps on this machine right now, whatever ntdump does."""
    import multiprocessing as mp

    out = []
    for n in (1, 2):
        with mp.get_context("spawn").Pool(n) as pool:
            pool.map(_spin, range(n))
            t = time.perf_counter()
            pool.map(_spin, range(8))
            out.append(time.perf_counter() - t)
    return out[0], out[1]


def _cpu() -> float:
    """CPU seconds (user + system) of this process and of its children reaped so far."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


Row = tuple[str, float, float, int]


def _timed(what: str, fn: Callable[[], object], n: int, rows: list[Row]) -> object:
    t, c = time.perf_counter(), _cpu()
    out = fn()
    dt, dc = time.perf_counter() - t, _cpu() - c
    rows.append((what, dt, dc, n))
    print(f"{what:<58} {dt:8.2f} s {n / dt:8.1f} dumps/s  cpu {1000 * dc / n:6.1f} ms/dump",
          file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="dumps (default 1000)")
    ap.add_argument("--dir", help="archive folder (generated there if not complete)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; the best wall time is kept")
    ap.add_argument("--skip-all", action="store_true", help="skip the 5-analysis run")
    args = ap.parse_args(argv)

    import ntdump
    import ntdump.batch as batch
    from ntdump.batch._engines import local_cluster

    tmp = None
    if args.dir:
        root = Path(args.dir)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="ntdump-bench-batch-")
        root = Path(tmp.name)
    header = machine()
    paths = _generate(root, args.n)
    n = len(paths)
    size = sum(p.stat().st_size for p in paths)
    for p in paths:  # warm the page cache
        p.read_bytes()
    rows: list[Row] = []

    def bare() -> None:
        for p in paths:
            with ntdump.open(p) as d:
                d.pool.used()

    def bare_sha() -> None:
        for p in paths:
            with open(p, "rb") as f:
                hashlib.file_digest(f, "sha256")
            with ntdump.open(p) as d:
                d.pool.used()

    one = ("poolused",)
    runs: list[tuple[str, Callable[[], object]]] = [
        ("bare loop: open + pool.used()", bare),
        ("bare loop + sha256 of the file", bare_sha),
        ("batch.run serial", lambda: batch.run(paths, one, "serial", progress=False)),
        ("batch.run local, 1 worker (start-up included)",
         lambda: batch.run(paths, one, "local", workers=1, progress=False)),
        ("batch.run local, 2 workers (start-up included)",
         lambda: batch.run(paths, one, "local", workers=2, progress=False)),
    ]
    dask_name = "batch.run dask, LocalCluster 2 workers (running)"
    every = "batch.run local, 2 workers, all 5 default analyses"
    all_rows: list[Row] = []
    starts: list[float] = []
    loads = [os.getloadavg()[0]]
    cal: list[tuple[float, float]] = []
    for rep in range(args.repeat):
        print(f"-- round {rep + 1} of {args.repeat}", file=sys.stderr)
        cal.append(calibrate())
        print(f"calibration: 1 process {cal[-1][0]:.2f} s, 2 processes {cal[-1][1]:.2f} s "
              f"(x{cal[-1][0] / cal[-1][1]:.2f})", file=sys.stderr)
        for what, fn in runs:
            _timed(what, fn, n, all_rows)
        t, c0 = time.perf_counter(), _cpu()
        cluster, client = local_cluster(2)
        starts.append(time.perf_counter() - t)
        print(f"{'dask LocalCluster(2) start-up':<58} {starts[-1]:8.2f} s", file=sys.stderr)
        try:
            res = _timed(dask_name, lambda c=client: batch.run(paths, one, "dask", client=c,
                                                               progress=False), n, all_rows)
        finally:
            client.close()
            cluster.close()
        # The workers' CPU time is only known once they exit: charge the cluster's whole life.
        what, dt, _, k = all_rows[-1]
        all_rows[-1] = (what, dt, _cpu() - c0, k)
        assert isinstance(res, dict) and (res["status"]["status"] == "ok").all()
        if rep == 0 and not args.skip_all:
            _timed(every, lambda: batch.run(paths, engine="local", workers=2, progress=False),
                   n, all_rows)
        loads.append(os.getloadavg()[0])
    # Best (shortest) wall time of each run over the rounds: the least disturbed one.
    order = [w for w, _ in runs] + [dask_name] + ([] if args.skip_all else [every])
    for what in order:
        rows.append(min((r for r in all_rows if r[0] == what), key=lambda r: r[1]))
    start = min(starts)

    print()
    print(f"Machine: {header}; {versions()}")
    print(f"Archive: {n} dumps, {size / 2**20:.0f} MiB ({size / n / 2**10:.0f} KiB each); "
          f"best of {args.repeat} rounds (the 5-analysis run: one); 1-min load average at "
          f"the start of each round and at the end: {', '.join(f'{x:.2f}' for x in loads)}")
    print()
    print("| run | wall (s) | dumps/s | wall ms/dump | CPU ms/dump (all processes) |")
    print("|---|---:|---:|---:|---:|")
    for what, dt, dc, k in rows:
        print(f"| {what} | {dt:.2f} | {k / dt:.1f} | {1000 * dt / k:.1f} | "
              f"{1000 * dc / k:.1f} |")
    print(f"| (dask LocalCluster(2) start-up, not in the row above) | {start:.2f} | | | |")
    print()
    print("Calibration (a pure-Python loop, 8 units, spawned pool), per round: "
          + "; ".join(f"1 process {a:.2f} s, 2 processes {b:.2f} s (x{a / b:.2f})"
                      for a, b in cal))
    (_, bare_t, bare_c, _), (_, sha_t, sha_c, _), (_, ser_t, ser_c, _) = rows[:3]
    print()
    print(f"Per-dump overhead of batch (serial) over the bare loop: wall "
          f"{1000 * (ser_t - bare_t) / n:.2f} ms, CPU {1000 * (ser_c - bare_c) / n:.2f} ms; "
          f"SHA-256 alone: wall {1000 * (sha_t - bare_t) / n:.2f} ms, CPU "
          f"{1000 * (sha_c - bare_c) / n:.2f} ms")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
