"""Issue 12, case 6: a dump file truncated by another process while it is open must not kill the
interpreter with SIGBUS. Every entry point that touches the vanished pages raises
``DumpFormatError("file shrank while open …")`` instead (docs/robustness.md explains the design:
a SIGBUS handler maps a zero page over the vanished page, flags the map, and every read path and
Python entry point checks the flag).

Each check runs in a child interpreter (if a signal did kill it, pytest would survive to say so);
the truncation is done by a third process."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from ntdump.forge import founding_story

pytestmark = pytest.mark.skipif(sys.platform == "win32",
                                reason="Windows refuses to truncate a mapped file")

_CHILD = textwrap.dedent('''
    import subprocess, sys
    import ntdump
    from ntdump.kd import KdSession
    path, what = sys.argv[1], sys.argv[2]
    d = ntdump.open(path)
    nt = d.modules["nt"]
    culprit = d.modules.at(int(sys.argv[3]))
    base = d.info.runs[-1][0] * 4096
    subprocess.run([sys.executable, "-c",
                    f"import os; os.truncate({path!r}, 0x3000)"], check=True)
    calls = {
        "read": lambda: d.read(culprit.base, 0x1000),
        "read_phys": lambda: d.read_phys(base, 0x1000),
        "exports": lambda: culprit.exports(),
        "pool": lambda: d.pool.used(),
        "search": lambda: d.search(0x41414141, width=4, within=d.modules),
        "scan": lambda: d.pool.scan(tags=["Leak"], progress=False),
        "triage": lambda: ntdump.triage(d).text(),
        "kd": lambda: KdSession(d).run(f"dps {culprit.base:x} L4; !poolused; "
                                        "!for_each_module s-d @#Base @#End e0894d1f"),
    }
    try:
        r = calls[what]()
        print("ANSWERED", str(r)[:2000].replace("\\n", " | "))
    except ntdump.errors.NtdumpError as e:
        print(type(e).__name__, e)
''')


@pytest.fixture
def story(tmp_path):
    return founding_story(tmp_path / "story.dmp", size=64 << 20)


@pytest.mark.parametrize("what", ["read", "read_phys", "exports", "pool", "search", "scan",
                                  "triage", "kd"])
def test_truncated_while_open_is_a_typed_error(story, what):
    r = subprocess.run([sys.executable, "-X", "faulthandler", "-c", _CHILD, str(story.path), what,
                        str(story.culprit.base)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"killed by signal {-r.returncode}: {r.stderr[-2000:]}"
    out = r.stdout.strip()
    if what == "kd":  # kd answers every command with text: the error is in it
        assert out.startswith("ANSWERED") and "file shrank while open" in out, out
        return
    assert out.startswith("DumpFormatError") and "file shrank while open" in out, out
