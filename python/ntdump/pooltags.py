"""Pool tag descriptions: a reader for WinDbg's ``pooltag.txt`` and a small built-in table.

``pooltag.txt`` ships with Debugging Tools for Windows (``triage\\pooltag.txt``); ntdump does
not ship it. Point :func:`load` at a copy, or set ``$NTDUMP_POOLTAG``.

Format (WINDOWS_INTERNALS.md §7): one entry per line, ``<Tag> - <binary> - <description>``.
Lines starting with ``rem`` or a space, and empty lines, are skipped. A tag shorter than four
characters stands for the space-padded tag. The same tag may appear more than once with
different binaries: every entry is kept.

The built-in table (:data:`BUILTIN`) covers a handful of well-known kernel tags, described in our
own words so that output is useful without the file.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "NTDUMP_POOLTAG"


@dataclass(frozen=True, slots=True)
class TagInfo:
    """One description of a pool tag."""

    tag: str
    """Four characters, space-padded."""
    binary: str
    """Owner as the file names it: ``tcpip.sys``, ``nt!mm``, ``<unknown>``."""
    description: str


#: A few well-known tags, in our own words: (tag, owner, description).
BUILTIN: tuple[tuple[str, str, str], ...] = (
    ("None", "nt!ex", "untagged allocation made through the obsolete ExAllocatePool or "
     "ExAllocatePoolWithQuota; look for the driver that imports them"),
    ("MmCm", "nt!mm", "physically contiguous memory (MmAllocateContiguousMemory and friends)"),
    ("MmSt", "nt!mm", "memory-manager section and prototype-PTE bookkeeping for mapped files"),
    ("MmCa", "nt!mm", "memory-manager control areas of mapped files"),
    ("MmRe", "nt!mm", "memory-manager bookkeeping for ASLR image relocation"),
    ("Mm  ", "nt!mm", "general memory-manager allocations"),
    ("Thre", "nt!ps", "thread objects (ETHREAD)"),
    ("Proc", "nt!ps", "process objects (EPROCESS)"),
    ("File", "nt!io", "file objects"),
    ("Irp ", "nt!io", "I/O request packets"),
    ("Mdl ", "nt!io", "memory descriptor lists (MDLs)"),
    ("Io  ", "nt!io", "general I/O manager allocations"),
    ("IoNm", "nt!io", "I/O manager: names being looked up or built"),
    ("Devi", "nt!io", "device objects"),
    ("Driv", "nt!io", "driver objects"),
    ("CcBc", "nt!cc", "cache manager buffer control blocks (BCBs)"),
    ("Sect", "nt!mm", "section objects"),
    ("Even", "nt!ex", "event objects"),
    ("Muta", "nt!ex", "mutant (mutex) objects"),
    ("Sema", "nt!ex", "semaphore objects"),
    ("Toke", "nt!se", "access tokens"),
    ("ObNm", "nt!ob", "object names"),
    ("ObDi", "nt!ob", "object directories"),
    ("Key ", "nt!cm", "registry key objects"),
    ("CM  ", "nt!cm", "configuration manager (registry), general"),
    ("CM*", "nt!cm", "configuration manager (registry) internal structures"),
    ("Ntfx", "ntfs.sys", "NTFS: general allocations"),
    ("NtFs", "ntfs.sys", "NTFS: stream control blocks and related state"),
    ("Ntf*", "ntfs.sys", "NTFS file system driver"),
    ("Ip*", "tcpip.sys", "IP stack"),
    ("Tcp*", "tcpip.sys", "TCP"),
    ("FM*", "fltmgr.sys", "filter manager"),
    ("Vad ", "nt!mm", "virtual address descriptors of user address spaces"),
    ("Pool", "nt!ex", "pool manager's own tables (tracker and big-page tables)"),
)


def _pad(tag: str) -> str:
    return tag if len(tag) >= 4 or tag.endswith("*") else tag.ljust(4)


def parse(lines: Iterable[str]) -> list[TagInfo]:
    """Parse ``pooltag.txt`` lines (§7 rules: skip ``rem``, blank and space-led lines; split on
    ``-`` at most twice; strip each part)."""
    out: list[TagInfo] = []
    for raw in lines:
        if not raw.strip() or raw.startswith(" ") or raw.lower().startswith("rem"):
            continue
        parts = [p.strip() for p in raw.strip().split("-", 2)]
        if len(parts) < 2 or not parts[0] or len(parts[0]) > 4:
            continue
        binary = parts[1] if len(parts) > 2 else ""
        desc = parts[2] if len(parts) > 2 else parts[1]
        out.append(TagInfo(_pad(parts[0]), binary, desc))
    return out


def load(path: str | os.PathLike[str] | None = None) -> list[TagInfo]:
    """Entries of ``path``, else of ``$NTDUMP_POOLTAG``; ``[]`` when neither is given.
    The file is read as ASCII with undecodable bytes replaced."""
    p = path if path is not None else os.environ.get(ENV_VAR)
    if not p:
        return []
    text = Path(p).read_text(encoding="ascii", errors="replace")
    return parse(text.splitlines())


class TagTable:
    """Look up tag descriptions: entries from ``pooltag.txt`` first, then :data:`BUILTIN`.
    Patterns ending in ``*`` (built-in only) match prefixes."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, builtin: bool = True):
        self.entries = load(path)
        self._exact: dict[str, list[TagInfo]] = {}
        self._patterns: list[TagInfo] = []
        for e in self.entries:
            self._exact.setdefault(e.tag, []).append(e)
        if builtin:
            for tag, binary, desc in BUILTIN:
                info = TagInfo(_pad(tag), binary, desc)
                if "*" in tag:
                    self._patterns.append(info)
                elif info.tag not in self._exact:
                    self._exact[info.tag] = [info]

    def lookup(self, tag: str) -> list[TagInfo]:
        """Every entry for ``tag`` (4 characters; shorter ones are space-padded)."""
        tag = _pad(tag)
        hit = self._exact.get(tag)
        if hit:
            return hit
        return [p for p in self._patterns if fnmatch.fnmatchcase(tag, p.tag)]

    def describe(self, tag: str) -> str:
        """``"description [binary]"`` for ``tag`` (entries joined by ``"; "``), or ``""``."""
        return "; ".join(
            f"{e.description} [{e.binary}]" if e.binary else e.description
            for e in self.lookup(tag)
        )


__all__ = ["BUILTIN", "ENV_VAR", "TagInfo", "TagTable", "load", "parse"]
