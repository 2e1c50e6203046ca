"""Stubs of the private native module ``ntdump._native`` (hand-written; checked by stubtest).

The dict records the binding returns are typed as TypedDicts (``@type_check_only``: they exist for
the type checker, not at runtime); keys and value types follow src/*.rs. Addresses are VAs unless
named ``pa``/``dtb``; sizes are bytes unless named pages.
"""

from os import PathLike
from typing import Any, Literal, TypedDict, final, type_check_only

import numpy as np
from numpy.typing import NDArray

__version__: str
__all__ = [
    "Dump",
    "PdbTypes",
    "PeImage",
    "PoolScanner",
    "SymbolTable",
    "__version__",
    "kernel_info",
    "kernel_ranges",
    "layout_sources",
    "pdb_identity",
    "pdb_public_offsets",
    "panic_selftest",
    "pdb_symbols",
    "pe_image",
    "pe_parse",
    "pool_big",
    "pool_layouts",
    "pool_owners",
    "pool_page",
    "pool_track_table_variable",
    "pool_used",
    "processors",
    "search",
    "search_modules",
    "set_kernel_layouts",
    "stack_walk",
    "symbol_table",
    "unwind_functions",
    "vm_summary",
]

# -- records (dicts built by the binding) ---------------------------------------------------------

@type_check_only
class DumpInfoDict(TypedDict, total=False):
    machine: str
    pae: bool
    is64: bool
    build: int
    major_version: int
    dump_type: int
    layout: str
    dtb: int
    pfn_database: int
    ps_loaded_module_list: int
    ps_active_process_head: int
    kd_debugger_data_block: int
    processors: int
    bugcheck_code: int
    bugcheck_params: list[int]
    system_time: int
    system_up_time: int
    required_dump_space: int
    mini_dump_fields: int
    product_type: int
    suite_mask: int
    attributes: int
    comment: str
    exception_code: int
    exception_address: int
    header_runs: list[tuple[int, int]] | None
    runs: list[tuple[int, int]]
    file_runs: list[tuple[int, int, int]]
    present_pages: int
    missing_pages: int
    file_size: int
    context: dict[str, int]
    warnings: list[str]
    triage_ranges: list[tuple[int, int, int]]
    triage_data_blocks: int

@type_check_only
class WalkDict(TypedDict):
    va: int
    steps: list[tuple[str, int, int, int, str]]
    pa: int | None
    page_size: int | None
    error: Exception | None

@type_check_only
class ModuleColumns(TypedDict):
    name: list[str]
    path: list[str]
    base: list[int]
    size: list[int]
    entry_point: list[int]
    timestamp: list[int]
    timestamp_source: list[str]
    # (kind, [(loader entry VA, module index or None)], why unknown or "")
    loaded_imports: list[tuple[str, list[tuple[int, int | None]], str]]
    loaded_imports_raw: list[int]
    checksum: list[int]
    flags: list[int]
    load_count: list[int]
    ldr_entry: list[int]
    range_ok: list[bool]
    kd_name: list[str]

@type_check_only
class UnloadedColumns(TypedDict):
    name: list[str]
    start: list[int]
    end: list[int]
    time: list[int]

@type_check_only
class Kdbg(TypedDict):
    va: int
    size: int
    bytes: bytes

@type_check_only
class KernelInfo(TypedDict):
    modules: ModuleColumns
    unloaded: UnloadedColumns
    module_source: str
    kernel_base: int | None
    family: str
    ldr_layout_source: str
    kdbg: Kdbg | None
    warnings: list[str]

@type_check_only
class KernelLayoutsDict(TypedDict):
    sources: dict[str, str]
    warnings: list[str]
    missing: list[str]
    ldr_changed: bool

@type_check_only
class PeHeadersDict(TypedDict):
    e_lfanew: int
    file: dict[str, int]
    optional: dict[str, int]
    directories: list[tuple[int, str, int, int]]

@type_check_only
class SectionColumns(TypedDict):
    name: list[str]
    virtual_address: list[int]
    virtual_size: list[int]
    raw_size: list[int]
    raw_pointer: list[int]
    characteristics: list[int]

@type_check_only
class ExportColumns(TypedDict):
    name: list[str | None]
    ordinal: list[int]
    rva: list[int]
    forwarder: list[str | None]

@type_check_only
class ExportDirectory(TypedDict):
    dll_name: str | None
    time_date_stamp: int
    ordinal_base: int
    number_of_functions: int
    number_of_names: int
    columns: ExportColumns

@type_check_only
class ImportColumns(TypedDict):
    dll: list[str]
    name: list[str | None]
    ordinal: list[int | None]
    hint: list[int | None]
    iat_rva: list[int]
    iat_slot: NDArray[np.uint64]
    value: list[int | None]
    source: list[str]

@type_check_only
class DebugColumns(TypedDict):
    kind: list[int]
    kind_name: list[str]
    time_date_stamp: list[int]
    major_version: list[int]
    minor_version: list[int]
    size_of_data: list[int]
    address_of_raw_data: list[int]
    pointer_to_raw_data: list[int]
    characteristics: list[int]

@type_check_only
class CodeViewDict(TypedDict):
    format: str
    path: str
    pdb_name: str
    age: int
    guid: str | None
    guid_bytes: bytes | None
    signature: int | None
    key: str
    store_path: str

@type_check_only
class ParsersDict(TypedDict):
    headers: str
    sections: str
    exports: str | None
    debug: str | None

@type_check_only
class SymbolColumns(TypedDict):
    module: list[str]
    name: list[str | None]
    address: list[int | None]
    ordinal: list[int]
    forwarder: list[str | None]

@type_check_only
class SymbolModuleColumns(TypedDict):
    kd_name: list[str]
    file_name: list[str]
    base: list[int]
    size: list[int]
    exports: list[int]
    imports: list[int]
    error: list[str | None]
    warnings: list[list[str]]

@type_check_only
class ImporterColumns(TypedDict):
    module: list[str]
    function: list[str]
    iat_slot: list[int]
    how_found: list[str]
    value: list[int | None]
    note: list[str | None]

@type_check_only
class SearchResult(TypedDict):
    address: NDArray[np.uint64]
    pattern: NDArray[Any]
    pages_searched: int
    pages_unreadable: int
    truncated: bool

@type_check_only
class ModuleSearchResult(SearchResult):
    module: NDArray[np.int64]
    offset: NDArray[np.uint64]

@type_check_only
class UsedColumns(TypedDict):
    tag: NDArray[Any]
    nonpaged_allocs: NDArray[Any]
    nonpaged_frees: NDArray[Any]
    nonpaged_bytes: NDArray[Any]
    paged_allocs: NDArray[Any]
    paged_frees: NDArray[Any]
    paged_bytes: NDArray[Any]

@type_check_only
class PoolUsed(TypedDict):
    columns: UsedColumns
    variable: int
    table: int
    entries: int
    size_variable: int
    layout: str
    layout_source: str
    layout_scores: Any
    per_cpu: Any
    per_cpu_array: Any
    extra: Any
    warnings: list[str]

@type_check_only
class BigColumns(TypedDict):
    va: NDArray[np.uint64]
    tag: NDArray[Any]
    bytes: NDArray[Any]
    pool_type: NDArray[Any]
    freed: NDArray[Any]

@type_check_only
class PoolBig(TypedDict):
    columns: BigColumns
    table: int
    entries: int
    table_variable: int
    size_variable: int
    layout: str
    layout_source: str
    how: str
    warnings: list[str]

_BlockTuple = tuple[int, int, int, int, int, int, bool, int, bool]
"""(address, size, previous_size, pool_index, raw_type, pool_type, allocated, tag, contains)."""

@type_check_only
class PoolPageDict(TypedDict):
    va: int
    page: int
    header_size: int
    blocks: list[_BlockTuple]
    status: Literal["ok", "corrupt", "not walked"]
    corrupt_at: int | None
    why: str
    nearest: _BlockTuple | None
    big: tuple[int, int, int, int, bool] | None

@type_check_only
class StackWalkDict(TypedDict):
    sp: list[int]
    pc: list[int]
    how: list[str]
    frame_base: list[int]
    slot: list[int]
    interrupted: list[bool]
    warnings: list[str]
    source: str
    stack_range: tuple[int, int] | None

@type_check_only
class ProcessorColumns(TypedDict):
    index: list[int]
    prcb: list[int]
    ip: list[int | None]
    sp: list[int | None]
    current_thread: list[int]
    context_va: list[int]
    warnings: list[str]

@type_check_only
class ScanColumns(TypedDict):
    address: NDArray[np.uint64]
    tag: NDArray[Any]
    size: NDArray[Any]
    pool_type: NDArray[Any]
    allocated: NDArray[np.bool_]

# -- classes and functions ------------------------------------------------------------------------

@final
class Dump:
    def __new__(
        cls,
        path: str | PathLike[str],
        *,
        raw: bool = False,
        machine: str | None = None,
        pae: bool | None = None,
        dtb: int | None = None,
    ) -> Dump: ...
    def info(self) -> DumpInfoDict: ...
    def read(self, va: int, n: int, pad: bool = False) -> bytes: ...
    def read_phys(self, pa: int, n: int, pad: bool = False) -> bytes: ...
    def translate(self, va: int) -> int: ...
    def walk(self, va: int, dtb: int | None = None) -> WalkDict: ...
    def check_intact(self) -> None: ...
    @property
    def mode(self) -> str | None: ...

@final
class PeImage:
    def headers(self) -> PeHeadersDict: ...
    def sections(self) -> SectionColumns: ...
    def exports(self) -> ExportDirectory | None: ...
    def imports(self) -> ImportColumns: ...
    def debug(self) -> DebugColumns: ...
    def codeview(self) -> CodeViewDict | None: ...
    @property
    def warnings(self) -> list[str]: ...
    @property
    def missing_pages(self) -> list[int]: ...
    @property
    def is64(self) -> bool: ...
    @property
    def parsers(self) -> ParsersDict: ...
    @property
    def size(self) -> int: ...
    @property
    def base(self) -> int: ...

@final
class PoolScanner:
    def __new__(
        cls,
        dump: Dump,
        *,
        tags: list[bytes] | None = None,
        pool: str = "all",
        ranges: list[tuple[int, int]] | None = None,
        limit: int = ...,
    ) -> PoolScanner: ...
    def run(self, lo: int, hi: int) -> ScanColumns: ...
    def touch(self, lo: int, hi: int) -> int: ...
    @property
    def pages(self) -> int: ...
    @property
    def warnings(self) -> list[str]: ...

@final
class SymbolTable:
    def __len__(self) -> int: ...
    def symbol(self, expr: str) -> int: ...
    def ln(self, va: int) -> str: ...
    def nearest(self, va: int) -> tuple[str, str | None, int | None, int] | None: ...
    def find(self, pattern: str) -> SymbolColumns: ...
    def modules(self) -> SymbolModuleColumns: ...
    def importers(self, dump: Dump, expr: str, aligned: bool = True) -> ImporterColumns: ...

def kernel_info(dump: Dump) -> KernelInfo: ...
def kernel_ranges(dump: Dump) -> list[tuple[int, int]]: ...
def layout_sources(dump: Dump) -> dict[str, str]: ...
def set_kernel_layouts(
    dump: Dump, types: PdbTypes | None, module: str = "nt", label: str = ""
) -> KernelLayoutsDict: ...
def panic_selftest(message: str) -> None: ...
def pdb_identity(path: str | PathLike[str]) -> tuple[str, int]: ...
def pdb_symbols(path: str | PathLike[str]) -> tuple[str, int, list[tuple[str, int, str]]]: ...
def pdb_public_offsets(path: str | PathLike[str]) -> list[tuple[str, int, int]]: ...

@final
class PdbTypes:
    def __new__(cls, path: str | PathLike[str]) -> PdbTypes: ...
    @property
    def pointer_size(self) -> int: ...
    def layout(self, name: str) -> dict[str, Any]: ...
    def layout_index(self, index: int) -> dict[str, Any]: ...
    def describe(self, index: int) -> dict[str, Any]: ...
    def names(self) -> list[str]: ...
    def __len__(self) -> int: ...
def pe_image(
    dump: Dump, base: int, size_hint: int | None = None, *, goblin: bool = True
) -> PeImage: ...
def pe_parse(
    base: int, data: bytes, missing_pages: list[int] = ..., *, goblin: bool = True
) -> PeImage: ...
def pool_big(dump: Dump, table: tuple[int, int, str] | None = None) -> PoolBig: ...
def pool_layouts() -> dict[str, Any]: ...
def pool_owners(
    dump: Dump, tags: list[bytes]
) -> list[tuple[list[str], list[str], list[float], str]]: ...
def pool_page(dump: Dump, va: int) -> PoolPageDict: ...
def pool_track_table_variable(dump: Dump) -> int: ...
def processors(dump: Dump) -> ProcessorColumns: ...
def pool_used(
    dump: Dump,
    *,
    per_cpu: list[int] | None = None,
    extra: list[tuple[int, int]] = ...,
    only_extra: bool = False,
    track_entries: int | None = None,
) -> PoolUsed: ...
def search(
    dump: Dump,
    patterns: list[bytes],
    ranges: list[tuple[int, int]] | None = None,
    *,
    align: int = 1,
    kernel: bool = False,
    physical: bool = False,
    limit: int | None = None,
) -> SearchResult: ...
def search_modules(
    dump: Dump,
    patterns: list[bytes],
    *,
    align: int = 1,
    limit: int | None = None,
) -> ModuleSearchResult: ...
def stack_walk(
    dump: Dump,
    processor: int | None = None,
    max_frames: int = 64,
    images: dict[str, bytes] | None = None,
) -> StackWalkDict: ...
def symbol_table(dump: Dump) -> SymbolTable: ...
def unwind_functions(
    file: bytes,
) -> list[
    tuple[
        int,
        int,
        int,
        tuple[
            int, int, int, int, int, int,
            list[tuple[int, int, int, int]],
            tuple[int, int, int] | None,
            int | None,
        ]
        | None,
        str | None,
    ]
]: ...
def vm_summary(
    dump: Dump, symbols: dict[str, int]
) -> list[tuple[str, str, int | None, str, bool]]: ...
