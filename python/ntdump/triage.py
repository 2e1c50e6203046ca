"""One-command triage: the founding story's chain, automated.

``ntdump.triage(d)`` reads the bug check, ``!vm``, ``!poolused``, the tag owners and the
importers of ``ExAllocatePool``, and returns a :class:`Report` whose every verdict carries its
evidence. A readable dump never makes triage raise: an analysis that fails becomes a "could not
determine X because Y" note.

The JSON form (:meth:`Report.to_dict`) follows ``docs/triage-schema.json`` (schema
:data:`SCHEMA_ID`).
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import culprits
from ._completeness import input_gap
from .analyze import NON_FAILURE_CODES, Analysis, analyze

if TYPE_CHECKING:
    from .dump import Dump, DumpInfo

SCHEMA_ID = "ntdump.triage/1"
"""Version of the report's JSON schema; bumped on any incompatible change."""

DEPLETION_RATIO = 0.90
"""A pool whose usage is at least this share of its maximum is reported as near depletion."""

TOP_TAGS = 5
"""Suspect tags reported."""

POOL_EXHAUSTION_CODES = frozenset({0x41})
"""Bug checks raised because pool ran out (MUST_SUCCEED_POOL_EMPTY): the leak's owner caused the
crash even when no stack shows it."""

GUID_NAME = re.compile(
    r"^\{?[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\}?(\.[a-z0-9]{1,4})?$",
    re.IGNORECASE,
)
"""A module name made of a GUID (``{6B1A3E41-…}.sys``): typical of drivers a program writes at
run time."""

SYSTEM_ROOTS = ("\\systemroot\\", "\\windows\\", "\\??\\c:\\windows\\", "system32\\", "\\winnt\\")
"""Path prefixes (lower case) of images that live with the OS."""


def driver_hints(name: str, path: str) -> list[str]:
    """Reasons to suspect an image is not an ordinary on-disk driver (empty when none)."""
    out = []
    if GUID_NAME.match(name):
        out.append("name is a GUID (typical of a driver written to disk at run time)")
    low = path.lower()
    if path and not any(low.startswith(p) or p in low[:40] for p in SYSTEM_ROOTS):
        out.append(f"image path outside \\SystemRoot: {path}")
    return out


@dataclass
class Verdict:
    """A conclusion and the numbers that support it, step by step."""

    text: str
    evidence: list[str] = field(default_factory=list)


@dataclass
class Report:
    """The result of :func:`triage`. Use :meth:`text`, :meth:`to_markdown`, :meth:`to_dict`, or
    display it in Jupyter."""

    dump: dict[str, Any]
    bugcheck: dict[str, Any]
    pool: dict[str, Any]
    suspect_tags: list[dict[str, Any]]
    suspect_drivers: list[dict[str, Any]]
    verdicts: list[Verdict]
    notes: list[str]
    incomplete: dict[str, Any] | None = None
    """None for a whole dump; else what is missing: the file's cut (``truncated``, ``file_size``,
    ``expected_size``, ``missing_pages``, ``present_fraction``), ``reason`` (a sentence) and
    ``inputs``: the analyses that met missing or unreadable data (``analysis``, ``detail``)."""

    # -- outputs ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The report as plain data (JSON-serialisable), per ``docs/triage-schema.json``."""
        return {
            "schema": SCHEMA_ID,
            "dump": self.dump,
            "bugcheck": self.bugcheck,
            "pool": self.pool,
            "suspect_tags": self.suspect_tags,
            "suspect_drivers": self.suspect_drivers,
            "verdicts": [{"text": v.text, "evidence": v.evidence} for v in self.verdicts],
            "notes": self.notes,
            "incomplete": self.incomplete,
        }

    def to_json(self, **kw: Any) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), **kw)

    def _sections(self) -> list[tuple[str, list[str]]]:
        b = self.bugcheck
        bc = [f"{b['code']:#x} {b['name']}" + (f" in {b['module']}" if b.get("module") else "")]
        if b.get("exception_code") is not None:
            bc.append(f"exception code {b['exception_code']:#010x}"
                      + (f" ({b['exception_name']})" if b.get("exception_name") else ""))
        if b.get("manual"):
            bc.append("crash initiated by hand: no faulting address"
                      + (f" (raised at {b.get('raised_at_symbol') or hex(b['raised_at'])})"
                         if b.get("raised_at") else ""))
        elif b.get("address") is not None:
            bc.append(
                f"faulting address {b['address']:#x} ({b['address_source']})"
                + (f" = {b['symbol']}" if b.get("symbol") else "")
            )
        for p in b.get("parameters", []):
            line = f"Arg{p['index']}: {p['value']:#x}"
            if p.get("meaning"):
                line += f", {p['meaning']}" + (f": {p['decoded']}" if p.get("decoded") else "")
            bc.append(line)
        pool = []
        for kind in ("nonpaged", "paged"):
            p = self.pool.get(kind) or {}
            if p.get("usage_kb") is not None and p.get("max_kb"):
                pool.append(
                    f"{kind}: {p['usage_kb']:,} KB of {p['max_kb']:,} KB ({100 * p['ratio']:.1f}%)"
                )
        if self.pool.get("failures") is not None:
            pool.append(f"pool allocation failures: {self.pool['failures']}")
        pool.append(self.pool.get("verdict", ""))
        tags = []
        for t in self.suspect_tags:
            owners = (", ".join(o["module"] for o in t.get("owners", [])[:3])
                      or "owner unknown: no loaded image holds the tag, no tag-table entry")
            live = t.get("nonpaged_allocs", 0) - t.get("nonpaged_frees", 0)
            tags.append(
                f"{t['tag']!s:<4}  nonpaged {t['nonpaged_bytes']:>14,} B  "
                f"paged {t['paged_bytes']:>14,} B  outstanding {live:>9,}"
                f"  -> {owners}" + (f"  ({t['description']})" if t.get("description") else "")
            )
        drivers = [
            f"{d['name']} at {d['base']:#x}"
            + (f", score {d['score']:g}" if d.get("score") is not None else "")
            + ": " + "; ".join(d["reasons"])
            for d in self.suspect_drivers
        ]
        verdicts = []
        for v in self.verdicts:
            verdicts.append(v.text)
            verdicts += [f"  - {e}" for e in v.evidence]
        incomplete = []
        if self.incomplete:
            incomplete.append(self.incomplete["reason"])
            incomplete += [f"{x['analysis']}: {x['detail']}" for x in self.incomplete["inputs"]]
        return [
            *([("Incomplete dump", incomplete)] if incomplete else []),
            (
                "Dump",
                [
                    f"{self.dump.get('path', '')}: {self.dump.get('machine')} build "
                    f"{self.dump.get('build')}, DumpType {self.dump.get('dump_type')}"
                ],
            ),
            ("Bug check", bc),
            ("Pool", [x for x in pool if x]),
            ("Suspect pool tags", tags or ["none"]),
            ("Suspect drivers", drivers or ["none"]),
            ("Verdicts", verdicts or ["none"]),
            ("Could not determine", self.notes or ["none"]),
        ]

    def text(self) -> str:
        """Plain text for a terminal."""
        out = []
        for title, lines in self._sections():
            out.append(title)
            out += [f"  {x}" for x in lines]
        return "\n".join(out)

    __str__ = text

    def to_markdown(self) -> str:
        """Markdown for tickets and wikis."""
        out = ["# ntdump triage", ""]
        for title, lines in self._sections():
            out.append(f"## {title}")
            out += [f"- {x}" if not x.startswith("  - ") else f"  {x.strip()}" for x in lines]
            out.append("")
        return "\n".join(out)

    def _repr_html_(self) -> str:
        parts = ["<div class='ntdump-triage'><h3>ntdump triage</h3>"]
        for title, lines in self._sections():
            parts.append(f"<h4>{html.escape(title)}</h4><ul>")
            parts += [f"<li>{html.escape(x.strip())}</li>" for x in lines]
            parts.append("</ul>")
        parts.append("</div>")
        return "".join(parts)


def _note(notes: list[str], what: str, e: BaseException) -> None:
    notes.append(f"could not determine {what} because {type(e).__name__}: {e}")


def _analysis_step(d: Dump, notes: list[str]) -> Analysis | None:
    """0. ``!analyze``: bug check meanings, faulting IP, the crash stack, probably caused by,
    bucket (:mod:`ntdump.analyze`)."""
    try:
        an = analyze(d)
    except Exception as e:
        _note(notes, "the crash analysis (!analyze)", e)
        return None
    notes += an.notes
    return an


def _bugcheck_step(d: Dump, info: DumpInfo, notes: list[str],
                   an: Analysis | None) -> dict[str, Any]:
    """1. The bug check: name, every parameter with its meaning, the exception of
    0x1E/0x3B/0x7E/0x8E, and the module that owns the faulting address where the code names one.
    A manual crash has none: the context IP is only where the crash was raised (KeBugCheckEx).
    Its verdict comes after the ranking (:func:`_crash_verdict`)."""
    b = info.bugcheck
    addr, src = b.address, b.address_source
    ip = info.context.get("rip", info.context.get("eip"))
    raised_at = None
    if addr is None and ip and not b.manual and not b.live:
        addr, src = ip, "context instruction pointer"
    elif addr is None and ip:
        raised_at = ip
    bc: dict[str, Any] = {
        "code": b.code,
        "name": b.name,
        "params": list(b.params),
        "parameters": [p.to_dict() for p in b.parameters],
        "manual": b.manual,
        "exception_code": b.exception_code,
        "exception_name": b.exception_name,
        "address": addr,
        "address_source": src,
        "module": None,
        "symbol": None,
        "bucket": an.bucket if an else None,
        "probably_caused_by": (an.probably_caused_by or {}).get("image") if an else None,
    }

    def where(va: int) -> tuple[Any, str | None]:
        m = d.modules.at(va)
        if m is None:
            return None, None
        try:
            return m, d.ln(va)
        except Exception:
            return m, f"{m.kd_name}+{va - m.base:#x}"

    try:
        if addr is not None:
            m, sym = where(addr)
            if m is not None:
                bc["module"] = m.name
                bc["module_base"] = m.base
                bc["offset"] = addr - m.base
                bc["symbol"] = sym
        if raised_at is not None:
            bc["raised_at"] = raised_at
            bc["raised_at_symbol"] = where(raised_at)[1]
    except Exception as e:
        _note(notes, "the module at the faulting address", e)
    return bc


def _pool_step(d: Dump, notes: list[str], gaps: list[dict[str, str]]) -> dict[str, Any]:
    """2. Pool state from !vm (fields it could not read for want of pages go to ``gaps``)."""
    pool: dict[str, Any] = {"nonpaged": None, "paged": None, "failures": None, "depleted": []}
    try:
        v = d.vm()
        for kind in ("nonpaged", "paged"):
            u, mx = v[f"{kind}_pool_usage"], v[f"{kind}_pool_max"]
            ratio = (u.pages / mx.pages) if u.pages is not None and mx.pages else None
            pool[kind] = {
                "usage_kb": u.kb,
                "max_kb": mx.kb,
                "ratio": ratio,
                "source": f"{u.source}; {mx.source}",
            }
            if ratio is not None and ratio >= DEPLETION_RATIO:
                pool["depleted"].append(kind)
        pool["failures"] = v.pool_allocation_failures
        for f in v.fields:
            if (f.pages is None and input_gap(f.source)) or "; incomplete: " in f.source:
                gaps.append({"analysis": "!vm", "detail": f"{f.label}: {f.source}"})
        if v.pool_allocation_failures is None:
            notes.append(
                "could not determine pool allocation failures because "
                + v.source("pool_allocation_failures")
            )
    except Exception as e:
        _note(notes, "pool usage (!vm)", e)
    return pool


def _top_tags_step(d: Dump, pool: dict[str, Any], top: int, notes: list[str],
                   gaps: list[dict[str, str]]) -> tuple[list[dict[str, Any]], str]:
    """3. Top tags from the tracker table: (entries, the column sorted by). The table's warnings
    (unreadable per-processor tables …) go to the notes, and to ``gaps`` when data was missing."""
    used = None
    sort = "paged" if pool["depleted"] == ["paged"] else "nonpaged"
    try:
        used = d.pool.used(sort=sort)
        for w in used.attrs.get("warnings", []):
            notes.append(f"!poolused: {w}")
            if input_gap(w):
                gaps.append({"analysis": "!poolused", "detail": w})
    except Exception as e:
        _note(notes, "pool usage by tag (!poolused)", e)
        if input_gap(str(e)) or d.info.cut is not None:
            gaps.append({"analysis": "!poolused", "detail": f"{type(e).__name__}: {e}"})
    suspect_tags: list[dict[str, Any]] = []
    if used is not None and len(used):
        for _, r in used.head(top).iterrows():
            tag = str(r["tag"])
            entry: dict[str, Any] = {
                "tag": tag,
                "nonpaged_bytes": int(r["nonpaged_bytes"]),
                "paged_bytes": int(r["paged_bytes"]),
                "nonpaged_allocs": int(r["nonpaged_allocs"]),
                "paged_allocs": int(r["paged_allocs"]),
                "nonpaged_frees": int(r["nonpaged_frees"]),
                "paged_frees": int(r["paged_frees"]),
                "description": "" if r.get("description") is None else str(r["description"]),
                "owners": [],
            }
            suspect_tags.append(entry)
    return suspect_tags, sort


def _owners_step(d: Dump, suspect_tags: list[dict[str, Any]], notes: list[str]) -> None:
    """4. Owners of every listed tag (for "None": importers of ExAllocatePool, both ways), filled
    in each entry's ``owners`` with one search of the module images."""
    try:
        found = d.pool.owners_many([e["tag"] for e in suspect_tags])
    except Exception as e:
        _note(notes, "the owners of the pool tags", e)
        return
    for entry in suspect_tags:
        entry["owners"] = [
            {"module": str(m), "evidence": str(ev), "score": float(sc)}
            for m, ev, sc in found.get(entry["tag"], [])[:5]
        ]


@dataclass
class _Blame:
    """Who the verdicts name: the ranking, the top tag's owners (kd name, how), the blamed name
    ("a.sys" or "a.sys or b.sys" for a tie, None) and the sentence explaining a tie."""

    ranking: culprits.Ranking
    top_owners: list[tuple[str, str]]
    blamed: str | None
    tie_note: str


def _suspect_drivers_step(d: Dump, an: Analysis | None, pool: dict[str, Any],
                          suspect_tags: list[dict[str, Any]], notes: list[str]) -> _Blame:
    """5. Suspect drivers ranked by the evidence (:mod:`ntdump.culprits`, weights in
    docs/triage.md): crash evidence from the analysis, pool evidence when the pool is depleted
    or allocations failed."""
    leaking = bool(pool["depleted"] or pool["failures"])
    top_owners: list[tuple[str, str]] = []
    if leaking and suspect_tags:
        try:
            owners = d.pool.owners(suspect_tags[0]["tag"])
            top_owners = [(str(o), str(e)) for o, e in zip(owners["module"], owners["evidence"],
                                                           strict=True)]
        except Exception as e:
            _note(notes, f"the owners of pool tag {suspect_tags[0]['tag']!r}", e)
    ranking = culprits.rank(d, an, top_tag=suspect_tags[0]["tag"] if suspect_tags else None,
                            top_tag_owners=top_owners, leaking=leaking)
    notes += ranking.notes
    if ranking.tied:
        tie_note = (f"the evidence does not separate {', '.join(ranking.tied)} (scores "
                    + ", ".join(f"{s.name} {s.score:g}" for s in ranking.suspects
                                if s.name in ranking.tied)
                    + f"; a lead of {culprits.SEPARATION:g} points is needed to name one)")
        return _Blame(ranking, top_owners, " or ".join(ranking.tied), tie_note)
    best = ranking.best
    return _Blame(ranking, top_owners, best.name if best else None, "")


def _crash_verdict(d: Dump, an: Analysis | None, bc: dict[str, Any], blame: _Blame,
                   leaking: bool, verdicts: list[Verdict]) -> None:
    """The verdict on the crash: where it stopped (the exception of 0x1E/0x3B/0x7E/0x8E), the
    parameters with their meanings, the first frame outside the kernel, the bucket, and the driver
    the evidence blames — only when the crash itself points at it, or the bug check is pool
    exhaustion and it owns the leak. A manual crash blames no one."""
    b = d.info.bugcheck
    params = [str(p) for p in b.parameters if p.meaning and p.meaning != "reserved"]
    if b.manual:
        at = (f" (raised at {bc.get('raised_at_symbol') or hex(bc['raised_at'])})"
              if bc.get("raised_at") else "")
        ev = [str(p) for p in b.parameters if p.decoded]
        if an is not None:
            ev.append(f"bucket: {an.bucket}")
        verdicts.append(Verdict(f"Bug check {b.code:#x} ({b.name}): a crash initiated by hand, "
                                f"not a fault: there is no faulting address{at}", ev))
        return
    text = f"Bug check {b.code:#x} ({b.name})"
    if b.exception_code is not None:
        text += f": {b.exception_name or 'exception'} ({b.exception_code:#010x})"
    if an is None:
        if bc["module"]:
            text += f" at {bc['address']:#x} in {bc['module']}"
            verdicts.append(Verdict(text, [
                f"{bc['address_source']} = {bc['address']:#x}",
                f"{bc['module']} spans {bc['module_base']:#x}+{bc['offset']:#x}", *params]))
        return
    frames = an.frames()
    where = an.faulting_symbol or (frames[0]["symbol"] if frames else None) or bc.get("symbol")
    text += f" at {where}" if where else ""
    ev = list(params)
    pc = an.probably_caused_by
    best = blame.ranking.best
    base = b.code & ~0x10000000
    if base in NON_FAILURE_CODES:
        text += ": not a failure of any driver"
    elif blame.blamed and best is not None \
            and (pc is None or pc["image"] in (blame.ranking.tied or [best.name])) \
            and (any(e.name in culprits.CRASH for e in best.evidence)
                 or (base in POOL_EXHAUSTION_CODES and leaking)):
        text += f", most likely caused by {blame.blamed}"
    if pc is not None:
        ev.append(f"probably caused by: {pc['symbol']} ({pc['why']})")
    ev.append(f"bucket: {an.bucket}")
    if blame.blamed and best is not None and text.endswith(f"caused by {blame.blamed}"):
        ev.append(f"{best.name}: score {best.score:g} = "
                  + " + ".join(f"{e.weight:g} {e.name}" for e in best.evidence))
        if blame.tie_note:
            ev.append(blame.tie_note)
    verdicts.append(Verdict(text, ev))


def _module_list_step(d: Dump, notes: list[str], gaps: list[dict[str, str]]) -> None:
    """6. The module list and unloaded drivers: entries that could not be read (the culprit may be
    among them) go to the notes, and to ``gaps`` when pages were missing."""
    try:
        for w in d.kernel_warnings:
            notes.append(f"module list: {w}")
            if input_gap(w):
                gaps.append({"analysis": "module list", "detail": w})
    except Exception as e:
        _note(notes, "the module list's warnings", e)


def _pool_verdict(pool: dict[str, Any], suspect_tags: list[dict[str, Any]], blame: _Blame,
                  sort: str, verdicts: list[Verdict], why_unsure: str | None = None,
                  gaps: list[dict[str, str]] | None = None) -> None:
    """The verdict on the pool (``pool["verdict"]``, and a :class:`Verdict` when it says
    something). Never "healthy" when ``why_unsure`` (the dump is incomplete): "unknown, because
    …" instead, and a depletion found is qualified."""
    if pool["depleted"] or pool["failures"]:
        kinds = " and ".join(pool["depleted"]) or "pool"
        ev = []
        for kind in pool["depleted"]:
            p = pool[kind]
            ev.append(
                f"!vm: {kind} pool {p['usage_kb']:,} KB of {p['max_kb']:,} KB "
                f"({100 * p['ratio']:.1f}%)"
            )
        if pool["failures"]:
            ev.append(f"!vm: {pool['failures']} pool allocations have failed")
        if suspect_tags:
            t = suspect_tags[0]
            ev.append(
                f"!poolused: top tag {t['tag']!r} holds {t[sort + '_bytes']:,} bytes in "
                f"{t[sort + '_allocs'] - t.get(sort + '_frees', 0):,} outstanding allocations"
            )
            if blame.top_owners:
                one = len(blame.top_owners) == 1
                how = (("imports" if one else "import") + " the untagged allocators"
                       if t["tag"] == "None" else
                       ("holds the tag in its" if one else "hold the tag in their") + " image")
                ev.append(f"{len(blame.top_owners)} module{'' if one else 's'} {how}; the "
                          f"evidence ranks {'it' if one else 'them'} (Suspect drivers)")
        best = blame.ranking.best
        if best is not None:
            ev.append(f"{best.name}: score {best.score:g}")
            ev += [f"  {e}" for e in sorted(best.evidence, key=lambda e: -e.weight)]
            if blame.tie_note:
                ev.append(blame.tie_note)
        text = f"{kinds.capitalize()} pool depletion"
        if suspect_tags:
            text += f": tag {suspect_tags[0]['tag']!r}"
        if blame.blamed:
            text += f", most likely leaked by {blame.blamed}"
            if blame.ranking.tied:
                text += " (the evidence does not separate them)"
        if why_unsure:
            # What was read shows depletion; what is missing can only add to it.
            text += f" (from an incomplete dump: {why_unsure})"
        verdicts.append(Verdict(text, ev))
        pool["verdict"] = text
    elif why_unsure:
        ev = [
            f"{k} pool at {100 * pool[k]['ratio']:.1f}% of its maximum in what could be read"
            for k in ("nonpaged", "paged")
            if pool[k] and pool[k].get("ratio") is not None
        ]
        ev += [f"{g['analysis']}: {g['detail']}" for g in gaps or []]
        pool["verdict"] = f"pool state unknown, because {why_unsure}"
        verdicts.append(Verdict(f"Pool state unknown, because {why_unsure}", ev))
    elif pool["nonpaged"] is not None and pool["nonpaged"].get("ratio") is not None:
        pool["verdict"] = "pool is healthy: no pool near its maximum, no failed allocations"
        verdicts.append(
            Verdict(
                "Pool is healthy",
                [
                    f"{k} pool at {100 * pool[k]['ratio']:.1f}% of its maximum"
                    for k in ("nonpaged", "paged")
                    if pool[k] and pool[k].get("ratio") is not None
                ],
            )
        )
    else:
        pool["verdict"] = "pool state unknown (see notes)"


def triage(d: Dump, *, top: int = TOP_TAGS) -> Report:
    """Run the whole chain on an open dump: ``!analyze`` (bug check, stack, bucket) → ``!vm`` →
    ``!poolused`` → tag owners → suspect drivers ranked by evidence (docs/triage.md) → verdicts
    that name the same driver. Never raises for a readable dump."""
    notes: list[str] = []
    verdicts: list[Verdict] = []
    info = d.info
    dump = {
        "path": d.path,
        "machine": info.machine,
        "pae": info.pae,
        "build": info.build,
        "dump_type": info.dump_type,
        "system_time": info.system_datetime.isoformat() if info.system_datetime else None,
        "processors": info.processors,
    }

    cut = info.cut  # None for a whole file
    gaps: list[dict[str, str]] = []  # analyses that met missing or unreadable data

    an = _analysis_step(d, notes)
    bc = _bugcheck_step(d, info, notes, an)
    pool = _pool_step(d, notes, gaps)
    suspect_tags, sort = _top_tags_step(d, pool, top, notes, gaps)
    _owners_step(d, suspect_tags, notes)
    blame = _suspect_drivers_step(d, an, pool, suspect_tags, notes)
    suspect_drivers = [s.to_dict() for s in blame.ranking.suspects]
    _crash_verdict(d, an, bc, blame, bool(pool["depleted"] or pool["failures"]), verdicts)
    _module_list_step(d, notes, gaps)
    if info.dump_type == 4 and cut is None:
        gaps = []  # a triage dump holds no pool data by design (noted below), not by loss
    why_unsure = None
    if cut is not None:
        why_unsure = cut["reason"]
    elif gaps:
        why_unsure = "an analysis met missing or unreadable data (" + "; ".join(
            f"{g['analysis']}: {g['detail']}" for g in gaps[:2]) + ")"
    _pool_verdict(pool, suspect_tags, blame, sort, verdicts, why_unsure, gaps)
    if info.dump_type == 4:
        notes.insert(
            0,
            "pool data is not in a triage dump: a triage (mini) dump holds only the "
            "crash context, the faulting stack and a few captured ranges",
        )
    incomplete = None
    if cut is not None or gaps:
        incomplete = {**(cut or {"truncated": False}), "reason": why_unsure, "inputs": gaps}
        notes.insert(0, f"the dump is incomplete: {why_unsure}")
    # A file truncated while open degrades the steps above to notes; the report would be void.
    d.check_intact()
    return Report(dump, bc, pool, suspect_tags, suspect_drivers, verdicts, notes, incomplete)
