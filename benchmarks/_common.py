"""Shared helpers of the Python benchmarks (not a benchmark itself)."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def machine() -> str:
    """One line describing the machine and the time of the run."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kib / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    load = os.getloadavg()[0]
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"{now}; {os.cpu_count()} cores ({cpu}){mem}; Python {platform.python_version()}; "
        f"load average {load:.2f} at start"
    )


def versions() -> str:
    out = []
    from importlib import metadata

    for name in ("ntdump", "kdmp-parser", "volatility3"):
        try:
            out.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            out.append(f"{name} (not installed)")
    return ", ".join(out)


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def disk_usage(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(apparent size, bytes allocated on disk)."""
    st = os.stat(path)
    return st.st_size, st.st_blocks * 512


def git_rev() -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def header(title: str, argv: Sequence[str] | None = None) -> str:
    cmd = " ".join(["python", *(argv if argv is not None else sys.argv)])
    return (
        f"## {title}\n\n- machine: {machine()}\n- versions: {versions()} (git {git_rev()})\n"
        f"- command: `{cmd}`\n"
    )


def table(rows: list[list[str]], head: list[str]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
