"""Crash stacks (``k``, ``kb``, ``kn``, ``kv``) and processors: the :class:`Stack` feature.

The walk runs in the Rust core (GIL released): x64 unwinding from each module's ``.pdata`` /
``.xdata``, x86 EBP frame chains, and call-checked stack scans where neither applies; see
docs/stack.md. This module turns it into a DataFrame and into WinDbg's text.

``how`` says how each frame was found: ``context`` (frame 0, the starting registers), ``unwind``
(x64 unwind data, or the leaf rule), ``frame-chain`` (x86 EBP chain), ``scan`` (a stack value just
after a call instruction in a module's code: plausible, not proven).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import _schema
from ._format import kd_addr
from ._native import processors as _processors
from ._native import stack_walk as _stack_walk

if TYPE_CHECKING:
    import pandas as pd

    from ._handle import Handle
    from ._native import Dump as NativeDump
    from ._symbols import Symbols
    from .modules import Kernel, Module

STACK_SCHEMA = {
    "frame": _schema.COUNT,
    "sp": _schema.ADDRESS,
    "return_address": _schema.ADDRESS,
    "symbol": _schema.NAME,
    "module": _schema.LABEL,
    "how": _schema.LABEL,
}

#: Image files for modules the dump does not hold (module base name → path or file bytes).
Images = Mapping[str, "str | os.PathLike[str] | bytes"]


@dataclass(frozen=True)
class StackFrame:
    """One frame with everything the kd commands print. Addresses are VAs."""

    frame: int
    sp: int
    pc: int
    how: str
    frame_base: int
    slot: int
    interrupted: bool
    symbol: str
    module: str | None


@dataclass(frozen=True)
class StackWalk:
    """A walk: frames (innermost first), warnings, where the registers came from, the stack range
    used (a triage dump's captured stack) or None."""

    frames: list[StackFrame]
    warnings: list[str]
    source: str
    stack_range: tuple[int, int] | None
    ptr_size: int


def _image_bytes(images: Images | None) -> dict[str, bytes] | None:
    if not images:
        return None
    out = {}
    for name, v in images.items():
        if isinstance(v, bytes | bytearray):
            out[name] = bytes(v)
        else:
            with open(v, "rb") as f:
                out[name] = f.read()
    return out


def walk(native: NativeDump, *, ln: Callable[[int], str | None],
         module_at: Callable[[int], Module | None], ptr_size: int,
         processor: int | None = None, max_frames: int = 64,
         images: Images | None = None) -> StackWalk:
    """Walk a stack with the native handle; ``ln`` names an address (None when no module holds
    it), ``module_at`` finds its module. See :meth:`StackMixin.stack`."""
    if max_frames < 1:
        raise ValueError("max_frames must be at least 1")
    w = _stack_walk(native, processor, max_frames, _image_bytes(images))
    frames = []
    for i, (sp, pc, how, fb, slot, intr) in enumerate(zip(
            w["sp"], w["pc"], w["how"], w["frame_base"], w["slot"], w["interrupted"],
            strict=True)):
        m = module_at(pc)
        sym = ln(pc)
        if sym is None:
            sym = f"{pc:#x}"
        frames.append(StackFrame(i, sp, pc, how, fb, slot, intr, sym,
                                 m.kd_name if m is not None else None))
    rng = w["stack_range"]
    return StackWalk(frames, list(w["warnings"]), w["source"],
                     tuple(rng) if rng else None, ptr_size)  # type: ignore[arg-type]


def to_frame(sw: StackWalk, dump: str | None = None) -> pd.DataFrame:
    """The walk as ``d.stack()`` returns it."""
    cols = {
        "frame": [f.frame for f in sw.frames],
        "sp": [f.sp for f in sw.frames],
        "return_address": [f.pc for f in sw.frames],
        "symbol": [f.symbol for f in sw.frames],
        "module": [f.module for f in sw.frames],
        "how": [f.how for f in sw.frames],
    }
    df = _schema.frame(cols, STACK_SCHEMA, dump=dump)
    df.attrs["warnings"] = list(sw.warnings)
    df.attrs["source"] = sw.source
    return df


def _addr(va: int, ptr: int) -> str:
    return kd_addr(va, ptr)


def stack_text(sw: StackWalk, read_args: Callable[[int, int], list[int]], *,
               args: bool = False, numbers: bool = False, verbose: bool = False) -> str:
    """WinDbg's ``k`` family: ``k`` (Child-SP, RetAddr, Call Site), ``kb`` (``args``: Args to
    Child), ``kn`` (``numbers``: frame numbers), ``kv`` (``verbose``: args and trap frames).
    x86 prints ChildEBP instead of Child-SP. ``read_args(va, n)`` reads n pointer-size values."""
    ptr = sw.ptr_size
    x86 = ptr == 4
    width = 8 if x86 else 17
    nargs = 3 if x86 else 4
    show_args = args or verbose
    head = ("ChildEBP" if x86 else "Child-SP").ljust(width) + " " + "RetAddr".ljust(width)
    sep = " : " if show_args and not x86 else "  "
    if show_args:
        head += sep + "Args to Child".ljust(nargs * (width + 1) - 1) + sep + "Call Site"
    else:
        head += "     Call Site" if not x86 else "  Call Site"
    lines = []
    if any(f.how == "scan" for f in sw.frames):
        lines.append("WARNING: Stack unwind information not available. Following frames may be "
                     "wrong.")
    lines.append((" # " if numbers else "") + head)
    for i, f in enumerate(sw.frames):
        nxt = sw.frames[i + 1] if i + 1 < len(sw.frames) else None
        ret = nxt.pc if nxt is not None else 0
        if x86:
            first = f.frame_base if f.frame_base else (f.sp if f.frame == 0 else f.sp - 8)
        else:
            first = f.sp
        row = f"{_addr(first, ptr)} {_addr(ret, ptr)}"
        if show_args:
            vals = read_args(nxt.sp, nargs) if nxt is not None else [0] * nargs
            row += sep + " ".join(_addr(v, ptr) for v in vals) + sep + f.symbol
        else:
            row += ("     " if not x86 else "  ") + f.symbol
        if verbose and nxt is not None and nxt.interrupted:
            row += f" (TrapFrame @ {_addr(nxt.slot, ptr)})"
        if f.how == "scan":
            row += "  (scan)" if verbose else ""
        lines.append((f"{f.frame:02x} " if numbers else "") + row)
    return "\n".join(lines)


class Stack:
    """Stacks and processors of one dump: a feature object over the native handle, using the
    kernel's module list and the symbols (``ln``). :class:`ntdump.Dump` delegates ``stack``,
    ``stack_walk``, ``stack_text`` and ``processors`` here."""

    def __init__(self, h: Handle, kernel: Kernel, symbols: Symbols) -> None:
        self._h = h
        self._kernel = kernel
        self._symbols = symbols

    def stack_walk(self, processor: int | None = None, max_frames: int = 64, *,
                   images: Images | None = None) -> StackWalk:
        """The walk behind :meth:`stack`, with every detail (frame bases, slots, trap frames)."""
        return walk(self._h.native, ln=self._symbols.ln_or_none, module_at=self._kernel.modules.at,
                    ptr_size=self._h.pointer_size, processor=processor,
                    max_frames=max_frames, images=images)

    def stack(self, processor: int | None = None, max_frames: int = 64, *,
              images: Images | None = None) -> pd.DataFrame:
        """The crash stack (``k``): columns frame, sp (Child-SP: the stack pointer in that frame,
        VA), return_address (frame 0: the context's instruction pointer; then each return
        address — WinDbg's RetAddr of the row above), symbol (PDB symbol if loaded, else export,
        else ``module+0x…``), module (kd name), how (context | unwind | frame-chain | scan).

        ``processor=None``: the dump header's CONTEXT (a triage dump: over its captured stack);
        ``processor=N``: that processor's context saved in its KPRCB. ``images``: image files for
        modules whose unwind data the dump lacks (module base name → path or bytes), e.g. from a
        symbol store. ``df.attrs["warnings"]`` says why the walk stopped or scanned."""
        return to_frame(self.stack_walk(processor, max_frames, images=images), self._h.path)

    @property
    def processors(self) -> pd.DataFrame:
        """One row per processor: index, prcb (VA of the KPRCB), rip, rsp (eip, esp on x86; NA
        when no saved context is readable), current_thread (VA of the KTHREAD). From KDBG's
        KiProcessorBlock and PRCB offsets; ``attrs["warnings"]`` lists what was unreadable."""
        p = _processors(self._h.native)
        x86 = self._h.pointer_size == 4
        ip, sp = ("eip", "esp") if x86 else ("rip", "rsp")
        schema = {"index": _schema.COUNT, "prcb": _schema.ADDRESS, ip: "UInt64", sp: "UInt64",
                  "current_thread": _schema.ADDRESS}
        cols = {"index": p["index"], "prcb": p["prcb"], ip: p["ip"], sp: p["sp"],
                "current_thread": p["current_thread"]}
        df = _schema.frame(cols, schema, dump=self._h.path)
        df.attrs["warnings"] = list(p["warnings"])
        return df

    def stack_text(self, command: str = "k", processor: int | None = None,
                   max_frames: int | None = None, *, images: Images | None = None) -> str:
        """``k``/``kb``/``kn``/``kv`` (and ``kbn``, ``kvn``) as WinDbg prints them."""
        c = command.lower()
        if not c.startswith("k") or set(c[1:]) - set("bnv"):
            raise ValueError(f"not a k command: {command!r}")
        sw = self.stack_walk(processor, max_frames or 64, images=images)
        return stack_text(sw, self.read_args, args="b" in c, numbers="n" in c, verbose="v" in c)

    def read_args(self, va: int, n: int) -> list[int]:
        """``n`` pointer-size values at ``va`` (zeros where unreadable): kb's Args to Child."""
        ptr = self._h.pointer_size
        data = self._h.read(va, n * ptr, pad=True)
        return [int.from_bytes(data[i:i + ptr], "little") for i in range(0, n * ptr, ptr)]
