"""Outside readers of dump files, wrapped for tests: kdmp-parser and Volatility 3.

Neither is written by this project; tests compare what they read with the forge's ground
truth (and the lead's Rust reader with them). Both are optional: helpers raise ImportError
when the package is missing, and tests use :func:`require` to skip with a clear reason.

* :func:`kdmp_open` / :func:`kdmp_pages`: kdmp-parser (64-bit types 1, 5, 6, 8, 9, 0xA).
* :func:`vol3_read_phys`: Volatility 3 ``WindowsCrashDump32Layer`` / ``64Layer``
  (types 1 and 5, 32- and 64-bit headers), opened without a plugin run.
* :func:`vol3_translate`: Volatility 3's Windows Intel layers (x86, PAE, x64) over that
  crash layer; they also accept transition PTEs and recognise paged-out ones.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest


def require(module: str) -> None:
    """Skip the calling test if ``module`` (e.g. "kdmp_parser") is not installed."""
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (outside oracle unavailable)")


def import_forge() -> ModuleType:
    """``ntdump.forge``; if the ``ntdump`` package cannot be imported (e.g. its native module
    is not built), the forge package is loaded on its own from python/ntdump/forge."""
    try:
        from ntdump import forge

        return forge
    except ImportError:
        pass
    name = "ntdump_forge_standalone"
    if name in sys.modules:
        return sys.modules[name]
    init = Path(__file__).resolve().parents[1] / "python" / "ntdump" / "forge" / "__init__.py"
    spec = importlib.util.spec_from_file_location(
        name, init, submodule_search_locations=[str(init.parent)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# -- kdmp-parser ----------------------------------------------------------------------------

def kdmp_open(path: str | os.PathLike[str]) -> Any:
    """A ``kdmp_parser.KernelDumpParser`` for ``path`` (raises RuntimeError if it refuses)."""
    import kdmp_parser

    return kdmp_parser.KernelDumpParser(Path(path))


def kdmp_pages(parser: Any) -> set[int]:
    """Physical addresses (page aligned) of every page kdmp-parser found in the dump."""
    return set(parser.pages.keys())


# -- Volatility 3 ---------------------------------------------------------------------------

def _file_key(path: str | os.PathLike[str]) -> tuple[str, int, int]:
    st = os.stat(path)
    return (str(Path(path).resolve()), st.st_mtime_ns, st.st_size)


_VOL3_OPEN: dict[tuple[str, int, int], Any] = {}
_VOL3_MAX_OPEN = 8


def _vol3_close(ctx: Any) -> None:
    ctx.layers["file"].destroy()


@atexit.register
def _vol3_close_all() -> None:
    while _VOL3_OPEN:
        _vol3_close(_VOL3_OPEN.popitem()[1])


def _vol3_crash(key: tuple[str, int, int]) -> tuple[Any, str]:
    """A Volatility context holding the file layer "file" and the crash layer "crash".

    Contexts are kept per file version; file handles are closed explicitly (when more than
    8 are open, and at exit) so that no ResourceWarning escapes into the tests.
    """
    if key in _VOL3_OPEN:
        return _VOL3_OPEN[key], "crash"
    from volatility3.framework import contexts
    from volatility3.framework.layers import crash, physical

    ctx = contexts.Context()
    ctx.config["file.location"] = Path(key[0]).as_uri()
    base = physical.FileLayer(ctx, "file", "file")
    ctx.add_layer(base)
    ctx.config["crash.base_layer"] = "file"
    errors = []
    for cls in (crash.WindowsCrashDump64Layer, crash.WindowsCrashDump32Layer):
        try:
            cls.check_header(base)
            ctx.add_layer(cls(ctx, "crash", "crash"))
        except crash.WindowsCrashDumpFormatException as exc:
            errors.append(str(exc))
            continue
        if len(_VOL3_OPEN) >= _VOL3_MAX_OPEN:
            _vol3_close(_VOL3_OPEN.pop(next(iter(_VOL3_OPEN))))
        _VOL3_OPEN[key] = ctx
        return ctx, "crash"
    base.destroy()
    raise ValueError(f"Volatility 3 does not read {key[0]}: {'; '.join(errors)}")


def vol3_crash_layer(path: str | os.PathLike[str]) -> Any:
    """Volatility 3's crash-dump layer for ``path`` (cached per file version)."""
    ctx, name = _vol3_crash(_file_key(path))
    return ctx.layers[name]


def vol3_read_phys(path: str | os.PathLike[str], pa: int, n: int) -> bytes:
    """``n`` bytes at physical address ``pa`` as Volatility 3 reads them from the dump.

    Raises ``volatility3.framework.exceptions.InvalidAddressException`` for a page that is
    not in the dump.
    """
    return bytes(vol3_crash_layer(path).read(pa, n, pad=False))


def vol3_segments(path: str | os.PathLike[str]) -> list[tuple[int, int, int]]:
    """Volatility's ``(pa, file offset, length)`` segments for the dump (bytes)."""
    return [(s[0], s[1], s[2]) for s in vol3_crash_layer(path)._segments]


_VOL3_MODES = {"x64": "WindowsIntel32e", "pae": "WindowsIntelPAE", "x86": "WindowsIntel"}


def _vol3_intel(key: tuple[str, int, int], mode: str, dtb: int) -> tuple[Any, str]:
    from volatility3.framework.layers import intel

    ctx, crash_name = _vol3_crash(key)
    name = f"virt_{mode}_{dtb:x}"
    if name not in ctx.layers:
        ctx.config[f"{name}.memory_layer"] = crash_name
        ctx.config[f"{name}.page_map_offset"] = dtb
        ctx.add_layer(getattr(intel, _VOL3_MODES[mode])(ctx, name, name))
    return ctx, name


def vol3_translate(path: str | os.PathLike[str], va: int, mode: str,
                   dtb: int | None = None) -> tuple[str, int | None]:
    """Translate ``va`` with Volatility 3's Windows Intel layer of ``mode`` ("x64", "pae",
    "x86") rooted at ``dtb`` (default: the header's). Returns ``("valid", pa)`` (transition
    PTEs count as valid there), ``("swapped", page file offset)`` or ``("invalid", None)``."""
    from volatility3.framework import exceptions

    if dtb is None:
        dtb = vol3_crash_layer(path).dtb
    ctx, name = _vol3_intel(_file_key(path), mode, dtb)
    layer = ctx.layers[name]
    try:
        pa, _size, _layer = layer._translate(va)
        return "valid", pa
    except exceptions.SwappedInvalidAddressException as exc:
        return "swapped", exc.swap_offset
    except exceptions.PagedInvalidAddressException:
        return "invalid", None
