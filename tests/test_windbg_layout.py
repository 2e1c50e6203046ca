"""Text output laid out like WinDbg's, checked against the sample output printed in Microsoft's
documentation of each command (the labels and column positions are transcribed below)."""

from __future__ import annotations

import re

import ntdump
from ntdump.forge import founding_story

# From the documentation page of !vm ("kd> !vm 1" sample): label, colon, the page count ending in
# column 26, then "(", the KB count in an 8-wide field, " Kb)".
VM_DOC_LINES = [
    "Physical Memory:     16270   (   65080 Kb)",
    "Available Pages:      5543   (   22172 Kb)",
    "ResAvail Pages:       6759   (   27036 Kb)",
    "Locked IO Pages:       112   (     448 Kb)",
    "Free System PTEs:    45089   (  180356 Kb)",
    "Modified Pages:        714   (    2856 Kb)",
    "NonPagedPool Usage:    877   (    3508 Kb)",
    "NonPagedPool Max:     6252   (   25008 Kb)",
    "PagedPool Usage:      1597   (    6388 Kb)",
    "PagedPool Maximum:   13312   (   53248 Kb)",
    "Shared Commit:        1097   (    4388 Kb)",
    "PagedPool Commit:     1597   (    6388 Kb)",
    "Driver Commit:         828   (    3312 Kb)",
    "Committed pages:     21949   (   87796 Kb)",
    "Commit limit:        36256   (  145024 Kb)",
]
_VM_LINE = re.compile(r"^(?P<label>[A-Za-z ]+):\s+(?P<pages>\d+)   \(\s*(?P<kb>\d+) Kb\)$")


def _layout(line: str) -> tuple[str, int, int]:
    m = _VM_LINE.match(line.strip())
    assert m, line
    return m["label"], m.end("pages"), len(line.strip())


def test_vm_labels_and_columns(tmp_path):
    st = founding_story(tmp_path / "story.dmp")
    with ntdump.open(st.path) as d:
        d.add_symbols(st.symbols)
        text = str(d.vm())
    assert "*** Virtual Memory Usage ***" in text
    ours = {}
    for line in text.splitlines():
        if _VM_LINE.match(line.strip()):
            label, end_pages, _ = _layout(line)
            ours[label] = (end_pages, line.strip())
    for doc in VM_DOC_LINES:
        label, end_pages, _ = _layout(doc)
        assert label in ours, f"!vm label {label!r} missing"
        assert ours[label][0] == end_pages, (doc, ours[label][1])
    # Every documented label comes in the documented order.
    order = [_layout(x)[0] for x in VM_DOC_LINES]
    seen = [lab for lab in ours if lab in order]
    assert seen == order


# From the documentation page of !poolused (its "0: kd> !poolused" sample).
POOLUSED_DOC = [
    "   Sorting by  Tag",
    "",
    "  Pool Used:",
    "            NonPaged            Paged",
    " Tag    Allocs     Used    Allocs     Used",
    " 1394        1      520         0        0UNKNOWN pooltag '1394', please update pooltag.txt",
    " 8042        4     3944         0        0PS/2 kb and mouse , Binary: i8042prt.sys",
]


def _number_ends(line: str) -> list[int]:
    return [m.end() for m in re.finditer(r"\d+(?=\D|$)", line[5:])]


def test_poolused_labels_and_columns(tmp_path):
    st = founding_story(tmp_path / "story.dmp")
    with ntdump.open(st.path) as d:
        # Tags whose numbers, and their TOTAL, fit the documented fields print in exactly the
        # documented layout; larger numbers widen the columns (tests/test_kd_cli.py).
        used = d.pool.used()
        small = [str(r.tag) for r in used.itertuples()
                 if max(r.nonpaged_bytes, r.paged_bytes) < 10_000_000
                 and max(r.nonpaged_allocs, r.paged_allocs) < 100_000][:8]
        assert len(small) >= 3
        text = d.pool.used_text(sort="tag", tags=small)
        ours = text.splitlines()
        assert ours[:5] == POOLUSED_DOC[:5]
        doc_cols = _number_ends(POOLUSED_DOC[5])[:4]
        assert doc_cols == _number_ends(POOLUSED_DOC[6])[:4]
        rows = [x for x in ours[5:] if x.strip() and not x.startswith(" TOTAL")]
        assert rows
        for row in rows:
            ends = _number_ends(row)[:4]
            # Columns line up with the documented ones whenever the numbers fit their fields.
            if all(len(w) <= 8 for w in row[5:].split()[:4]):
                assert ends == doc_cols, row
        text2 = d.pool.used_text(sort="nonpaged", top=2)
        assert text2.splitlines()[0] == "   Sorting by  NonPaged Pool Consumed"
