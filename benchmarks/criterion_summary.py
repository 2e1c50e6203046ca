"""Summarise the criterion results of ``cargo bench -p ntdump-core --bench read``.

Reads ``<target>/criterion/<group>/<bench>/new/{estimates,benchmark}.json`` (``<target>`` is
``$CARGO_TARGET_DIR`` or ``target/``) and prints a Markdown table: time per iteration (criterion's
slope estimate when it has one, else the mean, with its 95 % interval), throughput, and for the
sequential physical read the ratio ``read_phys / memcpy`` (the physical limit), from criterion's
two separate measurements and from the bench's interleaved rounds (``phys_seq_paired.json``).

    python benchmarks/criterion_summary.py
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C


def load(root: Path) -> dict[str, dict]:
    out = {}
    for bj in sorted(root.glob("*/*/new/benchmark.json")):
        b = json.loads(bj.read_text())
        e = json.loads((bj.parent / "estimates.json").read_text())
        est = e.get("slope") or e["mean"]
        out[b["full_id"]] = {
            "ns": est["point_estimate"],
            "lo": est["confidence_interval"]["lower_bound"],
            "hi": est["confidence_interval"]["upper_bound"],
            "throughput": b.get("throughput") or {},
            "mtime": bj.stat().st_mtime,
        }
    return out


def fmt_time(ns: float) -> str:
    for unit, f in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= f:
            return f"{ns / f:.3g} {unit}"
    return f"{ns:.3g} ns"


def main() -> int:
    target = Path(os.environ.get("CARGO_TARGET_DIR", C.REPO / "target"))
    root = target / "criterion"
    res = {k: v for k, v in load(root).items() if k.split("/")[0] in ("phys_seq", "virt_random")}
    if not res:
        print(f"no criterion results under {root}: run `cargo bench -p ntdump-core --bench read`")
        return 1
    print(
        C.header(
            "Rust core (criterion, crates/ntdump-core/benches/read.rs)",
            ["benchmarks/criterion_summary.py"],
        )
    )
    rows = []
    for k, v in res.items():
        t = v["throughput"]
        if "Bytes" in t:
            thr = f"{t['Bytes'] / (v['ns'] / 1e9) / 2**30:.2f} GiB/s"
        elif "Elements" in t:
            per = v["ns"] / t["Elements"]
            thr = f"{t['Elements'] / (v['ns'] / 1e9) / 1e6:.2f} M/s ({per:.0f} ns each)"
        else:
            thr = "-"
        rows.append([k, f"{fmt_time(v['ns'])} [{fmt_time(v['lo'])} - {fmt_time(v['hi'])}]", thr])
    print(C.table(rows, ["benchmark", "time / iteration [95 % CI]", "throughput"]))
    a, b = res.get("phys_seq/read_phys_1MiB"), res.get("phys_seq/memcpy_1MiB")
    if a and b:
        print(
            f"\nread_phys / memcpy throughput: **{b['ns'] / a['ns'] * 100:.1f} %** "
            f"(goal >= 90 %; interval {b['lo'] / a['hi'] * 100:.1f} - "
            f"{b['hi'] / a['lo'] * 100:.1f} %)"
        )
    paired = root / "phys_seq_paired.json"
    if paired.exists():
        p = json.loads(paired.read_text())
        gib = p["bytes"] / 2**30
        print(
            f"\nInterleaved ({p['rounds']} rounds of one memcpy pass then one read_phys pass): "
            f"memcpy {gib / p['memcpy_s']:.2f} GiB/s, "
            f"read_phys {gib / p['read_phys_s']:.2f} GiB/s, "
            f"median per-round ratio **{p['ratio_median'] * 100:.1f} %** "
            f"(range {p['ratio_min'] * 100:.1f} - {p['ratio_max'] * 100:.1f} %)"
        )
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
