"""``_NT_SYMBOL_PATH``: parsing it as the Windows debuggers do, and finding files along it.

Syntax (Microsoft, "Symbol path for Windows debuggers" and "Using SymSrv"); elements are separated
by ``;`` and searched left to right:

==================================  ============================================================
``C:\\syms`` / ``/srv/syms``         a plain directory: ``dir/name``, ``dir/<ext>/name``,
                                     ``dir/symbols/<ext>/name`` (a file whose identity differs is
                                     skipped, as the debuggers do)
``srv*STORE``                        a symbol store (a directory or an ``http(s)://`` server);
                                     files fetched from a server land in the default downstream
                                     store
``srv*CACHE*URL``                    downstream store ``CACHE`` in front of ``URL``: looked up
                                     first, and filled with what ``URL`` serves
``srv*C1*C2*URL``                    a chain of downstream stores; a hit in a later store is
                                     copied into every store before it
``srv**URL``                         an empty entry is the default downstream store
``srv*``                             the default downstream store alone (the debuggers would also
                                     ask Microsoft's server; ntdump goes online only where the path
                                     names a server)
``symsrv*symsrv.dll*…``              the same as ``srv*…`` (``symsrv.dll`` is the only DLL known)
``cache*DIR`` / ``cache*``           files found by the elements to its right are also stored in
                                     ``DIR`` (or the default downstream store), which those
                                     elements consult first
``https://host/path``                a bare URL is taken as ``srv*URL``
==================================  ============================================================

The default downstream store is ``$NTDUMP_SYMBOL_CACHE`` when set, else
``%LOCALAPPDATA%\\ntdump\\sym`` on Windows and ``$XDG_CACHE_HOME/ntdump/sym``
(``~/.cache/ntdump/sym``) elsewhere; the debuggers use ``<home directory>\\sym``.

Network: only ``http(s)`` entries named in the path are contacted, never in ``offline`` mode.
Misses (HTTP 404) are remembered for ``negative_ttl`` seconds in ``<store>/.ntdump-miss/`` of the
first local store of the chain, so a batch over thousands of dumps asks a server once per missing
file.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .._native import pdb_identity
from ..errors import PeFormatError, SymbolDownloadError, SymbolError, SymbolMismatchError
from . import cab
from .image import identity
from .options import HttpOptions, Miss, allowed_hosts, hop_refusal
from .store import (
    FileRequest,
    LocalStore,
    compressed_name,
    parse_file_ptr,
    read_file_ptr,
    write_atomic,
)

ENV = "_NT_SYMBOL_PATH"
ALT_ENV = "_NT_ALT_SYMBOL_PATH"
DEFAULT = ""
"""An empty store entry: the default downstream store."""

Verify = Callable[[Path], None]
"""Raises :class:`SymbolMismatchError` when the file at the path is not the one asked for."""


def default_downstream_store() -> Path:
    """Where files from servers land when the path names no downstream store (see module doc)."""
    env = os.environ.get("NTDUMP_SYMBOL_CACHE")
    if env:
        return Path(env)
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "ntdump" / "sym"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ntdump" / "sym"


def is_url(s: str) -> bool:
    """True for an ``http://`` or ``https://`` entry."""
    return s.lower().startswith(("http://", "https://"))


@dataclass(frozen=True, slots=True)
class PathElement:
    """One ``;``-separated element of a symbol path.

    ``kind`` is ``"dir"`` (a plain directory), ``"srv"`` (a chain of stores, downstream first,
    ``""`` standing for the default downstream store) or ``"cache"``."""

    kind: str
    stores: tuple[str, ...]
    text: str
    note: str = ""

    def __str__(self) -> str:
        return self.text


def parse(text: str) -> tuple[list[PathElement], list[str]]:
    """Parse symbol-path ``text``: (elements, warnings)."""
    out: list[PathElement] = []
    warns: list[str] = []
    for raw in text.split(";"):
        el = raw.strip().strip('"').strip()
        if not el:
            continue
        low = el.lower()
        if low.startswith("srv*") or low == "srv":
            rest = el[4:]
            out.append(_srv(el, rest, warns))
        elif low.startswith("symsrv*"):
            parts = el.split("*", 2)
            dll = parts[1] if len(parts) > 1 else ""
            if dll.lower() != "symsrv.dll":
                warns.append(f"{el!r}: symbol server DLL {dll!r} is not known; element ignored")
                continue
            out.append(_srv(el, parts[2] if len(parts) > 2 else "", warns))
        elif low.startswith("cache*") or low == "cache":
            d = el[6:]
            out.append(PathElement("cache", (d,), el))
        elif is_url(el):
            out.append(PathElement("srv", (el,), el, note="a bare URL, taken as srv*URL"))
        else:
            out.append(PathElement("dir", (el,), el))
    return out, warns


def _srv(text: str, rest: str, warns: list[str]) -> PathElement:
    parts = tuple(p.strip() for p in rest.split("*")) if rest else (DEFAULT,)
    note = ""
    if not any(is_url(p) for p in parts) and parts == (DEFAULT,):
        note = ("srv* names no server: only the default downstream store is searched "
                "(ntdump never goes online unless the path names a server)")
        warns.append(f"{text!r}: {note}")
    return PathElement("srv", parts, text, note=note)


class SymbolPath:
    """A parsed symbol path and the means to fetch files along it.

    ``SymbolPath("srv*/var/cache/sym*https://msdl.microsoft.com/download/symbols")``;
    ``SymbolPath()`` reads ``_NT_SYMBOL_PATH`` (and ``_NT_ALT_SYMBOL_PATH`` before it, as the
    debuggers do); an empty path searches nothing. Keyword options: ``offline`` (never contact a
    server; default: ``NTDUMP_OFFLINE=1`` in the environment), ``timeout`` (seconds per
    request), ``retries``, ``backoff`` (seconds),
    ``max_bytes`` (size cap per file), ``allow_redirects`` (True or host patterns), ``ca_file``
    (extra trust anchors, PEM), ``progress`` (tqdm bar over ``progress_min`` bytes),
    ``negative_ttl`` (seconds a miss is remembered; 0 disables), ``default_store`` (the default
    downstream store)."""

    def __init__(
        self,
        text: str | None = None,
        *,
        offline: bool | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_bytes: int = 1 << 30,
        allow_redirects: bool | Iterable[str] = (),
        ca_file: str | None = None,
        progress: bool = True,
        progress_min: int = 4 << 20,
        negative_ttl: float = 86400.0,
        default_store: str | os.PathLike[str] | None = None,
    ) -> None:
        if text is None:
            parts = [os.environ.get(ALT_ENV, ""), os.environ.get(ENV, "")]
            text = ";".join(p for p in parts if p)
        self.text = text
        self.elements, self.warnings = parse(text)
        if offline is None:
            offline = os.environ.get("NTDUMP_OFFLINE", "").lower() in ("1", "true", "yes")
        self.offline = offline
        self.negative_ttl = negative_ttl
        self._default_store = Path(default_store) if default_store is not None else None
        self.http = HttpOptions(
            timeout=timeout, retries=retries, backoff=backoff, max_bytes=max_bytes,
            allow_redirects=allow_redirects if allow_redirects is True
            else tuple(allow_redirects or ()),
            ca_file=ca_file, progress=progress, progress_min=progress_min)
        self.log: deque[str] = deque(maxlen=1000)
        """What each lookup did (one line per store consulted), newest last (the last 1,000)."""

    @classmethod
    def coerce(cls, value: str | SymbolPath | None, **kw: object) -> SymbolPath:
        """``value`` itself when a SymbolPath; a SymbolPath of the string; the environment's when
        None."""
        if isinstance(value, SymbolPath):
            return value
        return cls(value, **kw)  # type: ignore[arg-type]

    def __str__(self) -> str:
        return ";".join(e.text for e in self.elements)

    def __repr__(self) -> str:
        off = ", offline=True" if self.offline else ""
        return f"SymbolPath({str(self)!r}{off})"

    def __bool__(self) -> bool:
        return bool(self.elements)

    @property
    def default_store(self) -> Path:
        """The default downstream store (see module doc)."""
        return self._default_store or default_downstream_store()

    @property
    def servers(self) -> list[str]:
        """Every ``http(s)`` store the path names, in order."""
        return [s for e in self.elements if e.kind == "srv" for s in e.stores if is_url(s)]

    @property
    def names_server(self) -> bool:
        """True when the path names at least one ``http(s)`` server."""
        return bool(self.servers)

    def _local(self, s: str) -> LocalStore:
        return LocalStore(self.default_store if s == DEFAULT else Path(s))

    # -- lookups ---------------------------------------------------------------------------
    def find(self, req: FileRequest, verify: Verify) -> Path | None:
        """The path of a verified copy of ``req``, searching the elements in order; None when no
        element has it. A file that fails ``verify`` is never kept in a cache; a server that fails
        (after its retries) does not stop the search. When nothing matched, the first
        :class:`SymbolMismatchError`, else the first :class:`SymbolDownloadError`, is raised."""
        mismatch: SymbolMismatchError | None = None
        failed: SymbolDownloadError | None = None
        cache: LocalStore | None = None
        for el in self.elements:
            try:
                if el.kind == "cache":
                    cache = self._local(el.stores[0] or DEFAULT)
                    continue
                if cache is not None:
                    hit = self._from_store(cache, req, verify, [], 0)
                    if hit is not None:
                        return hit
                if el.kind == "dir":
                    hit = self._from_dir(Path(el.stores[0]), req, verify)
                else:
                    hit = self._from_chain(el, req, verify)
                if hit is not None:
                    if cache is not None and Path(hit).parent != cache.target(req).parent:
                        hit = self._copy(hit, [cache], req)
                    return hit
            except SymbolMismatchError as e:
                mismatch = mismatch or e
            except SymbolDownloadError as e:
                failed = failed or e
        if mismatch is not None:
            raise mismatch
        if failed is not None:
            raise failed
        return None

    def _note(self, text: str) -> None:
        self.log.append(text)

    def _from_dir(self, root: Path, req: FileRequest, verify: Verify) -> Path | None:
        ext = req.name.rsplit(".", 1)[-1].lower() if "." in req.name else ""
        for p in (root / req.name, root / ext / req.name, root / "symbols" / ext / req.name):
            if p.is_file():
                try:
                    verify(p)
                except SymbolMismatchError as e:
                    self._note(f"{p}: skipped, {e}")
                    continue
                self._note(f"{p}: found")
                return p
        self._note(f"{root}: no {req.name}")
        return None

    def _from_chain(self, el: PathElement, req: FileRequest, verify: Verify) -> Path | None:
        locals_: list[LocalStore] = []
        for s in el.stores:
            if is_url(s):
                if self.offline:
                    self._note(f"{s}: skipped (offline)")
                    continue
                down = locals_ or [self._local(DEFAULT)]
                hit = self._from_server(s, req, verify, down)
            else:
                store = self._local(s)
                hit = self._from_store(store, req, verify, locals_, 0)
                locals_.append(store)
            if hit is not None:
                return hit
        return None

    def _copy(self, src: Path, stores: list[LocalStore], req: FileRequest) -> Path:
        data = src.read_bytes()
        out = src
        for st in reversed(stores):
            out = st.put(req, data)
        return out

    def _from_store(self, store: LocalStore, req: FileRequest, verify: Verify,
                    downstream: list[LocalStore], depth: int) -> Path | None:
        where = store.locate(req)
        if where is None:
            self._note(f"{store.root}: no {req.rel()}")
            return None
        kind, p = where
        if kind == "file":
            verify(p)  # a mismatch in a store is an error (the store is wrong)
            self._note(f"{p}: found")
            return self._copy(p, downstream, req) if downstream else p
        if kind == "ptr":
            target = read_file_ptr(p)
            tp = Path(target) if os.path.isabs(target) else (p.parent / target)
            if not tp.is_file():
                self._note(f"{p}: points at {target}, which is not a readable file")
                return None
            verify(tp)
            self._note(f"{p}: found through file.ptr at {tp}")
            return self._copy(tp, downstream, req) if downstream else tp
        # a compressed file: expand into the nearest downstream store (or beside it)
        data = p.read_bytes()
        return self._store_verified(self._expand(data, req, str(p)), req, verify,
                                    downstream or [store], str(p))

    def _expand(self, data: bytes, req: FileRequest, source: str) -> bytes:
        _, body = cab.extract(data, max_bytes=self.http.max_bytes, want=req.name)
        self._note(f"{source}: expanded {len(data)} -> {len(body)} bytes")
        return body

    def _store_verified(self, data: bytes, req: FileRequest, verify: Verify,
                        stores: list[LocalStore], source: str) -> Path:
        """Write ``data`` into every store in ``stores`` after verifying it; returns the copy in
        the first (nearest) store."""
        first = stores[0]
        dest = first.target(req)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{req.name}.", suffix=".verify", dir=dest.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            try:
                verify(tmp)
            except SymbolMismatchError as e:
                raise SymbolMismatchError(f"{source}: {e}", expected=e.expected, found=e.found,
                                          source=source) from None
        finally:
            try:
                tmp.unlink()
            except OSError:
                pass
        for st in stores[1:]:
            st.put(req, data)
        write_atomic(dest, data)
        return dest

    # -- servers ---------------------------------------------------------------------------
    def _miss_marker(self, store: LocalStore, url: str, req: FileRequest) -> Path:
        h = hashlib.sha256(f"{url.rstrip('/').lower()}|{req.name.lower()}|{req.key.upper()}"
                           .encode()).hexdigest()[:32]
        return store.root / ".ntdump-miss" / h

    def _from_server(self, url: str, req: FileRequest, verify: Verify,
                     downstream: list[LocalStore]) -> Path | None:
        marker = self._miss_marker(downstream[0], url, req)
        if self.negative_ttl > 0:
            try:
                if time.time() - marker.stat().st_mtime < self.negative_ttl:
                    self._note(f"{url}: {req.rel()} missed recently (negative cache), not asked")
                    return None
            except OSError:
                pass
        base = url.rstrip("/")
        rel = f"{req.name}/{req.key}"
        for name, packed in ((req.name, False), (compressed_name(req.name), True)):
            full = f"{base}/{rel}/{name}"
            data = self._get(full)
            if data is None:
                continue
            if packed or cab.is_cab(data):
                data = self._expand(data, req, full)
            return self._store_verified(data, req, verify, downstream, full)
        hit = self._from_server_ptr(f"{base}/{rel}/file.ptr", req, verify, downstream)
        if hit is not None:
            return hit
        if self.negative_ttl > 0:
            try:
                write_atomic(marker, f"{base}/{rel}\n".encode())
            except OSError:
                pass
        return None

    def _get(self, url: str, miss: str = "not found") -> bytes | None:
        """The body at ``url``, or None (noted as ``miss``) when the server does not have it;
        every request lands in ``log``. Other failures raise :class:`SymbolDownloadError`.
        The HTTP client (:mod:`ntdump.symbols.http`) is imported here, on the first request."""
        from .http import fetch

        try:
            return fetch(url, self.http)
        except Miss:
            self._note(f"{url}: {miss}")
            return None
        except SymbolDownloadError as e:
            self._note(f"{url}: {e}")
            raise
        finally:
            self.log.extend(self.http.log)
            self.http.log.clear()

    def _from_server_ptr(self, url: str, req: FileRequest, verify: Verify,
                         downstream: list[LocalStore]) -> Path | None:
        """SymSrv's third request for a file (after ``name`` and ``name.pd_``): ``file.ptr``, a
        pointer a store made by ``symstore add /p`` serves instead of the file (symhttp.doc, "HTTP
        Symbol Stores and the Symbol Server Proxy"; SymProxy's ``NoFilePointers`` setting).
        ``PATH:`` naming an http(s) URL (absolute, or relative to the pointer) is fetched under
        the same host rules as a redirect; naming a local absolute path, that file is read. Either
        way the file is verified before it is stored. ``MSG:`` raises :class:`SymbolError`."""
        raw = self._get(url)
        if raw is None:
            return None
        target = parse_file_ptr(raw, url)
        local = (os.path.isabs(target) or target.startswith("\\\\")
                 or (len(target) > 2 and target[1] == ":" and target[0].isalpha()))
        if not local:  # a URL, or a path relative to the pointer's URL
            full = urllib.parse.urljoin(url, target.replace("\\", "/"))
            host = urllib.parse.urlsplit(url).hostname or ""
            why = hop_refusal(url, full, allowed_hosts(host, self.http), "a file.ptr")
            if why is not None:
                raise SymbolDownloadError(why, url=url)
            data = self._get(full, "the file.ptr's target is not on the server")
            if data is None:
                return None
            if cab.is_cab(data):
                data = self._expand(data, req, full)
            self._note(f"{url}: found through file.ptr at {full}")
            return self._store_verified(data, req, verify, downstream, full)
        tp = Path(target)
        if not tp.is_file():
            self._note(f"{url}: points at {target}, which is not a readable file here")
            return None
        self._note(f"{url}: found through file.ptr at {tp}")
        with tp.open("rb") as f:
            data = f.read(self.http.max_bytes + 1)
        if len(data) > self.http.max_bytes:
            raise SymbolDownloadError(f"{url}: {tp} is larger than max_bytes "
                                      f"({self.http.max_bytes:,})", url=url)
        return self._store_verified(data, req, verify, downstream, str(tp))


def check_pdb(guid: str, age: int) -> Verify:
    """A verifier: the PDB's GUID and age (the DBI stream's) must be ``guid`` / ``age``."""
    want = f"{guid.strip('{}').replace('-', '').upper()} age {age}"

    def verify(p: Path) -> None:
        try:
            g, a = pdb_identity(str(p))
        except SymbolError as e:
            raise SymbolMismatchError(f"{p.name}: not a PDB ({e}); expected GUID/age {want}",
                                      expected=want, found="not a PDB") from None
        found = f"{g} age {a}"
        if found != want:
            raise SymbolMismatchError(
                f"{p.name}: PDB has GUID/age {found}, the image's RSDS record asks for {want}",
                expected=want, found=found)

    return verify


def check_image(timestamp: int, size_of_image: int) -> Verify:
    """A verifier: the image's TimeDateStamp and SizeOfImage must match."""
    want = f"TimeDateStamp {timestamp:#x} SizeOfImage {size_of_image:#x}"

    def verify(p: Path) -> None:
        with open(p, "rb") as f:
            head = f.read(0x10000)
        try:
            ident = identity(head)
        except PeFormatError as e:
            raise SymbolMismatchError(f"{p.name}: not a PE image ({e}); expected {want}",
                                      expected=want, found="not a PE image") from None
        found = f"TimeDateStamp {ident.timestamp:#x} SizeOfImage {ident.size_of_image:#x}"
        if found != want:
            raise SymbolMismatchError(f"{p.name}: image has {found}, the dump asks for {want}",
                                      expected=want, found=found)

    return verify
