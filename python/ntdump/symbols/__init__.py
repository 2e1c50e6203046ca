"""Symbols from symbol stores and servers: ``_NT_SYMBOL_PATH``, the symstore layout, downloads,
and PDB types. See docs/symbols.md.

>>> from ntdump.symbols import SymbolPath
>>> p = SymbolPath("srv*/var/cache/sym*https://msdl.microsoft.com/download/symbols")
>>> [e.kind for e in p.elements], p.servers
(['srv'], ['https://msdl.microsoft.com/download/symbols'])

ntdump never goes online on its own: only an ``http(s)`` store named in the path is contacted,
and never with ``offline=True``.
"""

from __future__ import annotations

from .options import MICROSOFT_SERVER, HttpOptions
from .path import (
    ENV,
    PathElement,
    SymbolPath,
    check_image,
    check_pdb,
    default_downstream_store,
    parse,
)
from .resolve import ModuleFiles, Resolver
from .store import (
    FileRequest,
    LocalStore,
    check_key,
    check_name,
    compressed_name,
    image_key,
    pdb_key,
)
from .types import TypedValue

__all__ = [
    "ENV",
    "MICROSOFT_SERVER",
    "FileRequest",
    "HttpOptions",
    "LocalStore",
    "ModuleFiles",
    "PathElement",
    "Resolver",
    "SymbolPath",
    "TypedValue",
    "check_image",
    "check_key",
    "check_name",
    "check_pdb",
    "compressed_name",
    "default_downstream_store",
    "image_key",
    "parse",
    "pdb_key",
]
