"""The founding story as a dump (DESIGN.md): a server whose NonPagedPool leaks through untagged
``ExAllocatePool`` calls from a driver named by a GUID that exists only in memory.

:func:`founding_story` writes it: a Server-2003-like x86 PAE kernel (or Windows 10 x64) with

* ``!vm``: NonPagedPool usage 125,476 KB of a 127,944 KB maximum (98 %), 3 failed allocations
  (``nt!MmPoolFailures``, a variable only a PDB names: :attr:`Story.symbols` hands it over as a
  symbol server would);
* ``!poolused``: ``None`` on top with 246,479 outstanding allocations and 50,827,424 bytes,
  ``MmCm`` second (:data:`~.pool.STORY_TAGS`);
* ``nt!ExAllocatePool`` at 0xE0894D1F (x86), imported by the culprit
  ``{6B1A3E41-8C52-4E0F-9A3D-2C7F1B9E0D55}.sys`` loaded from ``\\??\\C:\\ProgramData\\Vendor\\``.

``leak=False`` writes the same machine healthy: pool at a quarter of its maximum, no failures,
ordinary tags on top, no culprit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .pool import STORY_TAGS, PoolLayout, PoolTag, build_pool
from .scenario import Scenario, server2003_x86_pae, win7_x64, win10_x64
from .writers import write_bitmap, write_full

#: ``!vm`` of the founding story (pages; bytes for *InBytes).
STORY_VM = {
    "MmAvailablePages": 73_305,
    "MmResidentAvailablePages": 93_804,
    "MmAllocatedNonPagedPool": 31_369,  # 125,476 KB
    "MmMaximumNonPagedPoolInBytes": 31_986 * 4096,  # 127,944 KB
    "MmSizeOfPagedPoolInBytes": 40_960 * 4096,
    "MmPagedPoolCommit": 4_460,
    "MmSharedCommit": 3_467,
    "MmDriverCommit": 1_765,
    "MmTotalCommittedPages": 143_366,
    "MmTotalCommitLimit": 320_368,
    "MmModifiedPageListHead": 462,
    "MmPoolFailures": 3,
    "MmTotalFreeSystemPtes": 205_776,
    "MmSystemLockPagesCount": 248,
}

#: The same machine, healthy.
HEALTHY_VM = {**STORY_VM, "MmAllocatedNonPagedPool": 7_996, "MmPoolFailures": 0}

#: Tags of a healthy server: nothing untagged, ordinary kernel consumers on top.
HEALTHY_TAGS: tuple[PoolTag, ...] = (
    *(t for t in STORY_TAGS if t.tag != b"None"),
    PoolTag(b"None", nonpaged_allocs=1_204, nonpaged_frees=1_190, nonpaged_bytes=2_048),
)


@dataclass
class Story:
    """A founding-story dump and its ground truth."""

    scenario: Scenario
    pool: PoolLayout
    leak: bool
    vm: dict[str, int] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        """The dump file."""
        return self.scenario.path

    @property
    def symbols(self) -> dict[str, int]:
        """Kernel variables only a PDB names (``nt!MmPoolFailures`` …) → VA, for ``add_symbols``."""
        return self.scenario.layout.kernel_symbols

    @property
    def culprit(self) -> Any:
        """The culprit module's ground truth (None when healthy)."""
        return self.scenario.culprit


def founding_story(path: str | Path, *, machine: str = "x86", fmt: str = "full",
                   leak: bool = True, size: int = 128 << 20) -> Story:
    """Write the founding story's dump (``machine`` "x86" = Server 2003 PAE, "x64" = Windows 10,
    "x64-win7" = Windows 7 SP1 x64).

    ``fmt``: "full" or "bitmap" (or "kernel" on x64); ``size``: bytes of RAM (the file is sparse).
    See the module docstring for the numbers."""
    vm = dict(STORY_VM if leak else HEALTHY_VM)
    if machine == "x86":
        sc = server2003_x86_pae(path, fmt=fmt, leak_driver=leak, vm=vm, size=size)
        build, m = 3790, "x86"
    elif machine == "x64":
        # Windows 10 has no MmAllocatedNonPagedPool: readers sum the tracker tables instead, so the
        # maximum is set for those sums to be at 98 % (leak) or 25 % (healthy) of it.
        vm.pop("MmAllocatedNonPagedPool")
        tags = STORY_TAGS if leak else HEALTHY_TAGS
        total = sum(t.bytes_of(False) for t in tags)
        limit = int(total / (0.98 if leak else 0.25))
        vm["MmMaximumNonPagedPoolInBytes"] = -(-limit // 4096) * 4096
        sc = win10_x64(path, fmt=fmt, leak_driver=leak, vm=vm, size=size)
        build, m = 19041, "x64"
    elif machine == "x64-win7":
        sc = win7_x64(path, fmt=fmt, leak_driver=leak, vm=vm, size=size)
        build, m = 7601, "x64"
    else:
        raise ValueError("machine must be 'x86', 'x64' or 'x64-win7'")
    pl = build_pool(sc.pt, sc.mem, machine=m, build=build, kdbg_va=sc.layout.kdbg,
                    tags=STORY_TAGS if leak else HEALTHY_TAGS, processors=sc.header.processors)
    # The pool pages were added after the scenario wrote the file: write it again, whole.
    if fmt == "full":
        write_full(sc.path, sc.mem, sc.header)
    elif fmt == "bitmap":
        write_bitmap(sc.path, sc.mem, sc.header, "full")
    elif fmt == "kernel":
        write_bitmap(sc.path, sc.mem, sc.header, "kernel", pages=sorted(sc.mem.pages))
    else:
        raise ValueError("fmt must be 'full', 'bitmap' or 'kernel'")
    return Story(sc, pl, leak, vm)
