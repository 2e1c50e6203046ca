"""The ntdump exception hierarchy.

Every error raised for a bad dump is an :class:`NtdumpError`; I/O problems stay the builtin
``OSError`` family (``FileNotFoundError``, ``PermissionError``).

::

    NtdumpError
    ├── DumpFormatError (also ValueError)   the file is not a dump we can read, or is inconsistent
    ├── TranslationError(va)                 a virtual address cannot be read
    │   ├── PageNotPresentError(level, pte)  a page-table entry is not present (paged out …)
    │   └── PageNotInDumpError(pa)           the physical page is not stored in the dump
    ├── PeFormatError                        a PE image in memory is malformed
    ├── PoolTableError (also LookupError)    a pool table cannot be found or read
    ├── SymbolError (also LookupError)       a symbol cannot be resolved
    ├── KdError (also ValueError)            a kd command or expression is not accepted
    └── UnsupportedError                     valid, but not implemented yet (ARM64 paging)
"""

from __future__ import annotations


class NtdumpError(Exception):
    """Base class of every ntdump error."""


class DumpFormatError(NtdumpError, ValueError):
    """The file is not a readable dump, or one of its structures is inconsistent.

    Attributes:
        offset: file offset (bytes) of the offending field, when known.
    """

    def __init__(self, message: str, offset: int | None = None) -> None:
        super().__init__(message)
        self.offset = offset


class TranslationError(NtdumpError):
    """A virtual address cannot be read.

    Attributes:
        va: the virtual address (VA) whose translation failed.
    """

    def __init__(self, message: str, va: int | None = None) -> None:
        super().__init__(message)
        self.va = va


class PageNotPresentError(TranslationError):
    """A page-table entry on the way is not present.

    Attributes:
        level: ``"pml4e"``, ``"pdpte"``, ``"pde"`` or ``"pte"``.
        pte: the raw entry value.
        kind: ``"unmapped"``, ``"paged out"``, ``"demand zero"``, ``"prototype"`` or ``"invalid"``.
    """

    def __init__(
        self,
        message: str,
        va: int | None = None,
        level: str | None = None,
        pte: int | None = None,
        kind: str | None = None,
    ) -> None:
        super().__init__(message, va)
        self.level = level
        self.pte = pte
        self.kind = kind


class PageNotInDumpError(TranslationError):
    """The physical page backing an address is not stored in the dump.

    Attributes:
        pa: the physical address (PA) of the missing page.
    """

    def __init__(self, message: str, va: int | None = None, pa: int | None = None) -> None:
        super().__init__(message, va)
        self.pa = pa


class PeFormatError(NtdumpError):
    """A PE image in memory is malformed."""


class PoolTableError(NtdumpError, LookupError):
    """A pool table cannot be found or read (not in this dump, or its values are absurd).

    Attributes:
        table: ``"PoolTrackTable"``, ``"PoolBigPageTable"``, ``"pool page"`` or ``"memory"``.
        va: the VA involved (variable or table), 0 when none.
        reason: ``"unavailable"`` (the dump does not hold it) or ``"invalid"`` (bad values).
    """

    def __init__(
        self,
        message: str,
        table: str | None = None,
        va: int | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.table = table
        self.va = va
        self.reason = reason


class KdError(NtdumpError, ValueError):
    """A command or expression kd would not accept."""


class SymbolError(NtdumpError, LookupError):
    """A symbol cannot be resolved."""


class UnsupportedError(NtdumpError, NotImplementedError):
    """The dump is valid but needs something ntdump does not implement yet (e.g. ARM64 paging)."""


__all__ = [
    "DumpFormatError",
    "KdError",
    "NtdumpError",
    "PageNotInDumpError",
    "PageNotPresentError",
    "PeFormatError",
    "PoolTableError",
    "SymbolError",
    "TranslationError",
    "UnsupportedError",
]
