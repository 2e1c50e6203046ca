"""The README's Python block runs as written on a forged dump of the founding story.

The block is taken from README.md (the first ```python fence under "## Python"); only its file
names change: ``MEMORY.DMP`` becomes the forged dump and ``ntkrpamp.pdb`` a real PDB (Microsoft's
amdppm.pdb, copied under a kernel PDB's name, so ``load_pdb`` places it at ``nt`` as it would the
kernel's). ``va`` and ``n`` are the README's placeholders: the culprit driver's IAT slot of
``nt!ExAllocatePool`` (a VA inside a module), the PA it maps to, and 16 bytes.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

import ntdump
from ntdump import forge

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_python_block() -> str:
    """The Python code of the README's "## Python" section."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Python\n", 1)[1]
    m = re.search(r"```python\n(.*?)```", section, re.S)
    assert m is not None, "README.md has no ```python block under ## Python"
    return m.group(1)


def test_readme_block_names_what_the_test_substitutes() -> None:
    code = readme_python_block()
    assert 'ntdump.open("MEMORY.DMP")' in code
    assert 'd.load_pdb("ntkrpamp.pdb")' in code


def test_readme_python_block_runs(tmp_path: Path, shared_data: Path) -> None:
    st = forge.founding_story(tmp_path / "MEMORY.DMP", machine="x86")
    pdb = tmp_path / "ntkrpamp.pdb"
    shutil.copyfile(shared_data / "pdb" / "msft" / "amdppm.pdb", pdb)
    code = readme_python_block()
    code = code.replace('"MEMORY.DMP"', repr(str(st.path)))
    code = code.replace('"ntkrpamp.pdb"', repr(str(pdb)))
    slot = st.scenario.culprit_iat_slot
    assert slot is not None
    with ntdump.open(st.path) as d0:
        pa = d0.translate(slot)
    ns: dict[str, object] = {"va": slot, "pa": pa, "n": 16}
    exec(compile(code, str(README), "exec"), ns)
    d = ns["d"]
    assert isinstance(d, ntdump.Dump)
    with d:
        # The objects the block worked on are the story's: its dump, its leak, its culprit.
        assert d.path == str(st.path)
        assert d.symbol("nt!ExAllocatePool") == 0xE0894D1F
        assert d.modules.at(slot) is not None
        assert d.modules.at(slot).name == st.culprit.name
        assert any(k.startswith("nt!") for k in d.symbol_map)  # load_pdb placed the PDB at nt
        assert d.pool.used(sort="nonpaged", top=1)["tag"].iloc[0] == "None"


@pytest.mark.parametrize("name", ["DumpFormatError", "TranslationError", "PageNotPresentError",
                                  "PageNotInDumpError", "PeFormatError", "PoolTableError",
                                  "SymbolError", "UnsupportedError", "KdError"])
def test_every_exception_in_ntdump_errors(name: str) -> None:
    """The README's error tree: every exception is importable from ``ntdump.errors`` and is an
    NtdumpError (the old homes ``ntdump.pool.PoolTableError`` / ``ntdump.kd.KdError`` still
    name the same class)."""
    import ntdump.errors
    import ntdump.kd
    import ntdump.pool

    cls = getattr(ntdump.errors, name)
    assert issubclass(cls, ntdump.errors.NtdumpError)
    assert getattr(ntdump, name) is cls
    assert ntdump.pool.PoolTableError is ntdump.errors.PoolTableError
    assert ntdump.kd.KdError is ntdump.errors.KdError
