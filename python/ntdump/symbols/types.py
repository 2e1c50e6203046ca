"""Typed values from PDB types: ``d.dt("nt!_POOL_HEADER", va)`` and ``d.type_info(...)``.

A :class:`TypedValue` decodes the bytes at a VA by a layout from the PDB's type records
(:class:`ntdump._native.PdbTypes`): structs and unions field by field (nested ones too), arrays
element by element, bit fields, enums (value and enumerator name), pointers as VAs. ``str()``
follows WinDbg's ``dt`` (``   +0x004 PoolTag          : 0x6e6f6f4c``); ``to_dict()`` gives plain
Python values. Bounds: at most 16 MiB read per value, 65,536 array elements decoded, nesting 16
deep (deeper values are left undecoded, ``value`` None).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import _schema

if TYPE_CHECKING:
    import pandas as pd

MAX_VALUE_BYTES = 16 << 20
MAX_ELEMENTS = 65_536
MAX_DEPTH = 16

TYPE_INFO_SCHEMA = {
    "offset": "UInt64",
    "name": _schema.NAME,
    "type": _schema.NAME,
    "size": "UInt64",
    "bit_position": "UInt8",
    "bit_length": "UInt8",
}


def kd_hex(v: int, ptr_size: int = 8) -> str:
    """A pointer as kd prints it: ``fffff804`8b58334c`` style with ``0x``."""
    if ptr_size == 8:
        return f"0x{v >> 32:08x}`{v & 0xFFFFFFFF:08x}"
    return f"0x{v:08x}"


class TypeCatalog:
    """The types of one module's PDB, with layouts cached by type index."""

    def __init__(self, native: Any, module: str, source: str) -> None:
        self.native = native
        self.module = module
        self.source = source
        """Which PDB the types come from (path)."""
        self._by_index: dict[int, dict[str, Any]] = {}

    def layout(self, name: str) -> dict[str, Any]:
        """The layout dict of ``name`` (raises SymbolError when undefined)."""
        lay = self.native.layout(name)
        self._by_index.setdefault(lay["index"], lay)
        return lay

    def layout_index(self, index: int) -> dict[str, Any]:
        lay = self._by_index.get(index)
        if lay is None:
            lay = self.native.layout_index(index)
            self._by_index[index] = lay
        return lay

    def frame(self, name: str, dump: str | None = None) -> pd.DataFrame:
        """``type_info``: one row per field."""
        lay = self.layout(name)
        cols: dict[str, list[Any]] = {k: [] for k in TYPE_INFO_SCHEMA}
        for f in lay["fields"]:
            cols["offset"].append(f["offset"])
            cols["name"].append(f["name"])
            cols["type"].append(f["type"]["name"])
            cols["size"].append(f["type"]["size"])
            cols["bit_position"].append(f["bit_position"])
            cols["bit_length"].append(f["bit_length"])
        df = _schema.frame(cols, TYPE_INFO_SCHEMA, dump=dump)
        df.attrs["type"] = f"{self.module}!{lay['name']}"
        df.attrs["size"] = lay["size"]
        df.attrs["source"] = self.source
        return df

    def layout_text(self, name: str) -> str:
        """``dt nt!_POOL_HEADER`` without an address: the layout as WinDbg prints it."""
        lay = self.layout(name)
        out = [f"{self.module}!{lay['name']}"]
        for f in lay["fields"]:
            t = (f"Pos {f['bit_position']}, {f['bit_length']} Bit"
                 + ("s" if f["bit_length"] != 1 else "")) if f["bit_length"] else f["type"]["name"]
            out.append(f"   +{f['offset']:#05x} {f['name']:<16} : {t}")
        if lay["kind"] == "enum":
            for n, v in lay["enumerators"]:
                out.append(f"   {n} = 0n{v}")
        return "\n".join(out)


@dataclass
class TypedValue:
    """A value of a PDB type at a VA.

    ``kind`` is the type's kind (``struct``, ``union``, ``array``, ``pointer``, ``enum``,
    ``primitive``, ``bitfield``); ``value`` the decoded Python value for scalars (an int VA for
    pointers); ``fields`` (struct/union) and ``elements`` (array) the parts."""

    type_name: str
    va: int
    size: int
    """Bytes."""
    kind: str
    value: int | float | None = None
    fields: dict[str, TypedValue] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)
    elements: list[TypedValue] = field(default_factory=list)
    enumerator: str | None = None
    bits: tuple[int, int] | None = None
    """(position, length) of a bit field."""
    ptr_size: int = 8
    source: str = ""

    def __getitem__(self, key: str | int) -> TypedValue:
        if isinstance(key, int):
            return self.elements[key]
        return self.fields[key]

    def __getattr__(self, name: str) -> TypedValue:
        f = self.__dict__.get("fields")
        if f and name in f:
            return f[name]
        raise AttributeError(name)

    def __int__(self) -> int:
        if not isinstance(self.value, int):
            raise TypeError(f"{self.type_name} is not a scalar")
        return self.value

    def to_dict(self) -> Any:
        """Plain Python: dict for struct/union, list for array, int/float for scalars (pointers
        as VAs)."""
        if self.kind in ("struct", "union"):
            return {k: v.to_dict() for k, v in self.fields.items()}
        if self.kind == "array":
            return [e.to_dict() for e in self.elements]
        return self.value

    def scalar_text(self) -> str:
        """The value as kd prints it after the colon."""
        v = self.value
        if self.bits is not None and isinstance(v, int):
            return f"0y{v:0{self.bits[1]}b} ({v:#x})"
        if self.kind == "pointer" and isinstance(v, int):
            return "(null)" if v == 0 else kd_hex(v, self.ptr_size)
        if self.kind == "enum":
            return f"0n{v}" + (f" ( {self.enumerator} )" if self.enumerator else "")
        if self.kind == "primitive":
            if isinstance(v, float):
                return repr(v)
            if self.type_name.startswith("Int") or self.type_name == "Char":
                return f"0n{v}"
            return f"{v:#x}" if isinstance(v, int) else "?"
        if self.kind == "array":
            if self.elements and self.elements[0].type_name in ("Char", "UChar", "Wchar") and \
                    self.elements[0].kind == "primitive":
                raw = [int(e.value or 0) for e in self.elements]
                text = "".join(chr(c) if 32 <= c < 127 else "." for c in raw).rstrip(".")
                return f"{self.type_name} \"{text}\""
            return self.type_name
        return self.type_name

    def __str__(self) -> str:
        if self.kind not in ("struct", "union"):
            return self.scalar_text()
        out = []
        for name, v in self.fields.items():
            out.append(f"   +{self.offsets[name]:#05x} {name:<16} : {v.scalar_text()}")
        return "\n".join(out)


def _scalar(data: bytes, off: int, size: int, signed: bool, flt: bool) -> int | float | None:
    chunk = data[off : off + size]
    if len(chunk) < size or size == 0:
        return None
    if flt:
        if size == 4:
            return float(struct.unpack("<f", chunk)[0])
        if size == 8:
            return float(struct.unpack("<d", chunk)[0])
        return None
    return int.from_bytes(chunk, "little", signed=signed)


def decode(cat: TypeCatalog, desc: dict[str, Any], data: bytes, off: int, va: int,
           ptr_size: int, depth: int = 0) -> TypedValue:
    """Decode the type ``desc`` (a native type dict) from ``data[off:]`` (at ``va``)."""
    kind = desc["kind"]
    size = int(desc["size"])
    tv = TypedValue(desc["name"], va, size, kind, ptr_size=ptr_size, source=cat.source)
    if depth > MAX_DEPTH:
        return tv
    if kind in ("struct", "union"):
        lay = cat.layout_index(desc["index"])
        for f in lay["fields"]:
            fo = int(f["offset"])
            sub = decode(cat, f["type"], data, off + fo, va + fo, ptr_size, depth + 1)
            if f["bit_length"]:
                raw = sub.value if isinstance(sub.value, int) else 0
                pos, ln = int(f["bit_position"]), int(f["bit_length"])
                sub.value = (raw >> pos) & ((1 << ln) - 1)
                sub.bits = (pos, ln)
                sub.kind = "bitfield"
            name = f["name"]
            if name in tv.fields:  # anonymous members repeated in unions
                name = f"{name}@{fo:#x}"
            tv.fields[name] = sub
            tv.offsets[name] = fo
    elif kind == "array" and desc["target"] is not None:
        n = min(int(desc["count"]), MAX_ELEMENTS)
        elem = cat.native.describe(desc["target"])
        es = int(elem["size"])
        for i in range(n):
            tv.elements.append(decode(cat, elem, data, off + i * es, va + i * es, ptr_size,
                                      depth + 1))
    elif kind == "pointer":
        tv.value = _scalar(data, off, size, False, False)
    elif kind == "enum":
        tv.value = _scalar(data, off, size, bool(desc["signed"]), False)
        lay = cat.layout_index(desc["index"])
        for name, v in lay["enumerators"]:
            if int(v) == tv.value:
                tv.enumerator = name
                break
    elif kind == "primitive":
        tv.value = _scalar(data, off, size, bool(desc["signed"]), bool(desc["float"]))
    return tv
