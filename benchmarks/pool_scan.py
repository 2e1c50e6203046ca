"""Pool tag scan speed, side by side, in one run (docs/pool.md "Benchmark").

Writes (once; reused while the stamp matches) a 64-bit full dump of ``--mib`` MiB of RAM whose
memory above 2 MiB is mapped at kernel VA 0xFFFFC08000000000 with 2 MiB pages and filled with
legacy-looking pool pages (64 template pages of chained blocks, 16 tags, tiled by PFN). Then times,
on a warm page cache:

1. ``touch``: summing every mapped byte once (Rust, rayon, all cores) — the physical limit;
2. ``scan all``: ntdump's scan for every valid header (``tags=None``);
3. ``scan Thre``: ntdump's scan for one tag;
4. ``d.pool.scan("Thre")``: the same through the Python API (page listing and DataFrame included);
5. a Python scanner reading 16 MiB chunks through Volatility 3's crash-dump layer and checking the
   POOL_HEADER before each ``Thre`` (the tag search ``poolscanner`` does), over the physical pages.

Goals (DESIGN.md): scan ≤ 1.5 x touch; ≥ 5 x faster than the Volatility 3 scanner.

    python benchmarks/pool_scan.py --mib 4096           # full run (writes ~4 GiB to $TMPDIR)
    python benchmarks/pool_scan.py --mib 256 --repeat 1  # smoke run
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import have, machine, median, versions

import ntdump
from ntdump import _native, forge
from ntdump.forge.pool import pool_header_bytes

VA_BASE = 0xFFFFC08000000000
PML4, PDPT, PD0 = 0x10, 0x11, 0x12
DATA_PFN = 0x200
TAGS = [b"Thre", b"File", b"Proc", b"MmCm", b"None", b"Ntfx", b"CM31", b"Irp ", b"Even",
        b"ObNm", b"Toke", b"Key ", b"Vad ", b"MmSt", b"Sema", b"Muta"]
STAMP = b"ntdump-pool-bench-v1"
BUILD = 7601


def templates(n: int = 64, seed: int = 7) -> np.ndarray:
    """``n`` pool pages: chained blocks (x64, 16-byte units), sizes 0x20-0x400, one tag each."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, 4096), dtype=np.uint8)
    for i in range(n):
        page = bytearray(4096)
        off = prev = 0
        while off < 4096:
            size = int(rng.integers(2, 65)) * 16
            if off + size > 4096 or 4096 - (off + size) < 32:
                size = 4096 - off
            tag = TAGS[int(rng.integers(0, len(TAGS)))]
            alloc = bool(rng.random() < 0.85)
            paged = int(rng.random() < 0.3)
            page[off:off + 16] = pool_header_bytes("x64", BUILD, previous_size=prev,
                                                   block_size=size, pool_type=paged,
                                                   allocated=alloc, tag=tag)
            # Block bodies: bytes that are not headers (a byte pattern with no printable tag).
            body = rng.integers(0, 256, size - 16, dtype=np.uint8)
            body[4::16] = 0  # no printable tag inside a body
            page[off + 16:off + size] = body.tobytes()
            prev, off = size, off + size
        out[i] = np.frombuffer(bytes(page), dtype=np.uint8)
    return out


def write_dump(path: Path, mib: int) -> Path:
    pages = mib * 256
    runs = [(0x1, 0x9F), (0x100, pages - 0x100)]
    size = 0x2000 + sum(c for _, c in runs) * 4096
    hdr = forge.Header(machine="x64", build=BUILD, dtb=PML4 << 12, processors=2,
                       comment=STAMP + f" {mib}".encode())
    head = bytes(forge.build_header(hdr, 1, size, runs))
    if path.exists() and path.stat().st_size == size:
        with path.open("rb") as f:
            if f.read(0x2000) == head:
                return path
    n2m = (pages - DATA_PFN) // 512
    tables: dict[int, bytearray] = {PML4: bytearray(4096), PDPT: bytearray(4096)}
    struct.pack_into("<Q", tables[PML4], 8 * ((VA_BASE >> 39) & 0x1FF), (PDPT << 12) | 0x63)
    for k in range(-(-n2m // 512)):
        va = VA_BASE + k * (1 << 30)
        struct.pack_into("<Q", tables[PDPT], 8 * ((va >> 30) & 0x1FF), ((PD0 + k) << 12) | 0x63)
        tables[PD0 + k] = bytearray(4096)
    for i in range(n2m):
        va = VA_BASE + i * (2 << 20)
        pd = PD0 + i // 512
        struct.pack_into("<Q", tables[pd], 8 * ((va >> 21) & 0x1FF),
                         ((DATA_PFN + 512 * i) << 12) | 0xE3)
    tpl = templates()
    print(f"writing {path} ({mib} MiB of RAM)...", file=sys.stderr)
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        f.write(head)
        for base, count in runs:
            step = 16384
            for lo in range(base, base + count, step):
                pfns = np.arange(lo, min(base + count, lo + step))
                chunk = tpl[pfns % len(tpl)].copy()
                chunk[pfns < DATA_PFN] = 0
                for pfn, t in tables.items():
                    if lo <= pfn < lo + len(pfns):
                        chunk[pfn - lo] = np.frombuffer(bytes(t), dtype=np.uint8)
                f.write(chunk.tobytes())
    tmp.rename(path)
    return path


def vol3_scan(path: Path, tag: bytes, chunk: int = 16 << 20) -> tuple[int, float]:
    """Volatility-3-style tag scan in Python over the crash layer's physical pages."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from oracles import vol3_crash_layer

    layer = vol3_crash_layer(path)
    t = time.perf_counter()
    hits = 0
    end = layer.maximum_address + 1
    for base in range(0, end, chunk):
        data = layer.read(base, min(chunk, end - base), pad=True)
        pos = data.find(tag)
        while pos >= 0:
            h = pos - 4
            if h >= 0 and h % 16 == 0:
                bs, pt = data[h + 2], data[h + 3]
                if bs and (h & 0xFFF) + bs * 16 <= 4096 and (pt == 0 or pt & 2):
                    hits += 1
            pos = data.find(tag, pos + 1)
    return hits, time.perf_counter() - t


def timed(f, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t)
    return median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--path", type=Path, default=None)
    ap.add_argument("--no-vol3", action="store_true")
    a = ap.parse_args()
    path = a.path or Path(tempfile.gettempdir()) / f"ntdump-bench-pool-{a.mib}m.dmp"
    write_dump(path, a.mib)
    with path.open("rb") as f:  # warm the page cache
        while f.read(64 << 20):
            pass
    d = ntdump.open(path)
    t0 = time.perf_counter()
    sc_all = _native.PoolScanner(d._d)
    t_list = time.perf_counter() - t0
    sc_tag = _native.PoolScanner(d._d, tags=[b"Thre"])
    n = sc_all.pages
    t_touch, _ = timed(lambda: sc_all.touch(0, n), a.repeat)
    t_all, r_all = timed(lambda: sc_all.run(0, n), a.repeat)
    t_tag, r_tag = timed(lambda: sc_tag.run(0, n), a.repeat)
    t_api, df = timed(lambda: d.pool.scan("Thre", progress=False), a.repeat)
    gib = n * 4096 / 2**30
    rows = [("touch every byte (Rust, rayon)", t_touch, ""),
            ("page listing (kernel_ranges + walk)", t_list, ""),
            ("scan, every tag", t_all, f"{len(r_all['address'])} headers"),
            ("scan, tag Thre", t_tag, f"{len(r_tag['address'])} headers"),
            ("d.pool.scan('Thre') end to end", t_api, f"{len(df)} rows")]
    if not a.no_vol3 and have("volatility3"):
        hits, t_v3 = vol3_scan(path, b"Thre")
        rows.append(("Python + Volatility 3 crash layer, 16 MiB chunks, tag Thre", t_v3,
                     f"{hits} headers"))
    print(f"## Pool scan benchmark ({a.mib} MiB dump, {gib:.2f} GiB mapped)\n")
    print(f"{machine()}\n\n{versions()}\n")
    print("| what | seconds | GiB/s | result |\n|---|---:|---:|---|")
    for what, t, res in rows:
        print(f"| {what} | {t:.3f} | {gib / t:.2f} | {res} |")
    print(f"\nscan every tag / touch = {t_all / t_touch:.2f} (goal <= 1.5); "
          f"scan Thre / touch = {t_tag / t_touch:.2f}")
    if len(rows) > 5:
        print(f"Volatility 3 scanner / ntdump scan Thre = {rows[5][1] / t_tag:.1f}x; "
              f"/ d.pool.scan end to end = {rows[5][1] / t_api:.1f}x (goal >= 5)")
    print(f"\nthreads: RAYON_NUM_THREADS={os.environ.get('RAYON_NUM_THREADS', 'all')}")


if __name__ == "__main__":
    main()
