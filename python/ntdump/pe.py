"""PE images of loaded modules: ``Module.headers`` / ``.sections()`` / ``.exports()`` /
``.imports()`` / ``.pdb``, and ``Dump.lmi``'s :class:`LoadedModuleInfo`.

The image is rebuilt from the dump's virtual memory page by page (pages that cannot be read are
zeros and are listed in :attr:`ntdump.modules.Module.missing_pages`) and parsed once per dump; see
docs/symbols.md.
Addresses are VAs, offsets from the image base are RVAs, sizes are bytes.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from . import _schema
from ._format import kd_addr
from ._handle import Handle

if TYPE_CHECKING:
    from ._native import CodeViewDict
from ._native import PeImage
from ._native import pe_image as native_pe_image

if TYPE_CHECKING:
    import pandas as pd
else:
    from ._lazy import pd  # imported on first use (start-up time)


class HasHandle(Protocol):
    """Anything holding a dump's :class:`~ntdump._handle.Handle` as ``_h`` (an ntdump.Dump)."""

    _h: Handle

MACHINES = {0x14C: "I386", 0x8664: "X64", 0xAA64: "ARM64", 0x1C4: "ARMNT", 0x200: "IA64"}
"""``IMAGE_FILE_HEADER.Machine`` values by name."""

FILE_CHARACTERISTICS = {
    0x0001: "Relocations stripped",
    0x0002: "Executable",
    0x0004: "Line numbers stripped",
    0x0008: "Symbols stripped",
    0x0020: "App can handle >2gb addresses",
    0x0100: "32 bit word machine",
    0x0200: "Debug information stripped",
    0x1000: "System file",
    0x2000: "DLL",
}
DLL_CHARACTERISTICS = {
    0x0020: "High entropy VA supported",
    0x0040: "Dynamic base",
    0x0080: "Force integrity",
    0x0100: "NX compatible",
    0x0200: "No isolation",
    0x0400: "No SEH",
    0x0800: "Do not bind",
    0x1000: "AppContainer",
    0x2000: "WDM driver",
    0x4000: "Guard",
    0x8000: "Terminal server aware",
}
SECTION_FLAGS = {
    0x00000020: "Code",
    0x00000040: "Initialized Data",
    0x00000080: "Uninitialized Data",
    0x02000000: "Discardable",
    0x04000000: "Not Cached",
    0x08000000: "Not Paged",
    0x10000000: "Shared",
    0x20000000: "Execute",
    0x40000000: "Read",
    0x80000000: "Write",
}
SUBSYSTEMS = {1: "Native", 2: "Windows GUI", 3: "Windows CUI", 10: "EFI application",
              11: "EFI boot service driver", 12: "EFI runtime driver"}

SECTION_SCHEMA = {
    "name": _schema.NAME,
    "va": _schema.ADDRESS,
    "rva": _schema.UINT32,
    "virtual_size": _schema.BYTES,
    "raw_size": _schema.BYTES,
    "raw_pointer": _schema.UINT32,
    "characteristics": _schema.UINT32,
    "flags": _schema.NAME,
}
EXPORT_SCHEMA = {
    "name": _schema.NAME,
    "ordinal": _schema.UINT32,
    "rva": _schema.UINT32,
    "address": _schema.NULLABLE_ADDRESS,
    "forwarder": _schema.NAME,
}
IMPORT_SCHEMA = {
    "dll": _schema.NAME,
    "name": _schema.NAME,
    "ordinal": "UInt32",
    "hint": "UInt32",
    "iat_slot": _schema.ADDRESS,
    "iat_rva": _schema.UINT32,
    "value": _schema.NULLABLE_ADDRESS,
    "target": _schema.NAME,
    "source": _schema.LABEL,
}
DEBUG_SCHEMA = {
    "kind": _schema.UINT32,
    "kind_name": _schema.LABEL,
    "size_of_data": _schema.BYTES,
    "address_of_raw_data": _schema.UINT32,
    "pointer_to_raw_data": _schema.UINT32,
    "time_date_stamp": _schema.UINT32,
    "mapped": _schema.BOOL,
}


def flag_names(value: int, table: dict[int, str]) -> list[str]:
    """The names of the bits of ``value`` found in ``table``, lowest bit first."""
    return [name for bit, name in table.items() if value & bit]


def _ctime(ts: int) -> str:
    try:
        t = _dt.datetime.fromtimestamp(ts, _dt.UTC)
    except (OverflowError, OSError, ValueError):
        return "(invalid)"
    return t.strftime("%a %b %d %H:%M:%S %Y")


@dataclass(frozen=True, slots=True)
class DataDirectory:
    """One data directory: ``index`` (0 export, 1 import, 6 debug, 12 IAT …), name, RVA, size."""

    index: int
    name: str
    rva: int
    size: int


@dataclass(frozen=True)
class PeHeaders:
    """The headers of an image (what ``!dh`` prints; ``str()`` lays them out the same way).

    ``file`` and ``optional`` map field names (``machine``, ``size_of_image`` …) to values.
    """

    base: int
    e_lfanew: int
    file: dict[str, int]
    optional: dict[str, int | None]
    directories: tuple[DataDirectory, ...]
    sections: pd.DataFrame = field(repr=False)
    warnings: tuple[str, ...] = ()

    @property
    def machine(self) -> str:
        """``"I386"``, ``"X64"`` … (hex for unknown machines)."""
        m = self.file["machine"]
        return MACHINES.get(m, f"{m:#x}")

    @property
    def is64(self) -> bool:
        """True for PE32+."""
        return self.optional["magic"] == 0x20B

    @property
    def timestamp(self) -> int:
        """FileHeader.TimeDateStamp."""
        return self.file["time_date_stamp"]

    @property
    def size_of_image(self) -> int:
        """SizeOfImage (bytes) as stored."""
        return int(self.optional["size_of_image"] or 0)

    @property
    def checksum(self) -> int:
        """OptionalHeader.CheckSum."""
        return int(self.optional["checksum"] or 0)

    def directory(self, index: int) -> DataDirectory | None:
        """Directory ``index`` if present and non-empty."""
        for d in self.directories:
            if d.index == index and (d.rva or d.size):
                return d
        return None

    def __str__(self) -> str:
        f, o = self.file, self.optional
        kind = "DLL" if f["characteristics"] & 0x2000 else "EXECUTABLE IMAGE"
        lines = [f"File Type: {kind}", "FILE HEADER VALUES",
                 f"{f['machine']:8X} machine ({self.machine})",
                 f"{f['number_of_sections']:8X} number of sections",
                 f"{f['time_date_stamp']:8X} time date stamp {_ctime(f['time_date_stamp'])}",
                 "",
                 f"{f['pointer_to_symbol_table']:8X} file pointer to symbol table",
                 f"{f['number_of_symbols']:8X} number of symbols",
                 f"{f['size_of_optional_header']:8X} size of optional header",
                 f"{f['characteristics']:8X} characteristics"]
        chars = flag_names(f["characteristics"], FILE_CHARACTERISTICS)
        lines += [f"            {n}" for n in chars]
        magic = int(o["magic"] or 0)
        lines += ["", "OPTIONAL HEADER VALUES",
                  f"{magic:8X} magic # ({'PE32+' if magic == 0x20B else 'PE32'})",
                  f"{o['major_linker_version']:5}.{o['minor_linker_version']:02} linker version"]
        for key, label in (("size_of_code", "size of code"),
                           ("size_of_initialized_data", "size of initialized data"),
                           ("size_of_uninitialized_data", "size of uninitialized data"),
                           ("address_of_entry_point", "address of entry point"),
                           ("base_of_code", "base of code")):
            lines.append(f"{o[key]:8X} {label}")
        if o.get("base_of_data") is not None:
            lines.append(f"{o['base_of_data']:8X} base of data")
        lines += ["         ----- new -----",
                  f"{o['image_base']:016x} image base",
                  f"{o['section_alignment']:8X} section alignment",
                  f"{o['file_alignment']:8X} file alignment",
                  f"{o['subsystem']:8X} subsystem "
                  f"({SUBSYSTEMS.get(int(o['subsystem'] or 0), '?')})",
                  f"{o['major_operating_system_version']:8}.{o['minor_operating_system_version']:02}"
                  " operating system version",
                  f"{o['major_image_version']:8}.{o['minor_image_version']:02} image version",
                  f"{o['major_subsystem_version']:8}.{o['minor_subsystem_version']:02}"
                  " subsystem version",
                  f"{o['size_of_image']:8X} size of image",
                  f"{o['size_of_headers']:8X} size of headers",
                  f"{o['checksum']:8X} checksum",
                  f"{o['size_of_stack_reserve']:016X} size of stack reserve",
                  f"{o['size_of_stack_commit']:016X} size of stack commit",
                  f"{o['size_of_heap_reserve']:016X} size of heap reserve",
                  f"{o['size_of_heap_commit']:016X} size of heap commit",
                  f"{o['dll_characteristics']:8X}  DLL characteristics"]
        lines += [f"            {n}"
                  for n in flag_names(int(o["dll_characteristics"] or 0), DLL_CHARACTERISTICS)]
        for d in self.directories:
            lines.append(f"{d.rva:8X} [{d.size:8X}] address [size] of {d.name} Directory")
        for i, s in enumerate(self.sections.itertuples(index=False), 1):
            lines += ["", f"SECTION HEADER #{i}",
                      f"{s.name:>8} name",
                      f"{s.virtual_size:8X} virtual size",
                      f"{s.rva:8X} virtual address",
                      f"{s.raw_size:8X} size of raw data",
                      f"{s.raw_pointer:8X} file pointer to raw data",
                      f"{s.characteristics:8X} flags"]
            lines += [f"         {n}" for n in flag_names(int(s.characteristics), SECTION_FLAGS)]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class PdbInfo:
    """The CodeView record of an image: which PDB it was built with.

    ``key`` is the symbol-store key (GUID then age in hex, upper case; for NB10 the signature then
    age); ``store_path`` is ``<name>/<key>/<name>``.
    """

    name: str
    """PDB file name (the last component of :attr:`path`)."""
    guid: str | None
    """``{XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX}`` (RSDS), None for NB10."""
    age: int
    key: str
    path: str
    """The path as stored (often the build machine's)."""
    format: str
    """``"RSDS"`` (PDB 7.0) or ``"NB10"`` (PDB 2.0)."""
    signature: int | None = None
    """NB10 only: the PDB's time stamp."""

    @property
    def store_path(self) -> str:
        """Relative symbol-store path: ``ntkrnlmp.pdb/<KEY>/ntkrnlmp.pdb``."""
        return f"{self.name}/{self.key}/{self.name}"

    def __str__(self) -> str:
        return f"{self.name} {self.guid or f'{self.signature:08X}'} age {self.age} ({self.key})"


def pdb_from_codeview(cv: CodeViewDict | None) -> PdbInfo | None:
    """A :class:`PdbInfo` from the native CodeView dict (None passes through)."""
    if cv is None:
        return None
    return PdbInfo(name=cv["pdb_name"], guid=cv["guid"], age=cv["age"], key=cv["key"],
                   path=cv["path"], format=cv["format"], signature=cv["signature"])


class PeImages:
    """Feature object: the PE images of a dump's modules, rebuilt from virtual memory and parsed
    once per dump (kept in the handle's cache under ``"pe"``).

    ``resolve`` names an address (``nt!ExAllocatePool+0x10``, None when unknown); the dump sets it
    to its symbol lookup so that :meth:`ntdump.modules.Module.imports` can name IAT targets.
    """

    def __init__(self, h: Handle) -> None:
        self._h = h
        self.resolve: Callable[[int], str | None] | None = None

    @property
    def path(self) -> str:
        """The dump's file name."""
        return self._h.path

    def image(self, base: int, size: int | None = None) -> PeImage:
        """The parsed native image at VA ``base`` (``size`` bytes when known). Raises
        :class:`~ntdump.PeFormatError`."""
        cache: dict[int, PeImage] = self._h.cache.setdefault("pe", {})
        img = cache.get(base)
        if img is None:
            img = native_pe_image(self._h.native, base, size)
            cache[base] = img
        return img


def pe_image(owner: Handle | PeImages | HasHandle, base: int, size: int | None = None
             ) -> PeImage:
    """The parsed native image at ``base`` of a dump (``owner``: an :class:`ntdump.Dump`, its
    handle or its :class:`PeImages`), cached per dump. Raises PeFormatError."""
    if isinstance(owner, PeImages):
        return owner.image(base, size)
    h = owner if isinstance(owner, Handle) else owner._h
    return PeImages(h).image(base, size)


def sections_frame(img: Any, dump: str | None = None) -> pd.DataFrame:
    """A native image's section table as a DataFrame (``SECTION_SCHEMA``)."""
    c = img.sections()
    cols = dict(c)
    cols["rva"] = c["virtual_address"]
    cols["va"] = [img.base + r for r in c["virtual_address"]]
    cols["flags"] = [", ".join(flag_names(x, SECTION_FLAGS)) for x in c["characteristics"]]
    return _schema.frame(cols, SECTION_SCHEMA, dump=dump)


def headers_of(img: Any, dump: str | None = None) -> PeHeaders:
    """A :class:`PeHeaders` from a native image."""
    h = img.headers()
    return PeHeaders(base=img.base, e_lfanew=h["e_lfanew"], file=h["file"], optional=h["optional"],
                     directories=tuple(DataDirectory(*d) for d in h["directories"]),
                     sections=sections_frame(img, dump), warnings=tuple(img.warnings))


def debug_frame(img: Any, dump: str | None = None) -> pd.DataFrame:
    """A native image's debug directory as a DataFrame (``DEBUG_SCHEMA``)."""
    c = dict(img.debug())
    missing = set(img.missing_pages)
    c["mapped"] = [
        bool(a) and not any(p in missing for p in range(a & ~0xFFF, a + max(n, 1), 0x1000))
        and a + n <= img.size
        for a, n in zip(c["address_of_raw_data"], c["size_of_data"], strict=True)
    ]
    return _schema.frame(c, DEBUG_SCHEMA, dump=dump)


_GUID_NAME = re.compile(
    r"^\{[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\}(\.[a-z0-9]+)?$", re.I)
_SYSTEM_PREFIXES = ("\\systemroot\\", "\\windows\\", "\\winnt\\")


def not_on_disk_reasons(name: str, path: str) -> list[str]:
    """Why a module may be missing from the driver folder: a GUID-shaped file name, a load path
    outside ``\\SystemRoot`` / ``\\Windows``. Empty when nothing points that way."""
    out = []
    if _GUID_NAME.match(name or ""):
        out.append(f"file name {name} is a GUID: such drivers are usually written at load time "
                   "by their parent program")
    p = (path or "").lower()
    for prefix in ("\\??\\", "\\\\?\\", "\\global??\\"):
        if p.startswith(prefix):
            p = p[len(prefix):]
    p = re.sub(r"^\\device\\harddiskvolume\d+", "", p)
    p = re.sub(r"^[a-z]:", "", p)
    if p and "\\" in p and not p.startswith(_SYSTEM_PREFIXES):
        out.append(f"loaded from {path}, outside \\SystemRoot and \\Windows")
    return out


@dataclass(frozen=True)
class LoadedModuleInfo:
    """What ``!lmi`` prints about a module; ``str()`` uses kd's layout.

    ``not_on_disk_hint`` lists reasons to expect the file *not* to be in the driver folder (a
    GUID-shaped name, a load path outside ``\\SystemRoot`` / ``\\Windows``); empty when none.
    """

    module: str
    """kd's name (``nt``, ``hal``, ``amdppm``)."""
    base: int
    size: int
    image_name: str
    path: str
    machine: int | None
    timestamp: int | None
    checksum: int | None
    characteristics: int | None
    pdb: PdbInfo | None
    debug: pd.DataFrame = field(repr=False)
    not_on_disk_hint: list[str] = field(default_factory=list)
    missing_pages: list[int] = field(default_factory=list)
    error: str | None = None
    """Why the image could not be read (then the header fields are None)."""
    pointer_size: int = 8
    debug_directory: tuple[int, int] | None = None
    """The debug data directory as (RVA, size), when the header has one."""

    @property
    def time(self) -> _dt.datetime | None:
        """:attr:`timestamp` as a UTC datetime."""
        if self.timestamp is None:
            return None
        try:
            return _dt.datetime.fromtimestamp(self.timestamp, _dt.UTC)
        except (OverflowError, OSError, ValueError):
            return None

    @property
    def symbol_store_path(self) -> str | None:
        """``<pdb>/<key>/<pdb>`` when the image names a PDB."""
        return self.pdb.store_path if self.pdb else None

    def __str__(self) -> str:

        stem = self.image_name.rsplit(".", 1)[0] if "." in self.image_name else self.image_name
        lines = [f"Loaded Module Info: [{self.module}] ",
                 f"         Module: {stem}",
                 f"   Base Address: {kd_addr(self.base, self.pointer_size)}",
                 f"     Image Name: {self.image_name}"]
        if self.error is not None:
            lines.append(f"          Error: {self.error}")
        else:
            m = self.machine or 0
            ts = self.timestamp or 0
            ch = self.characteristics or 0
            lines += [f"   Machine Type: {m} ({MACHINES.get(m, 'unknown')})",
                      f"     Time Stamp: {ts:x} {_ctime(ts)}",
                      f"           Size: {self.size:x}",
                      f"       CheckSum: {self.checksum or 0:x}",
                      f"Characteristics: {ch:x}  {', '.join(flag_names(ch, FILE_CHARACTERISTICS))}"]
            if len(self.debug):
                lines.append("Debug Data Dirs: Type  Size     VA  Pointer")
                for r in self.debug.itertuples(index=False):
                    row = (f"{r.kind_name:>21} {r.size_of_data:5x}, {r.address_of_raw_data:5x}, "
                           f"{r.pointer_to_raw_data:7x}")
                    if not r.mapped:
                        row += " [Data not mapped]"
                    elif r.kind == 2 and self.pdb is not None:
                        if self.pdb.format == "RSDS":
                            row += f" RSDS - GUID: {self.pdb.guid}"
                        else:
                            row += f" NB10 - Sig: {self.pdb.signature:x}"
                    lines.append(row)
                    if r.kind == 2 and r.mapped and self.pdb is not None:
                        lines.append(f"               Age: {self.pdb.age}, Pdb: {self.pdb.path}")
            elif self.debug_directory is not None:
                rva, size = self.debug_directory
                lines.append(f"Debug Data Dirs: [{size:x} bytes at RVA {rva:x} not mapped]")
            else:
                lines.append("Debug Data Dirs: (none)")
            kind = "MEMORY   - Image read from loaded memory"
            if self.missing_pages:
                kind += f" ({len(self.missing_pages)} pages not in the dump)"
            lines.append(f"     Image Type: {kind}.")
            lines.append("    Symbol Type: EXPORT   - export symbols only")
            if self.pdb is not None:
                lines.append(f"   Symbol Store: {self.pdb.store_path}")
        lines.append(f"      Full Path: {self.path}")
        for reason in self.not_on_disk_hint:
            lines.append(f"   Not on disk?: {reason}")
        return "\n".join(lines)
