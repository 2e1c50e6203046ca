"""``d.search(x, within=d.modules)`` in one native call: the module ranges come from the Rust module
list and hits are attributed to modules in Rust (issue 13, item 11)."""

from __future__ import annotations

import pandas as pd
import pytest

import ntdump
from ntdump import _search
from ntdump.forge import founding_story


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory):
    return founding_story(tmp_path_factory.mktemp("sm") / "story.dmp", machine="x64")


def test_modules_search_is_one_native_call(story, monkeypatch):
    with ntdump.open(story.path) as d:
        target = d.symbol("nt!ExAllocatePool")
        generic = d.search(target, width=8, within=list(d.modules))  # the Python range path
        calls = []
        real = _search.native_search_modules

        def spy(*a, **k):
            calls.append(a)
            return real(*a, **k)

        def no_generic(*a, **k):
            raise AssertionError("within=d.modules must not take the per-range path")

        monkeypatch.setattr(_search, "native_search_modules", spy)
        monkeypatch.setattr(_search, "native_search", no_generic)
        fast = d.search(target, width=8, within=d.modules)
        assert len(calls) == 1
        assert len(fast) >= 1 and story.scenario is not None
        pd.testing.assert_frame_equal(fast, generic)
        # The hit the founding story plants: the GUID driver's IAT slot for ExAllocatePool.
        row = fast[fast["module"].astype(str).str.startswith("{")].iloc[0]
        m = d.modules.at(int(row["address"]))
        assert m is not None and m.name == row["module"]
        assert int(row["offset"]) == int(row["address"]) - m.base
        multi = d.search([target, d.symbol("nt!ExFreePoolWithTag")], width=8, within=d.modules)
        assert set(multi["pattern"].cat.categories) == {target, d.symbol("nt!ExFreePoolWithTag")}
        assert multi.attrs["pages_searched"] > 0
        lim = d.search(target, width=8, within=d.modules, limit=1)
        assert len(lim) == 1 and lim.attrs["truncated"] == (len(fast) > 1)
