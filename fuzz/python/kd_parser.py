"""Fuzz target (atheris, coverage-guided libFuzzer for Python) for the kd command line: the address
and expression parser (``ntdump.kd``: numbers, ``Expr``, ranges, ``;`` splitting) and the CLI's
address arguments, over a small forged dump so that ``poi()``, symbols and registers resolve.

A finding is any exception other than a typed ntdump error from the parsing functions, any
exception at all from ``KdSession.run`` (which must answer every line with text), a value outside
0 … 2^64 - 1, or an input that takes longer than ``-timeout`` seconds.

Run (docs/robustness.md records the campaign)::

    pip install atheris
    nice -n 10 python fuzz/python/kd_parser.py fuzz/python/corpus_kd fuzz/python/seeds_kd \\
        -max_total_time=660 -timeout=5 -rss_limit_mb=2048 -max_len=4096
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import atheris

with atheris.instrument_imports(include=["ntdump.kd", "ntdump.cli", "ntdump._limits"]):
    import ntdump
    import ntdump.cli
    import ntdump.kd
    from ntdump.errors import NtdumpError
    from ntdump.forge import scenario

U64 = 1 << 64
_TMP = tempfile.mkdtemp(prefix="ntdump-fuzz-kd-")
_PATH = os.path.join(_TMP, "fuzz.dmp")
scenario.win10_x64(_PATH, size=32 << 20)
_DUMP = ntdump.open(_PATH)
_SESSION = ntdump.kd.KdSession(_DUMP)


def _typed(f, *a):
    """Call f; typed ntdump errors are answers, anything else is a finding."""
    try:
        return f(*a)
    except NtdumpError:
        return None


def test_one(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    text = fdp.ConsumeUnicodeNoSurrogates(fdp.remaining_bytes())
    v = _typed(ntdump.kd.parse_number, text)
    assert v is None or 0 <= v < U64, v
    parts = ntdump.kd.split_commands(text)
    assert all(p == p.strip() and p for p in parts)
    v = _typed(_SESSION.eval, text)
    assert v is None or 0 <= v < U64, v
    r = _typed(_SESSION.parse_range, text.split())
    assert r is None or (0 <= r[0] < U64 and r[1] <= U64), r
    try:
        v = ntdump.cli._int(text)
        assert 0 <= v < U64, v
    except argparse.ArgumentTypeError:
        pass
    # Whole command lines: every line is answered with text, never an exception.
    out = _SESSION.run(text)
    assert isinstance(out, str)
    out = _SESSION.run("? " + text)
    assert isinstance(out, str)


def main() -> None:
    atheris.Setup(sys.argv, test_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
