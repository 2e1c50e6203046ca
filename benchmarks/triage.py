"""`ntdump triage` on a 4 GiB forged founding-story dump: wall time and peak RSS of the whole
command, in a fresh process each run (the goal: <= 2 s and <= 200 MiB).

No other tool triages a dump; as a yardstick in the same run, the bare cost of starting Python and
importing ntdump is measured too.

    python benchmarks/triage.py [--quick] [--size-gib 4] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, median, versions

CHILD = r"""
import json, resource, subprocess, sys, time
t = time.perf_counter()
p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
wall = time.perf_counter() - t
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": p.returncode, "wall": wall, "maxrss_kib": ru.ru_maxrss,
                  "err": p.stderr.decode()[-300:]}))
"""


def measure(cmd: list[str]) -> dict:
    """Run ``cmd`` under a fresh Python parent whose RUSAGE_CHILDREN covers only ``cmd``."""
    out = subprocess.run([sys.executable, "-c", CHILD, *cmd], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="256 MiB dump, 2 runs")
    ap.add_argument("--size-gib", type=float, default=4.0)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    size = (256 << 20) if a.quick else int(a.size_gib * (1 << 30))
    runs = 2 if a.quick else a.runs
    from ntdump import forge

    with tempfile.TemporaryDirectory(prefix="ntdump-bench-triage-") as tmp:
        path = Path(tmp) / "MEMORY.DMP"
        forge.founding_story(path, size=size)
        on_disk = path.stat().st_blocks * 512
        ntdump_cmd = [sys.executable, "-m", "ntdump.cli", "triage", str(path), "--json"]
        base_cmd = [sys.executable, "-c", "import ntdump"]
        res = {"triage": [], "import": []}
        for _ in range(runs):
            r = measure(ntdump_cmd)
            if r["rc"] != 0:
                raise SystemExit(f"triage failed: {r['err']}")
            res["triage"].append(r)
            res["import"].append(measure(base_cmd))
    print(f"machine: {machine()}")
    print(f"versions: {versions()}")
    print(f"dump: {size / 2**30:.2f} GiB of RAM, full dump (sparse file, {on_disk / 2**20:.1f} MiB "
          f"on disk); {runs} runs, median")
    print("| command | wall (s) | peak RSS (MiB) |")
    print("|---|---|---|")
    for name, label in (("triage", "`ntdump triage DUMP --json`"),
                        ("import", "`python -c 'import ntdump'` (floor)")):
        w = median([r["wall"] for r in res[name]])
        m = median([r["maxrss_kib"] for r in res[name]]) / 1024
        print(f"| {label} | {w:.3f} | {m:.1f} |")


if __name__ == "__main__":
    main()
