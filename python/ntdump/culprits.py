"""Evidence-ranked culprits: which driver most likely caused a pool leak or a crash.

:func:`rank` gathers named pieces of evidence about each candidate driver and adds their weights
(:data:`WEIGHTS`, documented in docs/triage.md). A driver is a *candidate* only when primary
evidence ties it to the problem (it owns the top pool tag, it is on the crash stack, the faulting
IP or a bug check parameter is inside it, leaked blocks point into it); its traits (a GUID or
random-looking name, a path outside the driver folders, a build-machine PDB path or no debug
directory, a late load) then add to its score but never make it a suspect by themselves. The
kernel and the HAL are never candidates.

When the two best scores are closer than :data:`SEPARATION`, the evidence does not separate
those drivers and :attr:`Ranking.tied` names them: the report says so rather than picking one.

An analysis (uses the dump and :mod:`.analyze`, never the front ends).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .analyze import KERNEL_MODULES, NON_FAILURE_CODES, Analysis

if TYPE_CHECKING:
    from .dump import Dump
    from .modules import Module

WEIGHTS: dict[str, float] = {
    "allocator_caller": 6.0,
    "faulting_ip": 5.0,
    "bugcheck_parameter": 4.0,
    "leaked_blocks": 8.0,
    "owns_top_tag": 3.0,
    "on_crash_stack": 2.0,
    "guid_name": 2.0,
    "random_name": 1.5,
    "path_outside": 1.5,
    "path_missing": 1.5,
    "build_machine_pdb": 1.0,
    "no_debug_directory": 0.5,
    "loaded_late": 0.5,
}
"""Points per piece of evidence. ``leaked_blocks`` is the most a module can get from the leaked
blocks: it is scaled by the share of sampled blocks holding a pointer into the module."""

PRIMARY = frozenset({"allocator_caller", "faulting_ip", "bugcheck_parameter", "leaked_blocks",
                     "owns_top_tag", "on_crash_stack"})
"""Evidence that makes a driver a candidate; the rest only adds to a candidate's score."""

CRASH = frozenset({"allocator_caller", "faulting_ip", "bugcheck_parameter", "on_crash_stack"})
"""Evidence from the crash itself (stack, faulting IP, bug check parameters)."""

SEPARATION = 2.0
"""The best driver is named alone only when it leads the second by at least this many points."""

LEAK_SAMPLE = 64
"""Blocks of the top tag read (pool scan, then big-pool entries), lowest addresses first."""
LEAK_BYTES = 256
"""Bytes read from the start of each sampled block's body."""
LEAK_MIN_BLOCKS = 2
"""A module needs pointers from at least this many sampled blocks to get ``leaked_blocks``."""

GUID_NAME = re.compile(
    r"^\{?[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\}?(\.[a-z0-9]{1,4})?$",
    re.IGNORECASE)
"""A module name made of a GUID, with or without braces."""

SYSTEM_DRIVER_DIRS = ("\\systemroot\\system32\\drivers\\", "\\windows\\system32\\drivers\\",
                      "\\winnt\\system32\\drivers\\", "system32\\drivers\\")
"""Path fragments (lower case) of the driver folder."""
DRIVER_STORE = "\\system32\\driverstore\\"
SYSTEM32_DIRS = ("\\systemroot\\system32\\", "\\windows\\system32\\", "\\winnt\\system32\\")
"""System32 itself: the kernel, the HAL and kernel-mode DLLs (kdcom.dll, CI.dll, …) live there."""

_VOWELS = set("aeiou")


def random_looking(name: str) -> bool:
    """True for a base name that looks generated: 8+ hex digits mixing digits and letters
    (``3f9a0c1e.sys``), or 6+ letters and digits switching between the two at least three times
    with few vowels (``kx7q2vbn.sys``). GUIDs are caught by :data:`GUID_NAME` instead."""
    stem = name.rsplit(".", 1)[0].lower()
    if not stem.isalnum() or len(stem) < 6:
        return False
    if len(stem) >= 8 and all(c in "0123456789abcdef" for c in stem) and \
            any(c.isdigit() for c in stem) and any(c.isalpha() for c in stem):
        return True
    switches = sum(1 for a, b in itertools.pairwise(stem) if a.isdigit() != b.isdigit())
    letters = [c for c in stem if c.isalpha()]
    vowels = sum(1 for c in letters if c in _VOWELS)
    return switches >= 3 and (not letters or vowels / len(letters) < 0.25)


def path_evidence(path: str) -> tuple[str, str] | None:
    """("path_missing" | "path_outside", detail) when the image path is not the driver folder,
    the DriverStore or System32 itself; None when it is."""
    if not path:
        return "path_missing", "no image path in the loader entry"
    low = path.lower().replace("/", "\\")
    if any(d in low for d in SYSTEM_DRIVER_DIRS) or DRIVER_STORE in low:
        return None
    for d in SYSTEM32_DIRS:
        i = low.find(d)
        if 0 <= i <= 8 and "\\" not in low[i + len(d):]:
            return None
    return "path_outside", f"image path outside the driver folder and the DriverStore: {path}"


def build_machine_pdb(pdb_path: str) -> bool:
    """True for a CodeView PDB path that names a folder of a build machine (``C:\\…``, a UNC
    path, ``\\Users\\``); Microsoft's own images carry a bare file name (``ntkrnlmp.pdb``)."""
    p = pdb_path.replace("/", "\\")
    return bool(re.match(r"^[a-zA-Z]:\\", p) or p.startswith("\\\\") or "\\users\\" in p.lower())


@dataclass
class Evidence:
    """One piece of evidence: its name (a key of :data:`WEIGHTS`), points, and what was seen."""

    name: str
    weight: float
    detail: str

    def __str__(self) -> str:
        return f"{self.detail} (+{self.weight:g} {self.name})"


@dataclass
class Suspect:
    """A candidate driver, its evidence and score (the sum of the evidence weights)."""

    name: str
    kd_name: str
    base: int
    path: str
    load_index: int
    evidence: list[Evidence] = field(default_factory=list)

    @property
    def score(self) -> float:
        """Sum of the evidence weights."""
        return round(sum(e.weight for e in self.evidence), 3)

    def add(self, name: str, detail: str, weight: float | None = None) -> None:
        """Record a piece of evidence (weight from :data:`WEIGHTS` unless given)."""
        self.evidence.append(Evidence(name, WEIGHTS[name] if weight is None else weight, detail))

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the triage report (``suspect_drivers`` items)."""
        ev = sorted(self.evidence, key=lambda e: -e.weight)
        return {"name": self.name, "base": self.base, "path": self.path, "score": self.score,
                "reasons": [str(e) for e in ev],
                "evidence": [{"name": e.name, "weight": e.weight, "detail": e.detail}
                             for e in ev]}


@dataclass
class Ranking:
    """The result of :func:`rank`: suspects best first, the tie (names of the drivers the
    evidence does not separate from the best; empty when the best is clear) and notes."""

    suspects: list[Suspect]
    tied: list[str]
    notes: list[str]

    @property
    def best(self) -> Suspect | None:
        """The best-scoring suspect (None when there is none)."""
        return self.suspects[0] if self.suspects else None


def _sample_blocks(d: Dump, tag: str, notes: list[str]) -> list[tuple[int, bytes]]:
    """(body VA, first bytes) of up to LEAK_SAMPLE allocated blocks of ``tag``."""
    hdr = 8 if d.info.machine == "x86" else 16
    out: list[tuple[int, bytes]] = []
    try:
        s = d.pool.scan(tags=[tag], progress=False)
        s = s[s["allocated"].astype(bool)].sort_values("address").head(LEAK_SAMPLE)
        for a, size in zip(s["address"].to_numpy(), s["size"].to_numpy(), strict=True):
            n = max(0, min(int(size) - hdr, LEAK_BYTES))
            if n:
                out.append((int(a) + hdr, d.read(int(a) + hdr, n, pad=True)))
    except Exception as e:
        notes.append(f"could not sample the blocks of pool tag {tag!r} because "
                     f"{type(e).__name__}: {e}")
    if len(out) < LEAK_SAMPLE:
        try:
            b = d.pool.big()
            b = b[(b["tag"].astype(str) == tag) & ~b["freed"].astype(bool)].sort_values("va")
            for va, size in zip(b["va"].to_numpy(), b["bytes"].to_numpy(), strict=True):
                if len(out) >= LEAK_SAMPLE:
                    break
                n = max(0, min(int(size), LEAK_BYTES))
                if n:
                    out.append((int(va), d.read(int(va), n, pad=True)))
        except Exception as e:
            notes.append(f"could not read the big-pool entries of tag {tag!r} because "
                         f"{type(e).__name__}: {e}")
    return out


def _pointer_hits(blocks: list[tuple[int, bytes]], ptr: int,
                  spans: list[tuple[int, int, str]]) -> dict[str, int]:
    """Per module kd name: how many blocks hold at least one aligned pointer into its image."""
    import bisect

    starts = [s for s, _, _ in spans]
    hits: dict[str, int] = {}
    mask = (1 << (8 * ptr)) - 1
    for _, data in blocks:
        seen: set[str] = set()
        for off in range(0, len(data) - ptr + 1, ptr):
            v = int.from_bytes(data[off:off + ptr], "little") & mask
            i = bisect.bisect_right(starts, v) - 1
            if i >= 0 and v < spans[i][1]:
                seen.add(spans[i][2])
        for k in seen:
            hits[k] = hits.get(k, 0) + 1
    return hits


def rank(d: Dump, analysis: Analysis | None, *, top_tag: str | None = None,
         top_tag_owners: list[tuple[str, str]] | None = None,
         leaking: bool = False) -> Ranking:
    """Rank the drivers that evidence ties to the problem.

    ``analysis``: :func:`ntdump.analyze.analyze` of ``d`` (crash evidence: stack, faulting IP,
    bug check parameters) or None. ``top_tag``/``top_tag_owners`` ((kd name, how) pairs from
    ``d.pool.owners(top_tag)``) and ``leaking`` (the pool is depleted or allocations failed): the
    pool evidence is gathered only when ``leaking``. Never raises for a readable dump.
    """
    notes: list[str] = []
    try:
        mods: list[Module] = list(d.modules)
    except Exception as e:
        return Ranking([], [], [f"could not rank drivers because the module list is unreadable: "
                                f"{type(e).__name__}: {e}"])
    by_kd = {m.kd_name.lower(): (i, m) for i, m in enumerate(mods)}
    by_name = {m.name.lower(): (i, m) for i, m in enumerate(mods)}
    cands: dict[str, Suspect] = {}

    def cand(key: str) -> Suspect | None:
        hit = by_kd.get(key.lower()) or by_name.get(key.lower())
        if hit is None:
            return None
        i, m = hit
        if m.kd_name.lower() in KERNEL_MODULES or i == 0:
            return None
        s = cands.get(m.kd_name)
        if s is None:
            s = cands[m.kd_name] = Suspect(m.name, m.kd_name, m.base, m.path, i)
        return s

    # Crash evidence.
    if analysis is not None and analysis.bugcheck["code"] & ~0x10000000 not in NON_FAILURE_CODES:
        for call in analysis.allocator_calls:
            s = cand(call["module"])
            if s is not None and not any(e.name == "allocator_caller" for e in s.evidence):
                s.add("allocator_caller", "on the crash stack as the caller of a pool allocator: "
                      f"frame {call['frame']} ({call['symbol']}) called {call['allocator']}")
        fault_mod = analysis.faulting_module
        if fault_mod:
            s = cand(fault_mod)
            if s is not None:
                s.add("faulting_ip", f"the faulting IP {analysis.faulting_ip:#x} "
                      f"({analysis.faulting_ip_source}) is inside it ({analysis.faulting_symbol})")
        ip = analysis.faulting_ip
        for i, p in enumerate(analysis.bugcheck["params"]):
            if not p or p == ip:
                continue
            for m in mods:
                if m.base <= p < m.base + m.size:
                    s = cand(m.kd_name)
                    if s is not None and not any(e.name == "bugcheck_parameter"
                                                 for e in s.evidence):
                        s.add("bugcheck_parameter",
                              f"bug check parameter {i + 1} ({p:#x}) is inside it")
                    break
        seen: set[str] = set()
        for f in analysis.frames():
            mod = f["module"]
            if not mod or mod.lower() in seen:
                continue
            seen.add(mod.lower())
            s = cand(mod)
            if s is not None and not any(e.name == "allocator_caller" for e in s.evidence):
                s.add("on_crash_stack", f"on the crash stack (frame {f['frame']}: "
                      f"{f['symbol']})")

    # Pool evidence.
    if leaking and top_tag:
        for mod, how in top_tag_owners or []:
            s = cand(mod)
            if s is not None:
                what = ("imports the untagged allocators" if top_tag == "None"
                        else "its image holds the tag")
                s.add("owns_top_tag", f"owns the top pool tag {top_tag!r}: {what} ({how})")
        blocks = _sample_blocks(d, top_tag, notes)
        if blocks:
            spans = sorted((m.base, m.base + m.size, m.kd_name) for m in mods if m.size)
            hits = _pointer_hits(blocks, d.info.pointer_size, spans)
            for mod, n in sorted(hits.items()):
                if n < LEAK_MIN_BLOCKS:
                    continue
                s = cand(mod)
                if s is not None:
                    share = n / len(blocks)
                    s.add("leaked_blocks",
                          f"{n} of {len(blocks)} sampled {top_tag!r} blocks hold pointers into "
                          f"its image", round(WEIGHTS["leaked_blocks"] * share, 2))

    # Traits of the candidates.
    n_mods = len(mods)
    for s in cands.values():
        if GUID_NAME.match(s.name):
            s.add("guid_name", "its name is a GUID (drivers written to disk at run time are)")
        elif random_looking(s.name):
            s.add("random_name", "its name looks randomly generated")
        pe = path_evidence(s.path)
        if pe is not None:
            s.add(pe[0], pe[1])
        try:
            lmi = d.lmi(s.base)
            pdb = getattr(lmi, "pdb", None)
            if pdb is None:
                s.add("no_debug_directory", "no CodeView debug record (no PDB named)")
            else:
                pdb_path = str(getattr(pdb, "path", "") or getattr(pdb, "name", "") or "")
                if build_machine_pdb(pdb_path):
                    s.add("build_machine_pdb", f"PDB path from a build machine: {pdb_path}")
        except Exception as e:
            notes.append(f"could not read the debug directory of {s.name} because "
                         f"{type(e).__name__}: {e}")
        if n_mods >= 4 and s.load_index >= n_mods / 2:
            s.add("loaded_late", f"loaded late: module {s.load_index + 1} of {n_mods} in load "
                  "order (boot drivers load first)")

    primary = [s for s in cands.values() if any(e.name in PRIMARY for e in s.evidence)]
    primary.sort(key=lambda s: (-s.score, s.load_index))
    tied: list[str] = []
    if len(primary) >= 2 and primary[0].score - primary[1].score < SEPARATION:
        tied = [s.name for s in primary if primary[0].score - s.score < SEPARATION]
    return Ranking(primary, tied, notes)


__all__ = ["CRASH", "GUID_NAME", "LEAK_SAMPLE", "PRIMARY", "SEPARATION", "WEIGHTS", "Evidence",
           "Ranking", "Suspect", "build_machine_pdb", "path_evidence", "random_looking", "rank"]
