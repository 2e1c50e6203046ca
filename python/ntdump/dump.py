"""The :class:`Dump` object: one open crash dump (or raw physical image)."""

from __future__ import annotations

import builtins
import errno
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast, overload

from ._handle import DumpInfo, Handle, PageWalk, WalkStep, filetime_to_datetime
from ._limits import DEFAULT_CHUNK, U64, check_iter_read
from ._native import Dump as NativeDump
from .errors import SymbolError

if TYPE_CHECKING:
    import pandas as pd

    from ._search import Search, Width, Within
    from ._symbols import Symbols
    from ._symsrv import SymbolServer
    from .bugcheck import BugCheck
    from .modules import Kernel, Module, ModuleList
    from .pe import LoadedModuleInfo, PeImages
    from .pool import Pool
    from .stack import Images, Stack, StackWalk
    from .symbolmap import SymbolMap
    from .symbols.path import SymbolPath
    from .symbols.resolve import ModuleFiles
    from .symbols.types import TypedValue
    from .vm import Vm, VmSummary
else:
    from ._lazy import pd  # imported on first use (start-up time)

T = TypeVar("T")

RAW_SUFFIXES = (".raw", ".mem", ".bin", ".img", ".vmem", ".dd")

if TYPE_CHECKING:
    from ._native import Kdbg



class _Features:
    """The feature objects of one :class:`Dump`, wired to each other. Built together on the first
    call that needs one, which is also when their modules are imported: opening a dump and reading
    its header, memory or page tables loads none of them (start-up time, docs/benchmarks.md)."""

    def __init__(self, h: Handle, sp: SymbolPath) -> None:
        from ._search import Search
        from ._symbols import Symbols
        from ._symsrv import SymbolServer
        from .modules import Kernel
        from .pe import PeImages
        from .pool import Pool
        from .stack import Stack
        from .symbolmap import SymbolMap
        from .vm import Vm

        self.images = PeImages(h)
        self.kernel = Kernel(h, self.images)
        self.symbol_map = SymbolMap(h, self.kernel)
        self.symbols = Symbols(h, self.kernel, self.symbol_map, self.images)
        self.symsrv = SymbolServer(h, self.kernel, self.symbol_map, self.images, sp)
        self.symbol_map.autoload = self.symsrv.autoload
        self.images.resolve = self.symbols.ln_or_none
        self.search = Search(h, self.symbols)
        self.pool = Pool(h, self.symbol_map)
        self.vm = Vm(h, self.pool, self.symbol_map)
        self.stack = Stack(h, self.kernel, self.symbols)


class _Feature(Generic[T]):
    """``Dump._pool`` and friends: the feature object of that name (without the underscore),
    from the Dump's :class:`_Features`, built on first use."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.attr = name.lstrip("_")

    @overload
    def __get__(self, obj: None, owner: type) -> _Feature[T]: ...
    @overload
    def __get__(self, obj: Dump, owner: type) -> T: ...
    def __get__(self, obj: Dump | None, owner: type) -> T | _Feature[T]:
        if obj is None:
            return self
        return cast(T, getattr(obj._features(), self.attr))


def _looks_like_dump(path: str) -> bool:
    try:
        with builtins.open(path, "rb") as f:
            return f.read(4) == b"PAGE"
    except OSError:
        return True  # let the native open raise the proper OSError


class Dump:
    """An open Windows kernel crash dump.

    Use :func:`ntdump.open`. Also a context manager; closing releases the file map once no other
    reference remains.

    The Dump owns the native handle and composes one feature object per concern, each taking the
    handle (and the features it needs), never the Dump: :class:`~ntdump.pe.PeImages`,
    :class:`~ntdump.modules.Kernel` (modules, KDBG), :class:`~ntdump.symbolmap.SymbolMap` (PDB and
    mapped symbols), :class:`~ntdump._symbols.Symbols` (``symbol``, ``ln``, ``importers``,
    ``lmi``), :class:`~ntdump._search.Search` (``search``, ``dps``), :class:`~ntdump.pool.Pool`,
    :class:`~ntdump.vm.Vm`, :class:`~ntdump.stack.Stack` and
    :class:`~ntdump._symsrv.SymbolServer` (the symbol path, ``reload``, ``dt``, ``type_info``,
    files from symbol stores). The methods below delegate to them. The feature objects are built
    together on the first call that needs one (``_Features``); the header, memory reads and page
    walks need none.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        raw: bool | None = None,
        machine: str | None = None,
        pae: bool | None = None,
        dtb: int | None = None,
        symbols: str | SymbolPath | None = None,
        offline: bool | None = None,
    ) -> None:
        self.path = os.fspath(path)
        if raw is None:
            raw = self.path.lower().endswith(RAW_SUFFIXES) and not _looks_like_dump(self.path)
        native = NativeDump(self.path, raw=raw, machine=machine, pae=pae, dtb=dtb)
        self._h = Handle(self.path, native)
        self._f: _Features | None = None
        self._f_lock = threading.Lock()
        # A symbol path given here is checked now (a bad one fails the open, as before); with
        # none, the default (``_NT_SYMBOL_PATH``) is read when the features are built.
        self._sp: SymbolPath | None = None
        if symbols is not None or offline is not None:
            from .symbols.path import SymbolPath

            self._sp = SymbolPath.coerce(symbols)
            if offline is not None:
                self._sp.offline = offline

    # -- the feature objects, built on first use ---------------------------------------------
    def _features(self) -> _Features:
        f = self._f
        if f is None:
            with self._f_lock:
                f = self._f
                if f is None:
                    from .symbols.path import SymbolPath

                    sp = self._sp if self._sp is not None else SymbolPath.coerce(None)
                    f = self._f = _Features(self._h, sp)
        return f

    _images: _Feature[PeImages] = _Feature()
    _kernel: _Feature[Kernel] = _Feature()
    _symbol_map: _Feature[SymbolMap] = _Feature()
    _symbols: _Feature[Symbols] = _Feature()
    _symsrv: _Feature[SymbolServer] = _Feature()
    _search: _Feature[Search] = _Feature()
    _pool: _Feature[Pool] = _Feature()
    _vm: _Feature[Vm] = _Feature()
    _stack: _Feature[Stack] = _Feature()

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def _d(self) -> NativeDump:
        return self._h.native

    @property
    def _cache(self) -> dict[str, Any]:
        return self._h.cache

    def close(self) -> None:
        """Release the file map (further reads raise ValueError)."""
        self._h.close()

    def __enter__(self) -> Dump:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._h.closed:
            return f"<ntdump.Dump {self.path!r} (closed)>"
        i = self.info
        return f"<ntdump.Dump {self.path!r} {i.machine} build {i.build} type {i.dump_type}>"

    # -- header ----------------------------------------------------------------------------
    @property
    def info(self) -> DumpInfo:
        """Header fields (:class:`DumpInfo`)."""
        return self._h.info

    @property
    def bugcheck(self) -> BugCheck:
        """The bug check (:class:`ntdump.bugcheck.BugCheck`): code, name, parameters with their
        meanings and decoded sub-values (an exception code's name …), the faulting address where
        the code has one."""
        return self.info.bugcheck

    @property
    def warnings(self) -> tuple[str, ...]:
        """Oddities noticed while opening (truncation, count mismatches)."""
        return self.info.warnings

    # -- memory ----------------------------------------------------------------------------
    def read(self, va: int, n: int, *, pad: bool = False) -> bytes:
        """``n`` bytes of kernel virtual memory at ``va``.

        Raises a :class:`~ntdump.TranslationError` subclass naming the first unreadable page,
        unless ``pad=True``, which reads such pages as zeros.
        """
        return self._d.read(va, n, pad)

    def read_phys(self, pa: int, n: int, *, pad: bool = False) -> bytes:
        """``n`` bytes of physical memory at ``pa``.

        Raises :class:`~ntdump.PageNotInDumpError` for a page the dump does not hold, unless
        ``pad=True``, which zero-fills such pages.
        """
        return self._d.read_phys(pa, n, pad)

    def iter_read(self, va: int, n: int, *, chunk: int = DEFAULT_CHUNK, pad: bool = False,
                  physical: bool = False) -> Iterator[bytes]:
        """Stream ``n`` bytes at ``va`` (a PA with ``physical=True``) as chunks of at most
        ``chunk`` bytes (default 1 MiB; at most ``MAX_READ_BYTES``), for ranges larger than one
        :meth:`read` may return (256 MiB). Arguments are checked now; each chunk is read when
        the iterator reaches it, and raises like :meth:`read` (or zero-fills with ``pad=True``).
        A range running past the top of the address space raises TranslationError now."""
        top = U64 if physical or self.info.pointer_size == 8 else 1 << 32
        check_iter_read(va, n, chunk, top)
        read = self.read_phys if physical else self.read

        def gen() -> Iterator[bytes]:
            off = 0
            while off < n:
                take = min(chunk, n - off)
                yield read(va + off, take, pad=pad)
                off += take

        return gen()

    def check_intact(self) -> None:
        """Raise :class:`~ntdump.DumpFormatError` ("file shrank while open") if another process
        truncated the file since it was opened and a read met a vanished page. Every read
        checks this itself; analyses that catch errors to degrade gracefully call it at the end
        so that no answer built from the vanished (zero-filled) pages is returned."""
        self._d.check_intact()

    def translate(self, va: int) -> int:
        """The physical address (PA) that kernel VA ``va`` maps to."""
        return self._d.translate(va)

    def walk(self, va: int, *, dtb: int | None = None) -> PageWalk:
        """The page-table walk for ``va``, level by level (like ``!pte``); never raises for an
        unmapped address: the reason is in ``.error``."""
        w = self._d.walk(va, dtb)
        return PageWalk(
            va=va,
            steps=tuple(WalkStep(*s) for s in w["steps"]),
            pa=w["pa"],
            page_size=w["page_size"],
            error=w["error"],
            pointer_size=self.info.pointer_size,
        )

    def read_pointer(self, va: int) -> int:
        """A pointer-sized little-endian value at ``va`` (4 bytes on x86)."""
        return int.from_bytes(self.read(va, self.info.pointer_size), "little")

    def read_u32(self, va: int) -> int:
        """A little-endian u32 at ``va``."""
        return int.from_bytes(self.read(va, 4), "little")

    def read_u64(self, va: int) -> int:
        """A little-endian u64 at ``va``."""
        return int.from_bytes(self.read(va, 8), "little")

    @property
    def mode(self) -> str | None:
        """Paging mode: ``"x86"``, ``"pae"``, ``"x64"``, or None (ARM64, not yet translated)."""
        return self._d.mode


    # -- kernel and modules (ntdump.modules.Kernel) ------------------------------------------
    @property
    def modules(self) -> ModuleList:
        """The loaded modules (:class:`~ntdump.modules.ModuleList`), from ``PsLoadedModuleList``
        or, in triage dumps, the dump's own driver list."""
        return self._kernel.modules

    def empty_modules_reason(self) -> str:
        """Why :attr:`modules` is empty, in one line (from :attr:`kernel_warnings`)."""
        return self._kernel.empty_modules_reason()

    def module(self, name_or_va: str | int) -> Module:
        """A module by name (``"nt"``, ``"amdppm.sys"``) or by an address (VA) inside it."""
        return self._kernel.module(name_or_va)

    def unloaded_modules(self) -> pd.DataFrame:
        """Recently unloaded drivers (``lm`` 's "Unloaded modules" part): name, start, end, time."""
        return self._kernel.unloaded_modules()

    @property
    def kernel_base(self) -> int | None:
        """VA of the kernel image (KDBG.KernBase, or the first module's base)."""
        return self._kernel.kernel_base

    @property
    def kdbg(self) -> Kdbg | None:
        """The KDBG block: ``{"va", "size", "bytes"}``, or None when not found (see warnings)."""
        return self._kernel.kdbg

    @property
    def kernel_warnings(self) -> list[str]:
        """What was odd while walking kernel structures (loops, unreadable entries …)."""
        return self._kernel.kernel_warnings

    # -- loaded symbols (ntdump.symbolmap.SymbolMap) -----------------------------------------
    @property
    def symbol_map(self) -> dict[str, int]:
        """Loaded symbols: ``"module!Name"`` (module in kd's lower-case form) -> VA."""
        return self._symbol_map.symbol_map

    def add_symbols(self, mapping: Mapping[str, int], *, module: str = "nt") -> int:
        """Add ``{"nt!MmPoolFailures": va, ...}`` (names without ``!`` belong to ``module``).
        Returns how many were added."""
        return self._symbol_map.add_symbols(mapping, module=module)

    def load_pdb(self, path: str | os.PathLike[str], *, module: str | None = None) -> int:
        """Read the public symbols of the PDB at ``path`` and place them at ``module``'s base
        (default: the module whose CodeView record names this PDB, or ``nt`` for a kernel PDB).
        Returns the number of symbols added; raises :class:`~ntdump.SymbolError`. A kernel PDB
        also gives its struct layouts to the pool and module readers (:attr:`layout_sources`)."""
        return self._symbol_map.load_pdb(path, module=module)

    @property
    def layout_sources(self) -> dict[str, str]:
        """The struct layouts taken from the loaded kernel PDB, by structure (``pool_header``,
        ``tracker``, ``big_pages``, ``ldr``) -> ``"pdb nt!<type> (<pdb path>)"``; empty without
        one (the built-in profiles are used). Each result names its layout too
        (``attrs["layout_source"]``, ``ModuleList.layout_source``)."""
        return self._symbol_map.layout_sources

    @property
    def layout_warnings(self) -> list[str]:
        """Why kernel PDB types were not used (a field past the entry's end, a size of 0 or too
        large, a missing field …): the built-in profile stays in use for those."""
        return self._symbol_map.layout_warnings

    # -- symbols (ntdump._symbols.Symbols) ---------------------------------------------------
    def symbol(self, name: str) -> int:
        """The VA of ``module!name`` (``x nt!ExAllocatePool``); see
        :meth:`ntdump._symbols.Symbols.symbol`. Raises :class:`~ntdump.SymbolError`."""
        return self._symbols.symbol(name)

    def symbols(self, pattern: str = "*") -> pd.DataFrame:
        """Exports (and loaded PDB symbols) matching ``module_glob!name_glob`` (``x nt!ExAlloc*``):
        module, name, address, ordinal, forwarder."""
        return self._symbols.symbols(pattern)

    def symbol_modules(self) -> pd.DataFrame:
        """The modules as the symbol table sees them (exports/imports counts, errors)."""
        return self._symbols.symbol_modules()

    def ln(self, va: int) -> str:
        """kd's ``ln``: the nearest symbol at or below VA ``va`` (``nt!ExAllocatePool+0x10``).
        Raises :class:`~ntdump.SymbolError` when no loaded module holds ``va``."""
        return self._symbols.ln(va)


    def ln_source(self, va: int) -> str | None:
        """Where :meth:`ln`'s name for ``va`` comes from (``"export"``, ``"pdb <path>"``,
        ``"image <path> (exports)"``, ``"map"``), None when no symbol names it."""
        return self._symbols.ln_source(va)

    # -- symbol path, symbol stores and PDB types (docs/symbols.md) ------------------------
    @property
    def symbol_path(self) -> SymbolPath:
        """The symbol path (:class:`~ntdump.symbols.SymbolPath`) in use."""
        return self._symsrv.symbol_path

    def set_symbol_path(self, value: str | SymbolPath | None, *, offline: bool | None = None
                        ) -> SymbolPath:
        """Replace the symbol path (kd ``.sympath``)."""
        return self._symsrv.set_symbol_path(value, offline=offline)

    @property
    def symbol_sources(self) -> dict[str, str]:
        """Per kd module name (lower case): where its loaded symbols came from."""
        return self._symbol_map.symbol_sources

    def reload(self, module: str | None = None, *, images: bool = False) -> pd.DataFrame:
        """kd ``.reload``: find every module's PDB (or ``module``'s) along the symbol path and
        load it; DataFrame [module, pdb, image, how, symbols, error]."""
        return self._symsrv.reload(module, images=images)

    def module_files(self, module: str | Module, *, want_image: bool = False) -> ModuleFiles:
        """The symbol files of a module along the symbol path (fetched when needed)."""
        return self._symsrv.module_files(module, want_image=want_image)

    def pdb_file(self, module: str | Module) -> Path | None:
        """The PDB loaded (or found along the symbol path) for ``module``, or None."""
        return self._symsrv.pdb_file(module)

    def image_file(self, module: str | Module) -> Path | None:
        """The image file of ``module`` from the symbol path (by TimeDateStamp and SizeOfImage)."""
        return self._symsrv.image_file(module)

    def image_bytes(self, module: str | Module, *, mapped: bool = True) -> bytes | None:
        """The image of ``module`` from the symbol path, laid out at its RVAs (``mapped``) or as
        the file; None when the path has no copy. For the stack walker's ``.pdata``."""
        return self._symsrv.image_bytes(module, mapped=mapped)

    def dt(self, name: str, va: int | None = None) -> TypedValue | str:
        """kd's ``dt``: ``d.dt("nt!_POOL_HEADER", va)`` -> :class:`~ntdump.symbols.TypedValue`;
        without ``va`` the layout as WinDbg prints it. Needs the module's PDB."""
        return self._symsrv.dt(name, va)

    def type_info(self, name: str) -> pd.DataFrame:
        """``d.type_info("nt!_EPROCESS")`` -> DataFrame [offset, name, type, size, bit_position,
        bit_length] from the module's PDB."""
        return self._symsrv.type_info(name)

    def importers(self, name: str, *, aligned: bool = True) -> pd.DataFrame:
        """Who imports ``module!name``, by import table and by pointer search: module, function,
        iat_slot, how_found, value, note."""
        return self._symbols.importers(name, aligned=aligned)

    def lmi(self, name_or_va: str | int) -> LoadedModuleInfo:
        """What ``!lmi`` prints for a module given by name or by an address (VA) inside it."""
        return self._symbols.lmi(name_or_va)

    # -- search and pointer display (ntdump._search.Search) ----------------------------------
    def search(
        self,
        pattern: int | bytes | str | Sequence[int | bytes | str],
        width: Width | None = None,
        *,
        within: Within = None,
        physical: bool = False,
        limit: int | None = None,
    ) -> pd.DataFrame:
        """Search memory like kd's ``s``: DataFrame[address, module, offset]; see
        :meth:`ntdump._search.Search.search` for the arguments."""
        return self._search.search(pattern, width, within=within, physical=physical, limit=limit)

    def kernel_ranges(self) -> list[tuple[int, int]]:
        """Mapped kernel-half VA ranges as ``(start, end)`` (end exclusive), coalesced."""
        return self._search.kernel_ranges()

    def dps(self, va: int, count: int = 8) -> pd.DataFrame:
        """kd's ``dps``: ``count`` pointer-sized values from VA ``va`` with their symbols."""
        return self._search.dps(va, count)

    def dds(self, va: int, count: int = 8) -> pd.DataFrame:
        """kd's ``dds``: like :meth:`dps` with 4-byte values."""
        return self._search.dds(va, count)

    def dqs(self, va: int, count: int = 8) -> pd.DataFrame:
        """kd's ``dqs``: like :meth:`dps` with 8-byte values."""
        return self._search.dqs(va, count)

    def dps_text(self, va: int, count: int = 8, *, size: int | None = None) -> str:
        """The lines kd prints for ``dps va Lcount`` (``size=4``: ``dds``; ``size=8``: ``dqs``)."""
        return self._search.dps_text(va, count, size=size)

    # -- pool and !vm ------------------------------------------------------------------------
    @property
    def pool(self) -> Pool:
        """The kernel pool (:class:`~ntdump.pool.Pool`): ``used()``, ``big()``, ``page(va)``,
        ``scan()``, ``scan_summary()``, ``owners(tag)``."""
        return self._pool

    def vm(self) -> VmSummary:
        """The ``!vm`` summary (:class:`~ntdump.vm.VmSummary`). Fields that need kernel symbols
        beyond KDBG are filled when symbols are loaded (``load_pdb``/``add_symbols``)."""
        return self._vm.vm()

    # -- stacks and processors (ntdump.stack.Stack) -----------------------------------------
    def stack(self, processor: int | None = None, max_frames: int = 64, *,
              images: Images | None = None) -> pd.DataFrame:
        """The crash stack (``k``): DataFrame[frame, sp, return_address, symbol, module, how];
        ``processor=N`` walks that processor's saved context; ``images`` supplies module image
        files the dump lacks (by default, with a symbol path, they are fetched along it). See
        :meth:`ntdump.stack.Stack.stack` and docs/stack.md."""
        return self._stack.stack(processor, max_frames,
                                 images=self._images_for_stack(images, processor, max_frames))

    def stack_walk(self, processor: int | None = None, max_frames: int = 64, *,
                   images: Images | None = None) -> StackWalk:
        """The walk behind :meth:`stack`, frame by frame with frame bases, slots, trap frames."""
        return self._stack.stack_walk(
            processor, max_frames, images=self._images_for_stack(images, processor, max_frames))

    def stack_text(self, command: str = "k", processor: int | None = None,
                   max_frames: int | None = None, *, images: Images | None = None) -> str:
        """What ``k``, ``kb``, ``kn``, ``kv`` (``kbn``, ``kvn``) print."""
        return self._stack.stack_text(
            command, processor, max_frames,
            images=self._images_for_stack(images, processor, max_frames or 64))

    def _images_for_stack(self, images: Images | None, processor: int | None,
                          max_frames: int) -> Images | None:
        """``images`` when given; else, with a symbol path, the image files of the modules the
        walk passes through, fetched by TimeDateStamp and SizeOfImage (walked again until the
        set of modules stops growing, at most 3 times); else None."""
        if images is not None or not self._symsrv.symbol_path:
            return images
        found: dict[str, str] = {}
        tried: set[str] = set()
        for _ in range(3):
            sw = self._stack.stack_walk(processor, max_frames, images=found or None)
            new = {f.module for f in sw.frames if f.module} - tried
            if not new:
                break
            for kd in sorted(new):
                tried.add(kd)
                m = self._kernel.modules.get(kd)
                if m is None:
                    continue
                try:
                    p = self._symsrv.image_file(m)
                except (SymbolError, OSError):
                    p = None
                if p is not None:
                    found[m.name] = str(p)
        return found or None

    @property
    def processors(self) -> pd.DataFrame:
        """Processors from their KPRCBs: index, prcb, rip, rsp (eip, esp on x86),
        current_thread."""
        return self._stack.processors


def open(
    path: str | os.PathLike[str],
    *,
    raw: bool | None = None,
    machine: str | None = None,
    pae: bool | None = None,
    dtb: int | None = None,
    symbols: str | SymbolPath | None = None,
    offline: bool | None = None,
) -> Dump:
    """Open a Windows kernel crash dump.

    With ``raw=True`` (or a ``.raw/.mem/.bin`` file without a dump header) the file is a raw
    physical image; its ``dtb`` and ``machine`` are found when not given. A directory raises
    :class:`IsADirectoryError`.

    ``symbols`` is a symbol path in ``_NT_SYMBOL_PATH`` syntax (``"srv*CACHE*URL"``) or a
    :class:`~ntdump.symbols.SymbolPath`; when None, ``_NT_SYMBOL_PATH`` is read (``""``: none).
    PDBs and images are fetched along it on first need; a server is contacted only when the path
    names one, and never with ``offline=True`` (see docs/symbols.md)."""
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, "is a directory, not a dump file", os.fspath(path))
    return Dump(path, raw=raw, machine=machine, pae=pae, dtb=dtb, symbols=symbols,
                offline=offline)


__all__ = ["Dump", "DumpInfo", "PageWalk", "WalkStep", "filetime_to_datetime", "open"]
