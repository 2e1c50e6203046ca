"""Start-up time: `import ntdump` and short CLI commands, side by side with `python -c pass`.

Issue 13 goals: `import ntdump` <= 100 ms and `ntdump info DUMP` <= 150 ms wall. Each command runs
in a fresh process, `--runs` times, after one warm-up run (so the page cache holds the modules);
the table gives the median and the minimum wall time, and whether pandas was imported.

    python benchmarks/startup.py [--quick] [--runs 20] [--update-doc]

`--update-doc` also writes the table into docs/benchmarks.md (between the start-up markers).
Measure on a quiet machine only: a busy neighbour adds its time to every number.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

PANDAS_PROBE = "import sys; {code}; print('pandas' in sys.modules)"


def wall(cmd: list[str], runs: int) -> list[float]:
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        out.append(time.perf_counter() - t)
    return out


def imports_pandas(code: str) -> str:
    p = subprocess.run([sys.executable, "-c", PANDAS_PROBE.format(code=code)],
                       capture_output=True, text=True, check=True)
    return "yes" if p.stdout.strip().splitlines()[-1] == "True" else "no"


def update_doc(section: str, text: str) -> None:
    """Replace the text between ``<!-- {section}:begin -->`` and ``<!-- {section}:end -->`` in
    docs/benchmarks.md (appended at the end when the markers are missing)."""
    doc = C.REPO / "docs" / "benchmarks.md"
    s = doc.read_text()
    begin, end = f"<!-- {section}:begin -->", f"<!-- {section}:end -->"
    block = f"{begin}\n{text.rstrip()}\n{end}"
    if begin in s and end in s:
        s = s[: s.index(begin)] + block + s[s.index(end) + len(end):]
    else:
        s = s.rstrip() + "\n\n" + block + "\n"
    doc.write_text(s)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--quick", action="store_true",
                    help="3 runs (smoke test; numbers mean nothing)")
    ap.add_argument("--update-doc", action="store_true",
                    help="write the table into docs/benchmarks.md")
    a = ap.parse_args(argv)
    runs = 3 if a.quick else a.runs
    from ntdump import forge

    with tempfile.TemporaryDirectory(prefix="ntdump-bench-startup-") as tmp:
        dump = str(Path(tmp) / "story.dmp")
        forge.founding_story(dump)
        py = sys.executable
        cases = [
            ("`python -c pass` (floor)", [py, "-c", "pass"], "pass"),
            ("`python -c 'import ntdump'`", [py, "-c", "import ntdump"], "import ntdump"),
            ("`python -m ntdump --version`", [py, "-m", "ntdump", "--version"],
             "import ntdump.cli"),
            ("`python -m ntdump info DUMP`", [py, "-m", "ntdump", "info", dump],
             f"from ntdump.cli import main; main(['info', {dump!r}])"),
            ("`python -m ntdump db DUMP e0800000`", [py, "-m", "ntdump", "db", dump, "e0800000"],
             f"from ntdump.cli import main; main(['db', {dump!r}, 'e0800000'])"),
            ("`python -c 'import pandas'` (what is no longer paid)", [py, "-c", "import pandas"],
             "import pandas"),
        ]
        rows = []
        floor = None
        for label, cmd, probe in cases:
            ts = wall(cmd, runs)
            med = C.median(ts)
            floor = med if floor is None else floor
            rows.append([label, f"{1000 * med:.1f}", f"{1000 * min(ts):.1f}",
                         f"{1000 * (med - floor):+.1f}", imports_pandas(probe)])
    text = "\n".join([
        C.header("Start-up (issue 13)", ["benchmarks/startup.py", *(argv or sys.argv[1:])]),
        f"{runs} runs per command after one warm-up, fresh process each; the dump is the "
        "founding story (128 MiB x86 PAE, sparse). Goals: `import ntdump` <= 100 ms, "
        "`ntdump info DUMP` <= 150 ms.",
        "",
        C.table(rows, ["command", "wall ms (median)", "min", "vs floor", "imports pandas"]),
    ])
    print(text)
    if a.update_doc:
        update_doc("startup", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
