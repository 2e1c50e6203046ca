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
from collections.abc import Callable, Mapping
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


def _link(out: Path, types: list[str], variables: dict[str, int], *, machine: str,
          name: str) -> int:
    """Write ``name.exe`` + ``name.pdb`` in ``out`` for an ``machine`` ("x86" or "x64") kernel:
    one COFF object made by ``yaml2obj`` (a ``ret`` as ``KiSystemStartup``, a ``.bss`` holding
    each of ``variables`` at its RVA, ``types`` in ``.debug$T``), linked by ``lld-link /DEBUG``
    (x86 publics carry the C decoration ``_``). Returns the RVA of ``.bss``."""
    x86 = machine == "x86"
    pre = "_" if x86 else ""
    top = max(variables.values()) + 0x10
    lld = linker()
    assert lld is not None

    def obj_yaml(bss_rva: int) -> str:
        lines = ["--- !COFF", "header:",
                 f"  Machine: IMAGE_FILE_MACHINE_{'I386' if x86 else 'AMD64'}",
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
                 f"  - Name: {pre}KiSystemStartup", "    Value: 0", "    SectionNumber: 1",
                 "    SimpleType: IMAGE_SYM_TYPE_NULL", "    ComplexType: IMAGE_SYM_DTYPE_FUNCTION",
                 "    StorageClass: IMAGE_SYM_CLASS_EXTERNAL"]
        for var, rva in sorted(variables.items()):
            lines += [f"  - Name: {pre}{var}", f"    Value: {rva - bss_rva}",
                      "    SectionNumber: 2", "    SimpleType: IMAGE_SYM_TYPE_NULL",
                      "    ComplexType: IMAGE_SYM_DTYPE_NULL",
                      "    StorageClass: IMAGE_SYM_CLASS_EXTERNAL"]
        return "\n".join(lines) + "\n"

    def link(bss_rva: int) -> int:
        (out / "k.yaml").write_text(obj_yaml(bss_rva))
        subprocess.run(["yaml2obj", str(out / "k.yaml"), "-o", str(out / "k.obj")], check=True)
        seh = ["/safeseh:no"] if x86 else []  # an object from yaml2obj has no SEH table
        subprocess.run([*lld, "/nologo", f"/machine:{machine}", *seh, "/driver",
                        "/subsystem:native", "/entry:KiSystemStartup", "/nodefaultlib", "/debug",
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
        assert link(got) == got
    return got


def build(out: Path, layouts_json: Path, variables: dict[str, int], *,
          name: str = "ntkrnlmp",
          extra_types: Callable[[int], list[str]] | None = None) -> tuple[Path, Path, int]:
    """Link ``name.exe`` + ``name.pdb`` in ``out`` whose publics put each variable at its RVA
    (``variables``: name -> RVA, all at least 0x10000). ``extra_types(first index)`` adds type
    records after the built-in ones (e.g. :func:`mistate_types`). Returns (pdb, image, RVA of
    .bss)."""
    vt = json.loads(layouts_json.read_text())["win10_x64_19041_vtypes.py"]
    layouts = {k: vt[k] for k in ("_POOL_HEADER", "_POOL_TRACKER_BIG_PAGES")}
    types, _ = _types(layouts, list(layouts))
    if extra_types is not None:
        types += extra_types(FIRST + _record_count(types))
    bss = _link(out, types, variables, machine="x64", name=name)
    return out / (name + ".pdb"), out / (name + ".exe"), bss


# -- nt!MiState / nt!MiSystemPartition types (the !vm members of Windows 10/11) -----------------
# The layout is ntdump.forge.mistate.LAYOUT_19041_X64 (offsets and sizes of the Windows 10 2004
# x64 public symbols, sources in that module); tests mutate copies of it to make hostile PDBs.

#: CodeView primitive type indices (cvinfo.h) of the layout's primitive names: T_UCHAR, T_USHORT,
#: T_ULONG, T_LONG, T_UQUAD.
MI_PRIM = {"u8": 0x20, "u16": 0x21, "u32": 0x22, "i32": 0x12, "u64": 0x23}


def _record_count(types: list[str]) -> int:
    """Type records in YAML lines made by :func:`_types` (each starts at 6 spaces' indent)."""
    return sum(1 for ln in types if ln.startswith("      - Kind:"))


def mistate_types(first: int, layout: Mapping[str, tuple[int, list[tuple[str, int, object]]]]
                  ) -> list[str]:
    """CodeView YAML records (LF_ARRAY, LF_FIELDLIST, LF_STRUCTURE) for the structs of ``layout``
    (struct name -> (size, [(member, offset, type)]); types as ntdump.forge.mistate.MemberType),
    numbered from ``first``, every struct after the structs its members use. A member naming a
    struct the layout lacks gets a forward reference (a type without definition)."""
    recs: list[list[str]] = []
    index: dict[str, int] = {}

    def add(lines: list[str]) -> int:
        recs.append(lines)
        return first + len(recs) - 1

    def ref(t: object) -> int:
        if isinstance(t, tuple):
            elem, count = t
            e = ref(elem)
            esize = _mi_size(elem, layout)
            return add(["- Kind: LF_ARRAY", "  Array:", f"    ElementType: {e}",
                        "    IndexType: 35", f"    Size: {esize * count}", "    Name: ''"])
        assert isinstance(t, str)
        if t in MI_PRIM:
            return MI_PRIM[t]
        if t not in index:
            if t in layout:
                define(t)
            else:  # a struct the PDB does not define: forward reference only
                index[t] = add(["- Kind: LF_STRUCTURE", "  Class:", "    MemberCount: 0",
                                "    Options: [ None, ForwardReference ]", "    FieldList: 0",
                                f"    Name: {t}", "    UniqueName: ''", "    DerivationList: 0",
                                "    VTableShape: 0", "    Size: 0"])
        return index[t]

    def define(name: str) -> None:
        size, members = layout[name]
        refs = [(m, off, ref(t)) for m, off, t in members]
        fl = ["- Kind: LF_FIELDLIST", "  FieldList:"]
        for m, off, t in refs:
            fl += ["    - Kind: LF_MEMBER", "      DataMember:", "        Attrs: 3",
                   f"        Type: {t}", f"        FieldOffset: {off}", f"        Name: {m}"]
        fli = add(fl)
        index[name] = add(["- Kind: LF_STRUCTURE", "  Class:",
                           f"    MemberCount: {len(members)}", "    Options: [ None ]",
                           f"    FieldList: {fli}", f"    Name: {name}", "    UniqueName: ''",
                           "    DerivationList: 0", "    VTableShape: 0", f"    Size: {size}"])

    for name in layout:
        if name not in index:
            define(name)
    out = []
    for r in recs:
        out += ["      " + ln for ln in r]
    return out


def _mi_size(t: object, layout: Mapping[str, tuple[int, list[tuple[str, int, object]]]]) -> int:
    if isinstance(t, tuple):
        return _mi_size(t[0], layout) * int(t[1])
    assert isinstance(t, str)
    return {"u8": 1, "u16": 2, "u32": 4, "i32": 4, "u64": 8}.get(t) or layout[t][0]


# -------------------------------------------------------------------------------------------------
# Kernel PDBs with struct layouts (the layouts helper): any struct, x86 or x64, so that a forged
# dump's PDB can describe _POOL_HEADER, _POOL_TRACKER_TABLE, _POOL_TRACKER_BIG_PAGES and the loader
# entry as a given build lays them out. Every layout passed in names its source where it is built
# (vol2_structs below: Volatility 2's PDB-generated overlays; the tests: ntdiff/headers listings).
# -------------------------------------------------------------------------------------------------

#: A member: (name, offset, kind); kind is "u8" / "u16" / "u32" / "u64" / "ptr" (pointer-sized
#: void*), ("bits", storage kind, first bit, bit count) or ("struct", struct name).
Member = tuple[str, int, "str | tuple"]
#: name -> (size in bytes, members).
Structs = dict[str, tuple[int, list[Member]]]

# cvinfo.h primitive indices: T_UCHAR, T_USHORT, T_ULONG, T_UQUAD, T_32PVOID, T_64PVOID.
_CV = {"u8": 0x20, "u16": 0x21, "u32": 0x22, "u64": 0x23}
_CV_PVOID = {"x86": 0x0403, "x64": 0x0603}

_VOL2_SCALAR = {"unsigned char": "u8", "unsigned short": "u16", "unsigned long": "u32",
                "long": "u32", "unsigned long long": "u64", "pointer": "ptr",
                "pointer64": "ptr"}


def vol2_structs(layouts_json: Path, profile: str, names: list[str]) -> Structs:
    """``names`` (and the structs their members use) from Volatility 2's overlay ``profile``
    (e.g. ``"win10_x64_19041_vtypes.py"``) in ../shared/data/layouts/volatility2-vtypes-
    selected.json: generated from Microsoft's PDBs, so the layouts are the PDBs'. Members of
    unnamed union types (``u1``) are left out (no reader uses them)."""
    vt = json.loads(layouts_json.read_text())[profile]
    out: Structs = {}

    def add(name: str) -> None:
        if name in out:
            return
        size, fields = vt[name]
        members: list[Member] = []
        for fname, (off, spec) in sorted(fields.items(), key=lambda kv: kv[1][0]):
            kind = spec[0]
            if kind == "BitField":
                a = spec[1]
                members.append((fname, off, ("bits", _VOL2_SCALAR[a["native_type"]],
                                             a["start_bit"], a["end_bit"] - a["start_bit"])))
            elif kind in _VOL2_SCALAR:
                members.append((fname, off, _VOL2_SCALAR[kind]))
            elif kind in vt:
                add(kind)
                members.append((fname, off, ("struct", kind)))
        out[name] = (size, members)

    for n in names:
        add(n)
    return out


def _struct_records(structs: Structs, machine: str) -> list[str]:
    """CodeView YAML records (LF_BITFIELD, LF_FIELDLIST, LF_STRUCTURE) for ``structs``, each
    struct after the structs its members use."""
    recs: list[list[str]] = []
    index: dict[str, int] = {}

    def add(lines: list[str]) -> int:
        recs.append(lines)
        return FIRST + len(recs) - 1

    def define(name: str) -> int:
        if name in index:
            return index[name]
        size, members = structs[name]
        typed = []
        for fname, off, kind in members:
            if isinstance(kind, tuple) and kind[0] == "struct":
                t = define(kind[1])
            elif isinstance(kind, tuple):  # ("bits", storage, first, count)
                t = add(["- Kind: LF_BITFIELD", "  BitField:", f"    Type: {_CV[kind[1]]}",
                         f"    BitSize: {kind[3]}", f"    BitOffset: {kind[2]}"])
            elif kind == "ptr":
                t = _CV_PVOID[machine]
            else:
                t = _CV[kind]
            typed.append((fname, off, t))
        fl = ["- Kind: LF_FIELDLIST", "  FieldList:"]
        for fname, off, t in typed:
            fl += ["    - Kind: LF_MEMBER", "      DataMember:", "        Attrs: 3",
                   f"        Type: {t}", f"        FieldOffset: {off}", f"        Name: {fname}"]
        fli = add(fl)
        index[name] = add(["- Kind: LF_STRUCTURE", "  Class:",
                           f"    MemberCount: {len(typed)}", "    Options: [ None ]",
                           f"    FieldList: {fli}", f"    Name: {name}", "    UniqueName: ''",
                           "    DerivationList: 0", "    VTableShape: 0", f"    Size: {size}"])
        return index[name]

    for name in structs:
        define(name)
    return ["      " + ln for r in recs for ln in r]


def build_with_structs(out: Path, structs: Structs, variables: dict[str, int], *,
                       machine: str = "x64", name: str = "ntkrnlmp") -> Path:
    """Link ``name.exe`` + ``name.pdb`` in ``out`` for an ``machine`` ("x86" or "x64") kernel:
    publics put each of ``variables`` (name -> RVA, at least 0x10000) at its RVA (x86 names carry
    the C decoration ``_``, as an x86 kernel's publics do); the types are ``structs``. Returns the
    PDB's path."""
    types = _struct_records(structs, machine)
    _link(out, types, variables, machine=machine, name=name)
    return out / (name + ".pdb")
