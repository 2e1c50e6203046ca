"""Which files a loaded module needs, and fetching them along a :class:`SymbolPath`, as WinDbg does:

1. the PDB named by the RSDS record of the module's in-memory debug directory
   (``name.pdb/<GUID><AGE>/name.pdb``);
2. when that record cannot be read (a triage dump holds no image pages; a header paged out), the
   image itself by file name, TimeDateStamp and SizeOfImage from the module list
   (``name.sys/<TIMESTAMP><SIZE>/name.sys``), then the PDB named by the *downloaded image's* RSDS.

Each outcome is a :class:`ModuleFiles` saying what was found and how (``how``), or why not
(``error``). Results are remembered per module for the life of the resolver.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._native import pe_parse
from ..errors import PeFormatError, SymbolError
from .image import layout
from .path import SymbolPath, check_image, check_pdb
from .store import FileRequest, check_name, image_key, pdb_key


@dataclass
class ModuleFiles:
    """The symbol files found for one module."""

    module: str
    """kd name."""
    pdb: Path | None = None
    image: Path | None = None
    pdb_key: str | None = None
    image_key: str | None = None
    how: str = ""
    """``"rsds in memory"`` or ``"image from store, then its rsds"``."""
    error: str | None = None
    notes: list[str] = field(default_factory=list)


def _codeview_of_file(path: Path) -> dict[str, Any] | None:
    """The CodeView record of the image file at ``path`` (native PE reader on its mapped layout)."""
    data, _ = layout(path.read_bytes())
    cv = pe_parse(0, data).codeview()
    return dict(cv) if cv is not None else None


class Resolver:
    """Finds PDBs and images for modules along ``path``."""

    def __init__(self, path: SymbolPath) -> None:
        self.path = path
        self.done: dict[str, ModuleFiles] = {}

    def find_pdb(self, name: str, guid: str, age: int) -> Path | None:
        """A verified copy of PDB ``name`` with ``guid``/``age`` (None when absent). Raises
        :class:`~ntdump.errors.SymbolMismatchError` when the only copy found is another build."""
        name = _basename(name)
        req = FileRequest(name, pdb_key(guid, age), "pdb", f"GUID {guid} age {age}")
        return self.path.find(req, check_pdb(guid, age))

    def find_image(self, name: str, timestamp: int, size_of_image: int) -> Path | None:
        """A verified copy of image ``name`` with this TimeDateStamp and SizeOfImage."""
        check_name(name)
        req = FileRequest(name, image_key(timestamp, size_of_image), "image",
                          f"TimeDateStamp {timestamp:#x} SizeOfImage {size_of_image:#x}")
        return self.path.find(req, check_image(timestamp, size_of_image))

    def module(self, kd_name: str, file_name: str, timestamp: int, size: int,
               codeview: dict[str, Any] | None, *, want_image: bool = False) -> ModuleFiles:
        """Find the PDB (and, when ``want_image`` or needed for the RSDS, the image) of a module.
        ``codeview`` is the in-memory CodeView record (``None`` when unreadable)."""
        mf = self.done.get(kd_name)
        if mf is not None and (mf.image is not None or not want_image or mf.error):
            return mf
        mf = ModuleFiles(kd_name)
        self.done[kd_name] = mf
        try:
            if codeview is not None and codeview.get("format") == "NB10":
                mf.pdb_key = codeview.get("key")
                mf.error = _nb10_unsupported(codeview)
                return mf
            if codeview is not None and codeview.get("format") == "RSDS":
                mf.pdb_key = codeview["key"]
                mf.how = "rsds in memory"
                mf.pdb = self.find_pdb(codeview["pdb_name"], codeview["guid"], codeview["age"])
                if want_image and timestamp and size:
                    mf.image_key = image_key(timestamp, size)
                    mf.image = self.find_image(file_name, timestamp, size)
            elif timestamp and size:
                mf.image_key = image_key(timestamp, size)
                mf.image = self.find_image(file_name, timestamp, size)
                if mf.image is None:
                    mf.error = (f"no image {file_name} {mf.image_key} along the symbol path "
                                "(its debug directory is not in the dump)")
                    return mf
                cv = _codeview_of_file(mf.image)
                if cv is not None and cv.get("format") == "NB10":
                    mf.pdb_key = cv.get("key")
                    mf.error = f"{mf.image}: {_nb10_unsupported(cv)}"
                    return mf
                if cv is None or cv.get("format") != "RSDS":
                    mf.error = f"{mf.image}: no RSDS record"
                    return mf
                mf.pdb_key = cv["key"]
                mf.how = "image from store, then its rsds"
                mf.pdb = self.find_pdb(cv["pdb_name"], cv["guid"], cv["age"])
            else:
                mf.error = "neither a readable RSDS record nor a time stamp and size"
                return mf
            if mf.pdb is None:
                mf.error = f"no PDB {mf.pdb_key} along the symbol path"
        except (SymbolError, PeFormatError, OSError) as e:
            mf.error = str(e)
        return mf


def _nb10_unsupported(cv: dict[str, Any]) -> str:
    """Why a module with an NB10 CodeView record gets no symbols: such a record names a PDB 2.0
    file ("Microsoft C/C++ program database 2.00", Visual C++ 6 and earlier), whose small-MSF
    format neither the ``pdb`` crate nor ntdump reads."""
    return (f"NB10 CodeView record ({cv.get('pdb_name')}, key {cv.get('key')}): it names a "
            "PDB 2.0 file (Visual C++ 6 era), a format ntdump does not read")


def _basename(pdb_path: str) -> str:
    """The file name of an RSDS path (``D:\\build\\amdppm.pdb`` -> ``amdppm.pdb``), checked."""
    name = pdb_path.replace("\\", "/").rsplit("/", 1)[-1]
    return check_name(name)
