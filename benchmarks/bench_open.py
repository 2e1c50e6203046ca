"""Benchmark: open a large dump — wall time and peak RSS, ntdump vs kdmp-parser vs Volatility 3.

Dumps (written by ``ntdump.forge`` into a temporary directory, sparse on disk):

* a 64 GiB full dump (DumpType 1, three runs): opening is O(header);
* bitmap dumps (DumpType 5, "FDMP") of 4 and 64 GiB: opening is O(bitmap) (128 KiB / 2 MiB).

Each measurement runs in a fresh ``python`` subprocess that imports the reader's modules, then
times (``time.perf_counter``) only the open:

* ntdump: ``ntdump.open(path).info`` (header parsed, runs built, info dataclass made);
* kdmp-parser: ``kdmp_parser.KernelDumpParser(path)``;
* Volatility 3: a ``FileLayer`` plus ``WindowsCrashDump64Layer`` built in a fresh context
  (as ``tests/oracles.py: vol3_crash_layer`` does, no plugin run, no symbol tables).

Peak RSS = ``ru_maxrss`` at the end of the child minus the median ``ru_maxrss`` of a baseline
child that imported the same modules and opened nothing. Children are started through
``/bin/sh`` (which forks them): Linux carries ``ru_maxrss`` across fork + exec, so a child
started directly from this script would report at least this script's own peak RSS. The
child's ``VmHWM`` (/proc/self/status, peak RSS of its own address space) is recorded as a
cross-check; a warning is printed if the two deltas differ by more than 1 MiB.

After that, outside both measurements, the child reads 8 bytes of the last stored page to
check that the reader really holds the whole memory map (all readers must agree).

One unrecorded warm-up child per (dump, reader) first, so the header/bitmap pages and the
shared libraries are in the page cache: the numbers are warm-cache numbers.

    python benchmarks/bench_open.py            # 5 repetitions, full 64 GiB, bitmap 4 + 64 GiB
    python benchmarks/bench_open.py --quick    # 1 repetition, full 4 GiB, bitmap 1 GiB
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

CHILD = r"""
import json, resource, sys, time
tool, path, mode, last_pa = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
t0 = time.perf_counter()
if tool == "ntdump":
    import ntdump
elif tool == "kdmp-parser":
    import kdmp_parser
elif tool == "volatility3":
    from pathlib import Path
    from volatility3.framework import contexts
    from volatility3.framework.layers import crash, physical
t_import = time.perf_counter() - t0
out = {"import_s": t_import}
if mode == "open":
    t0 = time.perf_counter()
    if tool == "ntdump":
        d = ntdump.open(path)
        info = d.info
    elif tool == "kdmp-parser":
        p = kdmp_parser.KernelDumpParser(path)
    else:
        ctx = contexts.Context()
        ctx.config["file.location"] = Path(path).resolve().as_uri()
        ctx.add_layer(physical.FileLayer(ctx, "file", "file"))
        ctx.config["crash.base_layer"] = "file"
        layer = crash.WindowsCrashDump64Layer(ctx, "crash", "crash")
        ctx.add_layer(layer)
    out["open_s"] = time.perf_counter() - t0
out["maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with open("/proc/self/status") as f:
    out["vmhwm_kib"] = int(next(l for l in f if l.startswith("VmHWM:")).split()[1])
if mode == "open":  # not measured: proof that the whole map was built
    if tool == "ntdump":
        out["check"] = d.read_phys(last_pa, 8).hex()
    elif tool == "kdmp-parser":
        out["check"] = bytes(p.read_physical_page(last_pa)[:8]).hex()
    else:
        out["check"] = bytes(layer.read(last_pa, 8)).hex()
        ctx.layers["file"].destroy()
print(json.dumps(out))
"""

TOOLS = ("ntdump", "kdmp-parser", "volatility3")
MODULES = {"ntdump": "ntdump", "kdmp-parser": "kdmp_parser", "volatility3": "volatility3"}


def run_child(tool: str, path: Path, mode: str, last_pa: int) -> dict:
    # Through `sh -c '"$@"; exit $?'`: sh forks the child. Started directly from this process,
    # the child's ru_maxrss would start at this (parent) process's peak RSS, since Linux carries
    # ru_maxrss across fork/vfork + exec.
    r = subprocess.run(
        [
            "/bin/sh",
            "-c",
            '"$@"; exit $?',
            "sh",
            sys.executable,
            "-c",
            CHILD,
            tool,
            str(path),
            mode,
            str(last_pa),
        ],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if r.returncode != 0:
        raise RuntimeError(f"{tool} {mode} {path.name} failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def make_dumps(tmp: Path, full_gib: int, bitmap_gibs: list[int]) -> list[tuple[str, Path, int]]:
    from ntdump import forge

    out = []
    specs = [("full", full_gib)] + [("bitmap", g) for g in bitmap_gibs]
    for fmt, gib in specs:
        path = tmp / f"open-{fmt}-{gib}g.dmp"
        res = forge.minimal_x64(path, fmt=fmt, size=gib << 30)
        base, count = res.stored[-1]
        last_pa = (base + count - 1) << 12
        size, alloc = C.disk_usage(path)
        if alloc > 64 << 20:
            raise RuntimeError(f"{path} is not sparse: {alloc} bytes allocated")
        label = (
            f"{fmt} (DumpType {res.dump_type}), {gib} GiB RAM — file {size / 2**30:.1f} GiB, "
            f"{alloc / 2**20:.1f} MiB on disk"
        )
        out.append((label, path, last_pa))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 repetition, small dumps")
    ap.add_argument("--reps", type=int, help="repetitions per (dump, reader) (default 5)")
    ap.add_argument("--full-gib", type=int, help="RAM of the full dump in GiB (default 64)")
    ap.add_argument(
        "--bitmap-gib", type=str, help="comma-separated bitmap dump sizes in GiB (default 4,64)"
    )
    ap.add_argument("--tools", default=",".join(TOOLS), help="readers to run")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    ap.add_argument("--tmpdir", type=Path, help="directory for the dumps (default: a temp dir)")
    a = ap.parse_args(argv)
    reps = a.reps or (1 if a.quick else 5)
    full_gib = a.full_gib or (4 if a.quick else 64)
    bitmap_gibs = [int(x) for x in (a.bitmap_gib or ("1" if a.quick else "4,64")).split(",") if x]
    tools = [t for t in a.tools.split(",") if t]
    missing = [t for t in tools if not C.have(MODULES[t])]
    tools = [t for t in tools if t not in missing]

    print(C.header("Open a large dump: wall time and peak RSS"))
    if missing:
        print(f"- not installed, skipped: {', '.join(missing)}\n")
    results = []
    with tempfile.TemporaryDirectory(prefix="ntdump-bench-", dir=a.tmpdir) as td:
        dumps = make_dumps(Path(td), full_gib, bitmap_gibs)
        for label, path, last_pa in dumps:
            rows = []
            checks: set[str] = set()
            for tool in tools:
                run_child(tool, path, "open", last_pa)  # warm-up, not recorded
                base_runs = [run_child(tool, path, "base", last_pa) for _ in range(reps)]
                base = [r["maxrss_kib"] for r in base_runs]
                runs = [run_child(tool, path, "open", last_pa) for _ in range(reps)]
                checks.update(r["check"] for r in runs)
                opens = [r["open_s"] * 1e3 for r in runs]
                rss = [(r["maxrss_kib"] - C.median(base)) / 1024 for r in runs]
                hwm_base = C.median([r["vmhwm_kib"] for r in base_runs])
                hwm = [(r["vmhwm_kib"] - hwm_base) / 1024 for r in runs]
                if abs(C.median(hwm) - C.median(rss)) > 1:
                    print(
                        f"warning: {tool}: ru_maxrss delta {C.median(rss):.1f} MiB but VmHWM "
                        f"delta {C.median(hwm):.1f} MiB"
                    )
                imp = C.median([r["import_s"] * 1e3 for r in runs])
                res = {
                    "dump": label,
                    "tool": tool,
                    "open_ms": opens,
                    "rss_delta_mib": rss,
                    "vmhwm_delta_mib": hwm,
                    "baseline_rss_mib": [b / 1024 for b in base],
                    "import_ms": imp,
                }
                results.append(res)
                rows.append(
                    [
                        tool,
                        f"{C.median(opens):.2f}",
                        f"{min(opens):.2f} - {max(opens):.2f}",
                        f"{C.median(rss):.1f}",
                        f"{C.median(base) / 1024:.1f}",
                        f"{imp:.0f}",
                    ]
                )
            print(f"### {label}\n")
            print(
                C.table(
                    rows,
                    [
                        "reader",
                        "open ms (median)",
                        "min - max",
                        "peak RSS Δ MiB",
                        "baseline RSS MiB",
                        "import ms",
                    ],
                )
            )
            ok = "all readers agree" if len(checks) == 1 else f"MISMATCH {sorted(checks)}"
            print(
                f"\nLast stored page, first 8 bytes: {ok}; {reps} repetitions, "
                "fresh process each.\n"
            )
            sys.stdout.flush()
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
