"""A PDB made for a forged kernel, with LLVM's own tools: a COFF object described in YAML
(``yaml2obj``, Debian package ``llvm``) holding the kernel's variables as external symbols in a
``.bss`` section and type records in ``.debug$T``, linked with ``lld-link /DEBUG`` (rustup's
``rust-lld -flavor link``, or Debian's ``lld-link``). The linker writes the PDB: publics (one per
external symbol, with section:offset), section headers, the types. ntdump's own code plays no part
in writing it.

Types (x64, Windows 10 19041) come from ../shared/data/layouts/volatility2-vtypes-selected.json
(Volatility 2's overlays, generated from Microsoft's PDBs): _POOL_HEADER and
_POOL_TRACKER_BIG_PAGES, with anonymous unions flattened into the parent's field list as MSVC
writes them (the overlapping offsets of a real ntoskrnl PDB's _POOL_HEADER).
"""

from __future__ import annotations

import glob
import json
import shutil
import subprocess
from pathlib import Path

# CodeView primitive type indices (cvinfo.h): T_USHORT, T_ULONG (0x22), T_UINT4, T_UQUAD.
PRIM = {"unsigned short": 0x21, "unsigned long": 0x22, "unsigned int": 0x75,
        "unsigned long long": 0x23, "unsigned char": 0x20}
PRIM_SIZE = {0x21: 2, 0x22: 4, 0x75: 4, 0x23: 8, 0x20: 1}
FIRST = 0x1000


def linker() -> list[str] | None:
    """An lld-link command, or None."""
    for exe in ("lld-link", "lld-link-14"):
        p = shutil.which(exe)
        if p:
            return [p]
    hits = sorted(glob.glob(str(Path.home() / ".rustup/toolchains/*/lib/rustlib/*/bin/rust-lld")))
    return [hits[0], "-flavor", "link"] if hits else None


def tools_present() -> bool:
    return shutil.which("yaml2obj") is not None and linker() is not None


def _types(layouts: dict, names: list[str]) -> tuple[list[str], dict[str, int]]:
    """CodeView YAML records for the structs ``names`` (vol2 layouts); returns (yaml lines,
    struct name -> type index)."""
    recs: list[list[str]] = []

    def add(lines: list[str]) -> int:
        recs.append(lines)
        return FIRST + len(recs) - 1

    eproc = add(["- Kind: LF_STRUCTURE", "  Class:", "    MemberCount: 0",
                 "    Options: [ None, ForwardReference ]", "    FieldList: 0",
                 "    Name: _EPROCESS", "    UniqueName: ''", "    DerivationList: 0",
                 "    VTableShape: 0", "    Size: 0"])
    peproc = add(["- Kind: LF_POINTER", "  Pointer:", f"    ReferentType: {eproc}",
                  "    Attrs: 65548"])  # 64-bit near pointer, size 8 (cvinfo.h CV_PTR_64)
    index = {}
    for name in names:
        size, fields = layouts[name]
        members = []
        for fname, (off, spec) in sorted(fields.items(), key=lambda kv: kv[1][0]):
            kind = spec[0]
            if kind == "BitField":
                a = spec[1]
                t = add(["- Kind: LF_BITFIELD", "  BitField:",
                         f"    Type: {PRIM[a['native_type']]}",
                         f"    BitSize: {a['end_bit'] - a['start_bit']}",
                         f"    BitOffset: {a['start_bit']}"])
            elif kind == "pointer64":
                t = peproc
            else:
                t = PRIM[kind]
            members.append((fname, off, t))
        fl = ["- Kind: LF_FIELDLIST", "  FieldList:"]
        for fname, off, t in members:
            fl += ["    - Kind: LF_MEMBER", "      DataMember:", "        Attrs: 3",
                   f"        Type: {t}", f"        FieldOffset: {off}", f"        Name: {fname}"]
        fli = add(fl)
        index[name] = add(["- Kind: LF_STRUCTURE", "  Class:", f"    MemberCount: {len(members)}",
                           "    Options: [ None ]", f"    FieldList: {fli}", f"    Name: {name}",
                           "    UniqueName: ''", "    DerivationList: 0", "    VTableShape: 0",
                           f"    Size: {size}"])
    out = []
    for r in recs:
        out += ["      " + ln for ln in r]
    return out, index


def build(out: Path, layouts_json: Path, variables: dict[str, int], *,
          name: str = "ntkrnlmp") -> tuple[Path, Path, int]:
    """Link ``name.exe`` + ``name.pdb`` in ``out`` whose publics put each variable at its RVA
    (``variables``: name -> RVA, all at least 0x10000). Returns (pdb, image, RVA of .bss)."""
    vt = json.loads(layouts_json.read_text())["win10_x64_19041_vtypes.py"]
    layouts = {k: vt[k] for k in ("_POOL_HEADER", "_POOL_TRACKER_BIG_PAGES")}
    types, _ = _types(layouts, list(layouts))
    top = max(variables.values()) + 0x10
    lld = linker()
    assert lld is not None

    def obj_yaml(bss_rva: int) -> str:
        lines = ["--- !COFF", "header:", "  Machine: IMAGE_FILE_MACHINE_AMD64",
                 "  Characteristics: [ ]", "sections:",
                 "  - Name: .text",
                 "    Characteristics: [ IMAGE_SCN_CNT_CODE, IMAGE_SCN_MEM_EXECUTE, "
                 "IMAGE_SCN_MEM_READ ]",
                 "    Alignment: 16", "    SectionData: C3",
                 "  - Name: .bss",
                 "    Characteristics: [ IMAGE_SCN_CNT_UNINITIALIZED_DATA, IMAGE_SCN_MEM_READ, "
                 "IMAGE_SCN_MEM_WRITE ]",
                 "    Alignment: 4096", f"    SizeOfRawData: {top - bss_rva + 0x1000}",
                 "  - Name: '.debug$T'",
                 "    Characteristics: [ IMAGE_SCN_CNT_INITIALIZED_DATA, "
                 "IMAGE_SCN_MEM_DISCARDABLE, IMAGE_SCN_MEM_READ ]",
                 "    Alignment: 1", "    Types:", *types,
                 "symbols:",
                 "  - Name: KiSystemStartup", "    Value: 0", "    SectionNumber: 1",
                 "    SimpleType: IMAGE_SYM_TYPE_NULL", "    ComplexType: IMAGE_SYM_DTYPE_FUNCTION",
                 "    StorageClass: IMAGE_SYM_CLASS_EXTERNAL"]
        for var, rva in sorted(variables.items()):
            lines += [f"  - Name: {var}", f"    Value: {rva - bss_rva}", "    SectionNumber: 2",
                      "    SimpleType: IMAGE_SYM_TYPE_NULL",
                      "    ComplexType: IMAGE_SYM_DTYPE_NULL",
                      "    StorageClass: IMAGE_SYM_CLASS_EXTERNAL"]
        return "\n".join(lines) + "\n"

    def link(bss_rva: int) -> int:
        (out / "k.yaml").write_text(obj_yaml(bss_rva))
        subprocess.run(["yaml2obj", str(out / "k.yaml"), "-o", str(out / "k.obj")], check=True)
        subprocess.run([*lld, "/nologo", "/machine:x64", "/driver", "/subsystem:native",
                        "/entry:KiSystemStartup", "/nodefaultlib", "/debug",
                        f"/pdb:{out / (name + '.pdb')}", f"/out:{out / (name + '.exe')}",
                        str(out / "k.obj")], check=True, capture_output=True)
        import pefile

        pe = pefile.PE(str(out / (name + ".exe")))
        bss = [s for s in pe.sections if s.Characteristics & 0x80 or s.Name.startswith(b".bss")
               or s.Name.startswith(b".data")]
        return bss[0].VirtualAddress

    guess = 0x3000
    got = link(guess)
    if got != guess:  # the linker's layout decides where .bss lands; link again to match it
        got2 = link(got)
        assert got2 == got
    return out / (name + ".pdb"), out / (name + ".exe"), got
