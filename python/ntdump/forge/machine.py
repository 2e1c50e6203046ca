"""The forged machine's ``!vm`` counters as Windows would set them, and the rules that make a set
of counters possible.

A dump whose counters contradict each other (more pages available than the machine has, a
nonpaged pool maximum larger than RAM) teaches a reader nothing: :func:`nonpaged_pool_maximum`
sizes ``MmMaximumNonPagedPoolInBytes`` from the machine's physical memory the way each Windows
family does, and :func:`check_counters` lists every rule a set of counters breaks (empty = a
possible machine). Units: pages of 4 KiB unless a name ends in ``InBytes`` / ``_bytes``.

Sources:

* Windows Server 2003 x86 (and the ``xp`` family, which ntdump forges with the same kernel
  layouts): the Windows Research Kernel, ``base/ntos/mm/i386/init386.c``
  (``MiInitMachineDependent``: the nonpaged pool maximum) with the constants of
  ``base/ntos/mm/mminit.c`` (``MmDefaultMaximumNonPagedPool`` 1 MB,
  ``MmMaxAdditionNonPagedPoolPerMb`` 400 KB, ``MmMinimumNonPagedPoolSize`` 256 KB,
  ``MmMinAdditionNonPagedPoolPerMb`` 32 KB) and ``base/ntos/mm/i386/mi386.h``
  (``MM_MAX_INITIAL_NONPAGED_POOL`` = ``MM_MAX_ADDITIONAL_NONPAGED_POOL`` = 128 MB,
  ``MM_SECONDARY_COLORS_DEFAULT`` 64). ReactOS ``ntoskrnl/mm/ARM3/mminit.c`` uses the same
  constants (citing KB 126402).
* Windows 7 x64 and Windows 10 x64: Microsoft, "Memory Limits for Windows and Windows Server
  Releases" (learn.microsoft.com/windows/win32/memory/memory-limits-for-windows-releases),
  nonpaged pool row: Windows 7 / Server 2008 R2 x64 "75% of RAM up to a maximum of 128 GB";
  Windows 8.1 / Server 2012 R2 and later x64 "RAM or 16 TB, whichever is smaller".
"""

from __future__ import annotations

from collections.abc import Mapping

PAGE = 4096
"""Bytes per page."""
KB, MB, GB, TB = 1 << 10, 1 << 20, 1 << 30, 1 << 40

# WRK mminit.c / mi386.h constants (see the module docstring).
MM_DEFAULT_MAXIMUM_NONPAGED_POOL = 1 * MB
MM_MAX_ADDITION_NONPAGED_POOL_PER_MB = 400 * KB
MM_MINIMUM_NONPAGED_POOL_SIZE = 256 * KB
MM_MIN_ADDITION_NONPAGED_POOL_PER_MB = 32 * KB
MM_MAX_INITIAL_NONPAGED_POOL = 128 * MB
MM_MAX_ADDITIONAL_NONPAGED_POOL = 128 * MB
MM_SECONDARY_COLORS_DEFAULT = 64
MM_LARGE_PAGE_MINIMUM = (255 * MB) // PAGE
"""``MmLargePageMinimum``: machines above it (and not /3GB) may have 256 MB of nonpaged pool
(ReactOS ``MI_MIN_PAGES_FOR_NONPAGED_POOL_TUNING``, the same 255 MB)."""
SIZEOF_MMPFN_X86 = {True: 0x1C, False: 0x18}
"""``sizeof(MMPFN)`` on x86 with / without PAE: 0x1C in the published ntkrnlpa listings
(ntdiff/headers); 0x18 without PAE (4-byte OriginalPte)."""
SIZEOF_MMCOLOR_TABLES_X86 = 12
"""``MMCOLOR_TABLES`` {Flink PFN_NUMBER, Blink PVOID, Count PFN_NUMBER} on x86 (WRK mi386.h)."""


def _page_align(v: int) -> int:
    """NT's ``PAGE_ALIGN``: down to the page."""
    return v & ~(PAGE - 1)


def wrk_x86_nonpaged_pool_maximum(physical_pages: int, highest_pfn: int, *, pae: bool = True,
                                  l2_cache_bytes: int = 0, large_pages: bool = True,
                                  boot_3gb: bool = False) -> int:
    """``MmMaximumNonPagedPoolInBytes`` of a Windows Server 2003 x86 kernel booted on a machine of
    ``physical_pages`` pages whose highest page is ``highest_pfn`` (WRK init386.c, step by step):
    1 MB + the PFN database + 400 KB per MB above 4 MB (200 KB per MB, at least 128 MB, from
    0x1F000 pages up); at least the initial pool + 16 pages + the PFN database; capped at 256 MB
    (large pages, full 2 GB system space, more than 255 MB of RAM) or 128 MB; plus the PFN
    allocation (PFN database and the secondary colour tables) when the PFN database lives in
    nonpaged pool space (``NeedLowVirtualPfn`` FALSE: no dynamic PFN, under 4 GB). Bytes."""
    if physical_pages < 1100:
        raise ValueError("Windows bug-checks INSTALL_MORE_MEMORY below 1100 pages")
    mmpfn = SIZEOF_MMPFN_X86[pae]
    pfn_db = _page_align((highest_pfn + 1) * mmpfn)
    mb_above_4 = (physical_pages - 1024) // 256
    initial = min(MM_MINIMUM_NONPAGED_POOL_SIZE + mb_above_4 * MM_MIN_ADDITION_NONPAGED_POOL_PER_MB,
                  MM_MAX_INITIAL_NONPAGED_POOL) & ~(PAGE - 1)
    mx = MM_DEFAULT_MAXIMUM_NONPAGED_POOL + pfn_db
    if physical_pages >= 0x1F000:
        mx = max(mx + mb_above_4 * (MM_MAX_ADDITION_NONPAGED_POOL_PER_MB // 2),
                 MM_MAX_ADDITIONAL_NONPAGED_POOL)
    else:
        mx += mb_above_4 * MM_MAX_ADDITION_NONPAGED_POOL_PER_MB
    mx = max(mx, initial + 16 * PAGE + pfn_db)
    if not boot_3gb and large_pages and physical_pages > MM_LARGE_PAGE_MINIMUM:
        mx = min(mx, MM_MAX_INITIAL_NONPAGED_POOL + MM_MAX_ADDITIONAL_NONPAGED_POOL)
    else:
        mx = min(mx, MM_MAX_ADDITIONAL_NONPAGED_POOL)
    colors = l2_cache_bytes // PAGE
    if colors & (colors - 1) or not 2 <= colors <= 1024:
        colors = MM_SECONDARY_COLORS_DEFAULT
    pfn_allocation = 1 + (((highest_pfn + 1) * mmpfn
                           + colors * SIZEOF_MMCOLOR_TABLES_X86 * 2) >> 12)
    if highest_pfn < 0x100000:  # NeedLowVirtualPfn FALSE
        mx += pfn_allocation * PAGE
    return mx


def nonpaged_pool_maximum(family: str, machine: str, physical_pages: int, highest_pfn: int, *,
                          pae: bool = True, **wrk: bool | int) -> int:
    """``MmMaximumNonPagedPoolInBytes`` Windows sets on a machine of ``physical_pages`` pages
    (highest page ``highest_pfn``), per family: x86 2003/xp by the WRK formula
    (:func:`wrk_x86_nonpaged_pool_maximum`, ``wrk`` its options); x64 win7: 75 % of RAM up to
    128 GB; x64 win10: RAM up to 16 TB (Microsoft's Memory Limits page). Bytes, page aligned."""
    ram = physical_pages * PAGE
    if machine == "x86" and family in ("2003", "xp"):
        return wrk_x86_nonpaged_pool_maximum(physical_pages, highest_pfn, pae=pae,
                                             **wrk)  # type: ignore[arg-type]
    if machine == "x64" and family == "win7":
        return _page_align(min(ram * 3 // 4, 128 * GB))
    if machine == "x64" and family == "win10":
        return min(ram, 16 * TB)
    raise ValueError(f"no sourced nonpaged pool sizing for {family} {machine}")


def check_counters(vm: Mapping[str, int], *, family: str, machine: str, physical_pages: int,
                   highest_pfn: int, pae: bool = True, tracker_nonpaged_bytes: int | None = None,
                   tracker_paged_bytes: int | None = None, tags: int = 0) -> list[str]:
    """Every rule the counters ``vm`` (variable name → value, as ``build_kernel_space(vm=...)``
    takes them) break on a machine of ``physical_pages`` pages; empty when the machine is
    possible. ``tracker_*_bytes``: what the pool tracker tables sum to (``!poolused``), ``tags``
    the number of tags in them. The rules:

    * ``MmMaximumNonPagedPoolInBytes`` is what Windows sets for this RAM
      (:func:`nonpaged_pool_maximum`) and below the RAM (at most the RAM on Windows 8.1+);
    * nonpaged usage (``MmAllocatedNonPagedPool``, else the tracker sum) ≤ the maximum;
    * ``MmAllocatedNonPagedPool`` = the tracker's nonpaged bytes in pages, within page rounding
      (at most one partly used page per tag);
    * available ≤ physical - nonpaged usage; resident available ≤ physical; modified ≤ physical -
      available - nonpaged usage; locked pages ≤ physical;
    * the tracker's paged bytes ≤ ``MmPagedPoolCommit`` pages ≤ ``MmSizeOfPagedPoolInBytes``;
    * paged-pool, shared and driver commit ≤ committed ≤ commit limit.
    """
    out: list[str] = []
    ram = physical_pages * PAGE
    g = vm.get
    mx = g("MmMaximumNonPagedPoolInBytes")
    if mx is not None:
        want = nonpaged_pool_maximum(family, machine, physical_pages, highest_pfn, pae=pae)
        if mx != want:
            out.append(f"MmMaximumNonPagedPoolInBytes {mx:,} is not what {family} {machine} sets "
                       f"for {physical_pages:,} pages: {want:,}")
        if mx > ram or (mx == ram and family != "win10"):
            out.append(f"nonpaged pool maximum {mx:,} bytes is not below physical memory "
                       f"{ram:,} bytes")
    use_pages = g("MmAllocatedNonPagedPool")
    if use_pages is None and tracker_nonpaged_bytes is not None:
        use_pages = -(-tracker_nonpaged_bytes // PAGE)
    if use_pages is not None and mx is not None and use_pages * PAGE > mx:
        out.append(f"nonpaged usage {use_pages:,} pages exceeds the maximum {mx // PAGE:,} pages")
    if g("MmAllocatedNonPagedPool") is not None and tracker_nonpaged_bytes is not None:
        lo = -(-tracker_nonpaged_bytes // PAGE)
        if not lo <= vm["MmAllocatedNonPagedPool"] <= lo + max(tags, 1):
            out.append(f"MmAllocatedNonPagedPool {vm['MmAllocatedNonPagedPool']:,} pages is not "
                       f"the tracker's nonpaged {tracker_nonpaged_bytes:,} bytes ({lo:,} pages, "
                       f"+ at most one page per tag)")
    npp = use_pages or 0
    avail = g("MmAvailablePages")
    if avail is not None and avail > physical_pages - npp:
        out.append(f"available {avail:,} pages > physical {physical_pages:,} - nonpaged "
                   f"{npp:,}")
    for k in ("MmResidentAvailablePages", "MmSystemLockPagesCount"):
        if g(k) is not None and vm[k] > physical_pages:
            out.append(f"{k} {vm[k]:,} > physical {physical_pages:,} pages")
    mod = g("MmModifiedPageListHead")
    if mod is not None and mod > physical_pages - (avail or 0) - npp:
        out.append(f"modified {mod:,} pages do not fit beside available and nonpaged pages")
    commit, size = g("MmPagedPoolCommit"), g("MmSizeOfPagedPoolInBytes")
    if commit is not None and size is not None and commit * PAGE > size:
        out.append(f"paged pool commit {commit:,} pages > paged pool size {size:,} bytes")
    if tracker_paged_bytes is not None:
        if commit is not None and tracker_paged_bytes > commit * PAGE:
            out.append(f"tracker paged bytes {tracker_paged_bytes:,} > paged pool commit "
                       f"{commit:,} pages")
        if size is not None and tracker_paged_bytes > size:
            out.append(f"tracker paged bytes {tracker_paged_bytes:,} > paged pool size {size:,}")
    total, limit = g("MmTotalCommittedPages"), g("MmTotalCommitLimit")
    if total is not None and limit is not None and total > limit:
        out.append(f"committed {total:,} > commit limit {limit:,} pages")
    parts = [g(k) for k in ("MmPagedPoolCommit", "MmSharedCommit", "MmDriverCommit")]
    if total is not None and sum(p or 0 for p in parts) > total:
        out.append(f"paged-pool + shared + driver commit {sum(p or 0 for p in parts):,} > "
                   f"committed {total:,} pages")
    return out
