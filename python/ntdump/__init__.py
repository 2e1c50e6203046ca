"""ntdump: read Windows kernel crash dumps (MEMORY.DMP) from Python.

>>> import ntdump
>>> with ntdump.open("MEMORY.DMP") as d:          # doctest: +SKIP
...     print(d.info.bugcheck_code, hex(d.translate(d.info.ps_loaded_module_list)))
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._limits import MAX_READ_BYTES
from ._native import __version__
from .analyze import Analysis, analyze
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


def _dump_analyze(self: Dump) -> Analysis:
    """``!analyze -v`` of this dump: bug check with parameter meanings, faulting IP, the crash
    stack, the first frame outside the kernel and HAL ("probably caused by") and a bucket id
    (:class:`ntdump.analyze.Analysis`). Never raises for a readable dump."""
    return analyze(self)


# Attached here rather than defined in dump.py: analyses sit above the Dump and features (no
# upward imports), the package root sits above everything.
Dump.analyze = _dump_analyze  # type: ignore[attr-defined]

if TYPE_CHECKING:
    from . import batch, trend


def __getattr__(name: str) -> Any:
    """``ntdump.batch`` and ``ntdump.trend`` are imported on first use (start-up time)."""
    if name in ("batch", "trend"):
        return importlib.import_module(f"ntdump.{name}")
    raise AttributeError(f"module 'ntdump' has no attribute {name!r}")


__all__ = [
    "Analysis",
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
    "analyze",
    "batch",
    "open",
    "trend",
    "triage",
]
