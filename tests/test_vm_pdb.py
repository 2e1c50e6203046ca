"""`!vm` fields and PDB public symbols."""

from __future__ import annotations

import pytest

import ntdump
from ntdump import _native


def test_pdb_identity_matches_the_image(shared_data):
    pefile = pytest.importorskip("pefile")
    guid, age, every = _native.pdb_symbols(str(shared_data / "pdb/msft/amdppm.pdb"))
    syms = [(n, rva) for n, rva, kind in every if kind == "public"]
    pe = pefile.PE(str(shared_data / "pe/msft/amdppm.sys"))
    cv = next(e.entry for e in pe.DIRECTORY_ENTRY_DEBUG if e.struct.Type == 2)
    want = (
        f"{cv.Signature_Data1:08X}{cv.Signature_Data2:04X}{cv.Signature_Data3:04X}"
        + bytes([cv.Signature_Data4, cv.Signature_Data5]).hex().upper()
        + cv.Signature_Data6.hex().upper()
    )
    assert guid == want
    assert age == cv.Age
    # Every public RVA lies inside the image, and the exported entry points are among them.
    size = pe.OPTIONAL_HEADER.SizeOfImage
    assert len(syms) > 500
    assert all(0 < rva < size for _, rva in syms)
    names = {n for n, _ in syms}
    assert "C1Idle" in names


def test_pdb_garbage_is_a_symbol_error(tmp_path):
    p = tmp_path / "bad.pdb"
    p.write_bytes(b"Microsoft C/C++ MSF 7.00\r\n\x1aDS\0\0\0" + b"\xff" * 4000)
    with pytest.raises(ntdump.SymbolError):
        _native.pdb_symbols(str(p))
    with pytest.raises(FileNotFoundError):
        _native.pdb_symbols(str(tmp_path / "missing.pdb"))


def test_triage_vm_says_why(triage_dump):
    with ntdump.open(triage_dump) as d:
        v = d.vm()
        assert v.nonpaged_pool_usage_pages is None
        assert v.pool_allocation_failures is None
        assert "triage dump" in v.source("nonpaged_pool_max")
        assert v.warnings == []
        text = str(v)
        assert "*** Virtual Memory Usage ***" in text
        assert "NonPagedPool Max:" in text
