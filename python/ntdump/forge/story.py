"""The founding story as a dump (DESIGN.md): a server whose NonPagedPool leaks through untagged
``ExAllocatePool`` calls from a driver named by a GUID that exists only in memory.

:func:`founding_story` writes it: a Server-2003-like x86 PAE kernel (or Windows 7 / 10 x64) with

* ``!vm``: NonPagedPool usage 125,476 KB of a 127,944 KB maximum (98 %), 3 failed allocations
  (``nt!MmPoolFailures``, a variable only a PDB names: :attr:`Story.symbols` hands it over as a
  symbol server would);
* ``!poolused``: ``None`` on top with 246,479 outstanding allocations and 50,827,424 bytes,
  ``MmCm`` second (:data:`~.pool.STORY_TAGS`), then the ordinary consumers of a server
  (:data:`SERVER_TAGS`) that make up the rest of the nonpaged pool in use;
* ``nt!ExAllocatePool`` at 0xE0894D1F (x86), imported by the culprit
  ``{6B1A3E41-8C52-4E0F-9A3D-2C7F1B9E0D55}.sys`` loaded from ``\\??\\C:\\ProgramData\\Vendor\\``.

``leak=False`` writes the same machine healthy: pool at a quarter of its maximum, no failures,
ordinary tags on top, no culprit.

The machine is a possible one (:func:`.machine.check_counters` holds for every family): its
physical memory is chosen so that Windows' own sizing gives the story's maximum —
:data:`X86_RUNS`, 79,615 pages, for which Server 2003's formula (WRK init386.c,
:func:`.machine.wrk_x86_nonpaged_pool_maximum`) gives 127,944 KB; Windows 7 x64 (75 % of RAM)
gets 42,648 pages; Windows 10 x64 (nonpaged pool up to all of RAM) keeps 128 MiB, its usage from
the tracker sums. Usage is the tracker's nonpaged bytes in whole pages; available, resident
available, modified and commit counters fit beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .machine import PAGE, nonpaged_pool_maximum
from .pool import STORY_TAGS, PoolLayout, PoolTag, build_pool
from .scenario import Scenario, server2003_x86_pae, win7_x64, win10_x64
from .writers import write_bitmap, write_full

#: Physical memory of the story's Server 2003 machine, (first page, pages): 79,615 pages
#: (311 MiB), the highest page 82,615 (an 11.3 MiB reserved hole under 256 MiB, as firmware and
#: shared video memory leave). Server 2003 sizes its nonpaged pool maximum from these: 1 MB +
#: the PFN database + 400 KB per MB above 4 MB + the PFN allocation = 131,014,656 bytes,
#: 127,944 KB (WRK init386.c; :func:`.machine.wrk_x86_nonpaged_pool_maximum`).
X86_RUNS = ((0x1, 0x9F), (0x100, 0xEF00), (0xFB58, 18_272))
#: Windows 7 x64: 75 % of RAM is the nonpaged maximum (Microsoft, Memory Limits for Windows
#: Releases); 42,648 pages give 127,944 KB.
WIN7_RUNS = ((0x1, 0x9F), (0x100, 42_648 - 0x9F))
#: Windows 10 x64: nonpaged pool may grow to all of RAM (same page): 128 MiB.
WIN10_SIZE = 128 << 20

#: Nonpaged pool in use on the story's machine (pages): 125,476 KB leaking, a quarter of the
#: maximum healthy.
STORY_NONPAGED_PAGES = 31_369
HEALTHY_NONPAGED_PAGES = 7_996

#: The ordinary nonpaged consumers of a server (kernel objects, I/O, file system …), each below
#: ``MmCm``; :func:`server_tags` scales them to fill the pool in use. (tag, bytes per allocation)
SERVER_TAGS: tuple[tuple[bytes, int], ...] = (
    (b"Irp ", 0x1A0), (b"Mdl ", 0x60), (b"Even", 0x40), (b"Mutx", 0x50), (b"Sema", 0x48),
    (b"Devi", 0x1E0), (b"Driv", 0x1A8), (b"ObNm", 0x38), (b"Vad ", 0x30), (b"Toke", 0x380),
    (b"SeTd", 0x1C0), (b"Io  ", 0x90), (b"Ntf0", 0x80), (b"CcBc", 0x100), (b"MmCa", 0x58),
    (b"ReTa", 0x40), (b"Wait", 0x38), (b"IoNm", 0x98), (b"Key ", 0x78), (b"Port", 0xB0),
    (b"Sect", 0x48), (b"Ntfr", 0x80),
)


def server_tags(base: tuple[PoolTag, ...], nonpaged_pages: int) -> tuple[PoolTag, ...]:
    """``base`` plus :data:`SERVER_TAGS` so that the tracker's nonpaged bytes, in pages, are
    ``nonpaged_pages`` (the whole last page used but for 1,000 bytes), none of the added tags above
    the second of ``base``: what ``MmAllocatedNonPagedPool`` and the tracker agree on."""
    have = sum(t.bytes_of(False) for t in base)
    need = nonpaged_pages * PAGE - 1_000 - have
    if need < 0:
        raise ValueError(f"the base tags already hold {have:,} nonpaged bytes")
    cap = sorted((t.bytes_of(False) for t in base), reverse=True)[1]
    share = need // len(SERVER_TAGS)
    if share >= cap:
        raise ValueError("server tags would outgrow the story's second tag")
    out = list(base)
    for i, (tag, each) in enumerate(SERVER_TAGS):
        nbytes = share + (need - share * len(SERVER_TAGS) if i == 0 else 0)
        live = max(1, nbytes // each)
        out.append(PoolTag(tag, nonpaged_allocs=live * 7, nonpaged_frees=live * 6,
                           nonpaged_bytes=nbytes))
    return tuple(out)


def story_counters(family: str, machine: str, physical_pages: int, highest_pfn: int,
                   tags: tuple[PoolTag, ...], *, leak: bool) -> dict[str, int]:
    """The ``!vm`` counters of the story's machine, every one consistent with the others
    (:func:`.machine.check_counters`): the maximum as Windows sizes it, usage from ``tags``,
    available pages what is left beside nonpaged pool and the rest of the system, paged pool
    committed to hold the tracker's paged bytes. Windows 10 has no ``MmAllocatedNonPagedPool``
    (readers sum the tracker tables)."""
    np_pages = -(-sum(t.bytes_of(False) for t in tags) // PAGE)
    paged_pages = -(-sum(t.bytes_of(True) for t in tags) // PAGE)
    free = physical_pages - np_pages
    available = free // 5 if leak else free * 2 // 5
    vm = {
        "MmMaximumNonPagedPoolInBytes": nonpaged_pool_maximum(family, machine, physical_pages,
                                                              highest_pfn),
        "MmAllocatedNonPagedPool": np_pages,
        "MmAvailablePages": available,
        # Resident available: available plus pages that could be trimmed; never above RAM.
        "MmResidentAvailablePages": available + (free - available) // 4,
        "MmModifiedPageListHead": min(462, (free - available) // 8),
        "MmSizeOfPagedPoolInBytes": 40_960 * PAGE,  # 160 MB of paged pool space
        "MmPagedPoolCommit": paged_pages + 167,  # the tracker's bytes and partly used pages
        "MmSharedCommit": 3_467,
        "MmDriverCommit": 1_765,
        "MmTotalCommittedPages": 143_366,
        "MmTotalCommitLimit": 320_368,  # RAM plus a page file of about 1 GB
        "MmPoolFailures": 3 if leak else 0,
        "MmTotalFreeSystemPtes": 205_776,
        "MmSystemLockPagesCount": 248,
    }
    if family == "win10":
        del vm["MmAllocatedNonPagedPool"]
    return vm


#: ``!vm`` of the founding story's Server 2003 machine (pages; bytes for *InBytes).
STORY_VM = story_counters("2003", "x86", 79_615, 82_615,
                          server_tags(STORY_TAGS, STORY_NONPAGED_PAGES), leak=True)

#: Tags of a healthy server: nothing untagged, ordinary kernel consumers on top.
HEALTHY_TAGS: tuple[PoolTag, ...] = (
    *(t for t in STORY_TAGS if t.tag != b"None"),
    PoolTag(b"None", nonpaged_allocs=1_204, nonpaged_frees=1_190, nonpaged_bytes=2_048),
)

#: The same machine, healthy.
HEALTHY_VM = story_counters("2003", "x86", 79_615, 82_615,
                            server_tags(HEALTHY_TAGS, HEALTHY_NONPAGED_PAGES), leak=False)


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
                   leak: bool = True, size: int | None = None) -> Story:
    """Write the founding story's dump (``machine`` "x86" = Server 2003 PAE, "x64" = Windows 10,
    "x64-win7" = Windows 7 SP1 x64).

    ``fmt``: "full" or "bitmap" (or "kernel" on x64); ``size``: bytes of RAM (the file is
    sparse); None = the story's own machine (:data:`X86_RUNS`, :data:`WIN7_RUNS`,
    :data:`WIN10_SIZE`). Every ``!vm`` counter follows from the machine
    (:func:`story_counters`). See the module docstring for the numbers."""
    tags = server_tags(STORY_TAGS if leak else HEALTHY_TAGS,
                       STORY_NONPAGED_PAGES if leak else HEALTHY_NONPAGED_PAGES)
    make: Callable[..., Scenario]
    runs: Sequence[tuple[int, int]] | None
    if machine == "x86":
        family, make, runs, build, m = "2003", server2003_x86_pae, X86_RUNS, 3790, "x86"
    elif machine == "x64":
        family, make, runs, build, m = "win10", win10_x64, None, 19041, "x64"
        size = size or WIN10_SIZE
    elif machine == "x64-win7":
        family, make, runs, build, m = "win7", win7_x64, WIN7_RUNS, 7601, "x64"
    else:
        raise ValueError("machine must be 'x86', 'x64' or 'x64-win7'")
    if size is not None:
        pages = size // PAGE
        runs = ((0x1, 0x9F), (0x100, pages - 0x100))
    assert runs is not None
    physical = sum(n for _, n in runs)
    highest = max(b + n for b, n in runs) - 1
    vm = story_counters(family, m, physical, highest, tags, leak=leak)
    sc = make(path, fmt=fmt, leak_driver=leak, vm=vm, runs=runs)
    pl = build_pool(sc.pt, sc.mem, machine=m, build=build, kdbg_va=sc.layout.kdbg,
                    tags=tags, processors=sc.header.processors)
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
