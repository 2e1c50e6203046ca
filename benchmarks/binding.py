"""Cost of the binding's record conversion: the calls whose results cross ``ntdump._native`` as
records or columns (issue 14 moved them to serde-serialized core structs and one converter).

Times each call's median over ``--repeat`` runs on a warm, already-open dump (caches inside the
native dump, e.g. the symbol table and the big pool table, are built before timing; the Python-side
cache is bypassed by calling ``ntdump._native`` directly). Run it under two builds (two venvs) to
compare them; the first column of the table is the call, the second the median in microseconds.

    python benchmarks/binding.py                    # the demo dump (forged), the real triage dump
    python benchmarks/binding.py --repeat 5 --json    # raw numbers
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, median, versions

import ntdump
from ntdump import _native


def _time(fn: Callable[[], Any], repeat: int) -> float:
    fn()  # warm-up (builds the native dump's caches)
    xs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        xs.append(time.perf_counter() - t)
    return median(xs) * 1e6


def calls(d: ntdump.Dump) -> dict[str, Callable[[], Any]]:
    nat = d._h.native
    bases = [(m.base, m.size) for m in d.modules]
    imgs = []
    for b, s in bases:
        try:
            imgs.append(_native.pe_image(nat, b, s))
        except Exception:
            pass
    table = _native.symbol_table(nat)
    out: dict[str, Callable[[], Any]] = {
        "kernel_info (module list)": lambda: _native.kernel_info(nat),
        f"pe_image x{len(bases)} (read + parse)": lambda: [
            _pe(nat, b, s) for b, s in bases],
        f"headers+sections+exports+imports+debug x{len(imgs)}": lambda: [
            (i.headers(), i.sections(), i.exports(), i.imports(), i.debug()) for i in imgs],
        "symbol table modules()": lambda: table.modules(),
        "symbol table find('*!*')": lambda: table.find("*!*"),
        "vm_summary": lambda: _native.vm_summary(nat, {}),
    }
    for name, fn in (("pool_used", lambda: _native.pool_used(nat)),
                     ("pool_big", lambda: _native.pool_big(nat))):
        try:
            fn()
            out[name] = fn
        except Exception:
            pass
    return out


def _pe(nat: Any, b: int, s: int) -> Any:
    try:
        return _native.pe_image(nat, b, s)
    except Exception:
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--json", action="store_true")
    data = os.environ.get("NTDUMP_TEST_DATA",
                          str(Path(__file__).resolve().parents[2] / "shared/data"))
    ap.add_argument("--triage", default=os.path.join(data, "dumps", "win10-19041-x64-triage.dmp"))
    a = ap.parse_args()
    res: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        demo = Path(tmp) / "demo.dmp"
        from ntdump.forge.story import founding_story

        founding_story(demo)
        for label, path in (("demo (forged 2003 x86 PAE)", demo), ("real 19041 triage", a.triage)):
            if not Path(path).exists():
                continue
            with ntdump.open(path) as d:
                res[label] = {k: _time(fn, a.repeat) for k, fn in calls(d).items()}
    if a.json:
        print(json.dumps(res, indent=1))
        return
    print(f"- machine: {machine()}\n- versions: {versions()}\n- module: {_native.__file__}\n"
          f"- command: `python benchmarks/binding.py --repeat {a.repeat}`\n")
    for label, rows in res.items():
        print(f"| {label} | median µs |\n|---|---|")
        for k, v in rows.items():
            print(f"| `{k}` | {v:,.0f} |")
        print()


if __name__ == "__main__":
    main()
