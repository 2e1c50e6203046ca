"""Dump.search and Dump.dps / dds / dqs on forged dumps whose every planted byte is known.

Oracles: the forge's own model of memory and page tables (``PhysicalMemory``,
``PageTables.translate``), and plain Python ``bytes.find`` loops over ``Dump.read_phys`` / the
model — never the search engine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import ntdump
from ntdump import forge
from ntdump._search import kd_hex, parse_kd_range

K = 0xFFFFF80000000000
PAGE = 0x1000
TWO_MB = 0x200000

# Values planted per width (see Forged.plan: unaligned copies must not be reported for width > 1)
DWORD = 0xE0894D1F
QWORD = 0xFFFFF8047C640770
WORD = 0xBEEF
BYTE = 0xC3


class Forged:
    """A forged x64 full dump with planted values; ``planted[name]`` is the sorted VAs of each."""

    def __init__(self, path: Path) -> None:
        mem = forge.PhysicalMemory([(0x1, 0x9F), (0x100, 0x3F00)])
        pt = forge.PageTables(mem, "x64")
        self.mem, self.pt, self.path = mem, pt, path
        # Four VA-adjacent pages on frames that are apart, in reverse order: every page boundary
        # between them is a seam between pages far apart in the file.
        frames = [mem.alloc_page() << 12 for _ in range(8)]
        for i, pa in enumerate([frames[6], frames[4], frames[2], frames[0]]):
            pt.map(K + i * PAGE, pa)
        pt.set_entry(K + 4 * PAGE, "pte", 0)  # unmapped
        pt.set_entry(K + 5 * PAGE, "pte", (0x1234 << 32) | 0x80)  # paged out
        pt.map(K + 6 * PAGE, 0x7FF00000)  # a frame outside memory: missing from the dump
        pt.map(K + TWO_MB - PAGE, mem.alloc_page() << 12)  # the 4 KiB page before a 2 MiB page
        pt.map_data(K + TWO_MB, b"", TWO_MB)  # a 2 MiB page
        L = K + TWO_MB  # the large page
        self.planted: dict[str, list[int]] = {}
        # name: (value, width, aligned VAs, unaligned VAs); nothing overlaps anything else.
        plan = {
            "dword": (DWORD, 4, [K + 0x10, K + 0x1FF0, L + 0x12344, L + TWO_MB - 4],
                      [K + 0x21, K + 0x2FFE, L + 0x2FFE]),
            "qword": (QWORD, 8, [K + 0x1008, L + 0xFFFF8], [K + 0x3FF4]),
            "word": (WORD, 2, [K + 0x102, L - 0x10], [K + 0x105, L + 0x4FFF]),
            "byte": (BYTE, 1, [K + 0x50, K + 0x2FFD, L + TWO_MB - 0x10], []),
        }
        self.unaligned: dict[str, list[int]] = {}
        for name, (value, width, aligned, unaligned) in plan.items():
            for va in aligned + unaligned:
                self.write(va, value.to_bytes(width, "little"))
            self.planted[name] = sorted(aligned)
            self.unaligned[name] = sorted(unaligned)
        strings = {
            "needle": (b"NEEDLE", [K + 0x500, K + 0xFFD, L + 0xFFE]),
            "ascii": (b"straddle", [K + 0x1FFC, L - 3]),
            "unicode": ("Straddle".encode("utf-16-le"), [K + 0x2801, L + 0x7FFF9]),
        }
        for name, (data, vas) in strings.items():
            for va in vas:
                self.write(va, data)
            self.planted[name] = sorted(vas)
        forge.write_full(path, mem, forge.Header(machine="x64", dtb=pt.dtb))

    def write(self, va: int, data: bytes) -> None:
        for i, b in enumerate(data):
            pa = self.pt.translate(va + i)
            assert pa is not None and self.mem.contains(pa), hex(va + i)
            self.mem.write(pa, bytes([b]))

    def model_find(self, pattern: bytes, lo: int, hi: int, align: int = 1) -> list[int]:
        """Brute force over the forge's model: every readable page in [lo, hi), joined where VAs
        follow each other, searched with bytes.find."""
        chains: list[tuple[int, bytearray]] = []
        for va in range(lo, hi, PAGE):
            pa = self.pt.translate(va)
            if pa is None or not self.mem.contains(pa):
                continue
            data = self.mem.read(pa, PAGE)
            if chains and chains[-1][0] + len(chains[-1][1]) == va:
                chains[-1][1].extend(data)
            else:
                chains.append((va, bytearray(data)))
        return _find_all(chains, pattern, align)


def _find_all(chains: list[tuple[int, bytearray]] | list[tuple[int, bytes]], pattern: bytes,
              align: int = 1) -> list[int]:
    out = []
    for base, buf in chains:
        i = buf.find(pattern)
        while i >= 0:
            if (base + i) % align == 0:
                out.append(base + i)
            i = buf.find(pattern, i + 1)
    return sorted(out)


@pytest.fixture(scope="module")
def forged(tmp_path_factory: pytest.TempPathFactory) -> Forged:
    return Forged(tmp_path_factory.mktemp("search") / "planted.dmp")


@pytest.fixture
def dump(forged: Forged) -> Iterator[ntdump.Dump]:
    with ntdump.open(forged.path) as d:
        yield d


WITHIN = (K, K + 2 * TWO_MB)


def addrs(df: pd.DataFrame) -> list[int]:
    return [int(a) for a in df["address"]]


# -- patterns and widths ------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "value", "width"), [
    ("dword", DWORD, 4), ("qword", QWORD, 8), ("word", WORD, 2), ("byte", BYTE, 1),
])
def test_int_widths_report_exactly_the_aligned_planted_values(
    dump: ntdump.Dump, forged: Forged, name: str, value: int, width: int
) -> None:
    df = dump.search(value, width, within=WITHIN)
    assert addrs(df) == forged.planted[name]
    # The test's own check: the model holds the value exactly there (plus the unaligned copies).
    raw = value.to_bytes(width, "little")
    assert forged.model_find(raw, *WITHIN) == sorted(forged.planted[name] + forged.unaligned[name])
    assert forged.model_find(raw, *WITHIN, align=width) == forged.planted[name]


def test_default_width_follows_the_value(dump: ntdump.Dump, forged: Forged) -> None:
    assert addrs(dump.search(DWORD, within=WITHIN)) == forged.planted["dword"]
    assert addrs(dump.search(QWORD, within=WITHIN)) == forged.planted["qword"]


@pytest.mark.parametrize(("name", "pattern", "width"), [
    ("needle", b"NEEDLE", None), ("ascii", "straddle", "ascii"), ("unicode", "Straddle", "unicode"),
])
def test_bytes_and_strings_match_anywhere_including_across_seams(
    dump: ntdump.Dump, forged: Forged, name: str, pattern: bytes | str, width: str | None
) -> None:
    df = dump.search(pattern, width, within=WITHIN)
    assert addrs(df) == forged.planted[name]
    raw = pattern if isinstance(pattern, bytes) else pattern.encode(
        "utf-16-le" if width == "unicode" else "ascii")
    assert forged.model_find(raw, *WITHIN) == forged.planted[name]


def test_pattern_list_gets_a_pattern_column(dump: ntdump.Dump, forged: Forged) -> None:
    df = dump.search([b"NEEDLE", b"straddle"], within=WITHIN)
    want = sorted([(a, b"NEEDLE") for a in forged.planted["needle"]]
                  + [(a, b"straddle") for a in forged.planted["ascii"]])
    assert list(zip(addrs(df), df["pattern"], strict=True)) == want
    assert df["pattern"].dtype == "category"
    ints = dump.search([DWORD, DWORD + 1], within=WITHIN)
    assert addrs(ints) == forged.planted["dword"]
    assert set(ints["pattern"]) == {DWORD}
    assert list(ints["pattern"].cat.categories) == [DWORD, DWORD + 1]


def test_int_that_does_not_fit_the_width_is_rejected(dump: ntdump.Dump) -> None:
    with pytest.raises(ValueError, match="does not fit"):
        dump.search(0x1_0000_0000, 4, within=WITHIN)
    with pytest.raises(ValueError, match="does not fit"):
        dump.search([DWORD, WORD], width=2, within=WITHIN)
    with pytest.raises(TypeError):
        dump.search([DWORD, b"x"], within=WITHIN)
    with pytest.raises(ValueError):
        dump.search(b"", within=WITHIN)
    with pytest.raises(ValueError):
        dump.search("ü", within=WITHIN)
    # Negative ints are two's complement.
    assert dump.search(-1, 4, within=WITHIN).shape[1] == 3


def test_frame_columns_dtypes_and_stats(dump: ntdump.Dump, forged: Forged) -> None:
    df = dump.search(DWORD, within=WITHIN)
    assert list(df.columns) == ["address", "module", "offset"]
    assert str(df["address"].dtype) == "uint64" and str(df["offset"].dtype) == "uint64"
    assert str(df["module"].dtype) == "string" and df["module"].isna().all()
    assert [int(o) for o in df["offset"]] == [a - K for a in forged.planted["dword"]]
    # Readable: pages 0-3, the page before the 2 MiB page, and the 512 pages of the 2 MiB page.
    assert df.attrs["pages_searched"] == 4 + 1 + 512
    assert df.attrs["pages_unreadable"] == 2 * TWO_MB // PAGE - (4 + 1 + 512)
    assert df.attrs["truncated"] is False
    assert df.attrs["dump"] == str(forged.path)


def test_limit_keeps_the_first_hits_of_a_pattern_that_hits_everywhere(dump: ntdump.Dump) -> None:
    full = dump.search(0, 8, within=WITHIN)
    assert len(full) > 200_000
    df = dump.search(0, 8, within=WITHIN, limit=100)
    assert addrs(df) == addrs(full)[:100]
    assert df.attrs["truncated"] is True
    assert dump.search(0, 8, within=WITHIN, limit=0).empty


# -- within ---------------------------------------------------------------------------------------


def test_kd_range_strings_parse_like_kd() -> None:
    assert parse_kd_range("f50b3000 L?0x10000", 4) == (0xF50B3000, 0xF50B3000 + 0x40000)
    assert parse_kd_range("f50b3000 L10", 4) == (0xF50B3000, 0xF50B3040)
    assert parse_kd_range("f50b3000 l10", 1) == (0xF50B3000, 0xF50B3010)
    assert parse_kd_range("f50b3000 f50c0000") == (0xF50B3000, 0xF50C0001)
    assert parse_kd_range("fffff804`7ba00000 L100", 8) == (0xFFFFF8047BA00000,
                                                           0xFFFFF8047BA00800)
    assert parse_kd_range("0xfffff8047ba00000 0xfffff8047ba00fff") == (
        0xFFFFF8047BA00000, 0xFFFFF8047BA01000)
    assert parse_kd_range("1000 L0n16") == (0x1000, 0x1010)
    assert parse_kd_range("  1000   L 20  ", 2) == (0x1000, 0x1040)
    assert parse_kd_range("1000 L4000000", 4) == (0x1000, 0x1000 + (256 << 20))
    with pytest.raises(ValueError, match="256 MB"):
        parse_kd_range("1000 L4000001", 4)
    assert parse_kd_range("1000 L?4000001", 4)[1] == 0x1000 + 0x10000004
    for bad in ("1000", "xyz L10", "2000 1000", "1000 L", "1000 Lzz", "ffffffffffffffff L2"):
        with pytest.raises(ValueError):
            parse_kd_range(bad)


def test_kd_range_within(dump: ntdump.Dump, forged: Forged) -> None:
    n_dwords = (2 * TWO_MB) // 4
    by_l = dump.search(DWORD, within=f"{K >> 32:x}`{K & 0xFFFFFFFF:08x} L?{n_dwords:#x}")
    by_pair = dump.search(DWORD, within=f"{K:x} {K + 2 * TWO_MB - 1:x}")
    assert addrs(by_l) == addrs(by_pair) == forged.planted["dword"]
    # kd's end is inclusive: a range ending on the last byte of a hit finds it, one byte less not.
    last = forged.planted["dword"][-1]
    assert addrs(dump.search(DWORD, within=f"{last:x} {last + 3:x}")) == [last]
    assert addrs(dump.search(DWORD, within=f"{last:x} {last + 2:x}")) == []
    assert addrs(dump.search(DWORD, within=f"{last:x} L1")) == [last]


class FakeModule:
    def __init__(self, name: str, base: int, size: int) -> None:
        self.name, self.base, self.size = name, base, size


def test_modules_fill_module_and_offset(dump: ntdump.Dump, forged: Forged) -> None:
    mods = [FakeModule("big.sys", K + TWO_MB, TWO_MB), FakeModule("small.sys", K, 3 * PAGE)]
    df = dump.search(DWORD, within=mods)
    assert addrs(df) == forged.planted["dword"]
    want = [("small.sys", a - K) if a < K + TWO_MB else ("big.sys", a - K - TWO_MB)
            for a in forged.planted["dword"]]
    assert list(zip(df["module"], [int(o) for o in df["offset"]], strict=True)) == want
    one = dump.search(DWORD, within=mods[0])
    assert set(one["module"]) == {"big.sys"}
    assert addrs(one) == [a for a in forged.planted["dword"] if a >= K + TWO_MB]


def test_modules_from_the_module_list_duck_type(dump: ntdump.Dump, forged: Forged) -> None:
    mixed = [(K, K + PAGE), FakeModule("big.sys", K + TWO_MB, TWO_MB)]
    df = dump.search(DWORD, within=mixed)
    assert addrs(df) == [a for a in forged.planted["dword"] if a < K + PAGE or a >= K + TWO_MB]
    assert df["module"].isna().sum() == 1


def test_bad_within(dump: ntdump.Dump) -> None:
    with pytest.raises(TypeError):
        dump.search(DWORD, within=3.5)
    with pytest.raises(ValueError):
        dump.search(DWORD, within="kernel", physical=True)
    with pytest.raises(ValueError):
        dump.search(DWORD, within=(5, 2))


# -- kernel and physical ------------------------------------------------------------------------


def test_kernel_search_matches_the_model(dump: ntdump.Dump, forged: Forged) -> None:
    for name in ("dword", "needle", "unicode"):
        df = dump.search(DWORD if name == "dword" else
                         (b"NEEDLE" if name == "needle" else "Straddle"),
                         "unicode" if name == "unicode" else None)
        assert addrs(df) == forged.planted[name]
    df = dump.search(DWORD)
    assert [int(o) for o in df["offset"]] == [a - 0xFFFF800000000000 for a in addrs(df)]
    # Only the mapped page whose frame is outside the dump counts as unreadable.
    assert df.attrs["pages_unreadable"] == 1


@pytest.fixture(scope="module")
def minimal(tmp_path_factory: pytest.TempPathFactory) -> forge.ForgeResult:
    """minimal_x64 with one marker planted in the middle of the 2 MiB page, then rewritten."""
    res = forge.minimal_x64(tmp_path_factory.mktemp("min") / "m.dmp", size=32 << 20)
    res.mem.write(_pa(res, "2m") + 0x12345, b"MARKER-2M")
    forge.write_full(res.path, res.mem, res.header)
    return res


def _pa(res: forge.ForgeResult, kind: str) -> int:
    """PA of the first mapping of ``kind``."""
    pa = res.by_kind(kind)[0].pa
    assert pa is not None
    return pa


def _kernel_model_pages(res: forge.ForgeResult) -> dict[int, bytes]:
    """Every kernel VA page the forge mapped validly (or in transition) whose frame is stored."""
    pages: dict[int, bytes] = {}
    for m in res.mappings:
        if m.va < 0xFFFF800000000000 or m.pa is None or m.kind not in ("4k", "2m", "1g",
                                                                          "transition"):
            continue
        for off in range(0, m.page_size, PAGE):
            data = res.expected_phys(m.pa + off, PAGE)
            if data is not None:
                pages[m.va + off] = data
    return pages


def _chains(pages: dict[int, bytes]) -> list[tuple[int, bytes]]:
    """Pages joined where VAs follow each other."""
    chains: list[tuple[int, bytearray]] = []
    for va in sorted(pages):
        if chains and chains[-1][0] + len(chains[-1][1]) == va:
            chains[-1][1].extend(pages[va])
        else:
            chains.append((va, bytearray(pages[va])))
    return [(a, bytes(b)) for a, b in chains]


def test_kernel_search_finds_a_marker_at_an_arbitrary_mapped_va(
    minimal: forge.ForgeResult,
) -> None:
    m2, one_g = minimal.by_kind("2m")[0], minimal.by_kind("1g")[0]
    with ntdump.open(minimal.path) as d:
        df = d.search(b"MARKER-2M")
    # The 2 MiB page, and the same frame seen through the 1 GiB page that aliases low memory.
    assert addrs(df) == sorted([m2.va + 0x12345, one_g.va + _pa(minimal, "2m") + 0x12345])


def test_kernel_search_never_reports_unmapped_memory(minimal: forge.ForgeResult) -> None:
    patterns = [b"\x63", b"\xf8\xff\xff"]
    with ntdump.open(minimal.path) as d:
        df = d.search(patterns)
        ranges = d.kernel_ranges()
    pages = _kernel_model_pages(minimal)
    for a, p in zip(addrs(df), df["pattern"], strict=True):
        assert a & ~0xFFF in pages and (a + len(p) - 1) & ~0xFFF in pages, hex(a)
    want = sorted([(a, p) for p in patterns for a in _find_all(_chains(pages), p)])
    assert list(zip(addrs(df), df["pattern"], strict=True)) == want
    mapped = {m.va for m in minimal.mappings if m.kind in ("4k", "2m", "1g", "transition", "hole")}
    for s, e in ranges:  # each range starts at a prepared mapping and covers whole mappings
        assert s in mapped and (e - s) % PAGE == 0


@pytest.mark.parametrize("fmt", ["full", "bitmap", "kernel", "raw"])
def test_physical_search_equals_a_python_find_loop(tmp_path: Path, fmt: str) -> None:
    res = forge.minimal_x64(tmp_path / "p.dmp", fmt=fmt, size=32 << 20)
    patterns = [b"\x00\x00\xf8\xff\xff", b"\x63\x10", b"\x7f\x4c\x95"]
    is_raw = fmt == "raw"
    with ntdump.open(res.path, raw=is_raw, machine="x64" if is_raw else None,
                     dtb=res.dtb if is_raw else None) as d:
        spans: list[tuple[int, int]] = []
        for base, count in d.info.runs:  # join PA-adjacent runs: a hit may cross them
            if spans and spans[-1][1] == base << 12:
                spans[-1] = (spans[-1][0], (base + count) << 12)
            else:
                spans.append((base << 12, (base + count) << 12))
        chains = [(s, d.read_phys(s, e - s)) for s, e in spans]
        for p in patterns:
            df = d.search(p, physical=True)
            assert addrs(df) == _find_all(chains, p), p
            assert df.attrs["pages_searched"] == d.info.present_pages


def test_physical_search_finds_planted_pas(minimal: forge.ForgeResult) -> None:
    lo = _pa(minimal, "2m")
    with ntdump.open(minimal.path) as d:
        df = d.search(b"MARKER-2M", physical=True)
        assert addrs(df) == [lo + 0x12345]
        assert [int(o) for o in df["offset"]] == [lo + 0x12345]
        df = d.search(b"MARKER-2M", physical=True, within=(lo, lo + 0x12345 + 9))
        assert addrs(df) == [lo + 0x12345]
        assert [int(o) for o in df["offset"]] == [0x12345]
        assert d.search(b"MARKER-2M", physical=True, within=(lo, lo + 0x12345 + 8)).empty


def test_triage_dump_searches_its_captured_ranges(tmp_path: Path) -> None:
    res = forge.minimal_x64(tmp_path / "t.dmp", fmt="triage")
    with ntdump.open(res.path) as d:
        for va, _data in res.triage_blocks:
            assert addrs(d.search(va, 8)) == [va]
        va = res.triage_blocks[1][0]
        assert addrs(d.search(va, 8, within=(va, va + PAGE))) == [va]
        assert d.search(va, 8, physical=True).empty


def test_real_triage_dump_hits_lie_in_captured_ranges(triage_dump: Path) -> None:
    with ntdump.open(triage_dump) as d:
        df = d.search(b"MZ")
        ranges = d._d.info()["triage_ranges"]
        chains = []
        for va, n, _off in sorted(ranges):
            if va >= 0xFFFF800000000000:
                chains.append((va, d.read(va, n)))
    joined: list[tuple[int, bytes]] = []
    for va, data in chains:
        if joined and joined[-1][0] + len(joined[-1][1]) == va:
            joined[-1] = (joined[-1][0], joined[-1][1] + data)
        else:
            joined.append((va, data))
    assert addrs(df) == _find_all(joined, b"MZ")


# -- determinism ----------------------------------------------------------------------------------


def test_two_threads_get_equal_frames(dump: ntdump.Dump) -> None:
    out: list[pd.DataFrame] = []

    def run() -> None:
        out.append(dump.search([b"\x00\x00\x00\x00\x63", b"NEEDLE", b"\x00\x01"], within=WITHIN))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 2
    pd.testing.assert_frame_equal(out[0], out[1])
    assert len(out[0]) > 0


_SCRIPT = """
import hashlib, sys, ntdump
d = ntdump.open(sys.argv[1])
df = d.search([0, 0x63], width=1, limit=None)
codes = df["pattern"].cat.codes.to_numpy()
h = hashlib.sha256(df["address"].to_numpy().tobytes() + codes.tobytes())
print(len(df), h.hexdigest())
"""


def test_result_does_not_depend_on_the_thread_count(forged: Forged) -> None:
    def run(env_threads: str | None) -> str:
        env = dict(os.environ)
        env.pop("RAYON_NUM_THREADS", None)
        if env_threads:
            env["RAYON_NUM_THREADS"] = env_threads
        r = subprocess.run([sys.executable, "-c", _SCRIPT, str(forged.path)], env=env,
                           capture_output=True, text=True, check=True)
        return r.stdout.strip()

    one, default, four = run("1"), run(None), run("4")
    assert one == default == four
    assert int(one.split()[0]) > 1_000_000


# -- dps / dds / dqs ------------------------------------------------------------------------------

PTRS = [0xFFFFF8047C640770, 0xFFFFF8047C640780, 0, 0x1234, 0xFFFFF8047C6407A0, 7, 8, 9]


@pytest.fixture(scope="module")
def pointers(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """x64 and PAE dumps with a page of pointers at ``table`` followed by an unmapped page."""
    out = []
    for mode in ("x64", "pae"):
        mem = forge.PhysicalMemory([(0x1, 0x9F), (0x100, 0xF00)])
        pt = forge.PageTables(mem, mode)
        base = K if mode == "x64" else 0x80400000
        size = 8 if mode == "x64" else 4
        data = b"".join((v & ((1 << (8 * size)) - 1)).to_bytes(size, "little") for v in PTRS)
        pa = pt.map_data(base, b"")[0]  # one page; the next is unmapped
        mem.write(pa + PAGE - len(data), data)
        path = tmp_path_factory.mktemp("dps") / f"{mode}.dmp"
        hdr = forge.Header(machine="x64" if mode == "x64" else "x86", pae=mode == "pae",
                           dtb=pt.dtb)
        forge.write_full(path, mem, hdr)
        out.append(path)
    return out[0], out[1]


def _symbols(v: int) -> str | None:
    if v == PTRS[0]:
        return "nt!ExAllocatePool"
    if v == PTRS[1]:
        return "nt!ExFreePoolWithTag+0x10"
    if v == 0x1234:
        raise ntdump.SymbolError("no symbol")
    return None


def test_dps_values_and_symbols(pointers: tuple[Path, Path],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    with ntdump.open(pointers[0]) as d:
        table = K + PAGE - 8 * len(PTRS)
        df = d.dps(table, 4)
        assert list(df.columns) == ["address", "value", "symbol"]
        assert str(df["address"].dtype) == "uint64" and str(df["value"].dtype) == "UInt64"
        assert [int(a) for a in df["address"]] == [table + 8 * i for i in range(4)]
        assert [int(v) for v in df["value"]] == PTRS[:4]
        assert list(df["symbol"]) == [""] * 4  # no modules: ln knows nothing
        monkeypatch.setattr(d._symbols, "ln", _symbols)  # the Symbols feature dps asks
        df = d.dps(table, 4)
        assert list(df["symbol"]) == ["nt!ExAllocatePool", "nt!ExFreePoolWithTag+0x10", "", ""]
        assert [int(v) for v in d.dds(table, 2)["value"]] == [PTRS[0] & 0xFFFFFFFF, PTRS[0] >> 32]
        assert [int(v) for v in d.dqs(table, 2)["value"]] == PTRS[:2]
        text = d.dps_text(table, 2).splitlines()
        assert text == [
            f"{kd_hex(table, 16)}  fffff804`7c640770 nt!ExAllocatePool",
            f"{kd_hex(table + 8, 16)}  fffff804`7c640780 nt!ExFreePoolWithTag+0x10",
        ]
        assert text[0].startswith("fffff800`00000fc0  ")


def test_dps_stops_at_the_first_unreadable_slot(pointers: tuple[Path, Path]) -> None:
    with ntdump.open(pointers[0]) as d:
        table = K + PAGE - 8 * len(PTRS)
        df = d.dps(table, 12)
        assert len(df) == len(PTRS) + 1
        assert [None if v is pd.NA else int(v) for v in df["value"]] == [*PTRS, None]
        assert int(df["address"].iloc[-1]) == K + PAGE
        assert df["symbol"].iloc[-1] == ""
        assert d.dps_text(table, 9).splitlines()[-1] == "fffff800`00001000  ????????`????????"
        with pytest.raises(ntdump.TranslationError):
            d.dps(K + PAGE, 4)
        assert d.dps(table, 0).empty


def test_dps_32_bit_layout(pointers: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    with ntdump.open(pointers[1]) as d:
        table = 0x80400000 + PAGE - 4 * len(PTRS)
        monkeypatch.setattr(d._symbols, "ln", _symbols)  # the Symbols feature dps asks
        df = d.dps(table, 2)
        assert [int(v) for v in df["value"]] == [PTRS[0] & 0xFFFFFFFF, PTRS[1] & 0xFFFFFFFF]
        lines = d.dps_text(table, 9).splitlines()
        assert lines[0] == f"{table:08x}  7c640770"
        assert lines[-1] == "80401000  ????????"
        assert d.dps_text(table, 2, size=8).splitlines()[0] == f"{table:08x}  7c640780`7c640770"
        assert np.all(df["address"].to_numpy() % 4 == 0)
