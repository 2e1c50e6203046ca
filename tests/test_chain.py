"""The investigation's chain without symbols (DESIGN.md steps 3-6), from Python, on a forged
Server-2003-like x86 PAE dump and a forged Windows 10 x64 dump."""

from __future__ import annotations

import pytest

import ntdump
from ntdump.forge import scenario
from ntdump.forge.scenario import CULPRIT_NAME


@pytest.mark.parametrize("make", [scenario.server2003_x86_pae, scenario.win10_x64],
                         ids=["2003-x86-pae", "win10-x64"])
def test_symbol_search_dps_lmi(tmp_path, make):
    s = make(tmp_path / "chain.dmp")
    with ntdump.open(s.path) as d:
        # x nt!ExAllocatePool
        addr = d.symbol("nt!ExAllocatePool")
        assert addr == s.ex_allocate_pool
        # !for_each_module s-d @#Base @#End <addr>: exactly one hit, the culprit's IAT slot
        width = d.info.pointer_size
        hits = d.search(addr, width=width, within=d.modules)
        assert list(hits["address"]) == [s.culprit_iat_slot]
        assert hits["module"].iloc[0] == CULPRIT_NAME.removesuffix(".sys") or \
            hits["module"].iloc[0].lower() == CULPRIT_NAME.lower()
        # dps <hit>: the neighbouring slots are other kernel exports
        slots = d.dps(s.culprit_iat_slot, 4)
        assert slots["symbol"].iloc[0] == "nt!ExAllocatePool"
        assert all(sym.startswith("nt!") for sym in slots["symbol"])
        # !lmi <hit>: the owner is the GUID-named driver, probably not on disk
        info = d.lmi(s.culprit_iat_slot)
        text = str(info)
        assert CULPRIT_NAME in text
        assert "GUID" in text
        # importers: found by the import table and by the pointer search
        imp = d.importers("nt!ExAllocatePool")
        row = imp[imp["module"].str.lower().str.startswith(CULPRIT_NAME.lower()[:10])]
        assert len(row) == 1
        assert row["how_found"].iloc[0] == "both"
        assert int(row["iat_slot"].iloc[0]) == s.culprit_iat_slot
