"""The kd command line: expressions, command splitting, commands on real and forged dumps."""

from __future__ import annotations

import ntdump
from ntdump.cli import main
from ntdump.forge import scenario
from ntdump.kd import KdSession, kd_addr, parse_number, split_commands


def test_numbers_and_addresses():
    assert parse_number("fffff804`7ba00000") == 0xFFFFF8047BA00000
    assert parse_number("0x10") == 0x10
    assert parse_number("10") == 0x10
    assert parse_number("0n10") == 10
    assert kd_addr(0xFFFFF8047BA00000) == "fffff804`7ba00000"
    assert kd_addr(0xF50B8058, 4) == "f50b8058"


def test_split_commands():
    assert split_commands("!vm; !poolused /t2 2;x nt!ExAlloc*") == [
        "!vm", "!poolused /t2 2", "x nt!ExAlloc*"]
    assert split_commands("lm; !for_each_module s-d @#Base @#End e0894d1f; lm") == [
        "lm", "!for_each_module s-d @#Base @#End e0894d1f; lm"]


def test_expressions_on_real_dump(triage_dump):
    with ntdump.open(triage_dump) as d:
        s = KdSession(d)
        kdbg = d.info.kd_debugger_data_block
        assert s.eval(f"{kdbg:x}+0x18") == kdbg + 0x18
        assert s.eval(f"poi({kdbg:x}+18)") == d.kernel_base
        assert s.eval("(2+3)*4") == 20
        assert s.eval("@rip") == d.info.context["rip"]
        assert s.eval("amdppm") == d.modules["amdppm"].base
        assert s.eval("amdppm+0x334c") == 0xFFFFF8048B58334C
        out = s.run("? 1+1; .bugcheck; vertarget; !frobnicate")
        assert "Evaluate expression: 2 = 00000000`00000002" in out
        assert "Bugcheck code 1000007E" in out
        assert "Windows Kernel Version 19041" in out
        assert "No export !frobnicate found" in out
        assert "Syntax error" in s.run("? 1+")  or "ends early" in s.run("? 1+")


def test_cli_exit_codes(tmp_path, capsys, triage_dump):
    assert main(["info", str(triage_dump)]) == 0
    assert "19041" in capsys.readouterr().out
    bad = tmp_path / "bad.dmp"
    bad.write_bytes(b"nope" * 100)
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a kernel dump" in err
    assert main(["lm", str(triage_dump), "--csv"]) == 0
    assert capsys.readouterr().out.startswith("name,kd_name,base")


def test_vm_through_kd(tmp_path):
    s = scenario.server2003_x86_pae(tmp_path / "vm.dmp", vm={
        "MmAllocatedNonPagedPool": 31369, "MmMaximumNonPagedPoolInBytes": 31986 * 4096,
        "MmPoolFailures": 3})
    with ntdump.open(s.path) as d:
        d.add_symbols(s.layout.kernel_symbols)
        out = KdSession(d).run("!vm")
    assert "NonPagedPool Usage:" in out and "125476 Kb" in out
    assert "3 pool allocations have failed" in out


def test_display_ranges_with_an_end_address(triage_dump):
    """kd's ``start end`` range (end inclusive) for db/dd/dq/dps, beside ``L count``."""
    with ntdump.open(triage_dump) as d:
        s = KdSession(d)
        base = d.modules["amdppm"].base
        a = f"{base:x}"
        raw = d.read(base, 0x20)
        lines = s.run(f"db {a} {a}+0x10").splitlines()
        assert len(lines) == 2 and lines[1].split()[1] == f"{raw[0x10]:02x}"
        assert len(lines[1].split()) == 3  # address, one byte, its character
        assert s.run(f"db {a} {a}+0x10") == s.run(f"db {a} L0x11")
        assert s.run(f"dd {a} {a}+7").split()[1:] == [
            f"{int.from_bytes(raw[i:i + 4], 'little'):08x}" for i in (0, 4)]
        assert len(s.run(f"dps {a} {a}+0x17").splitlines()) == 3  # three pointers
        assert "before the start" in s.run(f"db {a} {a}-1")
