"""Cold disks: bytes read from storage (and wall time) by `ntdump triage` on a 4 GiB full dump.

Issue 13 goal: triage of a cold 4 GiB dump reads <= 64 MiB from disk (and takes <= 0.5 s). Each
case runs in a fresh process; the dump's pages are dropped from the page cache first
(`posix_fadvise(POSIX_FADV_DONTNEED)` on the file — no root needed; `--drop-caches` writes 3 to
/proc/sys/vm/drop_caches instead, as root, for a machine-wide cold start). The bytes come from
`/proc/self/io` `read_bytes` (storage reads caused by the process, read-ahead included), counted
around the work only (after the imports). Cases:

* ntdump triage, cold, with the access advice (`madvise` random for structure reads, sequential
  for scans — the default) and without it (`NTDUMP_MADVISE=0`, the behaviour before issue 13);
* ntdump triage, warm (the same file just read);
* opening the file cold: ntdump, kdmp-parser (`KernelDumpParser(path)`) and Volatility 3 (its
  64-bit crash-dump layer), side by side.

The forged dump is written dense (every page allocated on disk, `--sparse` to keep it sparse):
reading a hole of a sparse file costs no I/O, which would hide the read-ahead this measures.
Writing it takes 4 GiB of disk writes and free space.

    python benchmarks/cold_reads.py [--quick] [--size-gib 4] [--runs 3] [--update-doc]

Bytes read do not depend on the machine's load; wall times do: measure on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C
from startup import update_doc

CHILD = r"""
import json, os, sys, time
case, path = sys.argv[1], sys.argv[2]

def read_bytes():
    with open("/proc/self/io") as f:
        return int(next(l for l in f if l.startswith("read_bytes:")).split()[1])

if case.startswith("ntdump"):
    import ntdump
    from ntdump.cli import main
elif case == "kdmp-parser":
    import kdmp_parser
elif case == "volatility3":
    from volatility3.framework import contexts
    from volatility3.framework.layers import crash, physical
b0, t0 = read_bytes(), time.perf_counter()
if case in ("ntdump-triage", "ntdump-triage-warm"):
    with open(os.devnull, "w") as out:
        sys.stdout = out
        rc = main(["triage", path, "--json"])
        sys.stdout = sys.__stdout__
    assert rc == 0, rc
elif case == "ntdump-open":
    d = ntdump.open(path)
    d.info
elif case == "kdmp-parser":
    p = kdmp_parser.KernelDumpParser(path)
else:
    ctx = contexts.Context()
    ctx.config["file.location"] = "file://" + os.path.abspath(path)
    ctx.add_layer(physical.FileLayer(ctx, "file", "file"))
    ctx.config["crash.base_layer"] = "file"
    layer = crash.WindowsCrashDump64Layer if sys.argv[3] == "x64" else crash.WindowsCrashDump32Layer
    ctx.add_layer(layer(ctx, "crash", "crash"))
wall = time.perf_counter() - t0
print(json.dumps({"read_bytes": read_bytes() - b0, "wall": wall}))
"""

CASES = [
    # (key, label, environment, cold)
    ("ntdump-triage", "ntdump triage, cold, access advice on (default)", {}, True),
    ("ntdump-triage", "ntdump triage, cold, advice off (`NTDUMP_MADVISE=0`: before issue 13)",
     {"NTDUMP_MADVISE": "0"}, True),
    ("ntdump-triage-warm", "ntdump triage, warm", {}, False),
    ("ntdump-open", "ntdump open, cold", {}, True),
    ("kdmp-parser", "kdmp-parser `KernelDumpParser(path)`, cold", {}, True),
    ("volatility3", "Volatility 3 crash-dump layer, cold", {}, True),
]
MODULES = {"kdmp-parser": "kdmp_parser", "volatility3": "volatility3"}


def drop(path: Path, machine_wide: bool) -> None:
    """Evict the dump's pages from the page cache."""
    if machine_wide:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def warm(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(16 << 20):
            pass


def child(key: str, path: Path, env: dict[str, str], machine: str) -> dict:
    r = subprocess.run([sys.executable, "-c", CHILD, key, str(path), machine], capture_output=True,
                       text=True, env={**os.environ, **env}, timeout=1800)
    if r.returncode != 0:
        raise RuntimeError(f"{key} failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def densify(path: Path) -> None:
    """Rewrite ``path`` with every block allocated (zeros written where the forge left holes)."""
    dense = path.with_suffix(".dense")
    with open(path, "rb") as src, open(dense, "wb") as dst:
        while chunk := src.read(16 << 20):
            dst.write(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(dense, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-gib", type=float, default=4.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="256 MiB, 1 run (smoke test)")
    ap.add_argument("--sparse", action="store_true", help="keep the forged file sparse")
    ap.add_argument("--machine", choices=["x86", "x64"], default="x86",
                    help="the founding story's machine (x86: Server 2003 PAE, as benchmarks/"
                    "triage.py and the issue's measurement; x64: Windows 10)")
    ap.add_argument("--drop-caches", action="store_true",
                    help="drop the whole page cache (root) instead of the dump's pages only")
    ap.add_argument("--tmpdir", help="where to write the dump (default: $TMPDIR)")
    ap.add_argument("--update-doc", action="store_true",
                    help="write the table into docs/benchmarks.md")
    a = ap.parse_args(argv)
    size = (256 << 20) if a.quick else int(a.size_gib * (1 << 30))
    runs = 1 if a.quick else a.runs
    from ntdump import forge

    tmp = tempfile.mkdtemp(prefix="ntdump-bench-cold-", dir=a.tmpdir)
    try:
        path = Path(tmp) / "MEMORY.DMP"
        forge.founding_story(path, machine=a.machine, size=size)
        if not a.sparse:
            densify(path)
        on_disk = path.stat().st_blocks * 512
        rows = []
        for key, label, env, cold in CASES:
            mod = MODULES.get(key)
            if mod and not C.have(mod):
                rows.append([label, "not installed", "", ""])
                continue
            res = []
            try:
                for _ in range(runs):
                    if cold:
                        drop(path, a.drop_caches)
                    else:
                        warm(path)
                    res.append(child(key, path, env, a.machine))
            except RuntimeError as e:  # e.g. kdmp-parser reads 64-bit dumps only
                rows.append([label, "failed: " + str(e).strip().splitlines()[-1][:80], "", ""])
                continue
            rb = C.median([r["read_bytes"] for r in res])
            worst = max(r["read_bytes"] for r in res)
            rows.append([label, f"{rb / 2**20:,.2f}", f"{worst / 2**20:,.2f}",
                         f"{C.median([r['wall'] for r in res]):.3f}"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    text = "\n".join([
        C.header("Cold disks (issue 13)", ["benchmarks/cold_reads.py", *(argv or sys.argv[1:])]),
        f"The founding story forged as a {size / 2**30:.2f} GiB "
        + ("Windows 10 x64" if a.machine == "x64" else "Server 2003 x86 PAE")
        + " full dump "
        f"({on_disk / 2**20:,.0f} MiB allocated on disk); {runs} run(s) per case, fresh process "
        "each, median; pages dropped with "
        + ("/proc/sys/vm/drop_caches" if a.drop_caches else "posix_fadvise(DONTNEED) on the file")
        + ". Goal: triage of the cold dump reads <= 64 MiB and takes <= 0.5 s. Wall times are "
        "meaningful only from a quiet machine.",
        "",
        C.table(rows, ["case", "read from disk (MiB, median)", "max", "wall s (median)"]),
    ])
    print(text)
    if a.update_doc:
        update_doc("cold-reads", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
