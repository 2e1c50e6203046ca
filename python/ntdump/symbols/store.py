"""The symbol-store layout (symstore.exe's, which symbol servers serve over HTTP).

A file is stored under its *key*:

* a PDB (RSDS): ``name.pdb/<GUID><AGE>/name.pdb``, the GUID as 32 upper-case hex digits (Data1,
  Data2, Data3 as numbers, then the 8 bytes of Data4), the age in upper-case hex without padding;
  NB10 PDBs: the signature as 8 hex digits, then the age;
* an image: ``name.sys/<TIMESTAMP><SIZEOFIMAGE>/name.sys``, the time stamp as 8 upper-case hex
  digits, SizeOfImage in hex without padding (symstore writes ``%08X%x``).

In the key directory, the file may instead be compressed as a one-file cabinet named with the
last character replaced by ``_`` (``name.pd_``), or replaced by ``file.ptr``, a text file holding
``PATH:<where the file is>`` (or ``MSG:<why not>``). A store whose root holds ``index2.txt`` is
*two-tier*: every entry lives one level deeper, under the first two characters of the file name
(``am/amdppm.pdb/<KEY>/amdppm.pdb``).

:func:`check_name` refuses the names a hostile dump could use to escape a store (see
docs/symbols.md); :class:`LocalStore` reads and writes such a directory, each write atomic
(written to a temporary file in the same directory, then renamed) so that many processes can share
one store.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import SymbolError

MAX_NAME_BYTES = 255
_DRIVE = re.compile(r"^[A-Za-z]:")
_HEX = re.compile(r"^[0-9A-Fa-f]{1,64}$")


def check_name(name: str) -> str:
    """``name`` when it is a plain file name safe to use as a store directory and file name;
    raises :class:`SymbolError` for ``..``, ``/``, ``\\``, a drive letter, NUL or control
    characters, an empty name or one over 255 bytes (UTF-8)."""
    why = None
    if not name:
        why = "is empty"
    elif len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        why = f"is longer than {MAX_NAME_BYTES} bytes"
    elif "\0" in name or any(ord(c) < 0x20 for c in name):
        why = "holds NUL or a control character"
    elif "/" in name or "\\" in name:
        why = "holds a path separator"
    elif ".." in name:
        why = "holds '..'"
    elif _DRIVE.match(name):
        why = "starts with a drive letter"
    elif name in (".",) or name.strip(" .") == "":
        why = "is not a file name"
    if why:
        raise SymbolError(f"refusing symbol file name {name!r}: it {why}")
    return name


def check_key(key: str) -> str:
    """``key`` upper-cased when it is 1-64 hex digits, else :class:`SymbolError`."""
    if not _HEX.match(key):
        raise SymbolError(f"refusing symbol-store key {key!r}: not 1-64 hex digits")
    return key


def pdb_key(guid: str, age: int) -> str:
    """The store key of a PDB: the GUID's 32 hex digits (braces and dashes dropped, upper case)
    followed by the age in upper-case hex. ``guid`` may be ``{8-4-4-4-12}`` or 32 digits."""
    g = guid.strip("{}").replace("-", "").upper()
    if len(g) != 32:
        raise SymbolError(f"not a GUID: {guid!r}")
    return check_key(f"{g}{age:X}")


def image_key(timestamp: int, size_of_image: int) -> str:
    """The store key of an image: TimeDateStamp as ``%08X``, SizeOfImage as ``%x`` (symstore's and
    the debuggers' form, e.g. ``C9C030003b000``)."""
    return f"{timestamp & 0xFFFFFFFF:08X}{size_of_image:x}"


def compressed_name(name: str) -> str:
    """``amdppm.pdb`` -> ``amdppm.pd_`` (symstore ``/compress``)."""
    return name[:-1] + "_"


@dataclass(frozen=True, slots=True)
class FileRequest:
    """What to look for: a file name and its store key (both checked on construction).

    ``kind`` is ``"pdb"`` or ``"image"``; ``expect`` says in words what identifies the right file
    (``GUID {…} age 3``, ``TimeDateStamp 0xc9c03000 SizeOfImage 0x3b000``)."""

    name: str
    key: str
    kind: str
    expect: str = ""

    def __post_init__(self) -> None:
        check_name(self.name)
        check_key(self.key)

    def rel(self, two_tier: bool = False) -> str:
        """The path inside a store, ``/``-separated."""
        head = f"{self.name[:2]}/" if two_tier else ""
        return f"{head}{self.name}/{self.key}"


class LocalStore:
    """A symbol store in a local (or mounted) directory: read, and written as a downstream store.

    Writes create ``<root>/<name>/<KEY>/<name>`` (under a two-tier prefix when ``index2.txt`` is
    at the root) through a temporary file in the same directory and an atomic rename, so that
    concurrent writers of the same file each leave a complete copy."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    @property
    def two_tier(self) -> bool:
        """True when the store's root holds ``index2.txt``."""
        return (self.root / "index2.txt").is_file()

    def _dirs(self, req: FileRequest) -> list[Path]:
        out = []
        for tt in ((True, False) if self.two_tier else (False,)):
            for nm in dict.fromkeys((req.name, req.name.lower())):
                r = FileRequest(nm, req.key, req.kind)
                out.append(self.root / r.rel(tt))
                if req.key != req.key.upper():
                    out.append(self.root / FileRequest(nm, req.key.upper(), req.kind).rel(tt))
        return list(dict.fromkeys(out))

    def locate(self, req: FileRequest) -> tuple[str, Path] | None:
        """Where the store keeps ``req``: ``("file", path)``, ``("cab", path)`` or
        ``("ptr", path)`` (a ``file.ptr``), or None."""
        for d in self._dirs(req):
            for nm in dict.fromkeys((req.name, req.name.lower())):
                p = d / nm
                if p.is_file():
                    return "file", p
                c = d / compressed_name(nm)
                if c.is_file():
                    return "cab", c
            fp = d / "file.ptr"
            if fp.is_file():
                return "ptr", fp
        return None

    def target(self, req: FileRequest) -> Path:
        """Where :meth:`put` writes ``req``."""
        return self.root / req.rel(self.two_tier) / req.name

    def put(self, req: FileRequest, data: bytes) -> Path:
        """Store ``data`` as ``req`` (atomically); returns the path."""
        dest = self.target(req)
        write_atomic(dest, data)
        return dest


def write_atomic(dest: Path, data: bytes) -> None:
    """Write ``data`` to ``dest`` through a temporary file in the same directory and a rename, so
    a reader never sees a partial file and concurrent writers never interleave."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_file_ptr(path: Path) -> str:
    """The target of a ``file.ptr``: the path after ``PATH:``. Raises :class:`SymbolError` with
    the store's message for ``MSG:`` or an unreadable pointer."""
    try:
        raw = path.read_bytes()[:4096]
    except OSError as e:
        raise SymbolError(f"{path}: cannot read file.ptr: {e}") from None
    return parse_file_ptr(raw, str(path))


def parse_file_ptr(raw: bytes, where: str) -> str:
    """The target named by a ``file.ptr``'s bytes (read from ``where``, a path or URL): the text
    after ``PATH:``. ``MSG:`` raises :class:`SymbolError` with the store's message."""
    text = raw[:4096].decode("utf-8", "replace").strip()
    if text.upper().startswith("PATH:"):
        target = text[5:].strip()
        if not target or "\0" in target:
            raise SymbolError(f"{where}: file.ptr names no usable path")
        return target
    if text.upper().startswith("MSG:"):
        raise SymbolError(f"{where}: the store says: {text[4:].strip()}")
    raise SymbolError(f"{where}: file.ptr holds neither PATH: nor MSG:")
