"""Issue 12, case 3: no silent wrong answers — range (RDMP) dumps validated like bitmap dumps, an
empty module list from a dump that should have one is said aloud, reads do not wrap past the top
of the address space, and numbers that do not fit 64 bits are refused."""

from __future__ import annotations

import shutil
import struct
import warnings

import pytest

import ntdump
from ntdump.cli import main
from ntdump.errors import DumpFormatError, NtdumpWarning, TranslationError
from ntdump.forge import scenario
from ntdump.kd import KdSession, parse_number

# -- (a) RDMP ----------------------------------------------------------------------------------
# Sub-header at 0x2000 (WINDOWS_INTERNALS §1.7, after kdmp-parser): FirstPageOffset at 0x2018,
# TotalNumberOfPages at 0x2028 (DumpType 0xA), the {PFN, PageCount} table from 0x2030.


@pytest.fixture(scope="module")
def rdmp(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rdmp")
    return scenario.win10_x64(tmp / "range.dmp", fmt="range_full", size=32 << 20).path


def _patched(src, dst, at: int, fmt: str, value: int):
    shutil.copy(src, dst)
    with open(dst, "r+b") as f:
        f.seek(at)
        f.write(struct.pack(fmt, value))
    return dst


def test_rdmp_control_reads(rdmp):
    with ntdump.open(rdmp) as d:
        assert d.info.dump_type == 0xA and d.info.layout == "range"
        assert d.read_phys(d.info.runs[0][0] * 4096, 8)


def test_rdmp_page_count_all_ones_is_a_typed_error_under_0xa(rdmp, tmp_path):
    bad = _patched(rdmp, tmp_path / "count.dmp", 0x2038, "<Q", 2**64 - 1)
    with pytest.raises(DumpFormatError) as e:
        ntdump.open(bad)
    assert e.value.offset == 0x2038 and "RDMP range 0" in str(e.value)
    # Same answer as DumpType 8 gives (it always did).
    bad8 = _patched(bad, tmp_path / "count8.dmp", 0xF98, "<I", 8)
    with pytest.raises(DumpFormatError):
        ntdump.open(bad8)


def test_rdmp_first_page_offset_zero_is_refused(rdmp, tmp_path):
    bad = _patched(rdmp, tmp_path / "first.dmp", 0x2018, "<Q", 0)
    with pytest.raises(DumpFormatError) as e:
        d = ntdump.open(bad)
        pytest.fail(f"opened; read_phys(0x1000) = {d.read_phys(0x1000, 8)!r}")  # was b'PAGEDU64'
    assert e.value.offset == 0x2018 and "FirstPageOffset" in str(e.value)


# -- (b) empty module lists ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def dumps(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("empty")
    return {
        "x64": scenario.win10_x64(tmp / "x64.dmp", size=32 << 20).path,
        "x86": scenario.server2003_x86_pae(tmp / "x86.dmp", size=32 << 20).path,
        "bitmap": scenario.win10_x64(tmp / "bm.dmp", fmt="bitmap", size=32 << 20).path,
    }


# Header mutations from the issue: (dump, offset, struct format, value). Offsets: DUMP_HEADER64
# DirectoryTableBase 0x10, PsLoadedModuleList 0x20, NumberOfRuns 0x88; DUMP_HEADER32
# DirectoryTableBase 0x10, PsLoadedModuleList 0x18, PaeEnabled 0x5C; bitmap BitmapSize 0x2030.
MUTATIONS = [
    ("x64", 0x10, "<Q", 0), ("x64", 0x10, "<Q", 2**64 - 1), ("x64", 0x20, "<Q", 2**64 - 1),
    ("x64", 0x88, "<I", 0), ("x86", 0x10, "<I", 0), ("x86", 0x10, "<I", 2**32 - 1),
    ("x86", 0x18, "<I", 2**32 - 1), ("x86", 0x5C, "<B", 0), ("bitmap", 0x2030, "<Q", 0),
    ("bitmap", 0x10, "<Q", 0),
]


@pytest.mark.parametrize(("which", "at", "fmt", "value"), MUTATIONS)
def test_empty_module_list_is_never_silent(dumps, tmp_path, capsys, which, at, fmt, value):
    bad = _patched(dumps[which], tmp_path / "m.dmp", at, fmt, value)
    try:
        d = ntdump.open(bad)
    except DumpFormatError:
        return  # refused at open: loud enough
    with d, warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        mods = d.modules
        if len(mods):
            return  # the kernel was still found (e.g. through KDBG)
        said = [x for x in w if issubclass(x.category, NtdumpWarning)]
        assert said, "empty module list without a warning"
        assert "no loaded modules" in str(said[0].message)
        assert str(said[0].message).split("(", 1)[1].strip(")")  # a reason
    assert main(["lm", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no loaded modules" in err


def test_triage_dump_with_no_drivers_is_not_warned_about(triage_dump):
    with ntdump.open(triage_dump) as d, warnings.catch_warnings():
        warnings.simplefilter("error", NtdumpWarning)
        assert len(d.modules) > 0


# -- (c) the top of the address space -----------------------------------------------------------


def test_reads_do_not_wrap_past_the_top(dumps, capsys):
    with ntdump.open(dumps["x64"]) as d:
        for pad in (False, True):
            with pytest.raises(TranslationError) as e:
                d.read(2**64 - 8, 16, pad=pad)  # was: 8 bytes, then the bytes at VA 0
            assert "top of the address space" in str(e.value)
        with pytest.raises(TranslationError):
            d.read_phys(2**64 - 8, 16, pad=True)
        out = KdSession(d).run("db ffffffffffffffff")
        assert out.split("\n") == [
            "ffffffff`ffffffff  ??" + " " * 47 + "?"]  # one byte, unreadable; no row past it
        out = KdSession(d).run("dq fffffffffffffff0")
        assert out == "ffffffff`fffffff0  ????????`???????? ????????`????????"
    assert main(["db", str(dumps["x64"]), "ffffffffffffffff"]) == 0
    out = capsys.readouterr().out
    assert "00000000`0000000f" not in out and out.startswith("ffffffff`ffffffff  ??")
    with ntdump.open(dumps["x86"]) as d:
        with pytest.raises(TranslationError):
            d.read(2**32 - 8, 16)
        assert KdSession(d).run("db fffffff8").count("\n") == 0  # 8 bytes, no wrap to 0


# -- (d) numbers past 64 bits --------------------------------------------------------------------


def test_numbers_that_do_not_fit_are_refused(dumps, capsys):
    with pytest.raises(ntdump.errors.NtdumpError):
        parse_number("0n99999999999999999999999")
    with pytest.raises(ntdump.errors.NtdumpError):
        parse_number("10000000000000000")
    assert parse_number("ffffffffffffffff") == 2**64 - 1
    with ntdump.open(dumps["x64"]) as d:
        s = KdSession(d)
        out = s.run("? 0n99999999999999999999999")
        assert "overflow" in out.lower() and "Evaluate expression" not in out
        assert s.failures == 1
        # Arithmetic still wraps at 64 bits, as in kd.
        assert s.eval("ffffffffffffffff+2") == 1
    assert main(["pool", str(dumps["x64"]), "0n99999999999999999999999"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "64 bits" in err
