"""A PDB is untrusted input: corrupted PDBs give SymbolError or a (partial) answer, never a panic.

The pdb crate 0.8 panics on some malformed type records (an ``LF_ARRAY`` with trailing bytes
asserts, an ``LF_POINTER`` with an out-of-range kind or mode reaches ``unreachable!()``); seed 5
below produces such records (found by this very loop before the guard existed)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from ntdump import _native
from ntdump.errors import SymbolError


@pytest.mark.parametrize("name", ["amdppm.pdb", "user32.pdb"])
def test_corrupted_pdbs_never_panic(shared_data: Path, tmp_path: Path, name: str) -> None:
    data = (shared_data / "pdb" / "msft" / name).read_bytes()
    rng = random.Random(5)
    p = tmp_path / "corrupt.pdb"
    outcomes = {"ok": 0, "error": 0}
    for _ in range(200):
        b = bytearray(data)
        for _ in range(rng.choice([1, 4, 16, 64])):
            b[rng.randrange(len(b))] = rng.randrange(256)
        p.write_bytes(b)
        for fn in (_native.pdb_identity, _native.pdb_symbols, _native.PdbTypes,
                   _native.pdb_public_offsets):
            try:
                r = fn(str(p))
                if isinstance(r, _native.PdbTypes):
                    for n in r.names()[:100]:
                        r.layout(n)
                outcomes["ok"] += 1
            except SymbolError:
                outcomes["error"] += 1
    assert outcomes["ok"] > 0 and outcomes["error"] > 0


def test_truncated_and_empty_pdbs(tmp_path: Path, shared_data: Path) -> None:
    data = (shared_data / "pdb" / "msft" / "amdppm.pdb").read_bytes()
    for n in (0, 10, 100, 4096, 65536, len(data) // 2):
        p = tmp_path / f"t{n}.pdb"
        p.write_bytes(data[:n])
        for fn in (_native.pdb_identity, _native.pdb_symbols, _native.PdbTypes):
            with pytest.raises(SymbolError):
                fn(str(p))
