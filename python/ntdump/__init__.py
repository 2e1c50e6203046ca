"""ntdump: read Windows kernel crash dumps (MEMORY.DMP) from Python.

>>> import ntdump
>>> with ntdump.open("MEMORY.DMP") as d:          # doctest: +SKIP
...     print(d.info.bugcheck_code, hex(d.translate(d.info.ps_loaded_module_list)))
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._native import __version__
from .dump import Dump, DumpInfo, PageWalk, WalkStep, open
from .errors import (
    DumpFormatError,
    KdError,
    NtdumpError,
    PageNotInDumpError,
    PageNotPresentError,
    PeFormatError,
    PoolTableError,
    SymbolError,
    TranslationError,
    UnsupportedError,
)
from .triage import Report, triage

if TYPE_CHECKING:
    from . import batch, trend


def __getattr__(name: str) -> Any:
    """``ntdump.batch`` and ``ntdump.trend`` are imported on first use (start-up time)."""
    if name in ("batch", "trend"):
        return importlib.import_module(f"ntdump.{name}")
    raise AttributeError(f"module 'ntdump' has no attribute {name!r}")


__all__ = [
    "Dump",
    "DumpFormatError",
    "DumpInfo",
    "KdError",
    "NtdumpError",
    "PageNotInDumpError",
    "PageNotPresentError",
    "PageWalk",
    "PeFormatError",
    "PoolTableError",
    "Report",
    "SymbolError",
    "TranslationError",
    "UnsupportedError",
    "WalkStep",
    "__version__",
    "batch",
    "open",
    "trend",
    "triage",
]
