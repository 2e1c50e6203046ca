"""Benchmark: random 4 KiB kernel-virtual reads from Python: ntdump vs kdmp-parser, Volatility 3.

Input: an x64 full dump (DumpType 1) written by ``ntdump.forge`` into a temporary directory:
``--mapped-mib`` MiB (default 64) of kernel VA at 0xFFFFF80000000000 mapped with 4 KiB pages
(``PageTables.map``) onto a contiguous, 2 MiB-aligned block of physical memory; every mapped
page holds ``forge.stamp(va, pa)`` (4 KiB of non-zero data), so the file is real data, not holes.

The same list of ``--reads`` page-aligned VAs (uniform over the mapped pages, fixed seed) is read,
in the same process, by

* ntdump: ``d.read(va, 4096)`` on ``d = ntdump.open(path)`` (the public API);
* ntdump, native method: ``d._d.read(va, 4096, False)`` — the PyO3 method without the Python
  wrapper, to show what the wrapper costs (not a public API);
* kdmp-parser: ``KernelDumpParser.read_virtual_page(va)`` (returns a ``bytearray``);
* Volatility 3 (first ``--vol3-reads`` VAs only; it is much slower): ``WindowsIntel32e`` over
  ``WindowsCrashDump64Layer``, built as ``tests/oracles.py: vol3_translate`` does,
  ``layer.read(va, 4096)``;
* a floor: ``mm[off:off + 4096]`` on an ``mmap`` of the file with the file offsets precomputed
  (no translation, no bounds logic: what one Python call returning 4 KiB of bytes costs).

Before timing, 500 VAs are read by every reader and compared with the forge's ground truth.
``--rounds`` rounds (default 5), the reader order rotated each round; the median round is
reported. The garbage collector is disabled during the timed loops (for every reader). The
dump was just written, so the page cache is warm, and before timing every reader reads every
mapped page once (no first-touch page faults in the timed loops). The 64 MiB working set is
far larger than L2; whether it fits a (shared, virtualised) L3 depends on the machine.

    python benchmarks/bench_random_reads.py           # 200,000 reads x 5 rounds
    python benchmarks/bench_random_reads.py --quick   # 5,000 reads x 1 round, 16 MiB mapped
"""

from __future__ import annotations

import argparse
import gc
import json
import mmap
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

VA_BASE = 0xFFFFF80000000000
PAGE = 4096


def make_dump(path: Path, mapped_mib: int) -> tuple[list[tuple[int, int]], int]:
    """Write the dump; returns ([(va, pa)] of the mapped pages, dtb)."""
    from ntdump import forge

    npages = (mapped_mib << 20) // PAGE
    mem = forge.PhysicalMemory([(0x1, 0x9F), (0x100, npages + 0x400)])
    pt = forge.PageTables(mem, "x64")
    first = mem.alloc_pages(npages, 512)
    pages = []
    for i in range(npages):
        va, pa = VA_BASE + i * PAGE, (first + i) * PAGE
        pt.map(va, pa)
        mem.write(pa, forge.stamp(va, pa))
        pages.append((va, pa))
    hdr = forge.Header(
        machine="x64",
        build=19041,
        dtb=pt.dtb,
        processors=2,
        comment=b"ntdump benchmarks/bench_random_reads.py",
    )
    forge.write_full(path, mem, hdr)
    return pages, pt.dtb


def timed(fn: Callable[[int], object], vas: list[int]) -> float:
    gc.disable()
    try:
        t0 = time.perf_counter()
        for va in vas:
            fn(va)
        return time.perf_counter() - t0
    finally:
        gc.enable()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run")
    ap.add_argument("--reads", type=int, help="VAs per round (default 200000)")
    ap.add_argument("--rounds", type=int, help="rounds (default 5)")
    ap.add_argument("--mapped-mib", type=int, help="MiB of VA mapped with 4 KiB pages (default 64)")
    ap.add_argument("--vol3-reads", type=int, help="VAs read by Volatility 3 (default 20000)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    ap.add_argument("--tmpdir", type=Path, help="directory for the dump (default: a temp dir)")
    a = ap.parse_args(argv)
    n = a.reads or (5_000 if a.quick else 200_000)
    rounds = a.rounds or (1 if a.quick else 5)
    mapped = a.mapped_mib or (16 if a.quick else 64)
    n_vol = min(n, a.vol3_reads or (1_000 if a.quick else 20_000))

    import ntdump

    print(C.header("Random 4 KiB virtual reads from Python"))
    with tempfile.TemporaryDirectory(prefix="ntdump-bench-", dir=a.tmpdir) as td:
        path = Path(td) / f"random-reads-{mapped}m.dmp"
        t0 = time.perf_counter()
        pages, dtb = make_dump(path, mapped)
        size, alloc = C.disk_usage(path)
        print(
            f"- dump: x64 full, {mapped} MiB mapped with {len(pages)} 4 KiB PTEs, file "
            f"{size / 2**20:.0f} MiB ({alloc / 2**20:.0f} MiB on disk), written in "
            f"{time.perf_counter() - t0:.1f} s"
        )
        rng = random.Random(a.seed)
        picks = [rng.randrange(len(pages)) for _ in range(n)]
        vas = [pages[i][0] for i in picks]

        d = ntdump.open(path)
        offsets = {}
        for base, count, off in d._d.info()["file_runs"]:
            for j in range(count):
                offsets[(base + j) * PAGE] = off + j * PAGE
        foffs = [offsets[pages[i][1]] for i in picks]

        readers: dict[str, Callable[[int], Any]] = {}
        dread = d.read
        readers["ntdump `d.read(va, 4096)`"] = lambda va: dread(va, PAGE)
        nread = d._d.read
        readers["ntdump native `d._d.read(va, 4096, False)`"] = lambda va: nread(va, PAGE, False)
        kd = None
        if C.have("kdmp_parser"):
            import kdmp_parser

            kd = kdmp_parser.KernelDumpParser(path)
            kread = kd.read_virtual_page
            readers["kdmp-parser `read_virtual_page(va)`"] = kread
        vlayer = None
        if C.have("volatility3"):
            from volatility3.framework import contexts
            from volatility3.framework.layers import crash, intel, physical

            ctx = contexts.Context()
            ctx.config["file.location"] = path.resolve().as_uri()
            ctx.add_layer(physical.FileLayer(ctx, "file", "file"))
            ctx.config["crash.base_layer"] = "file"
            ctx.add_layer(crash.WindowsCrashDump64Layer(ctx, "crash", "crash"))
            ctx.config["virt.memory_layer"] = "crash"
            ctx.config["virt.page_map_offset"] = dtb
            vlayer = intel.WindowsIntel32e(ctx, "virt", "virt")
            ctx.add_layer(vlayer)
            vread = vlayer.read
            readers["Volatility 3 `WindowsIntel32e.read(va, 4096)`"] = lambda va: vread(va, PAGE)

        f = open(path, "rb")
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        floor_key = "floor: `mm[off:off+4096]` (precomputed offsets)"

        # Correctness first (not timed): every reader returns the forge's bytes.
        from ntdump import forge

        for i in picks[:500]:
            va, pa = pages[i]
            want = forge.stamp(va, pa)
            for name, fn in readers.items():
                got = bytes(fn(va))
                if got != want:
                    raise SystemExit(f"{name} returned wrong bytes at {va:#x}")
            if mm[offsets[pa] : offsets[pa] + PAGE] != want:
                raise SystemExit("file offset map is wrong")

        # Warm-up (not timed): every reader touches every mapped page once, so that no timed
        # loop pays the first-touch page faults of its own file mapping.
        for fn in readers.values():
            for va, _pa in pages:
                fn(va)
        for _va, pa in pages:
            mm[offsets[pa] : offsets[pa] + PAGE]

        times: dict[str, list[float]] = {k: [] for k in [*readers, floor_key]}
        order = list(times)
        for r in range(rounds):
            rot = order[r % len(order) :] + order[: r % len(order)]
            for name in rot:
                if name == floor_key:
                    gc.disable()
                    t0 = time.perf_counter()
                    for off in foffs:
                        mm[off : off + PAGE]
                    times[name].append(time.perf_counter() - t0)
                    gc.enable()
                elif name.startswith("Volatility"):
                    times[name].append(timed(readers[name], vas[:n_vol]))
                else:
                    times[name].append(timed(readers[name], vas))
        mm.close()
        f.close()
        if vlayer is not None:
            ctx.layers["file"].destroy()
        d.close()

    counts = {k: (n_vol if k.startswith("Volatility") else n) for k in times}
    rate = {k: counts[k] / C.median(v) for k, v in times.items()}
    kdmp_rate = next((v for k, v in rate.items() if k.startswith("kdmp")), None)
    rows = []
    for k in order:
        ratio = f"{rate[k] / kdmp_rate:.2f}x" if kdmp_rate else "-"
        spread = [counts[k] / t for t in times[k]]
        rng_s = f"{min(spread):,.0f} - {max(spread):,.0f}"
        rows.append(
            [
                k,
                f"{counts[k]:,}",
                f"{rate[k]:,.0f}",
                rng_s,
                f"{1e6 / rate[k]:.2f}",
                f"{rate[k] * PAGE / 2**30:.2f}",
                ratio,
            ]
        )
    print(f"- {n:,} random page-aligned VAs (seed {a.seed}), {rounds} round(s), median round\n")
    head = [
        "reader",
        "reads/round",
        "reads/s (median)",
        "min - max",
        "µs/read",
        "GiB/s",
        "vs kdmp-parser",
    ]
    print(C.table(rows, head))
    print()
    if a.json:
        a.json.write_text(json.dumps({"reads": n, "vol3_reads": n_vol, "times": times}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
