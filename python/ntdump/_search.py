"""Memory search and pointer display: ``Dump.search``, ``Dump.dps`` / ``dds`` / ``dqs``."""

from __future__ import annotations


class SearchMixin:
    """Methods of :class:`ntdump.Dump` that search memory and display pointers."""
