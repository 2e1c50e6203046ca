"""`ntdump.triage`: verdicts with evidence, never an exception for a readable dump."""

from __future__ import annotations

import json

import pytest

import ntdump
from ntdump import bugcheck
from ntdump.triage import GUID_NAME, SCHEMA_ID, driver_hints


def test_real_triage_dump(triage_dump):
    with ntdump.open(triage_dump) as d:
        r = ntdump.triage(d)
    assert r.bugcheck["code"] == 0x1000007E
    assert r.bugcheck["name"] == "SYSTEM_THREAD_EXCEPTION_NOT_HANDLED_M"
    assert r.bugcheck["module"].lower() == "amdppm.sys"
    assert r.bugcheck["address"] == 0xFFFFF8048B58334C
    assert any("pool data is not in a triage dump" in n for n in r.notes)
    text = r.text()
    assert "amdppm.sys" in text and "0x1000007e" in text
    d = r.to_dict()
    assert d["schema"] == SCHEMA_ID
    _validate(d)
    assert json.loads(json.dumps(d)) == d
    assert "<h3>ntdump triage</h3>" in r._repr_html_()
    assert r.to_markdown().startswith("# ntdump triage")


def _validate(doc):
    import pathlib

    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(
        (pathlib.Path(__file__).parents[1] / "docs" / "triage-schema.json").read_text()
    )
    jsonschema.validate(doc, schema)


def test_bugcheck_table():
    assert bugcheck.name(0xE2) == "MANUALLY_INITIATED_CRASH"
    assert bugcheck.name(0x1000007E).endswith("_M")
    assert bugcheck.name(0x12345) == "UNKNOWN_BUGCHECK"
    assert bugcheck.faulting_address(0xD1, (1, 2, 3, 0xF00)) == (0xF00, "parameter 4")
    assert bugcheck.faulting_address(0xE2, (0, 0, 0, 0))[0] is None


def test_driver_hints():
    assert GUID_NAME.match("{6B1A3E41-8C52-4E0F-9A3D-2C7F1B9E0D55}.sys")
    assert not GUID_NAME.match("tcpip.sys")
    assert driver_hints("tcpip.sys", "\\SystemRoot\\System32\\drivers\\tcpip.sys") == []
    h = driver_hints("{6B1A3E41-8C52-4E0F-9A3D-2C7F1B9E0D55}.sys",
                     "\\??\\C:\\ProgramData\\Vendor\\{6B1A3E41-8C52-4E0F-9A3D-2C7F1B9E0D55}.sys")
    assert len(h) == 2
