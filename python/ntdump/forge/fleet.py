"""A forged archive of dumps from several machines, with its ground truth: for the fleet
notebook, the batch tests and the batch benchmark.

:func:`write_fleet` writes, under ``root``, one folder per machine holding one kernel dump
(``DumpType 6``, only the populated pages: about 1 MiB each) per day, each with pool tracker
tables (``ntdump.forge.pool``) whose per-tag counts and header system time were chosen here.
Healthy machines' tags wobble around a baseline without a trend; a :class:`Leak` makes a tag
grow linearly in time — bytes and outstanding allocations at exact rates per hour — on one
machine. Optionally a corrupt dump, a truncated dump and a non-dump file are added, and some
machines' dumps are compressed (``.gz`` each, or one ``.zip`` per machine).

Part of :mod:`ntdump.forge` (it writes dumps; ``ntdump.batch.fleet`` is the old name, kept as
an alias). Uses only the forge (a scenario kernel and
:func:`~ntdump.forge.pool.add_to_scenario`). Units: bytes; times are FILETIMEs (100 ns since
1601) and hours.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
import os
import shutil
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import scenario
from .machine import nonpaged_pool_maximum
from .pool import PoolTag, add_to_scenario

FILETIME_PER_HOUR = 36_000_000_000
_EPOCH = dt.datetime(1601, 1, 1, tzinfo=dt.UTC)
START = dt.datetime(2024, 3, 1, 6, 0, tzinfo=dt.UTC)
"""Time of the first dump of the first machine."""


def filetime(t: dt.datetime) -> int:
    """A UTC datetime as a FILETIME."""
    return int((t - _EPOCH) / dt.timedelta(microseconds=1)) * 10


@dataclass(frozen=True)
class Leak:
    """A tag that grows on one machine: ``bytes_per_hour`` outstanding bytes and
    ``allocs_per_hour`` outstanding allocations per hour, from ``start_bytes`` /
    ``start_allocs`` at the machine's first dump. ``paged`` puts it in paged pool."""

    tag: str
    bytes_per_hour: int
    allocs_per_hour: int
    start_bytes: int = 2 << 20
    start_allocs: int = 10_000
    paged: bool = False


#: Healthy baseline: tag → (nonpaged outstanding, nonpaged bytes, paged outstanding, paged bytes).
BASELINE: dict[str, tuple[int, int, int, int]] = {
    "None": (180, 36_864, 0, 0),
    "MmCm": (40, 1_048_576, 0, 0),
    "Thre": (950, 1_183_696, 0, 0),
    "File": (9_235, 1_625_360, 0, 0),
    "Proc": (82, 106_272, 0, 0),
    "Ntfx": (7_701, 998_864, 20, 2_560),
    "MmSt": (0, 0, 14_311, 26_014_736),
    "CM31": (0, 0, 15_905, 21_630_976),
}
_MACHINE_STEP = 2 << 20
"""RAM of a leaking machine is chosen in steps of this many bytes."""
#: Total allocations ever made per outstanding one (the tracker's Allocs = outstanding + Frees).
_TURNOVER = 6


@dataclass
class FleetDump:
    """One dump of the fleet as written: its path (the archive member as
    ``archive!member`` for zips), machine, FILETIME, and the tracker counts per tag:
    (nonpaged allocs, frees, bytes, paged allocs, frees, bytes)."""

    path: str
    machine: str
    system_time: int
    counts: dict[str, tuple[int, int, int, int, int, int]]


@dataclass
class Fleet:
    """What :func:`write_fleet` wrote. ``dumps`` are the good dumps; ``bad`` maps the corrupt,
    truncated and non-dump files to what they are; ``leaks`` maps (machine, tag) to the exact
    (bytes per hour, outstanding allocations per hour)."""

    root: Path
    dumps: list[FleetDump] = field(default_factory=list)
    bad: dict[str, str] = field(default_factory=dict)
    leaks: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)

    @property
    def machines(self) -> list[str]:
        """Machine names, sorted."""
        return sorted({d.machine for d in self.dumps})


def _wobble(k: int, i: int) -> float:
    """A deterministic factor in [0.9, 1.1], below 1 on even days and above on odd ones: a
    healthy tag goes up and down, so over three or more dumps it never grows at every step."""
    return 1.0 + (0.05 if k % 2 else -0.05) * (1 + ((3 * i + k) % 3) / 2)


def _counts(machine_i: int, day: int, hours: float, leaks: Sequence[Leak]
            ) -> dict[str, tuple[int, int, int, int, int, int]]:
    out: dict[str, tuple[int, int, int, int, int, int]] = {}
    for j, (tag, (no, nb, po, pb)) in enumerate(sorted(BASELINE.items())):
        w = _wobble(day, machine_i + j)
        no, nb, po, pb = int(no * w), int(nb * w) // 16 * 16, int(po * w), int(pb * w) // 16 * 16
        out[tag] = (no * _TURNOVER, no * (_TURNOVER - 1), nb, po * _TURNOVER,
                    po * (_TURNOVER - 1), pb)
    for lk in leaks:
        o = lk.start_allocs + round(lk.allocs_per_hour * hours)
        b = lk.start_bytes + round(lk.bytes_per_hour * hours)
        frees = 3 * lk.start_allocs  # freed early, never again: the leak
        z = (0, 0, 0)
        grown = (o + frees, frees, b)
        out[lk.tag] = (*z, *grown) if lk.paged else (*grown, *z)
    return out


def _np_max(family: str, arch: str, size: int) -> int:
    """The nonpaged pool maximum Windows gives a machine of ``size`` bytes of RAM laid out as the
    scenarios lay it out (runs from 4 KiB to 636 KiB and from 1 MiB)."""
    pages = size // 4096
    return nonpaged_pool_maximum(family, arch, pages - 0x61, pages - 1)


def _forge_one(path: Path, arch: str, leak_driver: bool, system_time: int,
               counts: Mapping[str, tuple[int, int, int, int, int, int]], size: int,
               vm: Mapping[str, int] | None) -> None:
    make = scenario.win10_x64 if arch == "x64" else scenario.server2003_x86_pae
    s = make(path, fmt="kernel", size=size, leak_driver=leak_driver, vm=vm)
    s.header = dataclasses.replace(s.header, system_time=system_time)
    tags = [PoolTag(t.encode("latin-1"), nonpaged_allocs=c[0], nonpaged_frees=c[1],
                    nonpaged_bytes=c[2], paged_allocs=c[3], paged_frees=c[4], paged_bytes=c[5])
            for t, c in sorted(counts.items())]
    add_to_scenario(s, tags=tags, sample=4)  # writes the file again, with the new header


def write_fleet(root: str | os.PathLike[str], machines: Sequence[str] = (
        "srv-app1", "srv-app2", "srv-db1", "srv-file1"), days: int = 4, *,
        leaks: Mapping[str, Sequence[Leak]] | None = None,
        x86: Sequence[str] = ("srv-db1", "srv-file1"), compress: Mapping[str, str] | None = None,
        bad_files: bool = True, size: int = 256 << 20,
        start: dt.datetime = START) -> Fleet:
    """Write the fleet archive under ``root`` (created) and return its ground truth.

    Args:
        machines: one folder each; ``days`` dumps per machine, one a day, at uneven times of
            day (the k-th dump of machine i at ``start`` + k days + 37·i minutes + 0 to 5
            whole hours), so that the hours between two dumps of a machine are whole and the
            forged rates are recovered exactly.
        leaks: machine → the tags that leak there. Default: ``srv-db1``'s untagged pool
            ("None") grows by 1.5 MiB and 7,500 allocations an hour (the founding story's
            leak). A leaking machine loads the story's GUID driver, which imports
            ``ExAllocatePool``.
        x86: machines forged as Windows Server 2003 x86 PAE (the others Windows 10 x64).
            ``!vm``: the NonPagedPool maximum the machine's RAM gives (see ``size``); usage (the
            2003 kernel variable) = the tags' nonpaged bytes in pages. Windows 10 has no usage
            variable: readers sum the tracker tables.
        compress: machine → ``"gz"`` (each dump ``.dmp.gz``) or ``"zip"`` (one
            ``<machine>.zip`` holding ``<machine>/<day>.dmp``).
        bad_files: add ``incoming/corrupt.dmp`` (a header of random bytes), ``incoming/
            truncated.dmp`` (a dump cut after 64 KiB) and ``incoming/notes.txt``.
        size: physical memory of each healthy forged machine (bytes; the files hold only used
            pages). A leaking machine gets the smallest RAM (in 2 MiB steps, at least ``size``)
            whose nonpaged pool maximum, as its Windows sizes it
            (:func:`ntdump.forge.machine.nonpaged_pool_maximum`), puts its last dump at 97 % or
            less. Every dump's counters are consistent
            (:func:`~ntdump.forge.machine.check_counters`): the maximum follows the machine's
            RAM, x86 usage is the tracker's nonpaged bytes in pages.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if leaks is None:
        leaks = {"srv-db1": [Leak("None", 1536 * 1024, 7_500)]} if "srv-db1" in machines else {}
    compress = dict(compress or {})
    fleet = Fleet(root)
    for i, m in enumerate(machines):
        folder = root / m
        folder.mkdir(exist_ok=True)
        mleaks = list(leaks.get(m, ()))
        times = [start + dt.timedelta(days=k, minutes=37 * i, hours=(k * k * 7 + i * 5) % 6)
                 for k in range(days)]
        t0 = filetime(times[0])
        fts = [filetime(t) for t in times]
        all_counts = [_counts(i, k, (ft - t0) / FILETIME_PER_HOUR, mleaks)
                      for k, ft in enumerate(fts)]
        usage = [sum(c[2] for c in cs.values()) for cs in all_counts]
        family, arch = ("2003", "x86") if m in x86 else ("win10", "x64")
        msize = size
        while mleaks and usage[-1] > 0.97 * _np_max(family, arch, msize):
            msize += _MACHINE_STEP
        np_max = _np_max(family, arch, msize)
        written: list[Path] = []
        for t, ft, counts, use in zip(times, fts, all_counts, usage, strict=True):
            vm = {"MmMaximumNonPagedPoolInBytes": np_max}
            if m in x86:  # Windows 10 has no such variable: readers sum the tracker tables
                vm["MmAllocatedNonPagedPool"] = -(-use // 4096)
            p = folder / f"{t:%Y-%m-%dT%H%M}.dmp"
            _forge_one(p, arch, bool(mleaks), ft, counts, msize, vm)
            written.append(p)
            fleet.dumps.append(FleetDump(str(p), m, ft, counts))
        for lk in mleaks:
            fleet.leaks[(m, lk.tag)] = (float(lk.bytes_per_hour), float(lk.allocs_per_hour))
        how = compress.get(m)
        if how == "gz":
            for p, fd in zip(written, fleet.dumps[-len(written):], strict=True):
                with open(p, "rb") as f, gzip.open(f"{p}.gz", "wb", compresslevel=1) as g:
                    shutil.copyfileobj(f, g)
                p.unlink()
                fd.path = f"{p}.gz"
        elif how == "zip":
            z = root / f"{m}.zip"
            with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
                for p, fd in zip(written, fleet.dumps[-len(written):], strict=True):
                    zf.write(p, f"{m}/{p.name}")
                    fd.path = f"{z}!{m}/{p.name}"
                    p.unlink()
            folder.rmdir()
        elif how is not None:
            raise ValueError(f"compress must be 'gz' or 'zip', not {how!r}")
    if bad_files and fleet.dumps:
        inc = root / "incoming"
        inc.mkdir(exist_ok=True)
        good = next(d.path for d in fleet.dumps if "!" not in d.path and
                    not d.path.endswith(".gz"))
        data = Path(good).read_bytes()
        corrupt = bytearray(data[:0x3000])
        corrupt[0x20:0x1000] = bytes((x * 151 + 7) & 0xFF for x in range(0x1000 - 0x20))
        (inc / "corrupt.dmp").write_bytes(bytes(corrupt))
        (inc / "truncated.dmp").write_bytes(data[:0x10000])
        (inc / "notes.txt").write_text("dumps collected by the fleet agent\n")
        fleet.bad = {str(inc / "corrupt.dmp"): "corrupt", str(inc / "truncated.dmp"):
                     "truncated", str(inc / "notes.txt"): "not a dump"}
    return fleet


__all__ = ["BASELINE", "START", "Fleet", "FleetDump", "Leak", "filetime", "write_fleet"]
