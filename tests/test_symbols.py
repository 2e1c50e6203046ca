"""Symbols from export tables (``symbol`` / ``symbols`` / ``ln``), importers, ``lmi`` and the
Module PE views, on forged dumps holding Wine's real ntoskrnl.exe, hal.dll and drivers (relocated
and bound by ``ntdump.forge``). pefile reading the original files is the outside judge of names,
ordinals and RVAs, and of who imports ``ExAllocatePool``.
"""

from __future__ import annotations

import fnmatch
import threading
from pathlib import Path
from typing import Any

import pytest

import ntdump
from ntdump import forge
from ntdump.forge import pe as forge_pe
from ntdump.forge import scenario

pefile = pytest.importorskip("pefile")

ARCHES = ("x86_64", "i386")
#: Wine's drivers that import the untagged ExAllocatePool (the shared data's README says so too).
IMPORTERS = {"hidclass", "hidparse", "usbd", "winebus", "wineusb", "winexinput"}


class Wine:
    def __init__(self, shared: Path, tmp: Path, arch: str) -> None:
        self.arch = arch
        self.folder = shared / "pe" / f"wine-{arch}"
        self.sc = scenario.wine_drivers(tmp / f"wine_{arch}.dmp", arch, wine_dir=shared / "pe")
        self.d = ntdump.open(self.sc.path)
        self._pe: dict[str, Any] = {}

    def pe(self, name: str) -> Any:
        if name not in self._pe:
            self._pe[name] = pefile.PE(str(self.folder / name))
        return self._pe[name]


@pytest.fixture(scope="module", params=ARCHES)
def wine(request: pytest.FixtureRequest, shared_data: Path,
         tmp_path_factory: pytest.TempPathFactory) -> Any:
    w = Wine(shared_data, tmp_path_factory.mktemp("wine"), request.param)
    yield w
    w.d.close()


def _exports(pe: Any) -> list[Any]:
    return list(pe.DIRECTORY_ENTRY_EXPORT.symbols) if hasattr(pe, "DIRECTORY_ENTRY_EXPORT") else []


def test_symbol_matches_pefile(wine: Wine) -> None:
    d = wine.d
    nt = d.modules["nt"]
    pe = wine.pe("ntoskrnl.exe")
    named = [s for s in _exports(pe) if s.name and not s.forwarder]
    assert len(named) > 1000
    for s in named:
        assert d.symbol(f"nt!{s.name.decode()}") == nt.base + s.address
    assert d.symbol("ntoskrnl.exe!ExAllocatePool") == d.symbol("nt!ExAllocatePool")
    assert d.symbol("NTOSKRNL!exallocatepool") == d.symbol("nt!ExAllocatePool")
    assert d.symbol("nt!ExAllocatePool") == wine.sc.ex_allocate_pool
    assert d.symbol("nt!ExAllocatePool+0x10") == wine.sc.ex_allocate_pool + 0x10
    assert d.symbol("nt") == nt.base
    first = min(_exports(pe), key=lambda s: s.ordinal)
    if not first.forwarder:
        assert d.symbol(f"nt!#{first.ordinal}") == nt.base + first.address
    hal = wine.pe("hal.dll")
    for s in _exports(hal):
        if s.name and not s.forwarder:
            assert d.symbol(f"hal!{s.name.decode()}") == d.modules["hal"].base + s.address


def test_every_export_round_trips_through_ln(wine: Wine) -> None:
    d = wine.d
    df = d.symbols("*")
    assert len(df) > 2000
    local = df[df.forwarder.isna() & df.address.notna()]
    seen = 0
    for module, addr in zip(local.module, local.address, strict=True):
        name = d.ln(int(addr))
        assert "+" not in name, name
        assert name.split("!")[0] == module
        assert d.symbol(name) == addr
        seen += 1
    assert seen == len(local)


def test_ln_offsets_and_misses(wine: Wine) -> None:
    d = wine.d
    ex = wine.sc.ex_allocate_pool
    assert d.ln(ex) == "nt!ExAllocatePool"
    assert d.ln(ex + 0x10).startswith("nt!") and d.ln(ex + 0x10).endswith("+0x10")
    nt = d.modules["nt"]
    assert d.ln(nt.base) == "nt"
    assert d.ln(nt.base + 0x40) == "nt+0x40"  # headers: below every export
    with pytest.raises(ntdump.SymbolError):
        d.ln(0x1000)
    with pytest.raises(LookupError):  # SymbolError is a LookupError
        d.ln(nt.base + nt.size + (1 << 20))


def test_symbols_glob(wine: Wine) -> None:
    d = wine.d
    pe = wine.pe("ntoskrnl.exe")
    want = sorted(s.name.decode() for s in _exports(pe)
                  if s.name and fnmatch.fnmatchcase(s.name.decode().lower(), "exalloc*"))
    df = d.symbols("nt!ExAlloc*")
    assert sorted(df.name) == want and set(df.module) == {"nt"}
    assert list(df.columns) == ["module", "name", "address", "ordinal", "forwarder"]
    assert str(df.address.dtype) == "UInt64" and str(df.name.dtype) == "string"
    assert df.attrs["dump"] == str(wine.sc.path)
    one = d.symbols("*!ExAllocatePool")
    assert list(one.module) == ["nt"] and list(one.address) == [wine.sc.ex_allocate_pool]
    assert len(d.symbols("hal!*")) == len(_exports(wine.pe("hal.dll")))
    assert len(d.symbols("NTOSKRNL.EXE!exallocatepool")) == 1
    assert len(d.symbols("nt!NoSuchThing*")) == 0


def test_symbol_errors(wine: Wine) -> None:
    d = wine.d
    for bad in ("nt!NoSuchFunction", "nosuchmodule!ExAllocatePool", "garbage!", "nt!#99999"):
        with pytest.raises(ntdump.SymbolError):
            d.symbol(bad)


def test_forwarders_follow(wine: Wine) -> None:
    """Wine's exports forward some functions to other modules; those that point at loaded
    modules resolve to the target's address, the rest have no address."""
    d = wine.d
    df = d.symbols("*")
    fw = df[df.forwarder.notna()]
    for name, module, fwd, addr in zip(fw.name, fw.module, fw.forwarder, fw.address,
                                       strict=True):
        dll, _, func = fwd.rpartition(".")
        try:
            target = d.symbol(f"{dll}!{func}")
        except ntdump.SymbolError:
            assert addr is pd_na() or addr != addr or addr is None, (module, name, fwd)
            continue
        assert addr == target


def pd_na() -> Any:
    import pandas as pd

    return pd.NA


def test_importers_both_ways(wine: Wine) -> None:
    d = wine.d
    df = d.importers("ntoskrnl.exe!ExAllocatePool")
    assert list(df.columns) == ["module", "function", "iat_slot", "how_found", "value", "note"]
    assert set(df.module) == IMPORTERS
    assert len(df) == len(IMPORTERS)
    assert set(df.how_found) == {"both"}
    assert set(df.function) == {"ExAllocatePool"}
    assert set(df.value) == {wine.sc.ex_allocate_pool}
    assert df.note.isna().all()
    # The forge's ground truth and pefile agree on who imports it.
    assert {n.rsplit(".", 1)[0] for n in wine.sc.importers} == IMPORTERS
    for f in wine.folder.glob("*.sys"):
        pe = wine.pe(f.name)
        imports = {(e.dll.decode().lower(), i.name) for e in getattr(pe, "DIRECTORY_ENTRY_IMPORT",
                                                                     []) for i in e.imports}
        assert (("ntoskrnl.exe", b"ExAllocatePool") in imports) == (f.stem in IMPORTERS)
    # Each slot is the IAT slot the module's own import table lists.
    for m, slot in zip(df.module, df.iat_slot, strict=True):
        imp = d.modules[m].imports()
        row = imp[imp.iat_slot == slot]
        assert list(row.name) == ["ExAllocatePool"]
        assert list(row.dll.str.lower()) == ["ntoskrnl.exe"]
        assert list(row.target) == ["nt!ExAllocatePool"]


def test_importers_report_disagreements(shared_data: Path, tmp_path: Path) -> None:
    """A patched IAT slot, a stray pointer and an unreadable import name each give a row."""
    sc = scenario.wine_drivers(tmp_path / "w.dmp", "x86_64", wine_dir=shared_data / "pe")
    ex = sc.ex_allocate_pool
    other = sc.layout.symbols["ExAllocatePoolWithTag"]

    def write(va: int, data: bytes) -> None:
        pa = sc.pt.translate(va)
        assert pa is not None
        sc.mem.write(pa, data)

    def module(name: str) -> Any:
        return sc.layout.module(name)

    # 1. hidclass: its IAT slot now points elsewhere (a hook, or a rebind).
    hid = module("hidclass.sys")
    hid_slot = next(i.iat for i in hid.image.imports if i.name == "ExAllocatePool")
    write(hid_slot, other.to_bytes(8, "little"))
    # 2. ndis: the address stored in its .data, not an import.
    ndis = module("ndis.sys")
    data = next(s for s in ndis.image.info.sections if s.name == ".data")
    stray = ndis.base + data.virtual_address + 0x10
    write(stray, ex.to_bytes(8, "little"))
    # 3. usbd: the hint/name entry of its ExAllocatePool import is wiped (INIT reused).
    usbd = module("usbd.sys")
    usbd_pe = pefile.PE(str(shared_data / "pe" / "wine-x86_64" / "usbd.sys"))
    hn = next(i.hint_name_table_rva for e in usbd_pe.DIRECTORY_ENTRY_IMPORT for i in e.imports
              if i.name == b"ExAllocatePool")
    write(usbd.base + hn, bytes(16))
    usbd_slot = next(i.iat for i in usbd.image.imports if i.name == "ExAllocatePool")

    path = tmp_path / "patched.dmp"
    forge.write_full(path, sc.mem, sc.header)
    with ntdump.open(path) as d:
        df = d.importers("nt!ExAllocatePool").set_index("module")
        assert df.loc["hidclass", "how_found"] == "import table"
        assert df.loc["hidclass", "value"] == other
        assert df.loc["hidclass", "iat_slot"] == hid_slot
        assert "patched" in df.loc["hidclass", "note"]
        assert "nt!ExAllocatePoolWithTag" in df.loc["hidclass", "note"]
        assert df.loc["ndis", "how_found"] == "pointer search"
        assert df.loc["ndis", "iat_slot"] == stray
        assert "not an IAT slot" in df.loc["ndis", "note"]
        assert df.loc["usbd", "how_found"] == "pointer search"
        assert df.loc["usbd", "iat_slot"] == usbd_slot
        assert "not readable" in df.loc["usbd", "note"]
        for m in ("hidparse", "winebus", "wineusb", "winexinput"):
            assert df.loc[m, "how_found"] == "both"
        imp = d.modules["usbd"].imports()
        assert imp[imp.iat_slot == usbd_slot].name.isna().all()


def test_importers_threads_agree(wine: Wine) -> None:
    out: list[Any] = [None, None]

    def run(i: int) -> None:
        out[i] = wine.d.importers("nt!ExAllocatePool")

    ts = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert out[0].equals(out[1])


def test_module_pe_views(wine: Wine) -> None:
    d = wine.d
    nt = d.modules["nt"]
    pe = wine.pe("ntoskrnl.exe")
    ex = nt.exports()
    assert len(ex) == len(_exports(pe))
    assert str(ex.ordinal.dtype) == "uint32" and str(ex.address.dtype) == "UInt64"
    secs = nt.sections()
    assert list(secs.name) == [s.Name.rstrip(b"\0").decode() for s in pe.sections]
    assert list(secs.va) == [nt.base + s.VirtualAddress for s in pe.sections]
    text = str(nt.headers)
    assert "FILE HEADER VALUES" in text and "OPTIONAL HEADER VALUES" in text
    assert nt.headers.machine == ("X64" if wine.arch == "x86_64" else "I386")
    assert nt.headers.size_of_image == pe.OPTIONAL_HEADER.SizeOfImage
    # Only the trailing discardable sections the loader freed after initialisation (WRK
    # MmFreeDriverInitialization; the forge does the same) are missing.
    assert nt.missing_pages == [va - nt.base for va in wine.sc.layout.discarded[nt.name]]
    assert nt.pdb is None  # Wine's images carry no debug directory
    imp = d.modules["hidclass"].imports()
    assert str(imp.iat_slot.dtype) == "uint64" and str(imp.value.dtype) == "UInt64"
    assert set(imp.source) == {"descriptor"}


def test_missing_pages_of_a_module(shared_data: Path, tmp_path: Path) -> None:
    sc = scenario.wine_drivers(tmp_path / "m.dmp", "x86_64", wine_dir=shared_data / "pe",
                               missing_pages={"hidparse.sys": [0x1000, 0x2000]})
    with ntdump.open(sc.path) as d:
        m = d.modules["hidparse"]
        freed = [va - m.base for va in sc.layout.discarded["hidparse.sys"]]
        assert m.missing_pages == sorted([0x1000, 0x2000, *freed])
        assert len(m.exports()) == 32  # .edata is elsewhere
        assert d.symbol("hidparse!HidP_GetCaps") > m.base


# -- !lmi and the story's culprit ------------------------------------------------------------

@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Any:
    sc = scenario.win10_x64(tmp_path_factory.mktemp("story") / "story.dmp")
    with ntdump.open(sc.path) as d:
        yield sc, d


def test_lmi_of_the_culprit(story: Any) -> None:
    sc, d = story
    slot = sc.culprit_iat_slot
    info = d.lmi(slot)
    assert info.module == scenario.CULPRIT_GUID
    assert info.image_name == scenario.CULPRIT_NAME
    assert info.base == sc.culprit.base and info.size == sc.culprit.size
    assert len(info.not_on_disk_hint) == 2
    assert any("GUID" in r for r in info.not_on_disk_hint)
    assert any("ProgramData" in r for r in info.not_on_disk_hint)
    text = str(info)
    assert text.startswith(f"Loaded Module Info: [{scenario.CULPRIT_GUID}]")
    assert "Machine Type: 34404 (X64)" in text and "RSDS - GUID: {" in text
    # The PDB record against pefile reading the file the forge mapped (rebuilt: deterministic).
    raw = forge_pe.build_driver(scenario.CULPRIT_NAME, machine="x64",
                                imports={"ntoskrnl.exe": list(scenario.CULPRIT_IMPORTS)},
                                pool_tags=scenario.CULPRIT_TAGS)
    pe = pefile.PE(data=raw)
    cv = next(x.entry for x in pe.DIRECTORY_ENTRY_DEBUG if x.struct.Type == 2)
    assert info.pdb is not None
    assert info.pdb.age == cv.Age
    assert info.pdb.name == cv.PdbFileName.rstrip(b"\0").decode().rsplit("\\", 1)[-1]
    assert info.pdb.key.startswith(f"{cv.Signature_Data1:08X}{cv.Signature_Data2:04X}")
    assert info.symbol_store_path == f"{info.pdb.name}/{info.pdb.key}/{info.pdb.name}"
    assert info.timestamp == pe.FILE_HEADER.TimeDateStamp
    assert info.checksum == pe.OPTIONAL_HEADER.CheckSum


def test_lmi_of_nt_and_by_name(story: Any) -> None:
    _, d = story
    nt = d.lmi("nt")
    assert nt.module == "nt" and nt.not_on_disk_hint == []
    assert d.lmi("ntoskrnl.exe").base == nt.base
    assert d.lmi(d.symbol("nt!ExAllocatePool")).module == "nt"
    with pytest.raises(ntdump.SymbolError):
        d.lmi("nosuchdriver")
    with pytest.raises(ntdump.SymbolError):
        d.lmi(0x10)


def test_story_chain(story: Any) -> None:
    """x nt!ExAllocatePool → importers → dps neighbours → lmi: the founding story in four calls."""
    sc, d = story
    addr = d.symbol("nt!ExAllocatePool")
    assert addr == sc.ex_allocate_pool
    df = d.importers("nt!ExAllocatePool")
    row = df[df.module == scenario.CULPRIT_GUID]
    assert list(row.how_found) == ["both"]
    assert list(row.iat_slot) == [sc.culprit_iat_slot]
    assert d.ln(int(d.read_pointer(sc.culprit_iat_slot + 8))) == "nt!_wcsnicmp"
    assert d.lmi(int(row.iat_slot.iloc[0])).not_on_disk_hint


def test_real_triage_dump(triage_dump: Path) -> None:
    """The real Windows 10 triage dump holds almost no image pages: every module is still listed,
    unreadable ones with their error; nt's headers are there, its exports are not."""
    with ntdump.open(triage_dump) as d:
        mods = d.symbol_modules()
        assert len(mods) == len(d.modules) == 151
        assert mods.error.notna().sum() >= 140
        assert mods.error.dropna().str.contains("not readable").all()
        nt = d.modules["nt"]
        assert d.ln(nt.base + 0x1234) == "nt+0x1234"
        with pytest.raises(ntdump.SymbolError, match="not readable"):
            d.symbol("nt!ExAllocatePool")
        info = d.lmi("nt")
        assert info.machine == 0x8664 and info.error is None and info.missing_pages
        assert "not mapped" in str(info)
        amd = d.lmi("amdppm")
        assert amd.error is not None and "Error:" in str(amd)
        assert d.importers  # the method exists; with no exports there is nothing to look up
        with pytest.raises(ntdump.SymbolError):
            d.importers("nt!ExAllocatePool")
