"""``_NT_SYMBOL_PATH`` parsing, the symstore layout, cabinets and hostile names (no network)."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
from symserver import pefile_keys

from ntdump.errors import SymbolError, SymbolMismatchError
from ntdump.symbols import (
    FileRequest,
    LocalStore,
    Resolver,
    SymbolPath,
    cab,
    check_name,
    image_key,
    parse,
    pdb_key,
)

MS = "https://msdl.microsoft.com/download/symbols"


def _kinds(text: str) -> list[tuple[str, tuple[str, ...]]]:
    return [(e.kind, e.stores) for e in parse(text)[0]]


def test_parse_every_form() -> None:
    assert _kinds(f"srv*{MS}") == [("srv", (MS,))]
    assert _kinds(f"srv*C:\\symbols*{MS}") == [("srv", ("C:\\symbols", MS))]
    assert _kinds(f"SRV*/a*/b*{MS}") == [("srv", ("/a", "/b", MS))]
    assert _kinds(f"srv**{MS}") == [("srv", ("", MS))]  # "" = default downstream store
    assert _kinds(f"symsrv*symsrv.dll*/c*{MS}") == [("srv", ("/c", MS))]
    assert _kinds(f"cache*/x;srv*{MS}") == [("cache", ("/x",)), ("srv", (MS,))]
    assert _kinds("cache*") == [("cache", ("",))]
    assert _kinds("/plain/dir; ;/other") == [("dir", ("/plain/dir",)), ("dir", ("/other",))]
    assert _kinds(MS) == [("srv", (MS,))]
    els, warns = parse("srv*")
    assert [(e.kind, e.stores) for e in els] == [("srv", ("",))] and warns
    els, warns = parse("symsrv*other.dll*/c*http://h/")
    assert els == [] and "other.dll" in warns[0]


def test_servers_offline_and_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    p = SymbolPath(f"/d;srv*/c*{MS};cache*/z;srv*/e")
    assert p.servers == [MS] and p.names_server
    assert not SymbolPath("/d;srv*/c").names_server
    assert str(p) == f"/d;srv*/c*{MS};cache*/z;srv*/e"
    monkeypatch.setenv("_NT_SYMBOL_PATH", f"srv*{tmp_path}*{MS}")
    monkeypatch.setenv("_NT_ALT_SYMBOL_PATH", "/alt")
    env = SymbolPath()
    assert [e.kind for e in env.elements] == ["dir", "srv"]  # the alternate path comes first
    monkeypatch.delenv("_NT_SYMBOL_PATH")
    monkeypatch.delenv("_NT_ALT_SYMBOL_PATH")
    assert not SymbolPath() and SymbolPath().servers == []
    monkeypatch.setenv("NTDUMP_OFFLINE", "1")
    assert SymbolPath(f"srv*{MS}").offline


def test_default_downstream_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NTDUMP_SYMBOL_CACHE", str(tmp_path / "dflt"))
    assert SymbolPath("srv*").default_store == tmp_path / "dflt"
    monkeypatch.delenv("NTDUMP_SYMBOL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert SymbolPath("srv*").default_store == tmp_path / "xdg" / "ntdump" / "sym"


def test_keys_match_pefile(shared_data: Path) -> None:
    ikey, name, pkey = pefile_keys(shared_data / "pe" / "msft" / "amdppm.sys")
    assert image_key(0xC9C03000, 0x3B000) == ikey == "C9C030003b000"
    from ntdump import _native

    guid, age = _native.pdb_identity(str(shared_data / "pdb" / "msft" / "amdppm.pdb"))
    assert name == "amdppm.pdb" and pdb_key(guid, age) == pkey


@pytest.mark.parametrize("bad", ["..", "../x.pdb", "a/b.pdb", "a\\b.pdb", "C:x.pdb", "c:",
                                 "x\0.pdb", "x" * 256 + ".pdb", "", ".", "a..pdb", "é" * 128])
def test_hostile_names_refused(bad: str, tmp_path: Path) -> None:
    with pytest.raises(SymbolError):
        check_name(bad)
    with pytest.raises(SymbolError):
        FileRequest(bad, "ABCDEF1", "pdb")
    r = Resolver(SymbolPath(f"srv*{tmp_path}*http://127.0.0.1:9/"))
    with pytest.raises(SymbolError):
        r.find_image(bad, 1, 0x1000)
    assert not any(tmp_path.iterdir())  # nothing written


def test_hostile_keys_and_rsds_paths(tmp_path: Path) -> None:
    for key in ("../AB", "AB/CD", "", "G" * 3, "A" * 65):
        with pytest.raises(SymbolError):
            FileRequest("x.pdb", key, "pdb")
    r = Resolver(SymbolPath(str(tmp_path), offline=True))
    with pytest.raises(SymbolError):
        r.find_pdb("..", "{1C19FDDB-27BB-3399-D9B4-5973EFEAFCF3}", 1)
    # an RSDS path is reduced to its last component, as the debuggers do
    assert r.find_pdb("D:\\build\\x\\..\\amdppm.pdb", "1C19FDDB27BB3399D9B45973EFEAFCF3", 1) is None


def _no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def refuse(self: object, req: object, *a: object, **k: object) -> None:
        calls.append(str(getattr(req, "full_url", req)))
        raise AssertionError("network used")

    monkeypatch.setattr(urllib.request.OpenerDirector, "open", refuse)
    return calls


def test_local_store_layouts(shared_data: Path, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _no_network(monkeypatch)
    pdb = shared_data / "pdb" / "msft" / "amdppm.pdb"
    sysf = shared_data / "pe" / "msft" / "amdppm.sys"
    ikey, _, pkey = pefile_keys(sysf)
    # one-tier store written by hand in symstore's layout
    one = tmp_path / "one"
    (one / "amdppm.pdb" / pkey).mkdir(parents=True)
    shutil.copy(pdb, one / "amdppm.pdb" / pkey / "amdppm.pdb")
    r = Resolver(SymbolPath(f"srv*{one}"))
    assert r.find_pdb("amdppm.pdb", pkey[:32], int(pkey[32:], 16)) == \
        one / "amdppm.pdb" / pkey / "amdppm.pdb"
    # two-tier store (index2.txt): found one level deeper
    two = tmp_path / "two"
    (two / "am" / "amdppm.sys" / ikey).mkdir(parents=True)
    (two / "index2.txt").write_text("")
    shutil.copy(sysf, two / "am" / "amdppm.sys" / ikey / "amdppm.sys")
    assert Resolver(SymbolPath(f"srv*{two}")).find_image("amdppm.sys", 0xC9C03000, 0x3B000) \
        == two / "am" / "amdppm.sys" / ikey / "amdppm.sys"
    # writes into a two-tier downstream store go two-tier too
    st = LocalStore(two)
    assert st.target(FileRequest("user32.pdb", "AB1", "pdb")) == \
        two / "us" / "user32.pdb" / "AB1" / "user32.pdb"
    # file.ptr pointing at the file elsewhere
    ptr = tmp_path / "ptr"
    (ptr / "amdppm.pdb" / pkey).mkdir(parents=True)
    (ptr / "amdppm.pdb" / pkey / "file.ptr").write_text(f"PATH:{pdb}")
    cache = tmp_path / "cache"
    got = Resolver(SymbolPath(f"srv*{cache}*{ptr}")).find_pdb("amdppm.pdb", pkey[:32], 1)
    assert got == cache / "amdppm.pdb" / pkey / "amdppm.pdb"
    assert got.read_bytes() == pdb.read_bytes()
    (ptr / "amdppm.pdb" / pkey / "file.ptr").write_text("MSG: withdrawn by its publisher")
    with pytest.raises(SymbolError, match="withdrawn"):
        Resolver(SymbolPath(f"srv*{ptr}")).find_pdb("amdppm.pdb", pkey[:32], 1)
    # plain directory: dir/name and dir/symbols/<ext>/name; a wrong build is skipped
    flat = tmp_path / "flat"
    (flat / "symbols" / "pdb").mkdir(parents=True)
    shutil.copy(shared_data / "pdb" / "msft" / "user32.pdb", flat / "amdppm.pdb")
    shutil.copy(pdb, flat / "symbols" / "pdb" / "amdppm.pdb")
    assert Resolver(SymbolPath(str(flat))).find_pdb("amdppm.pdb", pkey[:32], 1) == \
        flat / "symbols" / "pdb" / "amdppm.pdb"
    assert calls == []


def test_wrong_pdb_in_store_is_refused_naming_both(shared_data: Path, tmp_path: Path) -> None:
    _, _, pkey = pefile_keys(shared_data / "pe" / "msft" / "amdppm.sys")
    st = tmp_path / "s"
    (st / "amdppm.pdb" / pkey).mkdir(parents=True)
    shutil.copy(shared_data / "pdb" / "msft" / "user32.pdb",
                st / "amdppm.pdb" / pkey / "amdppm.pdb")
    from ntdump import _native

    g2, _ = _native.pdb_identity(str(shared_data / "pdb" / "msft" / "user32.pdb"))
    with pytest.raises(SymbolMismatchError) as ei:
        Resolver(SymbolPath(f"srv*{tmp_path / 'c'}*{st}")).find_pdb("amdppm.pdb", pkey[:32], 1)
    assert pkey[:32] in str(ei.value) and g2 in str(ei.value)
    assert ei.value.expected.startswith(pkey[:32]) and ei.value.found.startswith(g2)
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").rglob("amdppm.pdb"))


def test_cab_made_by_gcab_checked_by_cabextract(shared_data: Path, tmp_path: Path) -> None:
    gcab, cabx = shutil.which("gcab"), shutil.which("cabextract")
    if gcab is None or cabx is None:
        pytest.skip("gcab/cabextract not installed (Debian packages gcab, cabextract)")
    src = tmp_path / "amdppm.pdb"
    shutil.copy(shared_data / "pdb" / "msft" / "amdppm.pdb", src)
    cabf = tmp_path / "amdppm.pd_"
    subprocess.run([gcab, "-c", "-z", str(cabf), "amdppm.pdb"], cwd=tmp_path, check=True)
    out = tmp_path / "x"
    subprocess.run([cabx, "-q", "-d", str(out), str(cabf)], check=True)
    name, body = cab.extract(cabf.read_bytes())
    assert name == "amdppm.pdb" and body == (out / "amdppm.pdb").read_bytes() == src.read_bytes()
    # a store holding only the compressed file: expanded into the downstream store
    _, _, pkey = pefile_keys(shared_data / "pe" / "msft" / "amdppm.sys")
    st = tmp_path / "st"
    (st / "amdppm.pdb" / pkey).mkdir(parents=True)
    shutil.copy(cabf, st / "amdppm.pdb" / pkey / "amdppm.pd_")
    got = Resolver(SymbolPath(f"srv*{tmp_path / 'c'}*{st}")).find_pdb("amdppm.pdb", pkey[:32], 1)
    assert got is not None and got.read_bytes() == src.read_bytes()
    assert got.parent.parent.parent == tmp_path / "c"
    # hostile cabinets: every bad size is a SymbolError naming an offset, never a crash
    data = bytearray(cabf.read_bytes())
    for off, val in ((0x1A, b"\xff\xff"), (0x1C, b"\0\0"), (0x1E, b"\x01\0")):
        bad = bytearray(data)
        bad[off : off + 2] = val
        with pytest.raises(SymbolError):
            cab.extract(bytes(bad))
    with pytest.raises(SymbolError):
        cab.extract(bytes(data[:-100]))
    with pytest.raises(SymbolError, match="cap"):
        cab.extract(bytes(data), max_bytes=1000)
    import random

    rng = random.Random(11)
    for _ in range(300):
        bad = bytearray(data[:4096])
        for _ in range(4):
            bad[rng.randrange(len(bad))] = rng.randrange(256)
        try:
            cab.extract(bytes(bad), max_bytes=1 << 20)
        except SymbolError:
            pass
