"""PE images read from dump memory, judged by pefile reading the original files.

Every PE file of the shared data (Wine x86_64 and i386, Microsoft, WinPmem, corkami) is laid
out in memory order (by pefile's ``get_memory_mapped_image``, the outside implementation; images
with a section alignment below a page are mapped flat, as Windows maps them), mapped into a
forged dump (x64 files into an x64 dump, x86 files into a PAE dump) and read back through the
page tables. Imports (DLL, function, IAT RVA), exports (name, ordinal, RVA), sections and the
CodeView record must equal what pefile reads from the file itself, with goblin and with
ntdump's own bounded readers.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest

import ntdump
from ntdump import _native, forge
from ntdump.pe import PdbInfo, not_on_disk_reasons, pe_image

pefile = pytest.importorskip("pefile")

FOLDERS = ("wine-x86_64", "wine-i386", "msft", "winpmem", "corkami")
BASES = {"x64": 0xFFFFF80400000000, "x86": 0x80800000}
SPACING = 0x400000
#: Pages (RVAs) left unmapped, as if INIT had been discarded: the import descriptors, ILT and
#: hint/name table of these drivers live in INIT, their IATs in .rdata.
MISSING = {"winpmem_x64.sys": (0xD000,), "winpmem_x86.sys": (0x7000, 0x8000)}
#: The value written into IAT slot i of a "bound" image: a fake kernel address.
BOUND = {"x64": 0xFFFFF80012340000, "x86": 0x80123000}


def _page_up(n: int) -> int:
    return -(-n // 0x1000) * 0x1000


def memory_image(raw: bytes, base: int) -> bytes:
    """``raw`` laid out at its RVAs (relocated to ``base``), padded to whole pages."""
    pe = pefile.PE(data=raw)
    size = _page_up(pe.OPTIONAL_HEADER.SizeOfImage)
    if pe.OPTIONAL_HEADER.SectionAlignment < 0x1000:
        img = raw[: max(size, _page_up(len(raw)))]  # flat: the file is the image
        size = max(size, _page_up(len(raw)))
    else:
        img = pe.get_memory_mapped_image(ImageBase=base)
    return bytes(img[:size]).ljust(size, b"\0")


def pe_files(shared: Path) -> list[Path]:
    out = []
    for folder in FOLDERS:
        out += sorted(p for p in (shared / "pe" / folder).iterdir() if p.is_file())
    return out


def arch_of(raw: bytes) -> str:
    pe = pefile.PE(data=raw, fast_load=True)
    return "x64" if pe.FILE_HEADER.Machine == 0x8664 else "x86"


class Mapped:
    """One forged dump per arch holding every PE file of that arch at its own base."""

    def __init__(self, shared: Path, tmp: Path) -> None:
        self.files: dict[str, dict[str, Any]] = {}
        self.dumps: dict[str, ntdump.Dump] = {}
        groups: dict[str, list[Path]] = {"x64": [], "x86": []}
        for p in pe_files(shared):
            groups[arch_of(p.read_bytes())].append(p)
        for arch, paths in groups.items():
            mem = forge.PhysicalMemory([(0x1, 0x9F), (0x100, 0x8000 - 0x100)])
            pt = forge.PageTables(mem, "x64" if arch == "x64" else "pae")
            for i, p in enumerate(paths):
                raw = p.read_bytes()
                base = BASES[arch] + i * SPACING
                img = bytearray(memory_image(raw, base))
                bound = p.name in MISSING
                if bound:  # bind the IAT the way the loader would (fake addresses)
                    pe = pefile.PE(data=raw)
                    w = 8 if arch == "x64" else 4
                    for n, (rva, _) in enumerate(_iat_slots(pe)):
                        img[rva:rva + w] = (BOUND[arch] + 16 * n).to_bytes(w, "little")
                missing = MISSING.get(p.name, ())
                for off in range(0, len(img), 0x1000):
                    if off not in missing:
                        pt.map_data(base + off, bytes(img[off:off + 0x1000]))
                key = f"{p.parent.name}/{p.name}"
                self.files[key] = {"path": p, "raw": raw, "base": base, "arch": arch,
                                   "size": len(img), "missing": missing, "bound": bound}
            hdr = forge.Header(machine=arch, pae=arch == "x86", dtb=pt.dtb)
            path = tmp / f"pe_{arch}.dmp"
            forge.write_full(path, mem, hdr)
            self.dumps[arch] = ntdump.open(path)

    def image(self, key: str, goblin: bool = True) -> Any:
        f = self.files[key]
        return _native.pe_image(self.dumps[f["arch"]]._d, f["base"], f["size"], goblin=goblin)


def _iat_slots(pe: Any) -> list[tuple[int, Any]]:
    """(IAT RVA, pefile import) of every import of ``pe``, in table order."""
    out = []
    for ent in getattr(pe, "DIRECTORY_ENTRY_IMPORT", []):
        for imp in ent.imports:
            out.append((imp.address - pe.OPTIONAL_HEADER.ImageBase, imp))
    return out


@pytest.fixture(scope="module")
def mapped(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Mapped:
    return Mapped(shared_data, tmp_path_factory.mktemp("pe"))


def _keys(shared: Path) -> list[str]:
    return [f"{p.parent.name}/{p.name}" for p in pe_files(shared)] if shared.is_dir() else []


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "key" in metafunc.fixturenames:
        from conftest import data_dir

        keys = _keys(data_dir())
        metafunc.parametrize("key", keys or [pytest.param("none", marks=pytest.mark.skip(
            reason="shared PE data not found"))])


@pytest.mark.parametrize("goblin", [True, False], ids=["goblin", "own"])
def test_matches_pefile(mapped: Mapped, key: str, goblin: bool) -> None:
    f = mapped.files[key]
    pe = pefile.PE(data=f["raw"])
    img = mapped.image(key, goblin)
    assert img.base == f["base"]
    assert sorted(img.missing_pages) == sorted(f["missing"])
    expect_parser = "goblin" if goblin else "own"
    if key != "corkami/tinydrivXP.sys":  # goblin refuses e_lfanew 4 (DOS stub before the header)
        assert img.parsers["headers"] == expect_parser

    # Headers.
    h = img.headers()
    assert h["e_lfanew"] == pe.DOS_HEADER.e_lfanew
    assert h["file"]["machine"] == pe.FILE_HEADER.Machine
    assert h["file"]["time_date_stamp"] == pe.FILE_HEADER.TimeDateStamp
    assert h["file"]["characteristics"] == pe.FILE_HEADER.Characteristics
    o = pe.OPTIONAL_HEADER
    assert h["optional"]["size_of_image"] == o.SizeOfImage
    assert h["optional"]["checksum"] == o.CheckSum
    assert h["optional"]["address_of_entry_point"] == o.AddressOfEntryPoint
    assert h["optional"]["subsystem"] == o.Subsystem
    ndirs = min(o.NumberOfRvaAndSizes, 16)
    assert [(d[2], d[3]) for d in h["directories"]] == [
        (d.VirtualAddress, d.Size) for d in o.DATA_DIRECTORY[:ndirs]]

    # Sections.
    s = img.sections()
    ours = list(zip(s["name"], s["virtual_address"], s["virtual_size"], s["raw_size"],
                    s["characteristics"], strict=True))
    theirs = [(x.Name.rstrip(b"\0").decode("latin-1"), x.VirtualAddress, x.Misc_VirtualSize,
               x.SizeOfRawData, x.Characteristics) for x in pe.sections]
    assert ours == theirs

    # Exports.
    e = img.exports()
    got = set()
    if e is not None:
        c = e["columns"]
        got = set(zip(c["name"], c["ordinal"], c["rva"], strict=True))
    want = set()
    if hasattr(pe, "DIRECTORY_ENTRY_EXPORT"):
        want = {(x.name.decode() if x.name else None, x.ordinal, x.address)
                for x in pe.DIRECTORY_ENTRY_EXPORT.symbols}
        fw = {(x.name.decode() if x.name else None, x.ordinal): x.forwarder.decode()
              for x in pe.DIRECTORY_ENTRY_EXPORT.symbols if x.forwarder}
        assert {(n, o): f for n, o, f in zip(c["name"], c["ordinal"], c["forwarder"],
                                              strict=True) if f} == fw
    assert got == want

    # Imports: (dll, function or ordinal, IAT RVA) and, for bound images, the value in the slot.
    i = img.imports()
    slots = _iat_slots(pe)
    if f["missing"]:
        # The descriptors, ILT and names are gone: every IAT slot, no names, the bound values.
        assert set(i["source"]) == {"iat directory"}
        assert set(i["name"]) == {None} and set(i["dll"]) == {None}
        want_v = {rva: BOUND[f["arch"]] + 16 * n for n, (rva, _) in enumerate(slots)}
        assert dict(zip(i["iat_rva"], i["value"], strict=True)) == want_v
    else:
        got_i = {(d.lower(), n if n is not None else o, r)
                 for d, n, o, r in zip(i["dll"], i["name"], i["ordinal"], i["iat_rva"],
                                       strict=True)}
        want_i = {(ent.dll.decode().lower(), imp.name.decode() if imp.name else imp.ordinal,
                   imp.address - o.ImageBase)
                  for ent in getattr(pe, "DIRECTORY_ENTRY_IMPORT", []) for imp in ent.imports}
        assert got_i == want_i
        assert len(i["iat_rva"]) == len(want_i)

    # CodeView.
    cv = img.codeview()
    want_cv = None
    for dbg in getattr(pe, "DIRECTORY_ENTRY_DEBUG", []):
        if dbg.struct.Type == 2 and dbg.entry is not None:
            want_cv = dbg.entry
            break
    if want_cv is None:
        assert cv is None
    else:
        assert cv["format"].encode() == want_cv.CvSignature
        assert cv["age"] == want_cv.Age
        assert cv["path"] == want_cv.PdbFileName.rstrip(b"\0").decode()
        if cv["format"] == "RSDS":
            # pefile splits Data4 into Data4 (1 byte), Data5 (1 byte), Data6 (6 bytes).
            d4 = bytes([want_cv.Signature_Data4, want_cv.Signature_Data5]).hex().upper()
            d6 = want_cv.Signature_Data6.hex().upper()
            guid = (f"{{{want_cv.Signature_Data1:08X}-{want_cv.Signature_Data2:04X}-"
                    f"{want_cv.Signature_Data3:04X}-{d4}-{d6}}}")
            assert cv["guid"] == guid
            key = guid.strip("{}").replace("-", "") + f"{want_cv.Age:X}"
            assert cv["key"] == key
            name = cv["path"].replace("/", "\\").rsplit("\\", 1)[-1]
            assert cv["store_path"] == f"{name}/{key}/{name}"


def test_goblin_is_primary(mapped: Mapped) -> None:
    """goblin reads every part of every well-formed image; tinydrivXP (e_lfanew 4, which goblin
    rejects) falls back to the own readers with a warning."""
    img = mapped.image("wine-x86_64/ntoskrnl.exe")
    assert img.parsers == {"headers": "goblin", "sections": "goblin", "exports": "goblin",
                           "debug": None}
    tiny = mapped.image("corkami/tinydrivXP.sys")
    assert tiny.parsers["headers"] == "own"
    assert any("goblin refused the headers" in w for w in tiny.warnings)


def test_msft_codeview(mapped: Mapped) -> None:
    """amdppm.sys names its PDB: the key must be the one the symbol server serves."""
    cv = mapped.image("msft/amdppm.sys").codeview()
    assert cv["pdb_name"] == "amdppm.pdb"
    assert len(cv["key"]) >= 33 and cv["key"] == cv["key"].upper()


# -- bad input ---------------------------------------------------------------------------------

def _tiny_pe(*, is64: bool = True, nsections: int = 1, ndirs: int = 16, size_of_image: int = 0x3000,
             lfanew: int = 0x80, dirs: dict[int, tuple[int, int]] | None = None) -> bytearray:
    """A minimal image laid out in memory order (3 pages): headers, one section at 0x1000."""
    img = bytearray(0x3000)
    img[0:2] = b"MZ"
    struct.pack_into("<I", img, 0x3C, lfanew)
    img[lfanew:lfanew + 4] = b"PE\0\0"
    opt_size = 0xF0 if is64 else 0xE0
    struct.pack_into("<HHIIIHH", img, lfanew + 4, 0x8664 if is64 else 0x14C, nsections, 0, 0, 0,
                     opt_size, 0x22)
    o = lfanew + 0x18
    struct.pack_into("<H", img, o, 0x20B if is64 else 0x10B)
    struct.pack_into("<II", img, o + 0x20, 0x1000, 0x200)
    struct.pack_into("<II", img, o + 0x38, size_of_image, 0x400)
    dd = o + (0x70 if is64 else 0x60)
    struct.pack_into("<I", img, dd - 4, ndirs)
    for index, (rva, size) in (dirs or {}).items():
        struct.pack_into("<II", img, dd + 8 * index, rva, size)
    sec = o + opt_size
    img[sec:sec + 8] = b".text\0\0\0"
    struct.pack_into("<IIII", img, sec + 8, 0x1000, 0x1000, 0x1000, 0x400)
    return img


def test_tiny_pe_parses() -> None:
    img = _native.pe_parse(0xFFFFF80000000000, bytes(_tiny_pe()))
    assert img.sections()["name"] == [".text"]
    assert img.warnings == []
    assert img.exports() is None and img.imports()["name"] == []


@pytest.mark.parametrize("goblin", [True, False], ids=["goblin", "own"])
@pytest.mark.parametrize("case", [
    "absurd sections", "absurd directories", "export counts", "export rvas", "import rvas",
    "import loop", "debug size", "debug rva", "directory past image", "iat dir huge",
])
def test_bad_tables_give_warnings(case: str, goblin: bool) -> None:
    base = 0xFFFFF80000000000
    kw: dict[str, Any] = {}
    img = _tiny_pe()
    if case == "absurd sections":
        img = _tiny_pe(nsections=0xFFFF)
    elif case == "absurd directories":
        img = _tiny_pe(ndirs=0xFFFFFFFF)
    elif case in ("export counts", "export rvas"):
        img = _tiny_pe(dirs={0: (0x2000, 0x28)})
        vals = (0xFFFFFFFF, 0xFFFFFFFF, 0x2100, 0x2100, 0x2100) if case == "export counts" \
            else (10, 10, 0xFFFFFFF0, 0x7FFFFFFF, 0x2FFE)
        struct.pack_into("<IIIII", img, 0x2000 + 0x14, *vals)
    elif case == "import rvas":
        img = _tiny_pe(dirs={1: (0x2000, 40)})
        struct.pack_into("<IIIII", img, 0x2000, 0x7FFFFFFF, 0, 0, 0xFFFFFFFF, 0x2FFC)
    elif case == "import loop":
        # Descriptors all over the last page and an IAT with no terminator.
        img = _tiny_pe(dirs={1: (0x2000, 0x1000)})
        for k in range(0x2000, 0x3000 - 20, 20):
            struct.pack_into("<IIIII", img, k, 0x2008, 0, 0, 0x2000, 0x2000)
    elif case == "debug size":
        img = _tiny_pe(dirs={6: (0x2000, 0xFFFFFFFF)})
    elif case == "debug rva":
        img = _tiny_pe(dirs={6: (0x2000, 28)})
        struct.pack_into("<IIHHIIII", img, 0x2000, 0, 0, 0, 0, 2, 0xFFFFFFFF, 0x2FF0, 0)
        img[0x2FF0:0x2FF4] = b"RSDS"
    elif case == "directory past image":
        img = _tiny_pe(dirs={0: (0xFFFFFF00, 0x1000), 1: (0x2FFF, 0x100), 6: (0x2FF0, 0x100)})
    elif case == "iat dir huge":
        img = _tiny_pe(dirs={12: (0x1000, 0xFFFFFFFF)})
    parsed = _native.pe_parse(base, bytes(img), goblin=goblin, **kw)
    assert parsed.warnings, case
    assert len(parsed.imports()["iat_rva"]) <= 0x3000


@pytest.mark.parametrize("case", ["empty", "mz only", "no pe", "lfanew huge", "lfanew past end",
                                  "bad magic", "cut optional header"])
def test_bad_headers_raise(case: str) -> None:
    img = _tiny_pe()
    if case == "empty":
        img = bytearray(0x1000)
    elif case == "mz only":
        img = bytearray(b"MZ" + bytes(0xFFE))
    elif case == "no pe":
        img[0x80:0x84] = b"XX\0\0"
    elif case == "lfanew huge":
        struct.pack_into("<I", img, 0x3C, 0xFFFFFFF0)
    elif case == "lfanew past end":
        struct.pack_into("<I", img, 0x3C, 0x2FFE)
        img = img[:0x3000]
    elif case == "bad magic":
        struct.pack_into("<H", img, 0x98, 0x1234)
    elif case == "cut optional header":
        img = img[:0x9C]
    with pytest.raises(ntdump.PeFormatError):
        _native.pe_parse(0x80000000, bytes(img))


def test_headers_on_missing_page_raise() -> None:
    with pytest.raises(ntdump.PeFormatError):
        _native.pe_parse(0x80000000, bytes(_tiny_pe()), [0])


def _dump_with(tmp: Path, pages: dict[int, bytes], arch: str = "x64",
               unmapped: tuple[int, ...] = ()) -> ntdump.Dump:
    mem = forge.PhysicalMemory([(0x1, 0x9F), (0x100, 0x2000)])
    pt = forge.PageTables(mem, "x64" if arch == "x64" else "pae")
    for va, data in pages.items():
        if va not in unmapped:
            pt.map_data(va, data)
    path = tmp / f"bad_{arch}.dmp"
    forge.write_full(path, mem, forge.Header(machine=arch, pae=arch == "x86", dtb=pt.dtb))
    return ntdump.open(path)


def test_huge_size_of_image_is_capped(tmp_path: Path) -> None:
    """SizeOfImage of 3 GiB: read 256 MiB at most (a warning says so); the size hint wins when
    it is sane."""
    base = 0xFFFFF80000000000
    img = _tiny_pe(size_of_image=0xC0000000)
    d = _dump_with(tmp_path, {base + o: bytes(img[o:o + 0x1000]) for o in range(0, 0x3000, 0x1000)})
    capped = _native.pe_image(d._d, base)
    assert capped.size == 256 << 20
    assert any("ceiling" in w for w in capped.warnings)
    assert len(capped.missing_pages) == (256 << 20) // 0x1000 - 3
    hinted = _native.pe_image(d._d, base, 0x3000)
    assert hinted.size == 0x3000 and hinted.missing_pages == []
    assert any("differs from the module list" in w for w in hinted.warnings)


def test_unmapped_pages_are_zeros(tmp_path: Path) -> None:
    base = 0x80800000
    img = _tiny_pe(is64=False)
    pages = {base + o: bytes(img[o:o + 0x1000]) for o in range(0, 0x3000, 0x1000)}
    d = _dump_with(tmp_path, pages, "x86", unmapped=(base + 0x1000,))
    got = _native.pe_image(d._d, base)
    assert got.missing_pages == [0x1000]
    with pytest.raises(ntdump.PeFormatError, match="not readable"):
        _native.pe_image(d._d, base + 0x1000)
    with pytest.raises(ntdump.PeFormatError, match="page aligned"):
        _native.pe_image(d._d, base + 0x10)


def test_random_corruption_never_crashes(mapped: Mapped) -> None:
    """2,000 images with random bytes of their first page and tables overwritten: each parses or
    raises PeFormatError."""
    import random

    rnd = random.Random(1234)
    f = mapped.files["msft/amdppm.sys"]
    clean = memory_image(f["raw"], 0xFFFFF80000000000)
    for _ in range(2000):
        img = bytearray(clean[:0x20000])
        for _ in range(rnd.randint(1, 12)):
            at = rnd.choice((rnd.randrange(0, 0x400), rnd.randrange(0x1B000, 0x1C000),
                             rnd.randrange(0xF000, 0x13000)))
            img[at:at + 4] = rnd.randbytes(4)
        try:
            p = _native.pe_parse(0xFFFFF80000000000, bytes(img), goblin=rnd.random() < 0.5)
        except ntdump.PeFormatError:
            continue
        p.sections(), p.exports(), p.imports(), p.debug(), p.codeview(), p.headers()


# -- Python objects ------------------------------------------------------------------------------

def test_not_on_disk_reasons() -> None:
    guid = "{0D7C2A19-5E34-4B8A-8F21-6A9E3C4D7B10}.sys"
    assert len(not_on_disk_reasons(guid, "\\??\\C:\\ProgramData\\Vendor\\" + guid)) == 2
    assert not_on_disk_reasons("amdppm.sys", "\\SystemRoot\\System32\\drivers\\amdppm.sys") == []
    assert not_on_disk_reasons("x.sys", "\\??\\C:\\Windows\\system32\\drivers\\x.sys") == []
    assert not_on_disk_reasons("x.sys", "\\Device\\HarddiskVolume2\\Windows\\x.sys") == []
    assert not_on_disk_reasons("x.sys", "") == []
    assert len(not_on_disk_reasons("x.sys", "\\??\\C:\\Users\\a\\x.sys")) == 1


def test_pe_image_cached_per_dump(mapped: Mapped) -> None:
    f = mapped.files["msft/amdppm.sys"]
    d = mapped.dumps["x64"]
    a = pe_image(d, f["base"], f["size"])
    assert pe_image(d, f["base"], f["size"]) is a
    assert isinstance(PdbInfo("a.pdb", None, 1, "K", "a.pdb", "NB10", 5).store_path, str)
