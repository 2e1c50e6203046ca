"""ntdump: read Windows kernel crash dumps (MEMORY.DMP) from Python.

>>> import ntdump
>>> with ntdump.open("MEMORY.DMP") as d:          # doctest: +SKIP
...     print(d.info.bugcheck_code, hex(d.translate(d.info.ps_loaded_module_list)))
"""

from __future__ import annotations

from . import batch, trend
from ._limits import MAX_READ_BYTES
from ._native import __version__
from .dump import Dump, DumpInfo, PageWalk, WalkStep, open
from .errors import (
    DumpFormatError,
    InternalError,
    KdError,
    NtdumpError,
    NtdumpWarning,
    OutOfMemoryError,
    PageNotInDumpError,
    PageNotPresentError,
    PeFormatError,
    PoolTableError,
    ReadLimitError,
    SymbolError,
    TranslationError,
    UnsupportedError,
)
from .triage import Report, triage

__all__ = [
    "Dump",
    "DumpFormatError",
    "DumpInfo",
    "InternalError",
    "KdError",
    "MAX_READ_BYTES",
    "NtdumpError",
    "NtdumpWarning",
    "OutOfMemoryError",
    "PageNotInDumpError",
    "PageNotPresentError",
    "PageWalk",
    "PeFormatError",
    "PoolTableError",
    "ReadLimitError",
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
