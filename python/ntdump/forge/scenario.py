"""Ready-made kernel dumps for tests and the demo, with their ground truth.

* :func:`win10_x64` / :func:`win10_x86` / :func:`server2003_x86_pae`: a kernel and HAL (from
  :mod:`.pe`, or Wine's when ``wine_dir`` is given), eight ordinary drivers built by :mod:`.pe`,
  and the founding
  story's culprit: a driver named by a GUID, loaded from outside \\SystemRoot, that calls the
  untagged ``ExAllocatePool``. The 2003 scenario puts ``nt!ExAllocatePool`` at 0xE0894D1F, the
  address of the story.
* :func:`wine_drivers`: Wine's real ntoskrnl.exe, hal.dll and 17 drivers, relocated and bound.

Each returns a :class:`Scenario`. Files are sparse (only populated pages are written); each
scenario writes in well under a second. Units: VAs and PAs are byte addresses, sizes bytes.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .header import DEFAULT_SYSTEM_TIME, Header
from .image import parse_pe
from .kernel import KernelLayout, ModuleInfo, build_kernel_space
from .memory import PAGE_SIZE, PhysicalMemory
from .paging import PageTables
from .pe import build_driver, build_hal, build_kernel
from .triage import TriageDriver, write_triage
from .unwind import Function
from .writers import write_bitmap, write_full, write_range, write_raw


@dataclass(frozen=True)
class DriverSpec:
    """One ordinary driver of a scenario, built by :func:`~.pe.build_driver`: imports (DLL →
    names or ordinals), pool tags (4 bytes each), exported function names, synthetic
    :class:`~.unwind.Function` s (real prologues and unwind data, for planted stacks)."""

    name: str
    imports: Mapping[str, Sequence[str | int]]
    pool_tags: Sequence[bytes] = ()
    exports: Sequence[str] = ()
    functions: Sequence[Function] = ()


CULPRIT_GUID = "{6B1A3E41-8C52-4E0F-9A3D-2C7F1B9E0D55}"
CULPRIT_NAME = CULPRIT_GUID + ".sys"
CULPRIT_PATH = "\\??\\C:\\ProgramData\\Vendor\\" + CULPRIT_NAME
#: The culprit's ntoskrnl imports, in IAT order: ExAllocatePool's neighbours are the ones
#: ``dps`` shows in the story (_wcsnicmp, ExFreePoolWithTag, KeInitializeEvent).
CULPRIT_IMPORTS = ("RtlInitUnicodeString", "IoCreateDevice", "ExAllocatePool", "_wcsnicmp",
                   "ExFreePoolWithTag", "KeInitializeEvent", "KeSetEvent", "IofCompleteRequest")
CULPRIT_TAGS = (b"VndC", b"VndE")
STORY_EX_ALLOCATE_POOL = 0xE0894D1F
_NT = "ntoskrnl.exe"
_POOL = ["ExAllocatePoolWithTag", "ExFreePoolWithTag"]
DEFAULT_DRIVERS = (
    DriverSpec("ACPI.sys", {_NT: [*_POOL, "KeInitializeEvent", "IoCreateDevice", "IofCallDriver"],
                            "HAL.dll": ["HalGetBusDataByOffset"]}, (b"Acpi", b"AcpO")),
    DriverSpec("CLASSPNP.SYS", {_NT: [*_POOL, "IofCallDriver", "IoAllocateIrp", "IoFreeIrp"]},
               (b"ClDN",), ("ClassInitialize", "ClassReadDriveCapacity")),
    DriverSpec("disk.sys", {_NT: [*_POOL, "IofCompleteRequest"],
                            "CLASSPNP.SYS": ["ClassInitialize", 2]}, (b"Disk",)),
    DriverSpec("storport.sys", {_NT: [*_POOL, "KeInitializeSpinLock", "MmMapIoSpace"]},
               (b"Stor",), ("StorPortInitialize", "StorPortNotification")),
    DriverSpec("storahci.sys", {"storport.sys": ["StorPortInitialize", "StorPortNotification"],
                                _NT: ["memset"]}, ()),
    DriverSpec("Ntfs.sys", {_NT: [*_POOL, "ZwCreateFile", "ZwReadFile", "ZwClose",
                                  "ObReferenceObjectByHandle", "ObfDereferenceObject"]},
               (b"NtFs", b"Ntfx")),
    DriverSpec("tcpip.sys", {_NT: [*_POOL, "KeSetEvent", "KeWaitForSingleObject",
                                   "PsCreateSystemThread"]}, (b"TcpE", b"Ipas")),
    DriverSpec("fltmgr.sys", {_NT: [*_POOL, "ExAllocatePoolWithQuotaTag", "_stricmp"]},
               (b"FMfc", b"FMsl"), ("FltRegisterFilter", "FltStartFiltering")),
)
_FORMAT_TYPES = {"full": 1, "bitmap": 5, "kernel": 6, "range_kernel": 8,
                 "range_kernel_user": 9, "range_full": 0xA, "raw": 0, "triage": 4}


@dataclass
class Scenario:
    """A written scenario dump and its ground truth.

    ``culprit`` is the leaking driver's :class:`~.kernel.ModuleInfo` (None without one);
    ``culprit_iat_slot`` the VA of its IAT slot for ExAllocatePool; ``ex_allocate_pool`` the VA
    of nt!ExAllocatePool; ``importers`` the base names of every module importing
    ntoskrnl.exe!ExAllocatePool, in load order; ``stored`` the ``(pfn, count)`` runs in the file.
    """

    path: Path
    fmt: str
    dump_type: int
    header: Header
    mem: PhysicalMemory
    pt: PageTables
    layout: KernelLayout
    culprit: ModuleInfo | None
    culprit_iat_slot: int | None
    ex_allocate_pool: int
    importers: list[str]
    stored: tuple[tuple[int, int], ...]

    def read(self, va: int, n: int) -> bytes:
        """Ground-truth bytes at ``va`` through the page tables (raises if unmapped)."""
        out = bytearray()
        while len(out) < n:
            pa = self.pt.translate(va + len(out))
            if pa is None:
                raise ValueError(f"{va + len(out):#x} is not mapped")
            take = min(PAGE_SIZE - (pa & 0xFFF), n - len(out))
            out += self.mem.read(pa, take)
        return bytes(out)

    def is_stored(self, pa: int) -> bool:
        """True if the page holding ``pa`` is in the dump file."""
        pfn = pa >> 12
        i = bisect.bisect_right([b for b, _ in self.stored], pfn) - 1
        return i >= 0 and pfn < sum(self.stored[i])


def _place(sizes: Sequence[int], start: int) -> list[int]:
    """Bases for images of ``sizes`` bytes from ``start``: 64 KiB aligned, a free page between."""
    out, at = [], start
    for size in sizes:
        out.append(at)
        at = -(-(at + size + PAGE_SIZE) // 0x10000) * 0x10000
    return out


def _wine_folder(wine_dir: str | Path, arch: str) -> Path:
    base = Path(wine_dir)
    for cand in (base, base / f"wine-{arch}", base / "pe" / f"wine-{arch}"):
        if (cand / "ntoskrnl.exe").is_file():
            return cand
    raise FileNotFoundError(f"no Wine ntoskrnl.exe for {arch} under {base}")


def _write(path: Path, fmt: str, mem: PhysicalMemory, hdr: Header,
           layout: KernelLayout) -> tuple[tuple[int, int], ...]:
    populated = sorted(mem.pages)
    if fmt == "triage":
        drivers = [TriageDriver(m.path, m.base, m.size, m.timestamp, m.checksum)
                   for m in layout.modules]
        kd = layout.kdbg
        page = kd & ~0xFFF
        pa = layout.pt.translate(page) or 0
        write_triage(path, hdr, [(page, mem.read(pa, PAGE_SIZE))], drivers=drivers,
                     debugger_data=mem.read(pa + (kd & 0xFFF), layout.kdbg_size))
        return ()
    {"full": lambda: write_full(path, mem, hdr),
     "bitmap": lambda: write_bitmap(path, mem, hdr, "full"),
     "kernel": lambda: write_bitmap(path, mem, hdr, "kernel", pages=populated),
     "range_kernel": lambda: write_range(path, mem, hdr, 8, pages=populated),
     "range_kernel_user": lambda: write_range(path, mem, hdr, 9, pages=populated),
     "range_full": lambda: write_range(path, mem, hdr, 0xA),
     "raw": lambda: write_raw(path, mem)}[fmt]()
    if fmt in ("kernel", "range_kernel", "range_kernel_user"):
        runs: list[tuple[int, int]] = []
        for pfn in populated:
            if runs and sum(runs[-1]) == pfn:
                runs[-1] = (runs[-1][0], runs[-1][1] + 1)
            else:
                runs.append((pfn, 1))
        return tuple(runs)
    return ((0, mem.highest_pfn + 1),) if fmt == "raw" else mem.runs


def _scenario(path: str | Path, fmt: str, machine: str, family: str, build: int, size: int,
              modules: list[tuple[str, str, bytes]], starts: tuple[int, int],
              unloaded: Sequence[tuple[str, int, int, int]], culprit: str | None,
              header: dict, kernel_options: dict,
              runs: Sequence[tuple[int, int]] | None = None) -> Scenario:
    if fmt not in _FORMAT_TYPES:
        raise ValueError(f"fmt must be one of {tuple(_FORMAT_TYPES)}")
    if machine == "x86" and fmt.startswith("range"):
        raise ValueError("range dumps are 64-bit only")
    pages = size // PAGE_SIZE
    mem = PhysicalMemory(list(runs) if runs else [(0x1, 0x9F), (0x100, pages - 0x100)])
    pt = PageTables(mem, "x64" if machine == "x64" else "pae", self_map=True)
    sizes = [-(-parse_pe(data).size_of_image // PAGE_SIZE) * PAGE_SIZE for _, _, data in modules]
    bases = _place(sizes[:2], starts[0]) + _place(sizes[2:], starts[1])
    layout = build_kernel_space(
        pt, mem, machine=machine, family=family, build=build,
        modules=[(n, p, d, b) for (n, p, d), b in zip(modules, bases, strict=True)],
        unloaded=unloaded, processors=header.get("processors", 1), **kernel_options)
    hdr = layout.header(**header)
    path = Path(path)
    stored = _write(path, fmt, mem, hdr, layout)
    nt = layout.modules[0]
    importers = [m.name for m in layout.modules
                 if any(i.name == "ExAllocatePool" and i.dll.lower() == _NT
                        for i in m.image.imports)]
    cul = layout.module(culprit) if culprit else None
    slot = next((i.iat for i in cul.image.imports if i.name == "ExAllocatePool"), None) \
        if cul else None
    return Scenario(path, fmt, _FORMAT_TYPES[fmt], hdr, mem, pt, layout, cul, slot,
                    nt.image.exports["ExAllocatePool"], importers, stored)


def _story(machine: str, base_path: str, kernel: bytes, hal: bytes,
           drivers: Sequence[DriverSpec] | None, leak_driver: bool
           ) -> list[tuple[str, str, bytes]]:
    out = [("ntoskrnl.exe", base_path + "ntoskrnl.exe", kernel),
           ("hal.dll", base_path + "hal.dll", hal)]
    for spec in DEFAULT_DRIVERS if drivers is None else drivers:
        out.append((spec.name, base_path + "drivers\\" + spec.name,
                    build_driver(spec.name, machine=machine, imports=spec.imports,
                                 pool_tags=spec.pool_tags, exports=spec.exports,
                                 dll=bool(spec.exports), functions=spec.functions)))
    if leak_driver:
        out.append((CULPRIT_NAME, CULPRIT_PATH,
                    build_driver(CULPRIT_NAME, machine=machine,
                                 imports={_NT: list(CULPRIT_IMPORTS)}, pool_tags=CULPRIT_TAGS)))
    return out


def _unloaded(start: int) -> list[tuple[str, int, int, int]]:
    hour = 36_000_000_000
    return [("dump_storport.sys", start, start + 0x12000, DEFAULT_SYSTEM_TIME - 70 * hour),
            ("dump_storahci.sys", start + 0x20000, start + 0x2B000,
             DEFAULT_SYSTEM_TIME - 70 * hour),
            ("{0D7C2A19-5E34-4B8A-8F21-6A9E3C4D7B10}.sys", start + 0x40000, start + 0x4A000,
             DEFAULT_SYSTEM_TIME - 2 * hour)]


def win10_x64(path: str | Path, *, fmt: str = "full", modules: Sequence[DriverSpec] | None = None,
              leak_driver: bool = True, wine_dir: str | Path | None = None,
              size: int = 128 << 20, build: int = 19041, family: str = "win10",
              runs: Sequence[tuple[int, int]] | None = None,
              **kernel_options: object) -> Scenario:
    """Windows 10 x64: kernel at 0xFFFFF8026BE00000, HAL after it, drivers from
    0xFFFFF80270000000 (culprit last), pool from 0xFFFFC08000000000. ``modules`` replaces the
    eight default drivers; ``kernel_options`` go to :func:`~.kernel.build_kernel_space`
    (e.g. ``loop_after=3``); ``runs``: physical memory as (first page, page count) runs instead of
    ``size`` (below 1 MiB, then one run). Bugcheck 0xE2 (manually initiated), 2 processors."""
    if wine_dir is not None:
        folder = _wine_folder(wine_dir, "x86_64")
        kernel, hal = (folder / "ntoskrnl.exe").read_bytes(), (folder / "hal.dll").read_bytes()
    else:
        kernel, hal = build_kernel(machine="x64"), build_hal(machine="x64")
    mods = _story("x64", "\\SystemRoot\\system32\\", kernel, hal, modules, leak_driver)
    return _scenario(path, fmt, "x64", family, build, size, mods,
                     (0xFFFFF8026BE00000, 0xFFFFF80270000000),
                     _unloaded(0xFFFFF80271000000), CULPRIT_NAME if leak_driver else None,
                     {"bugcheck_code": 0xE2, "processors": 2,
                      "comment": b"ntdump.forge win10_x64"}, kernel_options, runs)


def win7_x64(path: str | Path, **kw: Any) -> Scenario:
    """Windows 7 SP1 x64 (build 7601, Windows 7 structure layouts); otherwise as
    :func:`win10_x64`."""
    kw.setdefault("build", 7601)
    return win10_x64(path, family="win7", **kw)


def server2003_x86_pae(path: str | Path, *, fmt: str = "full",
                       modules: Sequence[DriverSpec] | None = None, leak_driver: bool = True,
                       wine_dir: str | Path | None = None, size: int = 128 << 20,
                       build: int = 3790, runs: Sequence[tuple[int, int]] | None = None,
                       **kernel_options: object) -> Scenario:
    """Windows Server 2003 x86 PAE: kernel at 0xE0800000 with nt!ExAllocatePool at 0xE0894D1F
    (the story's address; with ``wine_dir`` it is wherever Wine has it), drivers from
    0xF5000000, pool from 0x89000000. ProductType 3 (server), bugcheck 0xE2, 1 processor."""
    if wine_dir is not None:
        folder = _wine_folder(wine_dir, "i386")
        kernel, hal = (folder / "ntoskrnl.exe").read_bytes(), (folder / "hal.dll").read_bytes()
    else:
        kernel = build_kernel(machine="x86", image_base=0xE0800000,
                              fixed_rvas={"ExAllocatePool": STORY_EX_ALLOCATE_POOL - 0xE0800000})
        hal = build_hal(machine="x86")
    mods = _story("x86", "\\WINDOWS\\system32\\", kernel, hal, modules, leak_driver)
    return _scenario(path, fmt, "x86", "2003", build, size, mods, (0xE0800000, 0xF5000000),
                     _unloaded(0xF6000000), CULPRIT_NAME if leak_driver else None,
                     {"bugcheck_code": 0xE2, "product_type": 3,
                      "comment": b"ntdump.forge server2003_x86_pae"}, kernel_options, runs)


def win10_x86(path: str | Path, *, fmt: str = "full", modules: Sequence[DriverSpec] | None = None,
              leak_driver: bool = True, size: int = 128 << 20, build: int = 19041,
              runs: Sequence[tuple[int, int]] | None = None,
              **kernel_options: object) -> Scenario:
    """Windows 10 x86 PAE (``build``, default 19041; Windows 10 structure layouts for x86: the
    0x5C-byte ``KLDR_DATA_TABLE_ENTRY`` of [vol2] win10_x86_19041): kernel at 0x81C00000, HAL
    after it, drivers from 0x8F000000, the same drivers and culprit as :func:`win10_x64`.
    Bugcheck 0xE2, 2 processors."""
    kernel, hal = build_kernel(machine="x86", image_base=0x81C00000), build_hal(machine="x86")
    mods = _story("x86", "\\SystemRoot\\system32\\", kernel, hal, modules, leak_driver)
    return _scenario(path, fmt, "x86", "win10", build, size, mods, (0x81C00000, 0x8F000000),
                     _unloaded(0x8F800000), CULPRIT_NAME if leak_driver else None,
                     {"bugcheck_code": 0xE2, "processors": 2,
                      "comment": b"ntdump.forge win10_x86"}, kernel_options, runs)


def wine_drivers(path: str | Path, arch: str = "x86_64", *, wine_dir: str | Path,
                 fmt: str = "full", family: str = "win10", size: int = 128 << 20,
                 **kernel_options: object) -> Scenario:
    """Wine's ntoskrnl.exe, hal.dll and every ``*.sys`` of ``wine_dir`` (the folder itself, or
    one holding ``wine-<arch>`` or ``pe/wine-<arch>``), relocated into kernel space and bound:
    x64 for "x86_64", x86 PAE for "i386". Drivers load in name order; imports Wine's drivers
    take from kernel32/ntdll/ucrtbase stay unresolved (``layout.bind.unresolved``)."""
    if arch not in ("x86_64", "i386"):
        raise ValueError("arch must be 'x86_64' or 'i386'")
    folder = _wine_folder(wine_dir, arch)
    machine = "x64" if arch == "x86_64" else "x86"
    root = "\\SystemRoot\\system32\\"
    mods = [("ntoskrnl.exe", root + "ntoskrnl.exe", (folder / "ntoskrnl.exe").read_bytes()),
            ("hal.dll", root + "hal.dll", (folder / "hal.dll").read_bytes())]
    for f in sorted(folder.glob("*.sys")):
        mods.append((f.name, root + "drivers\\" + f.name, f.read_bytes()))
    starts = (0xFFFFF8026BE00000, 0xFFFFF80270000000) if machine == "x64" else \
        (0x80800000, 0xF5000000)
    return _scenario(path, fmt, machine, family, 0, size, mods, starts, (), None,
                     {"bugcheck_code": 0xE2, "comment": f"ntdump.forge wine {arch}".encode()},
                     kernel_options)
