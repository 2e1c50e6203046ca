"""forge.pe (the PE writer) and forge.image (the PE reader) judged by pefile, an outside parser.

Every file build_driver / build_kernel / build_hal writes is parsed by pefile: headers,
sections, imports (DLL, name or ordinal, IAT address), exports (name, ordinal, RVA,
forwarders), the CodeView RSDS record, base relocations and the PE checksum must be what was
asked. The forge's own parser is compared with pefile on those files and on every real PE file
in shared/data/pe.
"""

from __future__ import annotations

import struct
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from oracles import import_forge, require

forge = import_forge()
pe_mod = forge.pe
image_mod = forge.image

GUID = uuid.UUID("6b1a3e41-8c52-4e0f-9a3d-2c7f1b9e0d55")
IMPORTS = {"ntoskrnl.exe": ["ExFreePoolWithTag", "_wcsnicmp", "ExAllocatePool", 7,
                            "KeInitializeEvent"],
           "HAL.dll": ["KfRaiseIrql", "KeGetCurrentIrql"]}


@pytest.fixture(scope="module")
def pefile():
    require("pefile")
    import pefile

    return pefile


def _driver(machine: str, **kw) -> bytes:
    args = dict(machine=machine, image_base=0x140000000 if machine == "x64" else 0x10000,
                imports=IMPORTS, exports=["DrvA", "DrvB", "DrvC"],
                data_exports={"DrvTable": 16}, forwarders={"DrvFwd": "ntoskrnl.exe.KeSetEvent"},
                fixed_rvas={"DrvFixed": 0x3051}, pool_tags=[b"Leak", b"Tag2"],
                rsds=(GUID.bytes_le, 3, "judged.pdb"), timestamp=0x5F3E2A1B,
                code=b"\x90" * 40, data=b"forge data",
                sections=[pe_mod.Section("PAGE", b"\xc3" * 100, pe_mod.CODE),
                          pe_mod.Section("INIT", b"\xc3" * 50,
                                         pe_mod.CODE | pe_mod.DISCARDABLE)])
    args.update(kw)
    return pe_mod.build_driver("judged.sys", **args)


def _warnings(pe) -> list[str]:
    return [w for w in pe.get_warnings() if "makes up" not in w]  # zero-byte ratio note


@pytest.mark.parametrize("machine", ["x64", "x86"])
def test_pefile_judges_headers_and_sections(pefile, machine):
    data = _driver(machine)
    pe = pefile.PE(data=data)
    assert _warnings(pe) == []
    is64 = machine == "x64"
    assert pe.FILE_HEADER.Machine == (0x8664 if is64 else 0x14C)
    assert pe.OPTIONAL_HEADER.Magic == (0x20B if is64 else 0x10B)
    assert pe.OPTIONAL_HEADER.ImageBase == (0x140000000 if is64 else 0x10000)
    assert pe.OPTIONAL_HEADER.Subsystem == 1  # native
    assert pe.FILE_HEADER.TimeDateStamp == 0x5F3E2A1B
    assert pe.verify_checksum() and pe.OPTIONAL_HEADER.CheckSum != 0
    names = [s.Name.rstrip(b"\0").decode() for s in pe.sections]
    pdata = [".pdata"] if is64 else []  # x64 drivers carry unwind data for DriverEntry
    assert names == [".text", ".rdata", ".data", *pdata, "PAGE", "INIT", ".reloc"]
    last = 0
    for s in pe.sections:
        assert s.VirtualAddress % 0x1000 == 0 and s.VirtualAddress >= last
        assert s.PointerToRawData % 0x200 == 0 and s.SizeOfRawData % 0x200 == 0
        last = s.VirtualAddress + s.Misc_VirtualSize
    assert pe.OPTIONAL_HEADER.SizeOfImage == -(-last // 0x1000) * 0x1000
    assert pe.sections[4 + len(pdata)].Characteristics & 0x02000000  # INIT discardable
    text = pe.sections[0]
    assert text.contains_rva(pe.OPTIONAL_HEADER.AddressOfEntryPoint)


@pytest.mark.parametrize("machine", ["x64", "x86"])
def test_pefile_judges_imports_exports_rsds(pefile, machine):
    pe = pefile.PE(data=_driver(machine))
    base = pe.OPTIONAL_HEADER.ImageBase
    ptr = 8 if machine == "x64" else 4
    got = {d.dll.decode(): [(i.name.decode() if i.name else i.ordinal) for i in d.imports]
           for d in pe.DIRECTORY_ENTRY_IMPORT}
    assert got == IMPORTS
    iat_rva, iat_size = (pe.OPTIONAL_HEADER.DATA_DIRECTORY[12].VirtualAddress,
                         pe.OPTIONAL_HEADER.DATA_DIRECTORY[12].Size)
    slots = [i.address - base for d in pe.DIRECTORY_ENTRY_IMPORT for i in d.imports]
    assert all(iat_rva <= s < iat_rva + iat_size for s in slots)
    assert slots[:5] == [iat_rva + ptr * k for k in range(5)]  # IAT order as asked
    assert all(i.import_by_ordinal == (i.ordinal == 7)
               for d in pe.DIRECTORY_ENTRY_IMPORT for i in d.imports)

    syms = {s.name.decode(): s for s in pe.DIRECTORY_ENTRY_EXPORT.symbols}
    assert pe.DIRECTORY_ENTRY_EXPORT.name == b"judged.sys"
    order = ["DrvA", "DrvB", "DrvC", "DrvFixed", "DrvTable", "DrvFwd"]
    assert {n: syms[n].ordinal for n in order} == {n: k + 1 for k, n in enumerate(order)}
    text, data = pe.sections[0], pe.sections[2]
    for n in ("DrvA", "DrvB", "DrvC", "DrvFixed"):
        assert text.contains_rva(syms[n].address)
        assert pe.get_data(syms[n].address, 3) == b"\x33\xc0\xc3"  # xor eax, eax; ret
    assert syms["DrvFixed"].address == 0x3051
    assert data.contains_rva(syms["DrvTable"].address)
    assert syms["DrvFwd"].forwarder == b"ntoskrnl.exe.KeSetEvent"

    cv = pe.DIRECTORY_ENTRY_DEBUG[0]
    assert cv.struct.Type == 2
    entry = cv.entry
    assert entry.CvSignature == b"RSDS"
    assert uuid.UUID(bytes_le=struct.pack("<IHH", entry.Signature_Data1, entry.Signature_Data2,
                                          entry.Signature_Data3) + entry.Signature_Data4
                     .to_bytes(1, "little") + entry.Signature_Data5.to_bytes(1, "little")
                     + entry.Signature_Data6) == GUID
    assert entry.Age == 3 and entry.PdbFileName.rstrip(b"\0") == b"judged.pdb"
    assert cv.struct.PointerToRawData == pe.get_offset_from_rva(cv.struct.AddressOfRawData)


@pytest.mark.parametrize("machine", ["x64", "x86"])
def test_relocations_and_pool_tags(pefile, machine):
    pe = pefile.PE(data=_driver(machine))
    base, size = pe.OPTIONAL_HEADER.ImageBase, pe.OPTIONAL_HEADER.SizeOfImage
    want = 10 if machine == "x64" else 3
    entries = [e for b in pe.DIRECTORY_ENTRY_BASERELOC for e in b.entries if e.type]
    assert entries and {e.type for e in entries} == {want}
    fmt = "<Q" if machine == "x64" else "<I"
    for e in entries:  # every relocated slot holds an absolute VA inside the image
        (value,) = struct.unpack(fmt, pe.get_data(e.rva, struct.calcsize(fmt)))
        assert base <= value < base + size
    text = pe.sections[0].get_data()
    for tag in (b"Leak", b"Tag2"):
        pattern = (b"\x41\xb8" if machine == "x64" else b"\x68") + tag
        at = text.find(pattern)
        assert at >= 0, tag
        nxt = text[at + len(pattern):]
        call = nxt[:1] if machine == "x64" else nxt[7:8]  # x86: push size; push 0 first
        assert call in (b"\xe8", b"\xff")


def test_pool_tag_call_goes_through_the_iat(pefile):
    """With ExAllocatePoolWithTag imported, the tagged call is ``call [rip+disp]`` to its slot."""
    pe = pefile.PE(data=pe_mod.build_driver(
        "t.sys", imports={"ntoskrnl.exe": ["ExAllocatePoolWithTag"]}, pool_tags=[b"Abcd"]))
    slot = pe.DIRECTORY_ENTRY_IMPORT[0].imports[0].address - pe.OPTIONAL_HEADER.ImageBase
    text = pe.sections[0]
    at = text.get_data().find(b"\x41\xb8Abcd\xff\x15") + 6
    (disp,) = struct.unpack("<i", text.get_data()[at + 2:at + 6])
    assert text.VirtualAddress + at + 6 + disp == slot


@pytest.mark.parametrize("machine", ["x64", "x86"])
def test_kernel_and_hal(pefile, machine):
    k = pefile.PE(data=pe_mod.build_kernel(machine=machine))
    names = {s.name.decode() for s in k.DIRECTORY_ENTRY_EXPORT.symbols}
    assert set(pe_mod.KERNEL_EXPORTS) | set(pe_mod.KERNEL_DATA_EXPORTS) == names
    assert len(pe_mod.KERNEL_EXPORTS) >= 30
    assert k.DIRECTORY_ENTRY_DEBUG[0].entry.PdbFileName.rstrip(b"\0") == b"ntkrnlmp.pdb"
    assert not k.FILE_HEADER.Characteristics & 0x2000
    h = pefile.PE(data=pe_mod.build_hal(machine=machine))
    assert h.FILE_HEADER.Characteristics & 0x2000  # IMAGE_FILE_DLL
    assert {s.name.decode() for s in h.DIRECTORY_ENTRY_EXPORT.symbols} == set(pe_mod.HAL_EXPORTS)
    assert [d.dll for d in h.DIRECTORY_ENTRY_IMPORT] == [b"ntoskrnl.exe"]
    for pe in (k, h):
        assert _warnings(pe) == [] and pe.verify_checksum()


def test_fixed_rva_collision_is_refused():
    with pytest.raises(ValueError, match="collides"):
        pe_mod.build_driver("x.sys", exports=["A"], fixed_rvas={"A": 0x1001})


def _real_files(shared_data: Path) -> list[Path]:
    return sorted(p for p in (shared_data / "pe").glob("*/*") if p.is_file())


def _generated() -> list[tuple[str, bytes]]:
    return [(f"driver-{m}", _driver(m)) for m in ("x64", "x86")] + [
        (f"kernel-{m}", pe_mod.build_kernel(machine=m)) for m in ("x64", "x86")]


def _compare_parser(pefile, data: bytes) -> None:
    pe = pefile.PE(data=data)
    info = image_mod.parse_pe(data)
    assert info.machine == pe.FILE_HEADER.Machine
    assert info.image_base == pe.OPTIONAL_HEADER.ImageBase
    assert info.size_of_image == pe.OPTIONAL_HEADER.SizeOfImage
    assert info.entry_rva == pe.OPTIONAL_HEADER.AddressOfEntryPoint
    assert info.timestamp == pe.FILE_HEADER.TimeDateStamp
    assert [(s.name, s.virtual_address, s.virtual_size) for s in info.sections] == [
        (s.Name.rstrip(b"\0").decode("latin-1"), s.VirtualAddress, s.Misc_VirtualSize)
        for s in pe.sections]
    img, _ = image_mod.layout_image(data, info, info.image_base)
    imports = image_mod.read_imports(img, info)
    want = [(d.dll.decode(), i.name.decode() if i.name else None,
             i.ordinal if i.import_by_ordinal else None, i.address - info.image_base)
            for d in getattr(pe, "DIRECTORY_ENTRY_IMPORT", []) for i in d.imports]
    assert [(i.dll, i.name, i.ordinal, i.iat) for i in imports] == want
    exports = image_mod.read_exports(img, info)
    syms = getattr(pe, "DIRECTORY_ENTRY_EXPORT", None)
    syms = syms.symbols if syms else []
    assert exports.by_name == {s.name.decode(): s.address for s in syms
                               if s.name and not s.forwarder}
    assert exports.by_ordinal == {s.ordinal: s.address for s in syms if not s.forwarder}
    assert exports.forwarders == {(s.name.decode() if s.name else f"#{s.ordinal}"):
                                  s.forwarder.decode() for s in syms if s.forwarder}
    cv = image_mod.read_codeview(img, info)
    dbg = [d for d in getattr(pe, "DIRECTORY_ENTRY_DEBUG", []) if d.struct.Type == 2
           and d.entry is not None and d.entry.CvSignature == b"RSDS"]
    assert (cv is not None) == bool(dbg)
    if cv:
        assert cv[1] == dbg[0].entry.Age
        assert cv[2].encode() == dbg[0].entry.PdbFileName.rstrip(b"\0")


def test_parser_agrees_with_pefile_on_generated_files(pefile):
    for _name, data in _generated():
        _compare_parser(pefile, data)


def test_parser_agrees_with_pefile_on_real_files(pefile, shared_data):
    files = _real_files(shared_data)
    assert len(files) >= 40
    for path in files:
        try:
            _compare_parser(pefile, path.read_bytes())
        except AssertionError as e:
            raise AssertionError(f"{path.name}: {e}") from e


def test_forge_needs_no_pefile(tmp_path):
    """The forge's main paths run with pefile made unimportable."""
    code = (
        "import sys; sys.modules['pefile'] = None\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from oracles import import_forge\n"
        "f = import_forge()\n"
        "s = f.scenario.win10_x64(sys.argv[2])\n"
        "assert s.culprit is not None and 'pefile' not in [m for m in sys.modules"
        " if sys.modules[m] is not None]\n")
    tests_dir = str(Path(__file__).parent)
    subprocess.run([sys.executable, "-c", code, tests_dir, str(tmp_path / "s.dmp")],
                   check=True, timeout=120)
