"""Is a dump whole? The cut of a truncated file, and the analyses that met missing pages.

A dump cut short (a copy that stopped, a disk that filled while Windows wrote it) still opens:
every page before the cut reads, every page after it raises ``PageNotInDumpError``. An analysis
that needed a page past the cut gives a smaller number, not an error, so a verdict drawn from it
(say "pool is healthy") would be wrong with confidence. :func:`dump_cut` names the cut from the
header (``RequiredDumpSpace``, the file size the writer intended; and the pages the header declares
that the file does not hold); triage reports it with the analyses that met missing pages
(:func:`input_gap`), and never calls such a dump healthy.
"""

from __future__ import annotations

from typing import Any

PAGE = 4096
"""Bytes per page."""


def dump_cut(info: Any) -> dict[str, Any] | None:
    """How much of the dump is missing, or None when the file is whole.

    ``info`` is a :class:`~ntdump.dump.DumpInfo`. Returns ``{"truncated": True, "file_size",
    "expected_size", "missing_pages", "present_fraction", "reason"}``: sizes in bytes,
    ``expected_size`` from the header's RequiredDumpSpace when it is larger than the file (else
    the file size plus the missing pages), ``present_fraction`` = file size / expected size."""
    missing = int(getattr(info, "missing_pages", 0) or 0)
    size = int(getattr(info, "file_size", 0) or 0)
    required = getattr(info, "required_dump_space", None)
    if getattr(info, "dump_type", None) == 4:
        # A triage dump's RequiredDumpSpace is the space its writer reserved, not its size: the
        # real Windows 10 triage dump (tests) holds 1,444,532 bytes under a RequiredDumpSpace of
        # 1,669,397, with its TRIAGE_DUMP.SizeOfDump = the file size and a valid "TRGD" end
        # marker. Its completeness is the reader's business (missing_pages, warnings).
        required = None
    if required is not None and required > size > 0 and required < (1 << 50):
        expected = int(required)
        source = "the header's RequiredDumpSpace"
    elif missing:
        expected = size + missing * PAGE
        source = "the pages the header declares"
    else:
        return None
    frac = size / expected if expected else 0.0
    pct = 100 * frac
    shown = f"{pct:.1f}" if pct >= 0.1 or pct == 0 else f"{pct:.2g}"
    reason = (f"the dump file is cut at {shown}% of its size: {size:,} of {expected:,} "
              f"bytes ({source})")
    if missing:
        mib = missing * PAGE / (1 << 20)
        reason += f"; {missing:,} pages ({mib:,.1f} MiB) of memory are missing"
    return {"truncated": True, "file_size": size, "expected_size": expected,
            "missing_pages": missing, "present_fraction": round(frac, 4), "reason": reason}


_GAP_WORDS = ("unreadable", "not in the dump", "not in this dump", "past the end", "truncat",
              "missing", "not found near")


def input_gap(text: str) -> bool:
    """True when an analysis warning or a ``!vm`` source says data was missing or unreadable."""
    low = text.lower()
    return any(w in low for w in _GAP_WORDS)
