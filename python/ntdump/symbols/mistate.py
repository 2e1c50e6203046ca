"""``!vm``'s Windows 10/11 figures from ``nt!MiState``, ``nt!MiSystemPartition`` and
``nt!ExPoolFailures``, through the kernel's PDB.

From Windows 10 on, the memory manager keeps what earlier kernels held in separate variables
(``MmAllocatedNonPagedPool``, ``MmMaximumNonPagedPoolInPages``, ``MmPagedPoolInfo``,
``MmAvailablePages``, ``MmTotalCommittedPages`` …) as members of ``nt!MiState``
(``_MI_SYSTEM_INFORMATION``) and of the system partition ``nt!MiSystemPartition``
(``_MI_PARTITION``); the KDBG fields for most of them are 0 (the real 19041 triage dump's KDBG).
The public kernel PDB names both variables (publics, no type) and carries the structs' types, so a
member's VA is the variable's address plus the offsets of each member along the path, taken from
the PDB itself — never from a built-in offset table, because the offsets move in nearly every
build (``Vs`` is at 0x25C0 in 19041 and 0x4340 in 22621; ``Vp`` at 0x1B00 in 19041's
``_MI_PARTITION``).

What varies by Windows version is *which* member holds a figure: that is the data of
:data:`MEMBER_PATHS`, one row per (``!vm`` field, build range), each citing its source. Where the
sources disagree, the row says so.

Bounds (a hostile PDB gives a reason, never a crash or a huge read): the variable's type must be a
defined struct of at most 16 MiB; every member along the path must lie inside its parent struct;
the final member must be an integer of 1, 2, 4 or 8 bytes, or an array (arrays of arrays too) of
at most 64 such integers (summed: failure counters); bit fields are refused; a negative value
(``DriverCommit`` is a ``LONG``) is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

MAX_STRUCT_BYTES = 16 << 20
"""Largest variable type accepted (bytes); the real _MI_SYSTEM_INFORMATION is 0x3280 (19041) to
0x5040 (22621) bytes."""
MAX_ELEMENTS = 64
"""Most integers an array member may hold to be summed."""
MAX_PATH_DEPTH = 8
"""Most members in a path."""

_SRC_2004 = ("ntdiff/headers Win10_2004_20H1/x64/.../ntoskrnl.exe/ALL_SORTED.h (public symbols of "
             "build 19041)")
_SRC_22H2 = ("ntdiff/headers Win11_2209_22H2/x64/.../Standalone/_MI_SYSTEM_INFORMATION.h (build "
             "22621)")
_SRC_1809 = ("ntdiff/headers Win10_1809_RS5_17763_1/x64/.../Standalone/_MI_POOL_STATE.h (build "
             "17763)")
_SRC_CHAPPELL = ("Geoff Chappell, MI_VISIBLE_STATE: the member 'has been' an internal variable "
                 "before Windows 10 and is present '10.0 and higher'")
_SRC_DTRACE = ("Microsoft DTrace-on-Windows sample samples/windows/memory/systemwidememoryusage.d "
               "(reads &nt`MiSystemPartition as _MI_PARTITION)")
_SRC_1903 = ("ntdiff/headers Win10_1903_19H1/x64/.../Standalone/_MI_PARTITION.h (Vp at 0x1BC0, "
             "every member used here) and _MI_SYSTEM_INFORMATION.h (Vs at 0x24C0, Pools at 0; "
             "build 18362); 1909 (18363) and Windows 11 21H2 (22000) not checked against a "
             "listing: a member they lack gives a reason, not a value")


@dataclass(frozen=True)
class MemberPath:
    """One ``!vm`` field's member path for a range of builds.

    ``variable`` is the kernel variable (``"MiState"``), ``type_name`` its type as the PDB names it
    (None: an untyped ``ULONG`` variable, read as 4 bytes), ``path`` the dotted member path from
    the variable's start (``""`` for the variable itself). ``first_build``..``last_build``
    (inclusive; ``last_build`` None = no known end). ``unit``: ``"pages"`` or ``"count"``.
    ``source`` cites where the path comes from."""

    key: str
    variable: str
    type_name: str | None
    path: str
    first_build: int
    last_build: int | None
    source: str
    unit: str = "pages"

    @property
    def symbol(self) -> str:
        """``nt!MiState.Vs.NonPagedPoolCommit``."""
        return f"nt!{self.variable}" + (f".{self.path}" if self.path else "")

    def covers(self, build: int) -> bool:
        return self.first_build <= build and (self.last_build is None or build <= self.last_build)


_MS, _MP = "_MI_SYSTEM_INFORMATION", "_MI_PARTITION"

#: The member paths, by ``!vm`` field and build range (x64 and x86 use the same names). Rows for
#: one field are tried in order; the first that resolves gives the value. The old variable each
#: member replaced is what ``!vm`` printed before Windows 10 (WRK ``base/ntos/mm``: the variables of
#: mminit.c / allocpag.c, all in pages).
MEMBER_PATHS: tuple[MemberPath, ...] = (
    # MiSystemPartition.Vp: the partition's visible counters (MmAvailablePages … before 10).
    MemberPath("physical_memory", "MiSystemPartition", _MP, "Vp.NumberOfPhysicalPages", 18362,
               None, f"{_SRC_DTRACE}; {_SRC_1903}; {_SRC_2004}; was MmNumberOfPhysicalPages"),
    MemberPath("available_pages", "MiSystemPartition", _MP, "Vp.AvailablePages", 18362, None,
               f"{_SRC_DTRACE}; {_SRC_1903}; {_SRC_2004}; was MmAvailablePages"),
    MemberPath("resavail_pages", "MiSystemPartition", _MP, "Vp.ResidentAvailablePages", 18362,
               None, f"{_SRC_DTRACE}; {_SRC_1903}; {_SRC_2004}; was MmResidentAvailablePages"),
    MemberPath("modified_pages", "MiSystemPartition", _MP, "Vp.ModifiedPageListHead.Total", 18362,
               None, f"{_SRC_DTRACE}; {_SRC_1903}; {_SRC_2004}; was MmModifiedPageListHead.Total"),
    MemberPath("shared_commit", "MiSystemPartition", _MP, "Vp.SharedCommit", 18362, None,
               f"{_SRC_DTRACE}; {_SRC_1903}; {_SRC_2004}; was MmSharedCommit"),
    MemberPath("committed_pages", "MiSystemPartition", _MP, "Vp.TotalCommittedPages", 18362,
               None, f"{_SRC_DTRACE}; {_SRC_1903}; {_SRC_2004}; was MmTotalCommittedPages"),
    MemberPath("commit_limit", "MiSystemPartition", _MP, "Vp.TotalCommitLimit", 18362, None,
               f"{_SRC_DTRACE}; {_SRC_1903}; {_SRC_2004}; was MmTotalCommitLimit"),
    # MiState.Vs: the variables !vm read before Windows 10, one member each.
    MemberPath("free_system_ptes", "MiState", _MS, "Vs.SystemPteInfo.TotalFreeSystemPtes", 10240,
               None, f"{_SRC_CHAPPELL} (SystemPteInfo); {_SRC_1903} and {_SRC_2004} (+0x58 of "
               f"_MI_SYSTEM_PTE_TYPE); {_SRC_22H2} (+0x50: the struct shrank, hence types from "
               "the PDB); was MmTotalFreeSystemPtes[SystemPteSpace]"),
    MemberPath("nonpaged_pool_max", "MiState", _MS, "Vs.MaximumNonPagedPoolInPages", 10240, None,
               f"{_SRC_CHAPPELL}; {_SRC_1903}; {_SRC_2004}; {_SRC_22H2}; "
               "was MmMaximumNonPagedPoolInPages"),
    MemberPath("paged_pool_usage", "MiState", _MS, "Vs.PagedPoolInfo.AllocatedPagedPool", 10240,
               None, f"{_SRC_CHAPPELL} (PagedPoolInfo); {_SRC_1903}; {_SRC_2004}; {_SRC_22H2}; was "
               "MmPagedPoolInfo.AllocatedPagedPool"),
    MemberPath("paged_pool_max", "MiState", _MS, "Vs.SizeOfPagedPoolInPages", 10240, None,
               f"{_SRC_CHAPPELL}; {_SRC_1903}; {_SRC_2004}; {_SRC_22H2}; "
               "was MmSizeOfPagedPoolInPages"),
    MemberPath("nonpaged_pool_commit", "MiState", _MS, "Vs.NonPagedPoolCommit", 10240, None,
               f"{_SRC_CHAPPELL}; {_SRC_1903} (+0x100); {_SRC_2004} (+0xA0); {_SRC_22H2} (+0x98)"),
    MemberPath("driver_commit", "MiState", _MS, "Vs.DriverCommit", 10240, None,
               f"{_SRC_CHAPPELL}; {_SRC_1903}; {_SRC_2004} (a LONG); {_SRC_22H2}; "
               "was MmDriverCommit"),
    # MiState.Pools: the nonpaged pool's pages in use (MmAllocatedNonPagedPool before 10).
    MemberPath("nonpaged_pool_usage", "MiState", _MS, "Pools.AllocatedNonPagedPool", 17763, None,
               f"{_SRC_1809} (+0x18); {_SRC_1903} (+0x18); {_SRC_2004} (+0x8); "
               f"{_SRC_22H2} (+0x8); was "
               "MmAllocatedNonPagedPool"),
    # Failures. Sources disagree on which counter !vm shows: the Server 2003-era debugger
    # extension printed nt!ExPoolFailures (failed ExAllocatePool* calls, WRK ex/pool.c), ntdump
    # before Windows 10 sums nt!MmPoolFailures (pages the memory manager refused, by pool type and
    # priority, WRK mm/allocpag.c). Windows 10 keeps the latter as MiState.Pools.PoolFailures[3][3]
    # up to 1903 (the 1903 listing still has it at +0x30; it is gone by 19037/19041). ntdump takes
    # ExPoolFailures from 18362 on, where the segment-heap pool begins and counts its failures
    # there; on 18362/18363 the memory manager's counter also exists and is not shown.
    MemberPath("pool_allocation_failures", "MiState", _MS, "Pools.PoolFailures", 10240, 18361,
               f"{_SRC_1809} (ULONG [3][3] at +0x30, summed as WRK's MmPoolFailures"
               "[MmMaximumPoolType][MmMaximumPoolPriority]); still at +0x30 in "
               f"{_SRC_1903}; gone from 19037/19041's _MI_POOL_STATE", "count"),
    MemberPath("pool_allocation_failures", "ExPoolFailures", None, "", 18362, None,
               "a ULONG (WRK ex/pool.c, ReactOS expool.c); 19H1+ ExAllocatePoolWithTag increments "
               "it when the segment heap fails (decompiled 19H1+ kernels); public PDBs give it no "
               "type", "count"),
)


class MemberError(Exception):
    """Why a member path gives no value (the text is the reason)."""


@dataclass(frozen=True)
class Member:
    """A resolved member: byte offset from the variable's start, integer width (bytes), element
    count (1 for a scalar), signedness, and the PDB's type name."""

    offset: int
    width: int
    count: int
    signed: bool
    type_name: str


def _scalar_desc(cat: Any, desc: Mapping[str, Any], what: str) -> tuple[int, int, bool]:
    """(width, count, signed) of an integer or an (array of) integers, within the bounds."""
    count = 1
    d = desc
    for _ in range(MAX_PATH_DEPTH):
        if d["kind"] != "array":
            break
        n = int(d["count"])
        if d["target"] is None or n <= 0:
            raise MemberError(f"{what} is an array of unknown elements")
        count *= n
        if count > MAX_ELEMENTS:
            raise MemberError(f"{what} is an array of {count:,} elements (at most "
                              f"{MAX_ELEMENTS} are summed)")
        d = cat.native.describe(int(d["target"]))
    if d["kind"] not in ("primitive", "enum") or d.get("float"):
        raise MemberError(f"{what} is a {d['kind']} ({d['name']}), not an integer")
    width = int(d["size"])
    if width not in (1, 2, 4, 8):
        raise MemberError(f"{what} is {width} bytes wide, not an integer of 1, 2, 4 or 8 bytes")
    return width, count, bool(d.get("signed"))


def resolve(cat: Any, type_name: str, path: str) -> Member:
    """The member ``path`` (dotted) of the PDB type ``type_name`` (``cat``: a
    :class:`~ntdump.symbols.types.TypeCatalog`). Raises :class:`MemberError` with the reason."""
    try:
        lay = cat.layout(type_name)
    except Exception as e:  # SymbolError: no such type; anything else: a bad record
        raise MemberError(f"the PDB has no type {type_name} ({e})") from None
    if lay["kind"] not in ("struct", "union") or not lay["fields"]:
        raise MemberError(f"the PDB's {type_name} is a {lay['kind']} without members "
                          "(declared, not defined)")
    size = int(lay["size"])
    if size <= 0 or size > MAX_STRUCT_BYTES:
        raise MemberError(f"the PDB's {type_name} is {size:,} bytes (an absurd size; at most "
                          f"{MAX_STRUCT_BYTES:,})")
    names = path.split(".")
    if len(names) > MAX_PATH_DEPTH:
        raise MemberError(f"{path}: more than {MAX_PATH_DEPTH} members")
    off, cur, cur_name, cur_size = 0, lay, type_name, size
    where = type_name
    for i, name in enumerate(names):
        f = next((f for f in cur["fields"] if f["name"] == name), None)
        if f is None:
            raise MemberError(f"the PDB's {cur_name} has no member {name}")
        fo, ft = int(f["offset"]), f["type"]
        fsize = int(ft["size"])
        where = f"{where}.{name}"
        if f["bit_length"]:
            raise MemberError(f"{where} is a bit field")
        if fo < 0 or fsize < 0 or fo + fsize > cur_size:
            raise MemberError(f"{where} at +{fo:#x} ({fsize:,} bytes) extends beyond the end of "
                              f"{cur_name} ({cur_size:#x} bytes): a malformed type")
        off += fo
        if i + 1 < len(names):
            if ft["kind"] not in ("struct", "union"):
                raise MemberError(f"{where} is a {ft['kind']} ({ft['name']}), not a struct")
            cur = cat.layout_index(int(ft["index"]))
            cur_name, cur_size = str(ft["name"]), fsize
            if not cur["fields"]:
                raise MemberError(f"the PDB's {cur_name} has no members (declared, not "
                                  "defined)")
        else:
            width, count, signed = _scalar_desc(cat, ft, where)
            if width * count > fsize:
                raise MemberError(f"{where}: {count} x {width} bytes do not fit its {fsize} "
                                  "bytes")
            return Member(off, width, count, signed, str(ft["name"]))
    raise MemberError(f"{type_name}: empty member path")


def read_member(read: Callable[[int, int], bytes], va: int, m: Member) -> int:
    """The value of member ``m`` of the variable at ``va`` (a sum for arrays); ``read(va, n)``
    reads the dump. Raises :class:`MemberError` (unreadable, negative)."""
    at = va + m.offset
    try:
        data = read(at, m.width * m.count)
    except Exception as e:
        raise MemberError(f"unreadable at {at:#x}: {e}") from None
    total = 0
    for i in range(m.count):
        v = int.from_bytes(data[i * m.width:(i + 1) * m.width], "little", signed=m.signed)
        if v < 0:
            raise MemberError(f"holds a negative value ({v}) at {at + i * m.width:#x}")
        total += v
    return total


@dataclass(frozen=True)
class MemberValue:
    """What one row gave: the value (None when it could not be read) and the source or reason."""

    key: str
    value: int | None
    source: str


def rows_for(key: str, build: int) -> list[MemberPath]:
    """The rows of :data:`MEMBER_PATHS` for field ``key`` that cover ``build``, in order."""
    return [r for r in MEMBER_PATHS if r.key == key and r.covers(build)]


def read_field(key: str, build: int, cat: Any, symbols: Mapping[str, int],
               read: Callable[[int, int], bytes], pdb_source: str) -> MemberValue | None:
    """Field ``key`` of a ``build`` kernel from the member paths: the first row that resolves and
    reads gives the value; None when no row covers ``build``; otherwise the reasons of every row
    tried. ``cat``: the kernel's type catalog, or None (no PDB types: every row says so);
    ``symbols``: loaded symbol map (``"nt!MiState"`` -> VA)."""
    rows = rows_for(key, build)
    if not rows:
        return None
    reasons = []
    for r in rows:
        va = symbols.get(f"nt!{r.variable}")
        if va is None:
            reasons.append(f"{r.symbol} needs the kernel's PDB (nt!{r.variable} is not among "
                           "the loaded symbols)")
            continue
        try:
            if r.type_name is None:
                m = Member(0, 4, 1, False, "ULONG")
            elif cat is None:
                raise MemberError(f"no PDB types for {r.type_name} (the kernel's symbols came "
                                  "from a map, not its PDB)")
            else:
                m = resolve(cat, r.type_name, r.path)
            value = read_member(read, va, m)
        except MemberError as e:
            reasons.append(f"{r.symbol}: {e}")
            continue
        where = f"+{m.offset:#x} in {r.type_name}, " if r.type_name else ""
        summed = f"{m.count} counters summed, " if m.count > 1 else ""
        return MemberValue(key, value,
                           f"{r.symbol} at {va + m.offset:#x} ({where}{summed}{pdb_source})")
    return MemberValue(key, None, "; ".join(reasons))
