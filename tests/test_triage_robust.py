"""A readable dump never makes triage raise: kernel structures corrupted at random give notes, not
exceptions (the dump stays readable: only memory contents are damaged, never the container)."""

from __future__ import annotations

import random
import shutil

import ntdump
from ntdump import forge


def test_triage_survives_corrupted_kernel_memory(tmp_path):
    st = forge.founding_story(tmp_path / "story.dmp")
    layout = st.scenario.layout
    pt = st.scenario.pt
    # Pages worth damaging: KDBG, the module list area, the pool tables and variables.
    targets = [layout.kdbg, layout.ps_loaded_module_list, layout.pool[0], st.pool.track_table,
               st.pool.big_table, st.pool.track_variable, *(m.ldr_entry for m in layout.modules)]
    pas = sorted({pt.translate(va) & ~0xFFF for va in targets if pt.translate(va) is not None})
    with ntdump.open(st.path) as d:
        runs = d._d.info()["file_runs"]

    def file_offset(pa: int) -> int:
        pfn = pa >> 12
        for base, count, off in runs:
            if base <= pfn < base + count:
                return off + ((pfn - base) << 12)
        raise AssertionError(hex(pa))

    rng = random.Random(1234)
    for i in range(25):
        p = tmp_path / f"c{i}.dmp"
        shutil.copyfile(st.path, p)
        with open(p, "r+b") as f:
            for _ in range(rng.randint(1, 40)):
                pa = rng.choice(pas) + rng.randrange(0x1000 - 8)
                f.seek(file_offset(pa))
                f.write(rng.randbytes(rng.choice([1, 2, 4, 8])))
        with ntdump.open(p) as d:
            d.add_symbols(st.symbols)
            r = ntdump.triage(d)  # must not raise
            assert r.to_dict()["schema"].startswith("ntdump.triage/")
            assert r.text()
        p.unlink()
