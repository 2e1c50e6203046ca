"""Bug check names (Microsoft's whole reference list), parameter meanings, decoded sub-values, and
how triage reports them: the real Windows 10 0x1000007E dump, and a forged manual crash."""

from __future__ import annotations

import json
import pathlib

import pytest

import ntdump
from ntdump import bugcheck, forge


def test_names_cover_the_reference_list():
    # Codes from every part of the reference, including the late additions.
    assert bugcheck.name(0x1C8) == "MANUALLY_INITIATED_POWER_BUTTON_HOLD"
    assert bugcheck.name(0x1DC) == "DMA_COMMON_BUFFER_VECTOR_ERROR"
    assert bugcheck.name(0x20001) == "HYPERVISOR_ERROR"
    assert bugcheck.name(0xDEADDEAD) == "MANUALLY_INITIATED_CRASH1"
    assert bugcheck.name(0xC000021A) == "STATUS_SYSTEM_PROCESS_TERMINATED"
    assert bugcheck.name(0x154) == "UNEXPECTED_STORE_EXCEPTION"
    assert bugcheck.name(0xA0) == "INTERNAL_POWER_ERROR"
    # Listed _M codes by their own entry; others derived from the base code.
    assert bugcheck.name(0x1000008E) == "KERNEL_MODE_EXCEPTION_NOT_HANDLED_M"
    assert bugcheck.name(0x1000000A) == "IRQL_NOT_LESS_OR_EQUAL_M"
    assert bugcheck.name(0x1C3) == "UNKNOWN_BUGCHECK"  # not in the reference
    assert len(bugcheck.NAMES) >= 400
    assert all(n.isupper() and " " not in n for n in bugcheck.NAMES.values())
    assert "bug-check-code-reference2" in bugcheck.NAMES_SOURCE


COMMON = (0x0A, 0x19, 0x1A, 0x1E, 0x3B, 0x41, 0x50, 0x7E, 0x9F, 0xC2, 0xC5, 0xD1, 0xE2, 0x133,
          0x139, 0x1000007E, 0x1000008E, 0xEF, 0x124, 0x154, 0xA0)


@pytest.mark.parametrize("code", COMMON)
def test_common_codes_name_every_parameter(code):
    b = bugcheck.describe(code, (1, 2, 3, 4))
    assert b.described and b.name != "UNKNOWN_BUGCHECK"
    assert [p.index for p in b.parameters] == [1, 2, 3, 4]
    assert all(p.meaning for p in b.parameters)


def test_decoded_sub_values():
    b = bugcheck.describe(0x1000007E, (0xFFFFFFFFC0000005, 0xFFFFF8048B58334C, 0x10, 0x20))
    assert (b.exception_code, b.exception_name) == (0xC0000005, "STATUS_ACCESS_VIOLATION")
    assert [p.meaning for p in b.parameters] == [
        "exception code", "address where the exception occurred",
        "address of the exception record", "address of the context record"]
    assert b.parameters[0].decoded == "STATUS_ACCESS_VIOLATION (0xc0000005)"
    assert b.address == 0xFFFFF8048B58334C and b.address_source == "parameter 2"
    d1 = bugcheck.describe(0xD1, (0x28, 2, 1, 0xFFFFF80012345678))
    assert d1.parameters[1].decoded == "DISPATCH_LEVEL" and d1.parameters[2].decoded == "write"
    assert d1.address == 0xFFFFF80012345678
    assert bugcheck.describe(0x139, (3, 0, 0, 0)).parameters[0].decoded == \
        "FAST_FAIL_CORRUPT_LIST_ENTRY"
    assert bugcheck.describe(0x124, (0, 0, 0, 0)).parameters[0].decoded.startswith("machine check")
    assert bugcheck.describe(0x133, (1, 0, 0, 0)).parameters[0].decoded.startswith("the system")
    # A manual crash has no faulting address at all.
    for code in (0xE2, 0x1C8, 0xDEADDEAD):
        m = bugcheck.describe(code, (0, 0, 0, 0))
        assert m.manual and m.address is None and "no faulting address" in m.address_source


def test_real_0x1000007e_in_amdppm(triage_dump):
    with ntdump.open(triage_dump) as d:
        b = d.bugcheck
        assert b is not None and b == d.info.bugcheck
        assert b.exception_name == "STATUS_ACCESS_VIOLATION"
        assert "STATUS_ACCESS_VIOLATION" in str(d.info)
        assert "address of the context record" in str(d.info)
        r = ntdump.triage(d)
    text = r.text()
    assert "exception code 0xc0000005 (STATUS_ACCESS_VIOLATION)" in text
    assert "Arg3: 0xffff850429891ee8, address of the exception record" in text
    assert "faulting address 0xfffff8048b58334c (parameter 2)" in text
    doc = r.to_dict()
    assert doc["bugcheck"]["exception_code"] == 0xC0000005
    assert doc["bugcheck"]["module"].lower() == "amdppm.sys"
    assert doc["bugcheck"]["parameters"][0]["meaning"] == "exception code"
    assert "STATUS_ACCESS_VIOLATION" in doc["verdicts"][0]["text"]
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(
        (pathlib.Path(__file__).parents[1] / "docs" / "triage-schema.json").read_text())
    jsonschema.validate(json.loads(r.to_json()), schema)


def test_manual_crash_has_no_faulting_address(tmp_path):
    st = forge.founding_story(tmp_path / "m.dmp")
    with ntdump.open(st.path) as d:
        assert d.info.bugcheck_code == 0xE2
        r = ntdump.triage(d)
    doc = r.to_dict()
    assert doc["bugcheck"]["manual"] is True
    assert doc["bugcheck"]["address"] is None and doc["bugcheck"]["module"] is None
    assert doc["bugcheck"]["raised_at_symbol"] == "nt!KeBugCheckEx"
    text = r.text()
    assert "faulting address 0x" not in text and "KeBugCheckEx (context" not in text
    assert "crash initiated by hand: no faulting address (raised at nt!KeBugCheckEx)" in text
    assert "not a fault" in doc["verdicts"][0]["text"]


def test_kd_analyze(triage_dump):
    from ntdump.kd import KdSession

    with ntdump.open(triage_dump) as d:
        kd = KdSession(d)
        out = kd.run("!analyze")
        assert out.splitlines()[0] == "SYSTEM_THREAD_EXCEPTION_NOT_HANDLED_M (1000007e)"
        assert "Arg1: ffffffffc0000005, exception code: STATUS_ACCESS_VIOLATION" in out
        assert "Faulting address (parameter 2): fffff804`8b58334c" in out
        show = kd.run("!analyze -show 0x1c8 0n7000")
        assert show.splitlines()[0] == "MANUALLY_INITIATED_POWER_BUTTON_HOLD (1c8)"
        assert "Arg1: 0000000000001b58, time the power button was held down (ms)" in show
        assert "no faulting address" in show
        assert kd.run("!analyze -show") == "!analyze -show needs a bug check code"
