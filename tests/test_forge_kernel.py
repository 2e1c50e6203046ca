"""forge.kernel / forge.image / forge.scenario: images mapped as the loader does, kernel lists.

Outside judges: pefile maps every real PE file of shared/data/pe (get_memory_mapped_image with
relocations) and says which Wine IAT slot imports which ntoskrnl export; kdmp-parser reads the
64-bit scenario dumps. PsLoadedModuleList, KDBG and MmUnloadedDrivers are walked here with
plain struct reads through the forge's page tables, independent of the Rust reader.
"""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path

import pytest
from oracles import import_forge, kdmp_open, require

forge = import_forge()
kernel_mod, image_mod, pe_mod, scen = forge.kernel, forge.image, forge.pe, forge.scenario
WINE_IMPORTERS = ["hidclass.sys", "hidparse.sys", "usbd.sys", "winebus.sys", "wineusb.sys",
                  "winexinput.sys"]


@pytest.fixture(scope="module")
def pefile():
    require("pefile")
    import pefile

    return pefile


def vread(pt, va: int, n: int) -> bytes | None:
    """Bytes at ``va`` through the page tables, None if any page is unmapped."""
    out = bytearray()
    while len(out) < n:
        pa = pt.translate(va + len(out))
        if pa is None:
            return None
        take = min(0x1000 - (pa & 0xFFF), n - len(out))
        out += pt.mem.read(pa, take)
    return bytes(out)


def ptr(pt, va: int) -> int | None:
    size = 8 if pt.mode == "x64" else 4
    raw = vread(pt, va, size)
    return None if raw is None else int.from_bytes(raw, "little")


def ustr(pt, va: int) -> tuple[int, int, int]:
    """(Length, MaximumLength, Buffer) of a UNICODE_STRING."""
    if pt.mode == "x64":
        length, mx, _, buf = struct.unpack("<HHIQ", vread(pt, va, 16))
    else:
        length, mx, buf = struct.unpack("<HHI", vread(pt, va, 8))
    return length, mx, buf


def walk(pt, head: int, limit: int = 64) -> tuple[list[dict], str]:
    """Follow InLoadOrderLinks from ``head``; returns (entries, how the walk ended)."""
    is64 = pt.mode == "x64"
    seen, out = {head}, []
    va = ptr(pt, head)
    while True:
        if va is None or vread(pt, va, 0x20) is None:
            return out, "unmapped"
        if va == head:
            return out, "head"
        if va in seen or len(out) >= limit:
            return out, "loop"
        seen.add(va)
        o = 0x30 if is64 else 0x18
        p = 8 if is64 else 4
        full, base_name = ustr(pt, va + (0x48 if is64 else 0x24)), \
            ustr(pt, va + (0x58 if is64 else 0x2C))
        e = {"va": va, "flink": ptr(pt, va), "blink": ptr(pt, va + p), "base": ptr(pt, va + o),
             "entry": ptr(pt, va + o + p),
             "size": struct.unpack("<I", vread(pt, va + o + 2 * p, 4))[0],
             "full": full, "base_name": base_name}
        for key, (length, mx, buf) in (("path", full), ("name", base_name)):
            raw = vread(pt, buf, length) if length <= mx else None
            e[key] = raw.decode("utf-16-le") if raw is not None else None
        out.append(e)
        va = e["flink"]


def _scenario(kind: str, tmp: Path, shared: Path | None = None, **kw):
    path = tmp / f"{kind}.dmp"
    if kind == "win10":
        return scen.win10_x64(path, **kw)
    if kind == "2003":
        return scen.server2003_x86_pae(path, **kw)
    arch = "x86_64" if kind == "wine64" else "i386"
    return scen.wine_drivers(path, arch, wine_dir=shared / "pe", **kw)


# -- map_image against pefile -----------------------------------------------------------------

def _real_files() -> list[str]:
    from conftest import data_dir

    d = data_dir() / "pe"
    return sorted(str(p.relative_to(d)) for p in d.glob("*/*")) if d.is_dir() else []


@pytest.mark.parametrize("rel", _real_files())
def test_map_image_matches_pefile(pefile, shared_data, rel):
    data = (shared_data / "pe" / rel).read_bytes()
    info = image_mod.parse_pe(data)
    mem = forge.PhysicalMemory([(0x1, 0x9F), (0x100, 0x8000)])
    pt = forge.PageTables(mem, "x64" if info.is64 else "pae")
    base = 0xFFFFF80012340000 if info.is64 else 0x81230000
    im = forge.map_image(pt, mem, data, base)
    pe = pefile.PE(data=data)
    ref = bytearray(pe.get_memory_mapped_image(ImageBase=base))
    # pefile rebases images that have relocations but keeps the file's ImageBase in its
    # header bytes; the loader (and the forge) write the new base there.
    assert (pe.OPTIONAL_HEADER.ImageBase == base) == bool(info.directory(5)[1])
    width, at = (8 if info.is64 else 4), info.image_base_offset
    if info.directory(5)[1] and at + width <= len(ref):
        ref[at:at + width] = base.to_bytes(width, "little")
    size = -(-info.size_of_image // 0x1000) * 0x1000
    flat = info.section_alignment < 0x1000
    for page in range(0, size, 0x1000):
        got = vread(pt, base + page, 0x1000)
        want = bytes(ref[page:page + 0x1000])
        if flat and len(want) < 0x1000:  # pefile stops at the headers of a tiny flat image
            file_part = data[page + len(want):min(info.size_of_image, page + 0x1000)]
            want += file_part
        want += bytes(0x1000 - len(want))
        assert got == want, f"{rel}: page +{page:#x}"
    # Exports and imports as pefile sees them, rebased.
    syms = getattr(pe, "DIRECTORY_ENTRY_EXPORT", None)
    syms = syms.symbols if syms else []
    old = info.image_base
    assert im.exports == {s.name.decode(): base + s.address for s in syms
                          if s.name and not s.forwarder}
    want_imports = [(d.dll.decode(), i.name.decode() if i.name else i.ordinal,
                     i.address - pe.OPTIONAL_HEADER.ImageBase + base)
                    for d in getattr(pe, "DIRECTORY_ENTRY_IMPORT", []) for i in d.imports]
    assert [(i.dll, i.name or i.ordinal, i.iat) for i in im.imports] == want_imports
    assert im.entry == (base + info.entry_rva if info.entry_rva else 0)
    if old != base and info.directory(5)[1]:
        assert im.relocations > 0 or "x86_64" in rel  # Wine x64 cng.sys has none to apply


def test_map_image_generated_and_missing_pages(pefile):
    for machine, mode in (("x64", "x64"), ("x86", "pae"), ("x86", "x86")):
        data = pe_mod.build_driver("m.sys", machine=machine,
                                   imports={"ntoskrnl.exe": ["ExAllocatePool"]},
                                   exports=["A"], pool_tags=[b"Miss"])
        mem = forge.PhysicalMemory([(0x1, 0x9F), (0x100, 0x4000)])
        pt = forge.PageTables(mem, mode)
        base = 0xFFFFF80055550000 if machine == "x64" else 0x91110000
        im = forge.map_image(pt, mem, data, base, missing_pages=[0x2000, 0x2010])
        ref = pefile.PE(data=data).get_memory_mapped_image(ImageBase=base)
        assert im.missing == (base + 0x2000,)
        assert pt.translate(base + 0x2000) is None
        _, _, pte = pt.entries(base + 0x2000)[-1]
        assert pte & 1 == 0 and pte != 0  # paged out, not empty
        assert vread(pt, base + 0x1000, 0x1000) == ref[0x1000:0x2000]
        assert vread(pt, base + 0x3000, 0x100) == ref[0x3000:0x3100]
        # .rdata (IAT) is missing: binding reports the slot instead of writing it.
        k = forge.map_image(pt, mem, pe_mod.build_kernel(machine=machine),
                            base + 0x100000, name="ntoskrnl.exe")
        res = forge.bind_imports([k, im])
        assert [(n, r) for n, _, r in res.unresolved if n == "m.sys"] == [
            ("m.sys", f"IAT slot {base + 0x2000:#x} is not mapped")]


def test_bind_ordinals_forwarders_and_aliases():
    mem = forge.PhysicalMemory([(0x1, 0x9F), (0x100, 0x4000)])
    pt = forge.PageTables(mem, "x64")
    kern = pe_mod.build_kernel(name="ntkrnlmp.exe")
    hal = pe_mod.build_driver("halmacpi.dll", dll=True, exports=["HalX"],
                              forwarders={"KeSetEvent": "ntoskrnl.exe.KeSetEvent",
                                          "ViaOrdinal": "lib.#2", "Gone": "nowhere.Fn"})
    lib = pe_mod.build_driver("lib.sys", exports=["First", "Second"], dll=True)
    user = pe_mod.build_driver("user.sys", imports={
        "NTOSKRNL.EXE": ["ExAllocatePool", "NoSuchExport"], "HAL.dll": ["KeSetEvent", "HalX",
                                                                        "ViaOrdinal", "Gone"],
        "LIB": [2, "First"], "absent.sys": ["X"]})
    ims = [forge.map_image(pt, mem, d, 0xFFFFF80010000000 + i * 0x100000, name=n)
           for i, (n, d) in enumerate((("ntkrnlmp.exe", kern), ("halmacpi.dll", hal),
                                       ("lib.sys", lib), ("user.sys", user)))]
    res = forge.bind_imports(ims)
    k, h, lb, u = ims
    want = {"ExAllocatePool": k.exports["ExAllocatePool"], "KeSetEvent": k.exports["KeSetEvent"],
            "HalX": h.exports["HalX"], "ViaOrdinal": lb.exports["Second"],
            2: lb.exports["Second"], "First": lb.exports["First"]}
    got = {}
    for imp in u.imports:
        value = ptr(pt, imp.iat)
        got[imp.name or imp.ordinal] = value
    for key, va in want.items():
        assert got[key] == va, key
    unresolved = {(i.name, r) for n, i, r in res.unresolved if n == "user.sys"}
    assert unresolved == {("NoSuchExport", "ntkrnlmp.exe does not export NoSuchExport"),
                          ("Gone", "nowhere is not loaded"), ("X", "absent.sys is not loaded")}


# -- bind_imports on Wine's real files, judged by pefile ---------------------------------------

@pytest.mark.parametrize("arch", ["x86_64", "i386"])
def test_wine_iat_slots_hold_ntoskrnl_exports(pefile, shared_data, tmp_path, arch):
    folder = shared_data / "pe" / f"wine-{arch}"
    s = scen.wine_drivers(tmp_path / "w.dmp", arch, wine_dir=shared_data / "pe")
    nt_pe = pefile.PE(str(folder / "ntoskrnl.exe"))
    nt = s.layout.modules[0]
    exports = {e.name.decode(): nt.base + e.address
               for e in nt_pe.DIRECTORY_ENTRY_EXPORT.symbols if e.name and not e.forwarder}
    importers, checked = [], 0
    for m in s.layout.modules[1:]:
        pe = pefile.PE(str(folder / m.name))
        for d in getattr(pe, "DIRECTORY_ENTRY_IMPORT", []):
            if d.dll.lower() != b"ntoskrnl.exe":
                continue
            for imp in d.imports:
                if imp.name == b"ExAllocatePool":
                    importers.append(m.name)
                if imp.name and imp.name.decode() in exports:
                    slot = imp.address - pe.OPTIONAL_HEADER.ImageBase + m.base
                    assert ptr(s.pt, slot) == exports[imp.name.decode()], (m.name, imp.name)
                    checked += 1
    assert importers == WINE_IMPORTERS == s.importers
    assert checked > 100
    assert s.ex_allocate_pool == exports["ExAllocatePool"]
    # Wine's own DLL imports (kernel32, ntdll, ucrtbase ...) are not loaded: listed, not bound.
    assert all("is not loaded" in r or "does not export" in r
               for _, _, r in s.layout.bind.unresolved)
    # hal.dll forwards KeLowerIrql to "ntoskrnl.exe.KeLowerIrql" (x64 only in Wine 8).
    hal = s.layout.module("hal.dll").image
    if "KeLowerIrql" in hal.forwarders:
        assert hal.forwarders["KeLowerIrql"] == "ntoskrnl.exe.KeLowerIrql"


# -- the module list, walked here --------------------------------------------------------------

@pytest.mark.parametrize("kind", ["win10", "2003", "wine64", "wine32"])
def test_walk_module_list(shared_data, tmp_path, kind):
    s = _scenario(kind, tmp_path, shared_data)
    lay, pt = s.layout, s.pt
    assert s.header.ps_loaded_module_list == lay.ps_loaded_module_list
    assert s.header.kd_debugger_data_block == lay.kdbg and s.header.dtb == pt.dtb
    entries, end = walk(pt, lay.ps_loaded_module_list)
    assert end == "head"
    got = [(e["name"], e["path"], e["base"], e["size"], e["entry"]) for e in entries]
    assert got == [(m.name, m.path, m.base, m.size, m.entry) for m in lay.modules]
    assert [e["va"] for e in entries] == [m.ldr_entry for m in lay.modules]
    assert got[0][0] == "ntoskrnl.exe" and got[1][0] == "hal.dll"
    heads = [lay.ps_loaded_module_list, *(e["va"] for e in entries), lay.ps_loaded_module_list]
    for i, e in enumerate(entries):  # Blink is the previous entry, the head for the first
        assert e["blink"] == heads[i] and e["flink"] == heads[i + 2]
    assert ptr(pt, lay.ps_loaded_module_list + (8 if pt.mode == "x64" else 4)) == heads[-2]
    for e, m in zip(entries, lay.modules, strict=True):
        assert e["base_name"][2] == e["full"][2] + e["full"][0] - e["base_name"][0]
        assert e["full"][1] == e["full"][0] + 2
        assert vread(pt, m.base, 2) == b"MZ"
        # CheckSum at the family's offset equals the PE header's; TimeDateStamp too where the
        # entry has that field (Windows 10); before Windows 8 the slot is the LoadedImports union.
        ck, ts, li = ({"win10": (0x78, 0x9C, 0x88)} if pt.mode == "x64" else
                      {"win10": (0x40, 0x58, 0x4C), "2003": (0x40, None, 0x44)})[lay.family]
        assert struct.unpack("<I", vread(pt, e["va"] + ck, 4))[0] == m.checksum
        if ts is not None:
            assert struct.unpack("<I", vread(pt, e["va"] + ts, 4))[0] == m.timestamp
        assert ptr(pt, e["va"] + li) == m.loaded_imports_raw
    if kind in ("win10", "2003"):
        assert s.culprit is not None and s.culprit.name == scen.CULPRIT_NAME
        assert got[-1][:2] == (scen.CULPRIT_NAME, scen.CULPRIT_PATH)
        assert s.importers == [scen.CULPRIT_NAME]
        # The story: a search for nt!ExAllocatePool's VA over the modules hits one IAT slot.
        width = 8 if pt.mode == "x64" else 4
        needle = s.ex_allocate_pool.to_bytes(width, "little")
        hits = [m.base + off for m in lay.modules
                for off in range(0, m.size - width + 1, width)
                if vread(pt, m.base + off, width) == needle]
        assert hits == [s.culprit_iat_slot]
        names = [i.name for i in s.culprit.image.imports]
        k = names.index("ExAllocatePool")
        assert names[k + 1:k + 4] == ["_wcsnicmp", "ExFreePoolWithTag", "KeInitializeEvent"]
    if kind == "2003":
        assert s.ex_allocate_pool == 0xE0894D1F


@pytest.mark.parametrize("kind", ["win10", "2003", "wine64"])
def test_kdbg_and_unloaded_drivers(shared_data, tmp_path, kind):
    s = _scenario(kind, tmp_path, shared_data)
    lay, pt = s.layout, s.pt
    is64 = pt.mode == "x64"
    kd = vread(pt, lay.kdbg, lay.kdbg_size)
    assert kd[0x10:0x14] == b"KDBG"
    assert struct.unpack_from("<I", kd, 0x14)[0] == lay.kdbg_size == \
        {"win10": 0x380, "2003": 0x318}[lay.family]
    mask = (1 << 64) - 1 if is64 else 0xFFFFFFFF

    def field(off: int) -> int:
        return struct.unpack_from("<Q", kd, off)[0] & mask

    if not is64:  # 32-bit list links; addresses sign-extended to 64 bits
        assert kd[8:16] == bytes(8)
        assert struct.unpack_from("<Q", kd, 0x18)[0] == lay.kernel_base | 0xFFFFFFFF00000000
    list_head = struct.unpack_from("<Q" if is64 else "<I", kd, 0)[0]
    assert ptr(pt, list_head) == lay.kdbg
    assert field(0x18) == lay.kernel_base == lay.modules[0].base
    assert field(0x48) == lay.ps_loaded_module_list
    kernel = lay.modules[0]
    assert kernel.base <= field(0x48) < kernel.base + kernel.size  # MemProcFS's check
    assert kernel.base <= lay.kdbg < kernel.base + kernel.size
    sec = kernel.image.section_at(lay.kdbg)
    assert sec is not None and sec.name == ".data"
    assert field(0x138) == 0x1000
    assert ptr(pt, field(0xF8)) == s.mem.page_count
    lab = vread(pt, field(0x208), 64).split(b"\0")[0].decode()
    assert lab == lay.nt_build_lab and lab.startswith(str(lay.build))
    assert field(0x1B8) == lay.pool_track_table and ptr(pt, field(0x1B8)) == 0
    assert field(0x218) == lay.ki_processor_block
    assert struct.unpack_from("<H", kd, 0x36)[0] & 1 == (pt.mode == "pae")
    # MmUnloadedDrivers -> array of 50; MmLastUnloadedDriver = count.
    array = ptr(pt, field(0x220))
    assert array == lay.unloaded_array
    count = struct.unpack("<I", vread(pt, field(0x228), 4))[0]
    assert count == len(lay.unloaded)
    size = 0x28 if is64 else 0x18
    p = 8 if is64 else 4
    got = []
    for i in range(50):
        e = array + i * size
        length, mx, buf = ustr(pt, e)
        start, end = ptr(pt, e + 2 * p), ptr(pt, e + 3 * p)
        if not buf and not start:
            continue
        assert mx == length + 2
        when = struct.unpack("<Q", vread(pt, e + 4 * p, 8))[0]
        got.append((vread(pt, buf, length).decode("utf-16-le"), start, end, when))
    assert got == [(u.name, u.start, u.end, u.time) for u in lay.unloaded]
    assert len(got) == (0 if kind == "wine64" else 3)


def test_unloaded_ring_and_families():
    assert [kernel_mod.kdbg_size(f, b) for f, b in (("xp", 2600), ("2003", 3790),
                                                     ("win7", 7601), ("win10", 10240),
                                                     ("win10", 17134), ("win10", 19041))] == [
        0x290, 0x318, 0x340, 0x360, 0x368, 0x380]
    for family, machine, mode, ck, ts, li in (("win7", "x64", "x64", 0x78, None, 0x80),
                                              ("xp", "x86", "x86", 0x40, None, 0x44),
                                              ("win10", "x86", "pae", 0x40, 0x58, 0x4C)):
        mem = forge.PhysicalMemory([(0x1, 0x9F), (0x100, 0x2000)])
        pt = forge.PageTables(mem, mode)
        is64 = machine == "x64"
        base = 0xFFFFF80002A00000 if is64 else 0x804D7000
        unloaded = [(f"u{i}.sys", base + 0x100000 + i * 0x1000, base + 0x101000 + i * 0x1000,
                     1000 + i) for i in range(53)]
        lay = forge.build_kernel_space(
            pt, mem, machine=machine, family=family, unloaded=unloaded,
            modules=[("ntoskrnl.exe", "\\WINDOWS\\system32\\ntoskrnl.exe",
                      pe_mod.build_kernel(machine=machine), base)])
        assert struct.unpack("<I", vread(pt, lay.mm_last_unloaded_driver, 4))[0] == 3
        assert [u.name for u in lay.unloaded][:4] == ["u50.sys", "u51.sys", "u52.sys", "u3.sys"]
        e = lay.modules[0].ldr_entry
        assert struct.unpack("<I", vread(pt, e + ck, 4))[0] == lay.modules[0].checksum
        if ts is not None:
            assert struct.unpack("<I", vread(pt, e + ts, 4))[0] == lay.modules[0].timestamp
        # The kernel's LoadedImports is MM_SYSLDR_BOOT_LOADED, (ULONG_PTR)-1 (ReactOS sysldr.c).
        width = 8 if is64 else 4
        assert int.from_bytes(vread(pt, e + li, width), "little") == (1 << 8 * width) - 1
        assert lay.kdbg_size == kernel_mod.kdbg_size(family, lay.build)


# -- corruption options ------------------------------------------------------------------------

def test_corruptions(tmp_path):
    s = scen.win10_x64(tmp_path / "c.dmp", loop_after=3, bad_name_length=4,
                       huge_size_of_image=5)
    entries, end = walk(s.pt, s.layout.ps_loaded_module_list)
    assert end == "loop" and len(entries) == 3
    assert entries[2]["flink"] == s.layout.modules[0].ldr_entry
    assert s.layout.corruptions == {"loop_after": 3, "bad_name_length": 4,
                                    "huge_size_of_image": 5}
    # Entries after the loop point are still written: read them by address.
    e4, e5 = (s.layout.modules[i].ldr_entry for i in (3, 4))
    for off in (0x48, 0x58):
        length, mx, _ = ustr(s.pt, e4 + off)
        assert length == 0xFFFE > mx
    assert struct.unpack("<I", vread(s.pt, e5 + 0x40, 4))[0] == 0x7FFF0000
    s2 = scen.server2003_x86_pae(tmp_path / "u.dmp", unmapped_entry=2)
    entries, end = walk(s2.pt, s2.layout.ps_loaded_module_list)
    assert end == "unmapped" and len(entries) == 2
    assert entries[1]["flink"] == s2.layout.unmapped_va and s2.pt.translate(
        s2.layout.unmapped_va) is None


def test_data_area_fallback_after_the_image():
    """A kernel whose .data tail is too small gets its variables on a page after the image."""
    mem = forge.PhysicalMemory([(0x1, 0x9F), (0x100, 0x2000)])
    pt = forge.PageTables(mem, "x64")
    full = pe_mod.build_driver("ntoskrnl.exe", data=b"\x01" * 0xF00, relocs=False)
    base = 0xFFFFF80033300000
    lay = forge.build_kernel_space(pt, mem, modules=[("ntoskrnl.exe", "nt", full, base)])
    end = lay.modules[0].image.end
    assert lay.data_area[0] == end and lay.kdbg >= end
    assert walk(pt, lay.ps_loaded_module_list)[1] == "head"
    mem = forge.PhysicalMemory([(0x1, 0x9F), (0x100, 0x2000)])
    pt = forge.PageTables(mem, "x64")
    pt.map_data(base + len(lay.modules[0].image.image), bytes(0x1000))
    with pytest.raises(ValueError, match="no room"):
        forge.build_kernel_space(pt, mem, modules=[("ntoskrnl.exe", "nt", full, base)])


def test_bad_arguments():
    mem = forge.PhysicalMemory([(0x1, 0x9F), (0x100, 0x1000)])
    pt = forge.PageTables(mem, "pae")
    with pytest.raises(ValueError, match="does not match"):
        forge.build_kernel_space(pt, mem, machine="x64", modules=[("a", "a", b"", 0)])
    with pytest.raises(ValueError, match="family"):
        forge.build_kernel_space(pt, mem, machine="x86", family="vista")
    with pytest.raises(ValueError, match="not a PE"):
        forge.map_image(pt, mem, b"MZ" + bytes(0x100), 0x80000000)
    with pytest.raises(ValueError, match="64-bit only"):
        scen.server2003_x86_pae("/nonexistent/x.dmp", fmt="range_full")


# -- dump files: outside readers, size, time ---------------------------------------------------

@pytest.mark.parametrize("fmt", ["full", "bitmap", "kernel", "range_kernel", "range_full"])
def test_kdmp_parser_reads_the_kdbg_page(tmp_path, fmt):
    require("kdmp_parser")
    s = scen.win10_x64(tmp_path / f"{fmt}.dmp", fmt=fmt)
    parser = kdmp_open(s.path)
    page = s.layout.kdbg & ~0xFFF
    assert parser.translate_virtual(s.layout.kdbg) == s.pt.translate(s.layout.kdbg)
    assert parser.read_virtual_page(page) == s.read(page, 0x1000)
    # The module list, walked through kdmp-parser's pages, gives the same bases.
    def kread(va: int, n: int) -> bytes:
        data = parser.read_virtual_page(va & ~0xFFF)
        return bytes(data[va & 0xFFF:(va & 0xFFF) + n])
    va, bases = struct.unpack("<Q", kread(s.layout.ps_loaded_module_list, 8))[0], []
    while va != s.layout.ps_loaded_module_list and len(bases) < 64:
        bases.append(struct.unpack("<Q", kread(va + 0x30, 8))[0])
        va = struct.unpack("<Q", kread(va, 8))[0]
    assert bases == [m.base for m in s.layout.modules]


def test_kdmp_parser_reads_wine_dump(shared_data, tmp_path):
    require("kdmp_parser")
    s = _scenario("wine64", tmp_path, shared_data, fmt="kernel")
    parser = kdmp_open(s.path)
    for m in s.layout.modules:
        assert parser.read_virtual_page(m.base) == s.read(m.base, 0x1000)
    page = s.layout.kdbg & ~0xFFF
    assert parser.read_virtual_page(page) == s.read(page, 0x1000)


@pytest.mark.parametrize("kind", ["win10", "2003", "wine64", "wine32"])
def test_scenarios_are_fast_and_sparse(shared_data, tmp_path, kind):
    start = time.perf_counter()
    s = _scenario(kind, tmp_path, shared_data)
    assert time.perf_counter() - start < 2.0
    st = os.stat(s.path)
    assert st.st_size > 120 << 20 and st.st_blocks * 512 < 16 << 20
    assert s.header.machine == ("x64" if kind in ("win10", "wine64") else "x86")
    assert s.header.pae == (kind in ("2003", "wine32"))


def test_scenario_formats(tmp_path):
    tri = scen.win10_x64(tmp_path / "t.dmp", fmt="triage")
    data = tri.path.read_bytes()
    assert data[0xF98:0xF9C] == struct.pack("<I", 4) and data[-4:] == b"TRGD"
    assert scen.CULPRIT_PATH.encode("utf-16-le") in data
    raw = scen.server2003_x86_pae(tmp_path / "r.raw", fmt="raw")
    kd_pa = raw.pt.translate(raw.layout.kdbg)
    with open(raw.path, "rb") as f:
        f.seek(kd_pa + 0x10)
        assert f.read(4) == b"KDBG"
    wine = scen.win10_x64(tmp_path / "w.dmp", wine_dir=None, leak_driver=False,
                          modules=[scen.DriverSpec("only.sys", {"ntoskrnl.exe": ["ExFreePool"]})])
    assert [m.name for m in wine.layout.modules] == ["ntoskrnl.exe", "hal.dll", "only.sys"]
    assert wine.culprit is None and wine.culprit_iat_slot is None and wine.importers == []


def test_no_kdbg_and_paged_out_module_pages():
    mem = forge.PhysicalMemory([(0x1, 0x9F), (0x100, 0x2000)])
    pt = forge.PageTables(mem, "x64")
    base = 0xFFFFF80002A00000
    drv = pe_mod.build_driver("p.sys", imports={"ntoskrnl.exe": ["ExAllocatePool"]})
    lay = forge.build_kernel_space(
        pt, mem, family="win7", kdbg=False, missing_pages={"p.sys": [0x1000]},
        modules=[("ntoskrnl.exe", "nt", pe_mod.build_kernel(), base),
                 ("p.sys", "p", drv, base + 0x100000)])
    assert lay.kdbg == 0 and lay.kdbg_size == 0 and "KdDebuggerDataBlock" not in lay.variables
    assert lay.header().kd_debugger_data_block == 0
    assert lay.modules[1].image.missing == (base + 0x101000,)
    assert pt.translate(base + 0x101000) is None and pt.translate(base + 0x102000) is not None
    assert [m["name"] for m in walk(pt, lay.ps_loaded_module_list)[0]] == ["ntoskrnl.exe",
                                                                            "p.sys"]
