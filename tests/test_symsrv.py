"""Symbol servers over HTTP and HTTPS on a loopback server: downloads, caches, failures, and the
real Windows 10 triage dump end to end (amdppm.sys by time stamp and size, then its PDB)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from symserver import AMDPPM_SIZE, AMDPPM_TS, SymServer, build_store, make_cert

import ntdump
from ntdump.errors import SymbolDownloadError, SymbolError, SymbolMismatchError
from ntdump.symbols import Resolver, SymbolPath

GUID_AGE = re.compile(r"^([0-9A-F]{32})([0-9A-F]+)$")


@pytest.fixture()
def store(shared_data: Path, tmp_path: Path) -> tuple[Path, dict]:
    root = tmp_path / "server"
    keys = build_store(shared_data, root)
    return root, keys


def _pdb_args(keys: dict) -> tuple[str, str, int]:
    m = GUID_AGE.match(keys["pdb_key"])
    assert m
    return keys["pdb_name"], m.group(1), int(m.group(2), 16)


def _quick(text: str, **kw: object) -> SymbolPath:
    opts = {"timeout": 2.0, "retries": 2, "backoff": 0.01}
    opts.update(kw)
    return SymbolPath(text, **opts)  # type: ignore[arg-type]


def _files(d: Path) -> list[Path]:
    return sorted(p for p in d.rglob("*") if p.is_file()) if d.exists() else []


def test_download_into_cache_then_cached(store: tuple[Path, dict], tmp_path: Path,
                                         shared_data: Path) -> None:
    root, keys = store
    cache = tmp_path / "cache"
    with SymServer(root) as s:
        r = Resolver(_quick(f"srv*{cache}*{s.url}"))
        img = r.find_image("amdppm.sys", AMDPPM_TS, AMDPPM_SIZE)
        pdb = r.find_pdb(*_pdb_args(keys))
        assert img == cache / "amdppm.sys" / keys["image_key"] / "amdppm.sys"
        assert pdb == cache / "amdppm.pdb" / keys["pdb_key"] / "amdppm.pdb"
        assert img.read_bytes() == (shared_data / "pe" / "msft" / "amdppm.sys").read_bytes()
        n = len(s.requests)
        assert n == 2
        # the second time comes from the cache
        r2 = Resolver(_quick(f"srv*{cache}*{s.url}"))
        assert r2.find_pdb(*_pdb_args(keys)) == pdb and len(s.requests) == n
        # no temporary files left behind
        assert [p.name for p in _files(cache)] == ["amdppm.pdb", "amdppm.sys"]


def test_chain_of_downstream_stores_and_default_store(store: tuple[Path, dict], tmp_path: Path
                                                      ) -> None:
    root, keys = store
    c1, c2, dflt = tmp_path / "c1", tmp_path / "c2", tmp_path / "default"
    with SymServer(root) as s:
        r = Resolver(_quick(f"srv*{c1}*{c2}*{s.url}"))
        got = r.find_pdb(*_pdb_args(keys))
        assert got is not None and got.is_relative_to(c1)
        assert len(_files(c2)) == 1  # every downstream store is filled
        # srv*URL and srv**URL land in the default downstream store
        for text in (f"srv*{s.url}", f"srv**{s.url}"):
            shutil.rmtree(dflt, ignore_errors=True)
            got = Resolver(_quick(text, default_store=dflt)).find_pdb(*_pdb_args(keys))
            assert got is not None and got.is_relative_to(dflt)
        # cache*DIR caches what the elements to its right find
        cdir = tmp_path / "cachestar"
        got = Resolver(_quick(f"cache*{cdir};srv*{c2}")).find_pdb(*_pdb_args(keys))
        assert got is not None and got.is_relative_to(cdir)


def test_offline_and_paths_without_servers_make_no_request(store: tuple[Path, dict],
                                                           tmp_path: Path) -> None:
    root, keys = store
    with SymServer(root) as s:
        assert Resolver(_quick(f"srv*{tmp_path / 'c'}*{s.url}", offline=True)
                        ).find_pdb(*_pdb_args(keys)) is None
        assert Resolver(_quick(f"{tmp_path};srv*{tmp_path / 'c'}")).find_pdb(*_pdb_args(keys)) \
            is None
        assert s.requests == []


def test_compressed_files_on_the_server(store: tuple[Path, dict], tmp_path: Path) -> None:
    if shutil.which("gcab") is None:
        pytest.skip("gcab not installed")
    root, keys = store
    d = root / "amdppm.pdb" / keys["pdb_key"]
    subprocess.run(["gcab", "-c", "-z", "amdppm.pd_", "amdppm.pdb"], cwd=d, check=True)
    original = (d / "amdppm.pdb").read_bytes()
    (d / "amdppm.pdb").unlink()
    with SymServer(root) as s:
        got = Resolver(_quick(f"srv*{tmp_path / 'c'}*{s.url}")).find_pdb(*_pdb_args(keys))
        assert got is not None and got.read_bytes() == original
        assert [p.rsplit("/", 1)[-1] for p in s.requests] == ["amdppm.pdb", "amdppm.pd_"]


def test_404_is_a_miss_and_is_remembered(store: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = store
    with SymServer(root) as s:
        p = _quick(f"srv*{tmp_path / 'c'}*{s.url}")
        assert Resolver(p).find_image("nothere.sys", 0x12345678, 0x1000) is None
        n = len(s.requests)
        assert [r.rsplit("/", 1)[-1] for r in s.requests] == \
            ["nothere.sys", "nothere.sy_", "file.ptr"]  # SymSrv's three requests
        assert Resolver(_quick(f"srv*{tmp_path / 'c'}*{s.url}")
                        ).find_image("nothere.sys", 0x12345678, 0x1000) is None
        assert len(s.requests) == n  # negative cache
        assert Resolver(_quick(f"srv*{tmp_path / 'c'}*{s.url}", negative_ttl=0)
                        ).find_image("nothere.sys", 0x12345678, 0x1000) is None
        assert len(s.requests) == 2 * n


def _pointer_instead_of_pdb(root: Path, keys: dict, text: str) -> Path:
    """Replace the served PDB by a ``file.ptr`` holding ``text`` (as ``symstore add /p`` leaves
    it); returns where the PDB was moved to (``<root>/elsewhere/amdppm.pdb``)."""
    d = root / keys["pdb_name"] / keys["pdb_key"]
    moved = root / "elsewhere" / keys["pdb_name"]
    moved.parent.mkdir()
    (d / keys["pdb_name"]).rename(moved)
    (d / "file.ptr").write_text(text)
    return moved


def test_file_ptr_over_http_relative_url(store: tuple[Path, dict], tmp_path: Path) -> None:
    root, keys = store
    moved = _pointer_instead_of_pdb(root, keys, "PATH:../../elsewhere/amdppm.pdb\r\n")
    with SymServer(root) as s:
        r = Resolver(_quick(f"srv*{tmp_path / 'c'}*{s.url}"))
        got = r.find_pdb(*_pdb_args(keys))
        assert got == tmp_path / "c" / "amdppm.pdb" / keys["pdb_key"] / "amdppm.pdb"
        assert got.read_bytes() == moved.read_bytes()
        assert [p.rsplit("/", 1)[-1] for p in s.requests] == \
            ["amdppm.pdb", "amdppm.pd_", "file.ptr", "amdppm.pdb"]
        assert s.requests[-1] == "/elsewhere/amdppm.pdb"
        assert any("found through file.ptr" in line for line in r.path.log)


def test_file_ptr_over_http_local_path_msg_and_other_host(store: tuple[Path, dict],
                                                          tmp_path: Path) -> None:
    root, keys = store
    d = root / keys["pdb_name"] / keys["pdb_key"]
    moved = _pointer_instead_of_pdb(root, keys, "")
    with SymServer(root) as s:
        # an absolute local path (a share the client mounts): read, verified, cached
        (d / "file.ptr").write_text(f"PATH:{moved}")
        got = Resolver(_quick(f"srv*{tmp_path / 'c1'}*{s.url}")).find_pdb(*_pdb_args(keys))
        assert got is not None and got.is_relative_to(tmp_path / "c1")
        assert got.read_bytes() == moved.read_bytes()
        # a path that is not here (a UNC share): a miss, nothing stored
        (d / "file.ptr").write_text("PATH:\\\\symsrv\\share\\amdppm.pdb")
        assert Resolver(_quick(f"srv*{tmp_path / 'c2'}*{s.url}", negative_ttl=0)
                        ).find_pdb(*_pdb_args(keys)) is None
        assert _files(tmp_path / "c2") == []
        # MSG: the store's reason, as a SymbolError
        (d / "file.ptr").write_text("MSG: withdrawn by the build team")
        with pytest.raises(SymbolError, match="withdrawn by the build team"):
            Resolver(_quick(f"srv*{tmp_path / 'c3'}*{s.url}")).find_pdb(*_pdb_args(keys))
        # another host: refused like a redirect there, unless allowed
        (d / "file.ptr").write_text("PATH:http://elsewhere.invalid/amdppm.pdb")
        n = len(s.requests)
        with pytest.raises(SymbolDownloadError, match="another host"):
            Resolver(_quick(f"srv*{tmp_path / 'c4'}*{s.url}")).find_pdb(*_pdb_args(keys))
        assert len(s.requests) == n + 3  # nothing asked of the other host
        # a wrong file behind the pointer is refused like a wrong file in place
        (d / "file.ptr").write_text("PATH:/etc/hostname")
        if Path("/etc/hostname").is_file():
            with pytest.raises(SymbolMismatchError):
                Resolver(_quick(f"srv*{tmp_path / 'c5'}*{s.url}")).find_pdb(*_pdb_args(keys))
            assert _files(tmp_path / "c5") == []


def test_500_retried_then_error_or_success(store: tuple[Path, dict], tmp_path: Path) -> None:
    root, keys = store
    path = f"/amdppm.sys/{keys['image_key']}/amdppm.sys"
    with SymServer(root) as s:
        s.faults[path] = ("status", 500)
        with pytest.raises(SymbolDownloadError, match="500") as ei:
            Resolver(_quick(f"srv*{tmp_path / 'c'}*{s.url}", retries=2)
                     ).find_image("amdppm.sys", AMDPPM_TS, AMDPPM_SIZE)
        assert ei.value.url.endswith(path)
        assert s.requests.count(path) == 3  # first try + 2 retries, then no more
        assert _files(tmp_path / "c") == []
        s.requests.clear()
        s.faults[path] = ("status_then_ok", (503, 1))
        got = Resolver(_quick(f"srv*{tmp_path / 'c'}*{s.url}", retries=2)
                       ).find_image("amdppm.sys", AMDPPM_TS, AMDPPM_SIZE)
        assert got is not None and s.requests.count(path) == 2


def test_slow_server_times_out(store: tuple[Path, dict], tmp_path: Path) -> None:
    root, keys = store
    path = f"/amdppm.sys/{keys['image_key']}/amdppm.sys"
    with SymServer(root) as s:
        s.faults[path] = ("slow", 3.0)
        with pytest.raises(SymbolDownloadError, match="timed out"):
            Resolver(_quick(f"srv*{tmp_path / 'c'}*{s.url}", timeout=0.5, retries=1)
                     ).find_image("amdppm.sys", AMDPPM_TS, AMDPPM_SIZE)
        assert s.requests.count(path) == 2
        assert _files(tmp_path / "c") == []


def test_truncated_body_is_refused(store: tuple[Path, dict], tmp_path: Path) -> None:
    root, keys = store
    path = f"/amdppm.pdb/{keys['pdb_key']}/amdppm.pdb"
    with SymServer(root) as s:
        s.faults[path] = ("truncate", 5000)
        with pytest.raises(SymbolDownloadError, match="truncated"):
            Resolver(_quick(f"srv*{tmp_path / 'c'}*{s.url}", retries=1)
                     ).find_pdb(*_pdb_args(keys))
        assert _files(tmp_path / "c") == []


def test_wrong_guid_from_server(store: tuple[Path, dict], tmp_path: Path,
                                shared_data: Path) -> None:
    root, keys = store
    d = root / "amdppm.pdb" / keys["pdb_key"]
    shutil.copy(shared_data / "pdb" / "msft" / "user32.pdb", d / "amdppm.pdb")
    from ntdump import _native

    other, _ = _native.pdb_identity(str(shared_data / "pdb" / "msft" / "user32.pdb"))
    with SymServer(root) as s:
        with pytest.raises(SymbolMismatchError) as ei:
            Resolver(_quick(f"srv*{tmp_path / 'c'}*{s.url}")).find_pdb(*_pdb_args(keys))
    msg = str(ei.value)
    assert keys["pdb_key"][:32] in msg and other in msg and s.url in ei.value.source
    assert _files(tmp_path / "c") == []  # never kept


def test_wrong_image_from_server(store: tuple[Path, dict], tmp_path: Path,
                                 shared_data: Path) -> None:
    root, keys = store
    d = root / "amdppm.sys" / keys["image_key"]
    shutil.copy(shared_data / "pe" / "msft" / "Wdf01000.sys", d / "amdppm.sys")
    with SymServer(root) as s, pytest.raises(SymbolMismatchError, match="0xc9c03000"):
        Resolver(_quick(f"srv*{tmp_path / 'c'}*{s.url}")).find_image(
            "amdppm.sys", AMDPPM_TS, AMDPPM_SIZE)
    assert _files(tmp_path / "c") == []


def test_oversized_file_is_refused(store: tuple[Path, dict], tmp_path: Path) -> None:
    root, keys = store
    with SymServer(root) as s:
        with pytest.raises(SymbolDownloadError, match="size cap"):
            Resolver(_quick(f"srv*{tmp_path / 'c'}*{s.url}", max_bytes=100_000)
                     ).find_pdb(*_pdb_args(keys))
        assert _files(tmp_path / "c") == []


def test_redirects(store: tuple[Path, dict], tmp_path: Path) -> None:
    root, keys = store
    path = f"/amdppm.pdb/{keys['pdb_key']}/amdppm.pdb"
    with SymServer(root) as s:
        # same host: followed
        (root / "moved").mkdir()
        shutil.copy(root / path.lstrip("/"), root / "moved" / "amdppm.pdb")
        s.faults[path] = ("redirect", f"{s.url}/moved/amdppm.pdb")
        assert Resolver(_quick(f"srv*{tmp_path / 'a'}*{s.url}")).find_pdb(*_pdb_args(keys))
        # another host (localhost is not 127.0.0.1): refused, nothing fetched from it
        s.faults[path] = ("redirect", f"http://localhost:{s.port}/moved/amdppm.pdb")
        s.requests.clear()
        with pytest.raises(SymbolDownloadError, match="another host"):
            Resolver(_quick(f"srv*{tmp_path / 'b'}*{s.url}")).find_pdb(*_pdb_args(keys))
        assert "/moved/amdppm.pdb" not in s.requests
        assert _files(tmp_path / "b") == []
        # unless allowed
        got = Resolver(_quick(f"srv*{tmp_path / 'c'}*{s.url}", allow_redirects=["localhost"])
                       ).find_pdb(*_pdb_args(keys))
        assert got is not None and "/moved/amdppm.pdb" in s.requests


def test_https_with_verification(store: tuple[Path, dict], tmp_path: Path) -> None:
    pytest.importorskip("cryptography")
    root, keys = store
    cert, key = make_cert(tmp_path)
    with SymServer(root, tls=(cert, key)) as s:
        assert s.url.startswith("https://")
        with pytest.raises(SymbolDownloadError, match=r"TLS|certificate"):
            Resolver(_quick(f"srv*{tmp_path / 'a'}*{s.url}")).find_pdb(*_pdb_args(keys))
        got = Resolver(_quick(f"srv*{tmp_path / 'b'}*{s.url}", ca_file=str(cert))
                       ).find_pdb(*_pdb_args(keys))
        assert got is not None and got.stat().st_size > 600_000


_WORKER = r"""
import sys
from ntdump.symbols import Resolver, SymbolPath
p = SymbolPath(sys.argv[1], timeout=10, retries=3, backoff=0.05)
r = Resolver(p)
a = r.find_image("amdppm.sys", 0xC9C03000, 0x3B000)
b = r.find_pdb(sys.argv[2], sys.argv[3], int(sys.argv[4]))
print(a, b)
"""


def test_four_processes_share_one_cache(store: tuple[Path, dict], tmp_path: Path,
                                        shared_data: Path) -> None:
    root, keys = store
    cache = tmp_path / "shared-cache"
    name, guid, age = _pdb_args(keys)
    with SymServer(root) as s:
        procs = [subprocess.Popen([sys.executable, "-c", _WORKER, f"srv*{cache}*{s.url}",
                                   name, guid, str(age)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(4)]
        outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert "amdppm.sys" in out and "amdppm.pdb" in out
    files = _files(cache)
    assert [f.name for f in files] == ["amdppm.pdb", "amdppm.sys"]  # no leftovers
    assert files[0].read_bytes() == (shared_data / "pdb" / "msft" / "amdppm.pdb").read_bytes()
    assert files[1].read_bytes() == (shared_data / "pe" / "msft" / "amdppm.sys").read_bytes()


def _oracle_function(pdb: Path, rva: int) -> tuple[str, int]:
    """The function public at or below ``rva``, by llvm-pdbutil (not ntdump)."""
    from test_pdb_oracle import llvm_publics

    best = max(((r, n) for n, r, fn in llvm_publics(pdb) if fn and r <= rva), default=None)
    assert best is not None
    return best[1], rva - best[0]


def test_triage_end_to_end_names_the_faulting_function(store: tuple[Path, dict],
                                                       tmp_path: Path, triage_dump: Path,
                                                       shared_data: Path,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    if shutil.which("llvm-pdbutil") is None:
        pytest.skip("llvm-pdbutil not installed (Debian package llvm)")
    root, keys = store
    with ntdump.open(triage_dump, symbols="") as d:
        m = d.modules["amdppm"]
        fault = d.info.bugcheck_params[1]
        rva = fault - m.base
        # the dump alone cannot name it: no image pages, so no RSDS record
        assert d.ln(fault) == f"amdppm+{rva:#x}"
    fn, off = _oracle_function(shared_data / "pdb" / "msft" / "amdppm.pdb", rva)
    with SymServer(root) as s:
        from ntdump.cli import main

        sp = f"srv*{tmp_path / 'cache'}*{s.url}"
        assert main(["triage", str(triage_dump), "--symbols", sp]) == 0
        out = capsys.readouterr().out
        assert f"= amdppm!{fn}+{off:#x}" in out
        # what was fetched, in order: the image by time stamp and size, then the PDB of its RSDS
        # (triage's !vm also asks for the kernel's files, which this server does not have)
        assert [r for r in s.requests if "amdppm" in r] == [
            f"/amdppm.sys/{keys['image_key']}/amdppm.sys",
            f"/amdppm.pdb/{keys['pdb_key']}/amdppm.pdb"]
        # beyond amdppm: only modules of the crash stack (the walker fetches their images for
        # unwind data) and the kernel's files
        with ntdump.open(triage_dump, symbols="") as d:
            on_stack = {str(m).lower() for m in d.stack()["module"].dropna()}
            files = {m.name.lower().rsplit(".", 1)[0] for m in d.modules
                     if m.kd_name.lower() in on_stack}
        other = [r for r in s.requests if "amdppm" not in r and "ntoskrnl" not in r]
        assert all(r.split("/")[1].lower().rsplit(".", 1)[0] in files for r in other), other
        n_after_triage = len(s.requests)
        with ntdump.open(triage_dump, symbols=sp) as d:
            assert d.ln(fault) == f"amdppm!{fn}+{off:#x}"
            assert d.symbol(f"amdppm!{fn}") == fault - off
            rl = d.reload("amdppm")
            assert rl["how"].iloc[0] == "image from store, then its rsds"
            assert d.image_bytes("amdppm")[:2] == b"MZ"
            assert len(d.image_bytes("amdppm")) == AMDPPM_SIZE
            x = d.symbols(f"amdppm!{fn}")
            assert list(x["address"]) == [fault - off] and list(x["source"]) == ["pdb"]
            assert d.ln_source(fault).startswith("pdb ") and "amdppm.pdb" in d.ln_source(fault)
            stack = d.dps(d.info.context["rsp"], 4)
            assert "source" in stack.columns
        # all later lookups from the cache (and nt's miss from the negative cache)
        assert len(s.requests) == n_after_triage


def test_open_honours_environment(store: tuple[Path, dict], tmp_path: Path, triage_dump: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = store
    with SymServer(root) as s:
        monkeypatch.setenv("_NT_SYMBOL_PATH", f"srv*{tmp_path / 'c'}*{s.url}")
        with ntdump.open(triage_dump) as d:
            assert d.symbol_path.servers == [s.url]
            assert "!" in d.ln(d.info.bugcheck_params[1])
        with ntdump.open(triage_dump, offline=True) as d:
            d.set_symbol_path(f"srv*{tmp_path / 'other'}*{s.url}", offline=True)
            assert "!" not in d.ln(d.info.bugcheck_params[1])
        assert len(s.requests) == 2


def test_kd_sympath_and_reload(store: tuple[Path, dict], tmp_path: Path,
                               triage_dump: Path) -> None:
    from ntdump.kd import KdSession

    root, _ = store
    with SymServer(root) as s, ntdump.open(triage_dump, symbols="") as d:
        k = KdSession(d)
        assert "Symbol search path is: <empty>" in k.run(".sympath")
        out = k.run(f".sympath srv*{tmp_path / 'c'}*{s.url}")
        assert f"Symbol search path is: srv*{tmp_path / 'c'}*{s.url}" in out
        out = k.run(".reload amdppm.sys")
        assert "amdppm" in out and "symbols from" in out
        assert "amdppm!" in k.run(f"ln {d.info.bugcheck_params[1]:x}")
        assert "+0x070 MajorFunction    : [28] Ptr64 Void" in k.run("dt amdppm!_DRIVER_OBJECT")
        with pytest.raises(SymbolError):
            d.type_info("amdppm!_NO_SUCH_TYPE")


def test_image_from_the_store_serves_exports(shared_data: Path, tmp_path: Path) -> None:
    """A driver none of whose pages are in the dump: its image is fetched by time stamp and size
    and its exports answer ``x`` (checked against pefile's export table of the file)."""
    import pefile

    from ntdump.forge import scenario

    src = shared_data / "pe" / "wine-x86_64" / "hidparse.sys"
    pe = pefile.PE(str(src))
    size, ts = pe.OPTIONAL_HEADER.SizeOfImage, pe.FILE_HEADER.TimeDateStamp
    s = scenario.wine_drivers(tmp_path / "w.dmp", "x86_64", wine_dir=shared_data,
                              missing_pages={"hidparse.sys": list(range(0, size, 0x1000))})
    root = tmp_path / "server"
    (root / "hidparse.sys" / f"{ts:08X}{size:x}").mkdir(parents=True)
    shutil.copy(src, root / "hidparse.sys" / f"{ts:08X}{size:x}" / "hidparse.sys")
    exports = [(e.name.decode(), e.address) for e in pe.DIRECTORY_ENTRY_EXPORT.symbols if e.name]
    assert len(exports) > 10
    with SymServer(root) as srv:
        with ntdump.open(s.path, symbols="") as d:
            with pytest.raises(SymbolError):
                d.symbol(f"hidparse!{exports[0][0]}")
        with ntdump.open(s.path, symbols=f"srv*{tmp_path / 'c'}*{srv.url}") as d:
            base = d.modules["hidparse"].base
            for name, rva in exports:
                assert d.symbol(f"hidparse!{name}") == base + rva
            assert d.ln_source(base + exports[0][1]).startswith("image ")
            assert d.image_bytes("hidparse", mapped=False) == src.read_bytes()


def test_redirect_handler_is_harmless_to_other_openers() -> None:
    """Volatility 3 builds its opener from every urllib handler class with no arguments."""
    import urllib.request

    from ntdump.symbols.http import _Redirects

    h = _Redirects()
    assert h.origin is None
    urllib.request.build_opener(_Redirects)


def test_vm_asks_for_the_kernel_symbols_once(store: tuple[Path, dict], tmp_path: Path,
                                            triage_dump: Path) -> None:
    """!vm loads nt's symbols first (WinDbg does): on the triage dump, nt's debug directory is not
    captured, so the kernel image is asked for by time stamp and size, once."""
    root, _ = store
    with SymServer(root) as s, ntdump.open(triage_dump, symbols=f"srv*{tmp_path / 'c'}*{s.url}"
                                           ) as d:
        nt = d.modules["nt"]
        d.vm()
        d.vm()
        want = f"/{nt.name}/{nt.timestamp:08X}{nt.size:x}/{nt.name}"
        assert s.requests.count(want) == 1
        assert "no image" in d.reload("nt")["error"].iloc[0]


def test_proxy_from_the_environment(store: tuple[Path, dict], tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """http_proxy is honoured: the request for a server that does not exist reaches the
    loopback server as a proxy request (absolute URL)."""
    root, keys = store
    for v in ("no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(v, raising=False)
    with SymServer(root) as s:
        monkeypatch.setenv("http_proxy", s.url)
        got = Resolver(_quick(f"srv*{tmp_path / 'c'}*http://symbols.example.invalid")
                       ).find_pdb(*_pdb_args(keys))
        assert got is not None
        assert s.proxied == [f"http://symbols.example.invalid/amdppm.pdb/{keys['pdb_key']}"
                             "/amdppm.pdb"]


def test_a_failing_server_does_not_hide_the_next_one(store: tuple[Path, dict],
                                                     tmp_path: Path) -> None:
    root, keys = store
    path = f"/amdppm.pdb/{keys['pdb_key']}/amdppm.pdb"
    with SymServer(root) as bad, SymServer(root) as good:
        bad.faults[path] = ("status", 503)
        got = Resolver(_quick(f"srv*{tmp_path / 'a'}*{bad.url};srv*{tmp_path / 'b'}*{good.url}",
                              retries=1)).find_pdb(*_pdb_args(keys))
        assert got is not None and got.is_relative_to(tmp_path / "b")
        assert bad.requests.count(path) == 2 and good.requests == [path]


def test_progress_bar_for_large_files(store: tuple[Path, dict], tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Bodies over ``progress_min`` bytes get a tqdm bar (total = Content-Length); smaller ones
    none."""
    import tqdm

    bars: list[dict] = []

    class Recorder:
        def __init__(self, **kw: object) -> None:
            self.kw = kw
            self.n = 0
            bars.append({"kw": kw, "bar": self})

        def update(self, k: int) -> None:
            self.n += k

        def close(self) -> None:
            pass

    monkeypatch.setattr(tqdm, "tqdm", Recorder)
    root, keys = store
    with SymServer(root) as s:
        Resolver(_quick(f"srv*{tmp_path / 'a'}*{s.url}", progress_min=1 << 30)
                 ).find_pdb(*_pdb_args(keys))
        assert bars == []
        got = Resolver(_quick(f"srv*{tmp_path / 'b'}*{s.url}", progress_min=100_000)
                       ).find_pdb(*_pdb_args(keys))
    assert got is not None and len(bars) == 1
    size = got.stat().st_size
    assert bars[0]["kw"]["total"] == size and bars[0]["bar"].n == size


def test_stack_gets_images_from_the_symbol_path(store: tuple[Path, dict], tmp_path: Path,
                                                triage_dump: Path, shared_data: Path) -> None:
    """The stack walker unwinds through amdppm.sys and Wdf01000.sys when the symbol path serves
    their images, exactly as when the files are handed to it (docs/stack.md)."""
    root, _ = store
    wdf = shared_data / "pe" / "msft" / "Wdf01000.sys"
    import pefile

    pe = pefile.PE(str(wdf), fast_load=True)
    key = f"{pe.FILE_HEADER.TimeDateStamp:08X}{pe.OPTIONAL_HEADER.SizeOfImage:x}"
    (root / "Wdf01000.sys" / key).mkdir(parents=True)
    shutil.copy(wdf, root / "Wdf01000.sys" / key / "Wdf01000.sys")
    amd = shared_data / "pe" / "msft" / "amdppm.sys"
    with ntdump.open(triage_dump, symbols="") as d:
        plain = d.stack()
        given = d.stack(images={"amdppm.sys": str(amd), "Wdf01000.sys": str(wdf)})
    assert list(given["how"]) != list(plain["how"])  # the images change the walk
    with SymServer(root) as s, ntdump.open(triage_dump,
                                           symbols=f"srv*{tmp_path / 'c'}*{s.url}") as d:
        fetched = d.stack()
        assert any("/Wdf01000.sys/" in r for r in s.requests)
    cols = ["sp", "return_address", "module", "how"]
    assert fetched[cols].astype(str).equals(given[cols].astype(str))
    # and the symbol path names amdppm's frames from its PDB
    assert any(str(x).startswith("amdppm!") for x in fetched["symbol"])


def test_nb10_module_is_named_not_fetched(store: tuple[Path, dict], tmp_path: Path) -> None:
    """An NB10 record names a PDB 2.0 file, which ntdump cannot read: the module's error says so
    and no request is made for it."""
    root, _ = store
    cv = {"format": "NB10", "pdb_name": "old.pdb", "key": "3A1B2C3D2", "age": 2, "guid": None}
    with SymServer(root) as s:
        mf = Resolver(_quick(f"srv*{tmp_path / 'c'}*{s.url}")).module(
            "old", "old.sys", 0x3A1B2C3D, 0x5000, cv)
        assert mf.pdb is None and mf.pdb_key == "3A1B2C3D2"
        assert mf.error is not None and "PDB 2.0" in mf.error and "old.pdb" in mf.error
        assert s.requests == []
