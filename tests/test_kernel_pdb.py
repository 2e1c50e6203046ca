"""A forged Windows 10 x64 dump with a PDB made for its kernel (by yaml2obj + lld-link, see
kernel_pdb.py): the PDB names the variables, and ntdump reads through it — ``vm()`` fills the
symbol-only fields, ``pool.big()`` reads the big-page table the PDB's ``PoolBigPageTable`` names
(placed where the no-PDB search cannot find it), ``dt`` reads a ``_POOL_HEADER``.

The forge places the pool's variable block 16 MiB past the kernel's base, i.e. at RVAs inside a
large kernel's ``.data`` (a real ntoskrnl.exe is 10+ MiB); the PDB's publics carry those RVAs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from kernel_pdb import build, tools_present

import ntdump
from ntdump import PoolTableError
from ntdump.forge import pool as fpool
from ntdump.forge import scenario
from ntdump.forge.writers import write_full

VM = {"MmAllocatedNonPagedPool": 31369, "MmMaximumNonPagedPoolInBytes": 31986 * 4096,
      "MmPoolFailures": 3}


@pytest.fixture(scope="module")
def forged(tmp_path_factory: pytest.TempPathFactory, shared_data: Path):
    if not tools_present():
        pytest.skip("yaml2obj (Debian llvm) and lld-link/rust-lld are needed to build the PDB")
    tmp = tmp_path_factory.mktemp("kpdb")
    s = scenario.win10_x64(tmp / "w10.dmp", vm=VM)
    base = s.layout.kernel_base
    # big-table variables 0x1F00/0x1EF8 below PoolTrackTable: outside the 0x1800-byte window the
    # PDB-less search uses (Volatility's distances), so only the PDB can name them
    pl = fpool.add_to_scenario(s, region_base=base + 0x0100_0000, big_distance=(0x1F00, 0x1EF8))
    names = ["PoolBigPageTable", "PoolBigPageTableSize", "PoolTrackTable", "PoolTrackTableSize"]
    rvas = {n: pl.variables[n] - base for n in names}
    # nt!PoolTrackTableExpansion / …Size (pointer, SIZE_T): two more variables in the same block,
    # pointing at a tracker table (the global one, so the expected counts are known)
    exp_var = pl.track_variable + 0x1000
    for va, value in ((exp_var, pl.track_table), (exp_var + 8, pl.track_entries)):
        pa = s.pt.translate(va)
        assert pa is not None
        s.mem.write_u64(pa, value)
    write_full(s.path, s.mem, s.header)
    rvas["PoolTrackTableExpansion"] = exp_var - base
    rvas["PoolTrackTableExpansionSize"] = exp_var + 8 - base
    rvas.update({n: s.layout.variables[n] - base for n in ("MmPoolFailures",)
                 if n in s.layout.variables})
    pdb, _, _ = build(tmp, shared_data / "layouts" / "volatility2-vtypes-selected.json", rvas)
    return s, pl, pdb


def test_without_the_pdb_the_big_table_is_not_found(forged) -> None:
    s, _pl, _ = forged
    with ntdump.open(s.path, symbols="") as d:
        with pytest.raises(PoolTableError, match="PoolBigPageTable"):
            d.pool.big()
        assert d.vm().pool_allocation_failures is None


def test_pdb_names_the_big_table_vm_fields_and_types(forged) -> None:
    s, pl, pdb = forged
    with ntdump.open(s.path, symbols="") as d:
        n = d.load_pdb(pdb, module="nt")
        assert n >= 4
        assert d.symbol("nt!PoolBigPageTable") == pl.variables["PoolBigPageTable"]
        big = d.pool.big()
        assert "nt!PoolBigPageTable" in big.attrs["symbol_source"]
        assert str(pdb) in big.attrs["symbol_source"]
        # the PDB's _POOL_TRACKER_BIG_PAGES (equal to the built-in win10-x64) is the layout used
        assert big.attrs["layout"] == "win10-x64"
        assert big.attrs["layout_source"] == f"pdb nt!_POOL_TRACKER_BIG_PAGES ({pdb})"
        want = sorted((b.va, b.tag.decode("latin-1"), b.bytes) for b in pl.big if not b.freed)
        got = sorted((int(r.va), str(r.tag), int(r.bytes)) for r in big.itertuples()
                     if not r.freed)
        assert got == want and len(want) > 0
        v = d.vm()
        assert v.pool_allocation_failures == 3
        assert "nt!MmPoolFailures" in v.source("pool_allocation_failures")
        assert f"pdb {pdb}" in v.source("pool_allocation_failures")
        # dt reads a _POOL_HEADER laid out by the PDB's type, at a block the forge wrote
        blk = next(b for b in pl.blocks if b.allocated)
        h = d.dt("nt!_POOL_HEADER", blk.address)
        assert h.PoolTag.value == int.from_bytes(blk.tag, "little")
        assert h.BlockSize.value * 16 == blk.size
        assert h.PreviousSize.value * 16 == blk.previous_size
        assert h.to_dict()["PoolTag"] == int.from_bytes(blk.tag, "little")
        text = str(h)
        assert f"+0x004 PoolTag          : {int.from_bytes(blk.tag, 'little'):#x}" in text
        assert "+0x002 BlockSize        : 0y" in text
        ti = d.type_info("nt!_POOL_HEADER")
        assert ti.attrs["source"] == f"pdb {pdb}"
        assert list(ti["name"]) == ["PreviousSize", "PoolIndex", "Ulong1", "BlockSize",
                                    "PoolType", "PoolTag", "ProcessBilled",
                                    "AllocatorBackTraceIndex", "PoolTagHash"]


def test_pdb_names_the_expansion_tracker_table(forged) -> None:
    s, pl, pdb = forged
    with ntdump.open(s.path, symbols="") as d:
        explicit = d.pool.used(expansion=(pl.track_table, pl.track_entries), owners=0)
        plain = d.pool.used(owners=0)
        assert "expansion_source" not in plain.attrs
        d.load_pdb(pdb, module="nt")
        via_pdb = d.pool.used(owners=0)
        assert "nt!PoolTrackTableExpansion" in via_pdb.attrs["expansion_source"]
        assert f"= {pl.track_entries} (pdb" in via_pdb.attrs["track_entries_source"]
        cols = ["tag", "nonpaged_allocs", "nonpaged_bytes", "paged_allocs", "paged_bytes"]
        assert via_pdb[cols].astype(str).equals(explicit[cols].astype(str))
        assert not via_pdb[cols].astype(str).equals(plain[cols].astype(str))
