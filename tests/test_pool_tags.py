"""pooltag.txt reader (§7 rules) and the built-in descriptions. The sample file is written here
in the documented format, with our own made-up entries."""

from __future__ import annotations

from pathlib import Path

import pytest

from ntdump import pooltags

SAMPLE = """rem A sample in pooltag.txt's format, written for this test.
rem Tag - binary - description
rem

Abc1 - abc.sys      - first test tag
Ps   - nt!ps        - short tag, space padded - with a hyphen inside
 Indented - x.sys - skipped: lines that start with a space
Dup1 - one.sys - first owner
Dup1 - two.sys - second owner
TooLong - x.sys - skipped: more than four characters
None - nt!ex - from the file, overriding the built-in text
"""


def test_parse_rules(tmp_path: Path) -> None:
    entries = pooltags.parse(SAMPLE.splitlines())
    tags = [e.tag for e in entries]
    assert tags == ["Abc1", "Ps  ", "Dup1", "Dup1", "None"]
    ps = entries[1]
    assert ps.binary == "nt!ps"
    assert ps.description == "short tag, space padded - with a hyphen inside"


def test_table_lookup_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "pooltag.txt"
    f.write_text(SAMPLE, encoding="ascii")
    t = pooltags.TagTable(f)
    assert t.describe("Ps") == "short tag, space padded - with a hyphen inside [nt!ps]"
    assert [e.binary for e in t.lookup("Dup1")] == ["one.sys", "two.sys"]
    assert "overriding" in t.describe("None")
    # Built-in entries, including prefix patterns.
    assert "contiguous" in t.describe("MmCm")
    assert t.describe("CM31").endswith("[nt!cm]")
    assert t.describe("Zzzz") == ""
    # $NTDUMP_POOLTAG is read when no path is given.
    monkeypatch.setenv(pooltags.ENV_VAR, str(f))
    assert [e.tag for e in pooltags.load()][:1] == ["Abc1"]
    monkeypatch.delenv(pooltags.ENV_VAR)
    assert pooltags.load() == []
    assert "untagged" in pooltags.TagTable().describe("None")
