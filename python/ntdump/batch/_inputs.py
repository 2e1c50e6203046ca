"""Batch inputs: expand paths, directories and archives into units of work, and materialise one
unit (decompress it, with bounded disk use) on the worker that analyses it.

A *unit* is one dump: a plain file, one member of a ``.zip`` (or ``.7z``, with ``py7zr``), or the
content of a ``.gz``. Archives are recognised by their magic bytes, not their names. Units are
listed in a deterministic order (inputs in the order given, directory entries sorted by path,
archive members in archive order).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

#: Default largest decompressed member (bytes) written to the temp dir: 64 GiB.
DEFAULT_MAX_MEMBER_BYTES = 64 << 30
#: Free space (bytes) always left on the temp dir's file system when extracting: 256 MiB.
DISK_RESERVE_BYTES = 256 << 20
_CHUNK = 1 << 20

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a member first, or an empty archive
_GZIP_MAGIC = b"\x1f\x8b"
_7Z_MAGIC = b"7z\xbc\xaf\x27\x1c"


class MemberTooLarge(Exception):
    """An archive member is larger than the extraction limit or the free disk space."""


@dataclass(frozen=True, slots=True)
class Unit:
    """One dump to analyse.

    ``name`` is what the result frames call it (the ``dump`` column): the file's path, or
    ``archive!member`` for a member of a zip or 7z archive. ``path`` is the file on disk (the
    archive for members); ``kind`` is ``"file"``, ``"zip"``, ``"gzip"``, ``"7z"``, or
    ``"error"`` when the input could not even be listed (``error`` = (type name, message)).
    ``size`` is the declared uncompressed size in bytes (-1 when unknown).
    """

    name: str
    path: str
    member: str | None = None
    kind: str = "file"
    size: int = -1
    error: tuple[str, str] | None = None


def _magic(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(8)


def _walk(root: Path) -> list[Path]:
    """Every regular file under ``root`` (recursively), sorted by path."""
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        out += [Path(dirpath) / f for f in filenames]
    return sorted(out, key=lambda p: str(p))


def _units_of_file(path: Path) -> list[Unit]:
    p = str(path)
    try:
        magic = _magic(path)
    except OSError as e:
        return [Unit(p, p, kind="error", error=(type(e).__name__, str(e)))]
    if magic.startswith(_ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as z:
                return [Unit(f"{p}!{i.filename}", p, i.filename, "zip", i.file_size)
                        for i in z.infolist() if not i.is_dir()]
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            return [Unit(p, p, kind="error", error=(type(e).__name__, str(e)))]
    if magic.startswith(_GZIP_MAGIC):
        return [Unit(p, p, None, "gzip")]
    if magic.startswith(_7Z_MAGIC):
        try:
            import py7zr
        except ImportError:
            return [Unit(p, p, kind="error", error=(
                "ImportError", "a .7z archive needs py7zr: pip install 'ntdump[7z]'"))]
        try:
            with py7zr.SevenZipFile(path, "r") as z:
                return [Unit(f"{p}!{i.filename}", p, i.filename, "7z",
                             int(i.uncompressed or 0))
                        for i in z.list() if not i.is_directory]
        except Exception as e:  # py7zr raises many types for bad archives
            return [Unit(p, p, kind="error", error=(type(e).__name__, str(e)))]
    return [Unit(p, p)]


def expand(inputs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[Unit]:
    """The units of ``inputs``: files, directories (recursive) and archives (one unit per member).

    A path that does not exist or cannot be read becomes a unit of kind ``"error"``; nothing
    raises. The same dump named twice is listed once.
    """
    if isinstance(inputs, str | os.PathLike):
        inputs = [inputs]
    units: list[Unit] = []
    seen: set[str] = set()
    for x in inputs:
        p = Path(os.fspath(x))
        if p.is_dir():
            files = _walk(p)
        elif p.exists():
            files = [p]
        else:
            units.append(Unit(str(p), str(p), kind="error",
                              error=("FileNotFoundError", f"no such file or directory: {p}")))
            continue
        for f in files:
            for u in _units_of_file(f):
                if u.name not in seen:
                    seen.add(u.name)
                    units.append(u)
    return units


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, as hex."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _check_space(tmpdir: str, size: int, limit: int) -> None:
    if size > limit:
        raise MemberTooLarge(f"member declares {size:,} bytes, over the limit of {limit:,}")
    if size > 0:
        free = shutil.disk_usage(tmpdir).free
        if size > free - DISK_RESERVE_BYTES:
            raise MemberTooLarge(f"member declares {size:,} bytes; {tmpdir} has {free:,} free")


def _copy_limited(src: IO[bytes], dst: IO[bytes], limit: int, h: hashlib._Hash) -> int:
    """Copy ``src`` to ``dst`` hashing it, at most ``limit`` bytes, stopping before the file
    system's free space falls under :data:`DISK_RESERVE_BYTES` (checked every 64 MiB); runs of
    zeros become holes (a sparse file) so mostly empty dumps take little disk. Returns the byte
    count."""
    n = 0
    zero = bytes(_CHUNK)
    folder = os.path.dirname(os.path.abspath(dst.name)) if isinstance(dst.name, str) else "."
    while True:
        chunk = src.read(_CHUNK)
        if not chunk:
            break
        n += len(chunk)
        if n > limit:
            raise MemberTooLarge(f"member is larger than the limit of {limit:,} bytes")
        if n % (64 * _CHUNK) == 0 and shutil.disk_usage(folder).free < DISK_RESERVE_BYTES:
            raise MemberTooLarge(f"{folder} is nearly full after {n:,} bytes of this member")
        h.update(chunk)
        if len(chunk) == _CHUNK and chunk == zero:
            dst.seek(len(chunk), os.SEEK_CUR)
        else:
            dst.write(chunk)
    dst.truncate(n)
    return n


@contextlib.contextmanager
def materialise(unit: Unit, tmpdir: str | None, max_member_bytes: int,
                sha256: bool = True) -> Iterator[tuple[str, str | None, int]]:
    """``(path on disk, sha256 hex or None, size in bytes)`` of a unit for the time of the
    ``with`` block. Compressed units are decompressed into a fresh directory under ``tmpdir``
    (at most ``max_member_bytes``, and never into the last :data:`DISK_RESERVE_BYTES` of free
    space), removed when the block ends, whatever happens."""
    if unit.kind == "file":
        size = os.path.getsize(unit.path)
        yield unit.path, (sha256_file(unit.path) if sha256 else None), size
        return
    if tmpdir is not None:
        os.makedirs(tmpdir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="ntdump-unit-", dir=tmpdir)
    try:
        target = os.path.join(work, "dump")
        h = hashlib.sha256()
        _check_space(work, unit.size, max_member_bytes)
        if unit.kind == "zip":
            with zipfile.ZipFile(unit.path) as z, z.open(unit.member or "") as src, \
                    open(target, "wb") as dst:
                size = _copy_limited(src, dst, max_member_bytes, h)
        elif unit.kind == "gzip":
            with gzip.open(unit.path, "rb") as src, open(target, "wb") as dst:
                size = _copy_limited(cast(IO[bytes], src), dst, max_member_bytes, h)
        elif unit.kind == "7z":
            import py7zr

            with py7zr.SevenZipFile(unit.path, "r") as z:
                z.extract(path=work, targets=[unit.member])
            extracted = os.path.realpath(os.path.join(work, unit.member or ""))
            if not extracted.startswith(os.path.realpath(work) + os.sep):
                raise ValueError(f"member name {unit.member!r} leaves the extraction folder")
            if not os.path.isfile(extracted):
                raise FileNotFoundError(f"{unit.member} was not extracted from {unit.path}")
            size = os.path.getsize(extracted)
            if size > max_member_bytes:
                raise MemberTooLarge(f"member is larger than the limit of {max_member_bytes:,}")
            target = extracted
            if sha256:
                h = hashlib.sha256()
                with open(target, "rb") as f:
                    h = hashlib.file_digest(f, "sha256")
        else:
            raise ValueError(f"unit kind {unit.kind!r} cannot be materialised")
        yield target, (h.hexdigest() if sha256 else None), size
    finally:
        shutil.rmtree(work, ignore_errors=True)
