"""Old home of the forged fleet: the dump writer now lives in :mod:`ntdump.forge.fleet` (the
forge stands apart from the readers). Every name is re-exported here so that
``ntdump.batch.fleet.write_fleet`` keeps working."""

from __future__ import annotations

from ..forge.fleet import (
    BASELINE,
    FILETIME_PER_HOUR,
    START,
    Fleet,
    FleetDump,
    Leak,
    filetime,
    write_fleet,
)

__all__ = [
    "BASELINE", "FILETIME_PER_HOUR", "START", "Fleet", "FleetDump", "Leak", "filetime",
    "write_fleet",
]
