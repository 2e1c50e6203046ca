"""Benchmark: ``ntdump.batch.run`` over many small dumps — dumps/s per engine, and the per-dump
overhead of the batch machinery over a bare ``ntdump.open`` + ``d.pool.used()`` loop.

The archive: ``--n`` kernel dumps (DumpType 6, only populated pages, ~0.6 MiB each, Windows 10
x64) from 50 forged machines (``ntdump.batch.fleet.write_fleet``, no leaks, no bad files),
written once into ``--dir`` (reused when it already holds them) or a temp dir.

Measured (wall time, ``time.perf_counter``; warm page cache — one untimed pass reads every file
first), one pass each, ``analyses=("poolused",)`` unless said otherwise:

1. bare loop, this process: ``with ntdump.open(p) as d: d.pool.used()`` for every dump;
2. bare loop + SHA-256 of each file (what ``dump_sha256`` costs);
3. ``engine="serial"`` (this process): 2 minus 3 is the batch bookkeeping per dump;
4. ``engine="local"``, 1 and 2 workers: pool start-up included (spawn, import ntdump);
5. ``engine="dask"`` with a 2-worker ``LocalCluster`` (loopback), cluster start-up timed apart;
6. ``engine="local"``, 2 workers, all five default analyses (info, vm, poolused, modules,
   triage).

    python benchmarks/batch.py                 # 1000 dumps
    python benchmarks/batch.py --n 200 --dir /tmp/bench-fleet
"""

from __future__ import annotations

import argparse
import hashlib
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
    machines = [f"m{i:03d}" for i in range(50)]
    days = -(-n // len(machines))
    t = time.perf_counter()
    write_fleet(root, machines, days, leaks={}, x86=(), bad_files=False)
    paths = _paths(root)
    for extra in paths[n:]:
        extra.unlink()
    print(f"forged {n} dumps in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    return paths[:n]


def _timed(what: str, fn: Callable[[], object], n: int, rows: list[tuple[str, float, int]]
           ) -> object:
    t = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t
    rows.append((what, dt, n))
    print(f"{what:<58} {dt:8.2f} s {n / dt:8.1f} dumps/s", file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="dumps (default 1000)")
    ap.add_argument("--dir", help="archive folder (generated there if not complete)")
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
    rows: list[tuple[str, float, int]] = []

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
    _timed("bare loop: open + pool.used()", bare, n, rows)
    _timed("bare loop + sha256 of the file", bare_sha, n, rows)
    _timed("batch.run serial", lambda: batch.run(root, one, "serial", progress=False), n, rows)
    _timed("batch.run local, 1 worker (start-up included)",
           lambda: batch.run(root, one, "local", workers=1, progress=False), n, rows)
    _timed("batch.run local, 2 workers (start-up included)",
           lambda: batch.run(root, one, "local", workers=2, progress=False), n, rows)
    t = time.perf_counter()
    cluster, client = local_cluster(2)
    start = time.perf_counter() - t
    print(f"{'dask LocalCluster(2) start-up':<58} {start:8.2f} s", file=sys.stderr)
    try:
        res = _timed("batch.run dask, LocalCluster 2 workers (running)",
                     lambda: batch.run(root, one, "dask", client=client, progress=False), n,
                     rows)
    finally:
        client.close()
        cluster.close()
    _timed("batch.run local, 2 workers, all 5 default analyses",
           lambda: batch.run(root, engine="local", workers=2, progress=False), n, rows)
    assert isinstance(res, dict) and (res["status"]["status"] == "ok").all()

    print()
    print(f"Machine: {header}; {versions()}")
    print(f"Archive: {n} dumps, {size / 2**20:.0f} MiB ({size / n / 2**10:.0f} KiB each)")
    print()
    print("| run | wall (s) | dumps/s | ms/dump |")
    print("|---|---:|---:|---:|")
    for what, dt, k in rows:
        print(f"| {what} | {dt:.2f} | {k / dt:.1f} | {1000 * dt / k:.1f} |")
    print(f"| (dask LocalCluster(2) start-up, not in the row above) | {start:.2f} | | |")
    bare_t, sha_t, serial_t = rows[0][1], rows[1][1], rows[2][1]
    print()
    print(f"Per-dump overhead of batch (serial) over the bare loop: "
          f"{1000 * (serial_t - bare_t) / n:.2f} ms, of which SHA-256 "
          f"{1000 * (sha_t - bare_t) / n:.2f} ms")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
