"""PE images as the Windows loader lays them out in memory: parse, map, relocate, bind.

:func:`parse_pe` reads the headers of a file; :func:`map_image` copies the headers and each
section to its RVA in a forged address space, applies the base relocations itself (``.reloc``
parsed here, not by pefile), and returns a :class:`MappedImage` with the exports (name → VA)
and the imports (DLL, name or ordinal, IAT slot VA). :func:`bind_imports` writes into each IAT
slot the VA of the export it names, as the kernel's loader does for drivers.

Units: RVA = byte offset from the image base, VA = virtual byte address, PA = physical byte
address; sizes are bytes. Layouts: WINDOWS_INTERNALS.md section 6. Bounds are checked on every
table: a malformed file gives ``ValueError`` or a shorter table, never a huge allocation.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .memory import PAGE_SIZE, PhysicalMemory
from .paging import MM_READWRITE, PROTECTION_SHIFT, PageTables

MAX_IMAGE = 256 << 20
_MAX_ENTRIES = 0x10000


def _get(buf: bytes | bytearray, off: int, fmt: str) -> tuple:
    """``struct.unpack_from`` that reads zeros past the end of ``buf`` (and before 0)."""
    n = struct.calcsize(fmt)
    chunk = bytes(buf[off:off + n]) if 0 <= off < len(buf) else b""
    return struct.unpack(fmt, chunk + bytes(n - len(chunk)))


def _cstr(buf: bytes | bytearray, off: int, limit: int = 512) -> str:
    if not 0 <= off < len(buf):
        return ""
    raw = bytes(buf[off:off + limit])
    return raw.split(b"\0", 1)[0].decode("latin-1")


@dataclass(frozen=True)
class SectionInfo:
    """One section header: RVAs and sizes in bytes, file offsets in bytes."""

    name: str
    virtual_address: int
    virtual_size: int
    raw_offset: int
    raw_size: int
    characteristics: int


@dataclass(frozen=True)
class PeInfo:
    """Header fields of a PE file (``directories`` = (RVA, size) pairs, index 0-15)."""

    machine: int
    is64: bool
    image_base: int
    size_of_image: int
    size_of_headers: int
    section_alignment: int
    entry_rva: int
    timestamp: int
    checksum: int
    directories: tuple[tuple[int, int], ...]
    sections: tuple[SectionInfo, ...]
    image_base_offset: int  # file offset of OptionalHeader.ImageBase

    def directory(self, index: int) -> tuple[int, int]:
        """(RVA, size) of data directory ``index``, (0, 0) when absent."""
        return self.directories[index] if index < len(self.directories) else (0, 0)


def parse_pe(data: bytes | bytearray) -> PeInfo:
    """Parse DOS, NT and section headers of a PE32 / PE32+ file (ValueError if not PE)."""
    if bytes(data[:2]) != b"MZ":
        raise ValueError("not a PE file: no MZ signature")
    (lfanew,) = _get(data, 0x3C, "<I")
    if bytes(data[lfanew:lfanew + 4]) != b"PE\0\0":
        raise ValueError("not a PE file: no PE signature at e_lfanew")
    machine, nsec, ts, _, _, opt_size, _ = _get(data, lfanew + 4, "<HHIIIHH")
    o = lfanew + 0x18
    (magic,) = _get(data, o, "<H")
    if magic not in (0x10B, 0x20B):
        raise ValueError(f"unknown optional header magic {magic:#x}")
    is64 = magic == 0x20B
    (entry,) = _get(data, o + 0x10, "<I")
    base_off = o + (0x18 if is64 else 0x1C)
    (base,) = _get(data, base_off, "<Q" if is64 else "<I")
    salign, _ = _get(data, o + 0x20, "<II")
    size, hsize, cksum = _get(data, o + 0x38, "<III")
    nd_off = o + (0x6C if is64 else 0x5C)
    (ndirs,) = _get(data, nd_off, "<I")
    ndirs = min(ndirs, 16, max(0, (opt_size - (nd_off + 4 - o)) // 8))
    dirs = tuple(_get(data, nd_off + 4 + 8 * i, "<II") for i in range(ndirs))
    secs = []
    for i in range(min(nsec, 96)):
        raw = _get(data, o + opt_size + 0x28 * i, "<8sIIIIIIHHI")
        secs.append(SectionInfo(raw[0].rstrip(b"\0").decode("latin-1"), raw[2], raw[1],
                                raw[4], raw[3], raw[9]))
    return PeInfo(machine, is64, base, size, hsize, salign, entry, ts, cksum, dirs,
                  tuple(secs), base_off)


@dataclass(frozen=True)
class Import:
    """One imported function: ``name`` or ``ordinal`` (the other is None), IAT slot address
    (``iat`` is an RVA from :func:`read_imports`, a VA in :attr:`MappedImage.imports`)."""

    dll: str
    name: str | None
    ordinal: int | None
    iat: int


@dataclass
class Exports:
    """Export table of an image: RVAs by name and by ordinal, forwarders ("dll.Function")."""

    dll_name: str = ""
    by_name: dict[str, int] = field(default_factory=dict)
    by_ordinal: dict[int, int] = field(default_factory=dict)
    forwarders: dict[str, str] = field(default_factory=dict)  # name or "#ordinal" -> target


def read_exports(img: bytes | bytearray, info: PeInfo) -> Exports:
    """Exports of a mapped image ``img`` (bytes indexed by RVA); empty if there are none."""
    rva, size = info.directory(0)
    out = Exports()
    if not rva or not size:
        return out
    _, _, _, _, name_rva, base, nfun, nnames, afun, anames, aords = _get(img, rva, "<IIHHIIIIIII")
    out.dll_name = _cstr(img, name_rva)
    nfun, nnames = min(nfun, _MAX_ENTRIES), min(nnames, _MAX_ENTRIES)
    names: dict[int, str] = {}
    for i in range(nnames):
        (nrva,) = _get(img, anames + 4 * i, "<I")
        (idx,) = _get(img, aords + 2 * i, "<H")
        names.setdefault(idx, _cstr(img, nrva))
    for idx in range(nfun):
        (frva,) = _get(img, afun + 4 * idx, "<I")
        if not frva:
            continue
        name = names.get(idx)
        if rva <= frva < rva + size:
            out.forwarders[name or f"#{base + idx}"] = _cstr(img, frva)
            continue
        out.by_ordinal[base + idx] = frva
        if name:
            out.by_name[name] = frva
    return out


def read_imports(img: bytes | bytearray, info: PeInfo) -> list[Import]:
    """Imports of a mapped image ``img``: one :class:`Import` per thunk, IAT slots as RVAs."""
    rva, _ = info.directory(1)
    out: list[Import] = []
    if not rva:
        return out
    ptr, fmt = (8, "<Q") if info.is64 else (4, "<I")
    flag = 1 << (8 * ptr - 1)
    for d in range(4096):
        ilt, _, _, name_rva, iat = _get(img, rva + 20 * d, "<IIIII")
        if not (ilt or name_rva or iat):
            break
        dll = _cstr(img, name_rva)
        lookup = ilt or iat
        for i in range(_MAX_ENTRIES):
            (value,) = _get(img, lookup + ptr * i, fmt)
            if not value:
                break
            if value & flag:
                out.append(Import(dll, None, value & 0xFFFF, iat + ptr * i))
            else:
                out.append(Import(dll, _cstr(img, (value & 0x7FFFFFFF) + 2), None, iat + ptr * i))
    return out


def apply_relocations(img: bytearray, info: PeInfo, delta: int) -> int:
    """Apply the base relocations of ``img`` for a load ``delta`` (bytes); returns the number
    of fixed-up slots. Types: 0 ABSOLUTE, 1 HIGH, 2 LOW, 3 HIGHLOW, 4 HIGHADJ, 10 DIR64."""
    rva, size = info.directory(5)
    if not rva or not size or not delta:
        return 0
    end, pos, count = min(rva + size, len(img)), rva, 0
    while pos + 8 <= end:
        page, block = _get(img, pos, "<II")
        if block < 8:
            break
        entries = _get(img, pos + 8, f"<{(min(block, end - pos) - 8) // 2}H")
        i = 0
        while i < len(entries):
            kind, at = entries[i] >> 12, page + (entries[i] & 0xFFF)
            i += 1
            if kind == 0 or not 0 <= at < len(img):
                continue
            if kind == 10:
                struct.pack_into("<Q", img, at, (_get(img, at, "<Q")[0] + delta) % (1 << 64))
            elif kind == 3:
                struct.pack_into("<I", img, at, (_get(img, at, "<I")[0] + delta) % (1 << 32))
            elif kind == 2:
                struct.pack_into("<H", img, at, (_get(img, at, "<H")[0] + delta) & 0xFFFF)
            elif kind in (1, 4):  # HIGHADJ: the next entry holds the low half
                low = entries[i] ^ 0x8000 if kind == 4 and i < len(entries) else 0
                i += kind == 4
                value = ((_get(img, at, "<H")[0] << 16) + low + delta) >> 16
                struct.pack_into("<H", img, at, value & 0xFFFF)
            else:
                raise ValueError(f"unsupported relocation type {kind} at RVA {at:#x}")
            count += 1
        pos += block
    return count


def read_codeview(img: bytes | bytearray, info: PeInfo) -> tuple[bytes, int, str] | None:
    """(GUID as stored, age, PDB name) of the first CodeView RSDS record, via AddressOfRawData."""
    rva, size = info.directory(6)
    for i in range(min(size // 0x1C, 32) if rva else 0):
        _, _, _, _, kind, n, addr, _ = _get(img, rva + 0x1C * i, "<IIHHIIII")
        if kind == 2 and addr and bytes(img[addr:addr + 4]) == b"RSDS":
            return (bytes(img[addr + 4:addr + 20]), _get(img, addr + 20, "<I")[0],
                    _cstr(img, addr + 24, max(0, n - 24)))
    return None


def layout_image(data: bytes | bytearray, info: PeInfo, base: int) -> tuple[bytearray, int]:
    """The loader's view of file ``data`` at ``base``: headers and sections at their RVAs
    (VirtualSize rounded up to pages, zeros beyond the raw data), relocated, and (images with a
    relocation directory only) the in-memory ImageBase set to ``base``. Images with
    SectionAlignment < 4 KiB are mapped flat (RVA == file offset, up to SizeOfImage).
    Returns (bytes of page-rounded SizeOfImage, relocations applied)."""
    size = -(-info.size_of_image // PAGE_SIZE) * PAGE_SIZE
    if not 0 < size <= MAX_IMAGE:
        raise ValueError(f"SizeOfImage {info.size_of_image:#x} is out of range")
    img = bytearray(size)
    if info.section_alignment < PAGE_SIZE:
        n = min(len(data), info.size_of_image)
        img[:n] = data[:n]
    else:
        hn = min(info.size_of_headers, len(data), size)
        img[:hn] = data[:hn]
        for s in info.sections:
            span = -(-(s.virtual_size or s.raw_size) // PAGE_SIZE) * PAGE_SIZE
            n = max(0, min(s.raw_size, span, len(data) - s.raw_offset, size - s.virtual_address))
            img[s.virtual_address:s.virtual_address + n] = data[s.raw_offset:s.raw_offset + n]
    count = apply_relocations(img, info, base - info.image_base)
    width = 8 if info.is64 else 4
    if info.directory(5)[1] and info.image_base_offset + width <= min(info.size_of_headers, size):
        img[info.image_base_offset:info.image_base_offset + width] = \
            (base % (1 << 8 * width)).to_bytes(width, "little")
    return img, count


def pagefile_pte(mode: str, page_file_high: int) -> int:
    """A paged-out software PTE (Valid=0, protection MM_READWRITE) for ``mode``."""
    prot = MM_READWRITE << PROTECTION_SHIFT
    return (page_file_high << 12 if mode == "x86" else page_file_high << 32) | prot


@dataclass
class MappedImage:
    """An image mapped by :func:`map_image`. VAs are absolute; ``image`` holds the relocated
    bytes (before binding) indexed by RVA; ``missing`` the VAs of pages left out."""

    name: str
    base: int
    info: PeInfo
    image: bytes
    pt: PageTables
    exports: dict[str, int]
    ordinals: dict[int, int]
    forwarders: dict[str, str]
    imports: list[Import]
    relocations: int
    missing: tuple[int, ...] = ()

    @property
    def size(self) -> int:
        """SizeOfImage in bytes (as in the header, not rounded)."""
        return self.info.size_of_image

    @property
    def end(self) -> int:
        """VA just past the page-rounded image (``base + len(image)``)."""
        return self.base + len(self.image)

    @property
    def entry(self) -> int:
        """VA of the entry point, 0 if AddressOfEntryPoint is 0."""
        return self.base + self.info.entry_rva if self.info.entry_rva else 0

    @property
    def timestamp(self) -> int:
        """FileHeader.TimeDateStamp."""
        return self.info.timestamp

    @property
    def checksum(self) -> int:
        """OptionalHeader.CheckSum."""
        return self.info.checksum

    @property
    def codeview(self) -> tuple[bytes, int, str] | None:
        """(GUID bytes, age, PDB name) of the RSDS record, or None."""
        return read_codeview(self.image, self.info)

    def section_at(self, va: int) -> SectionInfo | None:
        """The section holding ``va``, if any."""
        rva = va - self.base
        for s in self.info.sections:
            if s.virtual_address <= rva < s.virtual_address + max(s.virtual_size, s.raw_size):
                return s
        return None


def map_image(pt: PageTables, mem: PhysicalMemory, pe_bytes: bytes, base: int, *,
              name: str | None = None, missing_pages: Iterable[int] = ()) -> MappedImage:
    """Map the PE file ``pe_bytes`` at VA ``base`` (page aligned) with 4 KiB pages.

    Headers and sections go to their RVAs, base relocations are applied for ``base -
    ImageBase`` and the in-memory ImageBase is set to ``base`` (as :func:`layout_image`). Each
    page gets a fresh physical page; pages whose RVA is in ``missing_pages`` get a paged-out
    PTE instead (PageFileHigh = 1 + page index) and no physical page. ``name`` defaults to the
    export directory's DLL name (else "image").
    """
    if base % PAGE_SIZE:
        raise ValueError(f"image base {base:#x} is not page aligned")
    info = parse_pe(pe_bytes)
    img, count = layout_image(pe_bytes, info, base)
    missing = {rva & ~(PAGE_SIZE - 1) for rva in missing_pages}
    for rva in range(0, len(img), PAGE_SIZE):
        va = base + rva
        if rva in missing:
            pt.set_entry(va, "pte", pagefile_pte(pt.mode, 1 + rva // PAGE_SIZE))
            continue
        pa = mem.alloc_page() << 12
        chunk = img[rva:rva + PAGE_SIZE]
        if any(chunk):
            mem.write(pa, chunk)
        pt.map(va, pa)
    exp = read_exports(img, info)
    imports = [Import(i.dll, i.name, i.ordinal, base + i.iat) for i in read_imports(img, info)]
    return MappedImage(name or exp.dll_name or "image", base, info, bytes(img), pt,
                       {n: base + r for n, r in exp.by_name.items()},
                       {o: base + r for o, r in exp.by_ordinal.items()}, exp.forwarders,
                       imports, count, tuple(sorted(base + r for r in missing)))


@dataclass
class BindResult:
    """What :func:`bind_imports` did: ``bound`` (importer, import, VA written), ``unresolved``
    (importer, import, reason)."""

    bound: list[tuple[str, Import, int]] = field(default_factory=list)
    unresolved: list[tuple[str, Import, str]] = field(default_factory=list)


def _stem(name: str) -> str:
    return name.lower().rsplit(".", 1)[0]


def bind_imports(images: Sequence[MappedImage], *, kernel: MappedImage | None = None,
                 hal: MappedImage | None = None) -> BindResult:
    """Write into every IAT slot of ``images`` the VA of the export it imports.

    The exporting image is found by DLL name, case-insensitively, with or without extension;
    "ntoskrnl.exe" is ``kernel`` (default: the image named ntoskrnl.exe / ntkrnl*.exe, else the
    first) and "hal.dll" is ``hal`` (default: the image named hal*.dll), whatever their file
    names. Imports by ordinal and forwarders ("dll.Function", "dll.#12") are followed. Slots
    that cannot be resolved (DLL not loaded, name not exported, IAT page not mapped) keep their
    bytes and are listed in the result.
    """
    by_name: dict[str, MappedImage] = {}
    for im in images:
        by_name.setdefault(im.name.lower(), im)
        by_name.setdefault(_stem(im.name), im)
    kernel = kernel or next((im for im in images
                             if im.name.lower().startswith(("ntoskrnl", "ntkrnl"))),
                            images[0] if images else None)
    hal = hal or next((im for im in images if im.name.lower().startswith("hal")), None)
    for alias, special in (("ntoskrnl.exe", kernel), ("ntoskrnl", kernel), ("hal.dll", hal),
                           ("hal", hal)):
        if special is not None:
            by_name[alias] = special

    def resolve(dll: str, name: str | None, ordinal: int | None, depth: int = 0) -> int | str:
        target = by_name.get(dll.lower()) or by_name.get(_stem(dll))
        if target is None:
            return f"{dll} is not loaded"
        key = name if name is not None else f"#{ordinal}"
        if key in target.forwarders and depth < 8:
            fdll, _, fname = target.forwarders[key].rpartition(".")
            if fname.startswith("#") and fname[1:].isdigit():
                return resolve(fdll, None, int(fname[1:]), depth + 1)
            return resolve(fdll, fname, None, depth + 1)
        va = target.exports.get(name) if name is not None else target.ordinals.get(ordinal or 0)
        return va if va is not None else f"{target.name} does not export {key}"

    out = BindResult()
    for im in images:
        width = 8 if im.info.is64 else 4
        for imp in im.imports:
            got = resolve(imp.dll, imp.name, imp.ordinal)
            pa = im.pt.translate(imp.iat)
            if isinstance(got, str) or pa is None:
                reason = got if isinstance(got, str) else f"IAT slot {imp.iat:#x} is not mapped"
                out.unresolved.append((im.name, imp, reason))
                continue
            im.pt.mem.write(pa, got.to_bytes(width, "little"))
            out.bound.append((im.name, imp, got))
    return out
