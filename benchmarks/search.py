"""`!for_each_module s -d` over ~150 modules, and a whole-kernel search, from Python: ntdump's
`d.search` vs a Python loop over kdmp-parser's `read_virtual_page` (the way one would do it with
that library), on the same forged Windows 10 x64 dump, same run, same pattern.

    python benchmarks/search.py [--quick] [--modules 150] [--runs 3]

The touch-every-byte yardstick for the Rust engine is in docs/search.md (criterion, same machine).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import have, machine, median, versions


def build(path: Path, n_modules: int) -> object:
    from ntdump.forge import scenario
    from ntdump.forge.scenario import DriverSpec

    rng = random.Random(7)
    nt = "ntoskrnl.exe"
    specs = []
    for i in range(n_modules):
        specs.append(DriverSpec(f"drv{i:03d}.sys", {nt: ["ExAllocatePoolWithTag", "ExFreePool"]}))
    # Images of realistic size: 64 KiB - 1 MiB of data each (random bytes, so no false hits).
    import ntdump.forge.pe as fpe

    orig = fpe.build_driver

    def sized(name: str, **kw: object) -> bytes:
        kw.setdefault("data", rng.randbytes(rng.choice([64, 128, 256, 512, 1024]) << 10))
        return orig(name, **kw)  # type: ignore[arg-type]

    import ntdump.forge.scenario as fsc

    fsc.build_driver = sized  # type: ignore[assignment]
    try:
        return scenario.win10_x64(path, modules=specs, size=1 << 30)
    finally:
        fsc.build_driver = orig  # type: ignore[assignment]


def kdmp_loop(k: object, ranges: list[tuple[int, int]], needle: bytes) -> list[int]:
    """The plain way with kdmp-parser: read every page, find the needle (8-byte aligned)."""
    hits = []
    for start, end in ranges:
        for page in range(start & ~0xFFF, end, 0x1000):
            data = k.read_virtual_page(page)  # type: ignore[attr-defined]
            if data is None:
                continue
            i = data.find(needle)
            while i >= 0:
                if i % 8 == 0:
                    hits.append(page + i)
                i = data.find(needle, i + 1)
    return hits


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--modules", type=int, default=150)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    n = 20 if a.quick else a.modules
    runs = 1 if a.quick else a.runs
    import ntdump

    with tempfile.TemporaryDirectory(prefix="ntdump-bench-search-") as tmp:
        s = build(Path(tmp) / "MEMORY.DMP", n)
        d = ntdump.open(s.path)  # type: ignore[attr-defined]
        target = d.symbol("nt!ExAllocatePoolWithTag")
        needle = target.to_bytes(8, "little")
        mods = [(m.base, m.end) for m in d.modules]
        searched = sum(e - b for b, e in mods)
        kernel_ranges = None
        rows = []
        t_ours = []
        for _ in range(runs):
            t = time.perf_counter()
            ours = d.search(target, width=8, within=d.modules)
            t_ours.append(time.perf_counter() - t)
        t_kernel = []
        for _ in range(runs):
            t = time.perf_counter()
            kern = d.search(target, width=8, within="kernel")
            t_kernel.append(time.perf_counter() - t)
        rows.append(("ntdump `d.search(x, width=8, within=d.modules)`", median(t_ours),
                     len(ours)))
        rows.append(("ntdump `d.search(x, width=8, within=\"kernel\")`", median(t_kernel),
                     len(kern)))
        if have("kdmp_parser"):
            import kdmp_parser

            k = kdmp_parser.KernelDumpParser(s.path)  # type: ignore[attr-defined]
            t_k = []
            for _ in range(runs):
                t = time.perf_counter()
                theirs = kdmp_loop(k, mods, needle)
                t_k.append(time.perf_counter() - t)
            assert sorted(theirs) == sorted(int(x) for x in ours["address"]), "hit sets differ"
            rows.append(("kdmp-parser: Python loop of `read_virtual_page` + `bytes.find`",
                         median(t_k), len(theirs)))
            kernel_ranges = getattr(d, "kernel_ranges", None)
    print(f"machine: {machine()}")
    print(f"versions: {versions()}")
    print(f"dump: Windows 10 x64 (forged), {n + 3} modules, {searched / 2**20:.1f} MiB of module "
          f"images; {runs} runs, median")
    print("| search | time (ms) | hits | MiB/s |")
    print("|---|---|---|---|")
    for name, t, h in rows:
        print(f"| {name} | {t * 1000:.1f} | {h} | {searched / 2**20 / t:.0f} |")
    if len(rows) == 3:
        ratio = rows[2][1] / rows[0][1]
        print(f"\nntdump vs the kdmp-parser loop over the same modules: {ratio:.0f}x")
    _ = kernel_ranges


if __name__ == "__main__":
    main()
