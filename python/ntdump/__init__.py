"""ntdump: read Windows kernel crash dumps (MEMORY.DMP) from Python.

>>> import ntdump
>>> with ntdump.open("MEMORY.DMP") as d:          # doctest: +SKIP
...     print(d.info.bugcheck_code, hex(d.translate(d.info.ps_loaded_module_list)))
"""

from __future__ import annotations

from . import batch, trend
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
