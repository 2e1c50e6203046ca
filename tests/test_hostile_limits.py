"""Issue 12, case 1: huge lengths give a typed error before anything is allocated, a streaming
API serves callers who want more, and no Rust panic or allocation abort reaches Python — checked
under an address-space limit (RLIMIT_AS) in a child process."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import ntdump
from ntdump._limits import MAX_DISPLAY_BYTES, MAX_READ_BYTES
from ntdump.cli import main
from ntdump.errors import NtdumpError, ReadLimitError, TranslationError
from ntdump.forge import scenario
from ntdump.kd import KdSession


@pytest.fixture(scope="module")
def w10(tmp_path_factory):
    st = scenario.win10_x64(tmp_path_factory.mktemp("lim") / "w10.dmp", size=32 << 20)
    return st


def test_huge_reads_are_typed_errors_before_allocating(w10):
    assert ntdump.MAX_READ_BYTES == MAX_READ_BYTES == 256 << 20
    assert ntdump.ReadLimitError is ReadLimitError
    with ntdump.open(w10.path) as d:
        nt = d.modules["nt"].base
        for call in (lambda: d.read(nt, 2**40), lambda: d.read_phys(0, 2**40),
                     lambda: d.read(nt, 2**40, pad=True), lambda: d.read_phys(0, 2**40, pad=True),
                     lambda: d.dps(nt, 2**40), lambda: d.read(nt, MAX_READ_BYTES + 1)):
            with pytest.raises(ReadLimitError) as e:
                call()
            assert e.value.limit == MAX_READ_BYTES and e.value.requested > MAX_READ_BYTES
            assert isinstance(e.value, NtdumpError) and isinstance(e.value, ValueError)
        # Negative lengths are refused by the binding as well (never a wrap to 2^64 - 1).
        with pytest.raises(OverflowError):
            d.read(nt, -1)


def test_iter_read_streams_what_read_refuses(w10):
    with ntdump.open(w10.path) as d:
        nt = d.modules["nt"].base
        whole = d.read(nt, 0x5000, pad=True)
        chunks = list(d.iter_read(nt, 0x5000, chunk=0x1800, pad=True))
        assert [len(c) for c in chunks] == [0x1800, 0x1800, 0x1800, 0x800]
        assert b"".join(chunks) == whole
        pa = d.info.runs[0][0] * 4096
        phys = b"".join(d.iter_read(pa, 0x3000, chunk=0x1000, physical=True))
        assert phys == d.read_phys(pa, 0x3000)
        # 1 TiB is accepted as a request; chunks come one at a time (only the first is read here).
        it = d.iter_read(0, 2**40, chunk=4096, physical=True, pad=True)
        assert len(next(it)) == 4096
        with pytest.raises(ValueError):
            d.iter_read(nt, 16, chunk=MAX_READ_BYTES + 1)
        with pytest.raises(ValueError):
            d.iter_read(nt, -1)
        with pytest.raises(TranslationError):
            d.iter_read(2**64 - 8, 16)


def test_cli_and_kd_lengths_are_capped(w10, capsys):
    path = str(w10.path)
    nt = 0xFFFFF8026BE00000
    for argv in (["db", path, f"{nt:x}", "-l", "0x10000000000"],
                 ["db", path, f"{nt:x}", "-l", "0x100000000"],
                 ["dps", path, f"{nt:x}", "-n", "1099511627776"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "limit" in err, err
    with ntdump.open(w10.path) as d:
        s = KdSession(d)
        for cmd in (f"db {nt:x} L?10000000000", f"dps {nt:x} L?10000000000",
                    f"dd {nt:x} L?{MAX_DISPLAY_BYTES // 4 + 1:x}"):
            out = s.run(cmd)
            assert out.startswith("Range error") and "\n" not in out, out
        assert s.failures == 3
        lines = s.run(f"db {nt:x} L{MAX_DISPLAY_BYTES:x}").splitlines()
        assert len(lines) == MAX_DISPLAY_BYTES // 16


_CHILD = textwrap.dedent('''
    import resource, sys
    import ntdump
    from ntdump.errors import NtdumpError
    d = ntdump.open(sys.argv[1])
    nt = d.modules["nt"].base
    d.read(nt, 4096)
    # Leave ~160 MiB of address space above what the interpreter has now.
    with open("/proc/self/statm") as f:
        vm = int(f.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (vm + (160 << 20), resource.RLIM_INFINITY))
    calls = {
        "read 1 TiB": lambda: d.read(nt, 2**40),
        "read_phys 1 TiB": lambda: d.read_phys(0, 2**40),
        "read 250 MiB padded": lambda: d.read(nt, 250 << 20, pad=True),
        "read_phys 250 MiB padded": lambda: d.read_phys(0, 250 << 20, pad=True),
        "dps 1 TiB": lambda: d.dps(nt, 2**40),
        "iter_read 1 TiB, 250 MiB chunks": lambda: next(d.iter_read(0, 2**40, chunk=250 << 20,
                                                                     physical=True, pad=True)),
    }
    for name, f in calls.items():
        try:
            f()
            print(name, "ok")
        except NtdumpError as e:
            print(name, type(e).__name__)
        except BaseException as e:  # PanicException, a bare MemoryError ...: a finding
            print(name, "UNTYPED", type(e).__module__, type(e).__name__)
    print("alive")
''')


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS and /proc/self/statm: Linux")
def test_under_rlimit_as_every_failure_is_a_typed_ntdump_error(w10):
    r = subprocess.run([sys.executable, "-c", _CHILD, str(w10.path)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]  # not SIGABRT ("memory allocation … failed")
    lines = dict(line.rsplit(" ", 1) for line in r.stdout.splitlines() if " " in line)
    assert r.stdout.rstrip().endswith("alive"), r.stdout
    assert "UNTYPED" not in r.stdout, r.stdout
    assert lines["read 1 TiB"] == "ReadLimitError"
    assert lines["read_phys 1 TiB"] == "ReadLimitError"
    assert lines["dps 1 TiB"] == "ReadLimitError"
    # Under the cap but over the address-space limit: the allocation fails, typed.
    assert lines["read 250 MiB padded"] == "OutOfMemoryError"
    assert lines["read_phys 250 MiB padded"] == "OutOfMemoryError"
    assert lines["iter_read 1 TiB, 250 MiB chunks"] == "OutOfMemoryError"


def test_every_native_entry_point_is_guarded():
    """``#[guarded]`` is the one attribute of an entry point of ``ntdump._native`` (it emits
    ``#[pyfunction]`` / ``#[pymethods]``): a bare PyO3 attribute in src/ would be an entry point
    without the panic guard and the shrunk-file check."""
    import re

    src = Path(__file__).resolve().parent.parent / "src"
    files = sorted(src.glob("*.rs"))
    assert files
    bare = [f"{f.name}:{i}: {line.strip()}" for f in files
            for i, line in enumerate(f.read_text().splitlines(), 1)
            if re.match(r"\s*#\[(pyo3::)?(pyfunction|pymethods)\b", line)]
    assert not bare, bare
    # One #[guarded] per function and per class (its one #[pymethods] block) of the module.
    guarded = sum(len(re.findall(r"(?m)^\s*#\[(?:ntdump_guard::)?guarded\b", f.read_text()))
                  for f in files)
    from ntdump import _native

    entry = [n for n in dir(_native) if not n.startswith("_") and callable(getattr(_native, n))]
    assert guarded == len(entry), (guarded, sorted(entry))


def test_a_rust_panic_reaches_python_as_a_typed_error():
    """Every entry point is #[guarded]: a panic is ntdump.errors.InternalError (an Exception), not
    pyo3_runtime.PanicException (a BaseException that ``except Exception`` misses)."""
    from ntdump import _native
    from ntdump.errors import InternalError

    try:
        _native.panic_selftest("boom")
    except Exception as e:  # must be caught here
        assert isinstance(e, InternalError), type(e)
        assert "boom" in str(e) and "panic_selftest" in str(e)
    else:
        pytest.fail("no error")
