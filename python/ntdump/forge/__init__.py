"""ntdump.forge: a writer of synthetic Windows kernel crash dumps (pure Python, stdlib only).

Build a physical memory (:class:`PhysicalMemory`), page tables inside it (:class:`PageTables`),
a :class:`Header`, then write the file in the wanted format:

* :func:`write_full`: DumpType 1, 64-bit ``PAGEDU64`` or 32-bit ``PAGEDUMP``
* :func:`write_bitmap`: DumpType 5 ("FDMP") / 6 ("SDMP")
* :func:`write_range`: DumpType 8 / 9 / 0xA ("RDMP", 64-bit)
* :func:`write_triage`: DumpType 4 (triage / small memory dump)
* :func:`write_raw`: a raw physical image (file offset == PA)

:func:`minimal_x64` / :func:`minimal_x86` do all of that with a ready-made layout and return a
:class:`ForgeResult` holding the ground truth. This package imports nothing from ``ntdump``
and can be used on its own. See docs/forge.md.

Kernel structures and PE images: :mod:`.pe` writes synthetic drivers and kernels,
:func:`map_image` / :func:`bind_imports` load PE files into a forged address space,
:func:`build_kernel_space` writes KDBG, PsLoadedModuleList and MmUnloadedDrivers, and
:mod:`.scenario` (:func:`win10_x64`, :func:`server2003_x86_pae`, :func:`wine_drivers`) writes
whole dumps with their ground truth.
"""

from . import image, kernel, pe, scenario, stack, story, unwind
from .header import DEFAULT_SYSTEM_TIME, Header, build_header
from .image import BindResult, MappedImage, bind_imports, map_image
from .kernel import KernelLayout, ModuleInfo, UnloadedInfo, build_kernel_space
from .memory import PAGE_SIZE, PhysicalMemory
from .minimal import FORMATS, ForgeResult, Mapping, minimal_x64, minimal_x86, stamp
from .paging import PageTables
from .pe import build_driver, build_hal, build_kernel
from .pool import STORY_TAGS, BigAlloc, PoolLayout, PoolTag, build_pool, write_minimal_kdbg
from .scenario import Scenario, server2003_x86_pae, win7_x64, win10_x64, wine_drivers
from .story import Story, founding_story
from .triage import TriageDriver, TriageLayout, write_triage
from .writers import write_bitmap, write_full, write_range, write_raw

__all__ = [
    "DEFAULT_SYSTEM_TIME", "FORMATS", "PAGE_SIZE", "ForgeResult", "Header", "Mapping",
    "PageTables", "PhysicalMemory", "TriageDriver", "TriageLayout", "build_header",
    "minimal_x64", "minimal_x86", "stamp", "write_bitmap", "write_full", "write_range",
    "write_raw", "write_triage",
    "BindResult", "KernelLayout", "MappedImage", "ModuleInfo", "Scenario", "UnloadedInfo",
    "bind_imports", "build_driver", "build_hal", "build_kernel", "build_kernel_space", "image",
    "kernel", "map_image", "pe", "scenario", "server2003_x86_pae", "win10_x64", "wine_drivers",
    "win7_x64",
    "STORY_TAGS", "BigAlloc", "PoolLayout", "PoolTag", "build_pool", "write_minimal_kdbg",
    "Story", "founding_story", "story", "stack", "unwind",
]
