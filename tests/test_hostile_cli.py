"""Issue 12, case 5: every CLI failure is one line on stderr with exit status 2 (1 where documented:
``ntdump lm`` with no modules, ``ntdump kd -c`` when a command failed); kd errors carry no Python
exception class names; ``s`` over ``L?ffffffffffffffff`` searches the mapped part; ``batch --out``
is checked before any dump is analysed."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

import ntdump
from ntdump.cli import main
from ntdump.forge import scenario
from ntdump.kd import KdSession

_PY_ERRORS = re.compile(r"\b\w*(Error|Exception)\b: |Traceback")


@pytest.fixture(scope="module")
def st(tmp_path_factory):
    return scenario.win10_x64(tmp_path_factory.mktemp("cli") / "w10.dmp", size=32 << 20)


@pytest.mark.parametrize("argv", [
    ["db", "{dump}", "poi("],
    ["pte", "{dump}", "10000000000000000"],
    ["info", "{dump}", "--raw", "--dtb", "-1"],
    ["pool", "{dump}", "0n99999999999999999999999"],
    ["dps", "{dump}", "fffff8026be00000", "-n", "-5"],
    ["db", "{dump}", "0", "-l", "zz"],
    ["ln", "{dump}", "poi("],
    ["lmi", "{dump}", "nosuchmodule"],
    ["info", "{missing}"],
    ["frobnicate", "{dump}"],
])
def test_every_cli_failure_is_one_line_and_status_2(st, tmp_path, argv):
    args = [a.format(dump=st.path, missing=tmp_path / "nope.dmp") for a in argv]
    r = subprocess.run([sys.executable, "-m", "ntdump.cli", *args], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 2, (r.returncode, r.stdout[-500:], r.stderr[-2000:])
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("ntdump")


def test_unreadable_dps_prints_question_marks_as_in_kd(st):
    """``dps`` on memory the dump lacks prints kd's ``????????`` per element (issue 13)."""
    r = subprocess.run([sys.executable, "-m", "ntdump.cli", "dps", str(st.path), "1", "-n", "2"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert [ln.split()[1] for ln in r.stdout.splitlines()] == ["????????`????????"] * 2, r.stdout


def test_db_minus_one_is_the_last_address_as_in_kd(st):
    """CLI addresses are kd expressions (issue 13): ``-1`` is ffffffff`ffffffff, which is not
    readable, so kd's ``??`` and no wrapped row - not a traceback (issue 12)."""
    r = subprocess.run([sys.executable, "-m", "ntdump.cli", "db", str(st.path), "-1"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ffffffff`ffffffff  ??"), lines


def test_kd_command_line_failures_set_the_status(st, capsys):
    assert main(["kd", str(st.path), "-c", "? 1+1; lm"]) == 0
    capsys.readouterr()
    lines = ["dps fffff8026be00000 L-1", "dd 0 L?ffffffffffffffff", "? " + "poi(" * 10_000,
             "!poolfind €", "db", "? 0n99999999999999999999999"]
    for line in lines:
        assert main(["kd", str(st.path), "-c", f"? 1; {line}"]) == 1, line
        cap = capsys.readouterr()
        assert "Evaluate expression: 1" in cap.out
        assert not _PY_ERRORS.search(cap.out), cap.out[-500:]
        assert cap.err.count("\n") == 1 and "1 command(s) failed" in cap.err


def test_kd_errors_are_named_without_python_class_names(st):
    with ntdump.open(st.path) as d:
        s = KdSession(d)
        cmds = ("dps", "!pool 0", "ln poi(0)", "!dh 0", "db 0 L-1", "!poolfind Thr€")
        for cmd in cmds:
            out = s.run(cmd)
            assert out and "\n" not in out and not _PY_ERRORS.search(out), (cmd, out)
        assert s.failures == len(cmds)


def test_search_over_the_whole_space_searches_the_mapped_part(st):
    with ntdump.open(st.path) as d:
        want = d.search(st.ex_allocate_pool, width=8, within="kernel")
        assert len(want) > 0
        out = KdSession(d).run(f"s -q 0 L?ffffffffffffffff {st.ex_allocate_pool:x}")
        got = [int(line.split()[0].replace("`", ""), 16) for line in out.splitlines()]
        assert got == [int(a) for a in want["address"]]  # was: error: ValueError: bad range
        low = d.read_u32(st.ex_allocate_pool)
        out = KdSession(d).run(f"s -d 0 L?ffffffffffffffff {low:x}")
        assert out and "error" not in out.lower()


def test_batch_out_is_checked_before_analysing(st, tmp_path, capsys, monkeypatch):
    import ntdump.batch.cli as batch_cli

    def boom(*a, **k):
        raise AssertionError("analysed before checking --out")

    monkeypatch.setattr(batch_cli, "run", boom)
    out_file = tmp_path / "results"
    out_file.write_text("I am a file")
    assert main(["batch", str(st.path), "--out", str(out_file), "--engine", "serial",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out" in err and "not a folder" in err


def test_python_warnings_reach_the_cli_as_one_line(full_head):
    """The real 16 KiB full-dump head has no readable module list: triage reports it, and the
    NtdumpWarning the module list raises reaches stderr as one ``ntdump: warning:`` line, not
    Python's two-line format with the source line."""
    r = subprocess.run([sys.executable, "-m", "ntdump.cli", "triage", str(full_head)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert lines and all(ln.startswith("ntdump: warning: ") for ln in lines), lines
    assert "no loaded modules found" in r.stderr
