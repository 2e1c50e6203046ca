"""Symbols from export tables, and import analysis: ``Dump.symbol`` / ``symbols`` / ``ln`` /
``importers`` / ``lmi``."""

from __future__ import annotations


class SymbolsMixin:
    """Methods of :class:`ntdump.Dump` that resolve names and addresses."""
