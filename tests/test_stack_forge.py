"""Stacks planted by the forge (prologues emulated from the functions' real unwind codes — Wine's
x64 ntoskrnl — plus synthetic functions with machine frames and chained info; x86 EBP chains with
frame-pointer-omitted breaks) must come back from ``d.stack()`` exactly: the planted return
addresses, child-SPs and the way each frame is found."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

import ntdump
from ntdump.forge import scenario
from ntdump.forge import stack as fs
from ntdump.forge.image import MappedImage
from ntdump.forge.scenario import DEFAULT_DRIVERS, DriverSpec
from ntdump.forge.stack import CallSite
from ntdump.forge.unwind import (
    UWOP_ALLOC_LARGE,
    UWOP_SAVE_NONVOL,
    UWOP_SAVE_XMM128,
    UWOP_SET_FPREG,
    Function,
    lookup,
    runtime_functions,
    unwind_chain,
)

ZOO = DriverSpec("zoo.sys", {"ntoskrnl.exe": ["KeBugCheckEx"]}, functions=[
    Function("Trap", [("machframe", True), ("push", "rbp"), ("alloc", 0x158),
                      ("setfp", "rbp", 0x80)], calls=["Big"]),
    Function("Trap2", [("machframe", False), ("push", "rsi"), ("alloc", 0x20)], calls=["Big"]),
    Function("Big", [("push", "rbx"), ("push", "r12"), ("alloc", 0x1008),
                     ("save", "rsi", 0x1030), ("savexmm", 6, 0x30)],
             calls=["ntoskrnl.exe!KeBugCheckEx"]),
    Function("Mid", [("push", "r15"), ("alloc", 0x40)], calls=["Trap", "Big"],
             chain_saves=[("save", "r13", 0x20)]),
])


def _wine(shared_data: Path) -> Path:
    d = shared_data / "pe" / "wine-x86_64"
    if not (d / "ntoskrnl.exe").is_file():
        pytest.skip("Wine x64 PE files not in the test data")
    return d


def _calls_in(img: MappedImage, begin: int, end: int) -> list[int]:
    """Return addresses (VAs) after calls in [begin, end) (RVAs): ``E8 rel32`` whose target is in
    the image's code, and ``FF D0``-``FF D7`` (``call reg``)."""
    code = [(s.virtual_address, s.virtual_address + s.virtual_size)
            for s in img.info.sections if s.characteristics & 0x20000000]
    out = []
    for i in range(begin, end - 1):
        if img.image[i] == 0xE8 and i + 5 <= end:
            t = i + 5 + struct.unpack_from("<i", img.image, i + 1)[0]
            if any(lo <= t < hi for lo, hi in code):
                out.append(img.base + i + 5)
        elif img.image[i] == 0xFF and 0xD0 <= img.image[i + 1] <= 0xD7:
            out.append(img.base + i + 2)
    return out


def _pick(img: MappedImage, want_op: int, exclude: set[int],
          need_call: bool = True) -> tuple[int, int, int]:
    """A function (its RVA start) whose unwind codes include ``want_op`` and that holds a call
    after its prologue (unless ``need_call`` is false); returns (begin RVA, prolog size, return
    address VA or 0)."""
    for rf in runtime_functions(img.image, img.info.directory(3)):
        if rf.begin in exclude:
            continue
        chain = unwind_chain(img.image, rf)
        if len(chain) != 1 or not any(c.op == want_op for c in chain[0].codes):
            continue
        ras = _calls_in(img, rf.begin + chain[0].prolog_size, rf.end)
        if ras or not need_call:
            return rf.begin, chain[0].prolog_size, ras[0] if ras else 0
    raise AssertionError(f"no Wine function with op {want_op} and a call")


def _check(d: ntdump.Dump, planted: fs.PlantedStack, **kw: object) -> None:
    df = d.stack(**kw)  # type: ignore[arg-type]
    assert list(df.columns) == ["frame", "sp", "return_address", "symbol", "module", "how"]
    got = [(int(r.return_address), int(r.sp), r.how) for r in df.itertuples()]
    want = [(f.pc, f.sp, f.how) for f in planted.frames]
    assert got == want, (df.attrs["warnings"], [hex(g[0]) for g in got],
                         [hex(w[0]) for w in want])


@pytest.fixture(scope="module")
def wine_zoo(shared_data, tmp_path_factory):
    """Wine's x64 kernel and HAL, ACPI, the zoo driver and the culprit."""
    path = tmp_path_factory.mktemp("stack") / "wz.dmp"
    return scenario.win10_x64(path, wine_dir=_wine(shared_data),
                              modules=[DEFAULT_DRIVERS[0], ZOO], fmt="kernel")


def _frames(sc: scenario.Scenario) -> list[CallSite]:
    nt = sc.layout.module("ntoskrnl.exe").image
    zoo = sc.layout.module("zoo.sys").image
    used: set[int] = set()
    large = _pick(nt, UWOP_ALLOC_LARGE, used)
    used.add(large[0])
    xmm = _pick(nt, UWOP_SAVE_XMM128, used)
    used.add(xmm[0])
    fp = _pick(nt, UWOP_SET_FPREG, used)
    used.add(fp[0])
    save = _pick(nt, UWOP_SAVE_NONVOL, used, need_call=False)
    big = fs.return_addresses(zoo, import_name="KeBugCheckEx", function=zoo.exports["Big"])
    trap = fs.return_addresses(zoo, target=zoo.exports["Big"], function=zoo.exports["Trap"])
    mid = fs.return_addresses(zoo, target=zoo.exports["Big"], function=zoo.exports["Mid"])
    cul = fs.return_addresses(sc.culprit.image, import_name="ExAllocatePool")
    assert big and trap and mid and cul
    return [
        CallSite("ntoskrnl.exe", large[0] + nt.base + large[1]),  # the context: after the prologue
        CallSite("ntoskrnl.exe", xmm[2]),            # SAVE_XMM128 frame
        CallSite("ntoskrnl.exe", fp[2]),             # frame register (UWOP_SET_FPREG)
        CallSite("zoo.sys", big[0]),                 # pushes, ALLOC_LARGE, SAVE_NONVOL, XMM
        CallSite("zoo.sys", trap[0]),                # begins with a machine frame (error code)
        CallSite("ntoskrnl.exe", save[0] + nt.base + save[1]),  # interrupted in a SAVE_NONVOL fn
        CallSite("zoo.sys", mid[0]),                 # in Mid's chained part
        CallSite(sc.culprit.name, cul[0]),           # DriverEntry after call [ExAllocatePool]
    ]


def test_x64_wine_and_zoo_frames_come_back_exactly(wine_zoo):
    frames = _frames(wine_zoo)
    planted = fs.plant(wine_zoo, frames)
    assert [f.interrupted for f in planted.frames] == [False] * 5 + [True] + [False] * 2
    with ntdump.open(wine_zoo.path) as d:
        _check(d, planted)
        df = d.stack()
        assert df["module"].tolist()[:3] == ["nt", "nt", "nt"]
        assert df["module"].iloc[-1] == wine_zoo.culprit.name.rsplit(".", 1)[0]
        big = wine_zoo.layout.module("zoo.sys").image.exports["Big"]
        assert df["symbol"].iloc[3] == f"zoo!Big+{frames[3].pc - big:#x}"
        assert df.attrs["warnings"] == []


def test_x64_registers_are_restored_through_the_frames(wine_zoo):
    """Two functions use RBP as their frame register (Wine's SET_FPREG function, zoo!Trap) and the
    frames inside them saved RBP and gave it new values: only a walker that restores registers
    from the saved slots follows the stack through them. Overwrite every slot but the return
    addresses and the machine frame, and the walk must lose the trail."""
    frames = _frames(wine_zoo)
    planted = fs.plant(wine_zoo, frames)
    keep = set()
    for f in planted.frames[1:]:
        assert f.slot is not None
        keep.update({f.slot, f.slot + 0x18} if f.interrupted else {f.slot})
    lo, hi = planted.frames[0].sp, planted.frames[-1].sp
    from ntdump.forge.scenario import _write

    saved = {}
    for va in range(lo, hi, 8):
        if va not in keep:
            pa = wine_zoo.pt.translate(va)
            saved[pa] = wine_zoo.mem.read(pa, 8)
            wine_zoo.mem.write(pa, b"\x41" * 8)
    _write(wine_zoo.path, wine_zoo.fmt, wine_zoo.mem, wine_zoo.header, wine_zoo.layout)
    try:
        with ntdump.open(wine_zoo.path) as d:
            df = d.stack()
            got = [(int(r.return_address), r.how) for r in df.itertuples()]
            assert got != [(f.pc, f.how) for f in planted.frames]
            assert [g[0] for g in got[:3]] == [f.pc for f in planted.frames[:3]]
    finally:
        for pa, b in saved.items():
            wine_zoo.mem.write(pa, b)
        _write(wine_zoo.path, wine_zoo.fmt, wine_zoo.mem, wine_zoo.header, wine_zoo.layout)


def test_x64_context_inside_a_prologue(wine_zoo):
    """Frame 0 stopped after the first push of a function: only that code is undone."""
    nt = wine_zoo.layout.module("ntoskrnl.exe").image
    for rf in runtime_functions(nt.image, nt.info.directory(3)):
        ch = unwind_chain(nt.image, rf)
        pushes = [c for c in ch[0].codes if c.op == 0]
        if len(ch) == 1 and len(pushes) >= 2 and ch[0].prolog_size > pushes[-1].offset:
            break
    else:
        raise AssertionError("no Wine function with two pushes")
    first_push_end = min(c.offset for c in pushes)
    zoo = wine_zoo.layout.module("zoo.sys").image
    ra = fs.return_addresses(zoo, import_name="KeBugCheckEx", function=zoo.exports["Big"])[0]
    frames = [CallSite("ntoskrnl.exe", nt.base + rf.begin + first_push_end),
              CallSite("zoo.sys", ra)]
    planted = fs.plant(wine_zoo, frames)
    with ntdump.open(wine_zoo.path) as d:
        _check(d, planted)


def test_x64_context_in_an_epilogue(wine_zoo):
    """Frame 0 at Big's epilogue (add rsp, imm32; pop r12; pop rbx; ret): emulated, not unwound."""
    zoo = wine_zoo.layout.module("zoo.sys").image
    rf = lookup(runtime_functions(zoo.image, zoo.info.directory(3)),
                zoo.exports["Big"] - zoo.base)
    assert rf is not None
    code = zoo.image[rf.begin:rf.end]
    at = code.index(b"\x48\x81\xc4\x08\x10\x00\x00")
    trap = fs.return_addresses(zoo, target=zoo.exports["Big"], function=zoo.exports["Trap2"])[0]
    nt = wine_zoo.layout.module("ntoskrnl.exe").image
    save = _pick(nt, UWOP_SAVE_NONVOL, set(), need_call=False)
    frames = [CallSite("zoo.sys", zoo.base + rf.begin + at), CallSite("zoo.sys", trap),
              CallSite("ntoskrnl.exe", save[0] + nt.base + save[1])]
    planted = fs.plant(wine_zoo, frames)
    assert planted.frames[2].interrupted  # Trap2: machine frame without an error code
    with ntdump.open(wine_zoo.path) as d:
        _check(d, planted)


def test_processors_and_their_stacks(wine_zoo):
    frames = _frames(wine_zoo)
    planted = fs.plant(wine_zoo, frames)
    second = 0xFFFFC08300000000  # processor 1's stack: 16 KiB mapped here
    for off in range(0, 0x4000, 0x1000):
        pfn = wine_zoo.mem.alloc_page()
        wine_zoo.pt.map(second + off, pfn << 12)
        wine_zoo.mem.write(pfn << 12, bytes(0x1000))
    short = fs.plant(wine_zoo, frames[3:6], stack=(second, second + 0x4000), rewrite=False)
    prcbs = fs.plant_processors(wine_zoo, [planted, short, None],
                                threads=[0xFFFFC08000001230, 0xFFFFC08000004560])
    with ntdump.open(wine_zoo.path) as d:
        p = d.processors
        assert list(p.columns) == ["index", "prcb", "rip", "rsp", "current_thread"]
        assert p["prcb"].tolist() == prcbs
        assert p["rip"].tolist()[:2] == [frames[0].pc, frames[3].pc]
        assert p["rsp"].iloc[0] == planted.context["rsp"]
        assert p["rip"].isna().tolist() == [False, False, True]
        assert p["current_thread"].tolist() == [0xFFFFC08000001230, 0xFFFFC08000004560, 0]
        _check(d, planted, processor=0)
        _check(d, short, processor=1)
        with pytest.raises(ValueError, match="processor 2"):
            d.stack(processor=2)
        with pytest.raises(ValueError, match="processor 7"):
            d.stack(processor=7)


def test_x86_frame_chain_then_scan(tmp_path):
    sc = scenario.server2003_x86_pae(tmp_path / "x86.dmp")
    nt = sc.layout.module("ntoskrnl.exe").image
    in_nt = fs.return_addresses(nt, target=nt.exports["KeBugCheckEx"],
                                function=nt.exports["ExAllocatePoolWithTag"])
    in_cul = fs.return_addresses(sc.culprit.image, import_name="ExAllocatePool")
    disk = fs.return_addresses(sc.layout.module("disk.sys").image,
                               import_name="IofCompleteRequest")
    acpi = fs.return_addresses(sc.layout.module("ACPI.sys").image, import_name="IoCreateDevice")
    frames = [CallSite("ntoskrnl.exe", nt.exports["KeBugCheckEx"]),
              CallSite("ntoskrnl.exe", in_nt[0]),
              CallSite(sc.culprit.name, in_cul[0], fpo=True),  # EBP used as a register here
              CallSite("disk.sys", disk[0]),
              CallSite("ACPI.sys", acpi[0])]
    planted = fs.plant(sc, frames)
    assert [f.how for f in planted.frames] == ["context", "frame-chain", "frame-chain", "scan",
                                               "scan"]
    with ntdump.open(sc.path) as d:
        _check(d, planted)
        df = d.stack()
        assert df["symbol"].iloc[1].startswith("nt!ExAllocatePoolWithTag+0x")
        assert df["module"].iloc[2] == sc.culprit.name.rsplit(".", 1)[0]
        assert any("scanning" in w for w in df.attrs["warnings"])
        walk = d.stack_walk()
        assert walk.frames[0].frame_base == planted.frames[0].frame_base
        assert walk.frames[1].frame_base == planted.frames[1].frame_base


def test_x86_processors(tmp_path):
    sc = scenario.server2003_x86_pae(tmp_path / "x86p.dmp")
    nt = sc.layout.module("ntoskrnl.exe").image
    in_nt = fs.return_addresses(nt, target=nt.exports["KeBugCheckEx"],
                                function=nt.exports["ExAllocatePoolWithTag"])
    planted = fs.plant(sc, [CallSite("ntoskrnl.exe", nt.exports["KeBugCheckEx"]),
                            CallSite("ntoskrnl.exe", in_nt[0])])
    fs.plant_processors(sc, [planted])
    with ntdump.open(sc.path) as d:
        p = d.processors
        assert list(p.columns) == ["index", "prcb", "eip", "esp", "current_thread"]
        assert p["eip"].tolist() == [nt.exports["KeBugCheckEx"]]
        _check(d, planted, processor=0)


def test_kd_k_family_and_cli(wine_zoo, capsys):
    from ntdump.cli import main
    from ntdump.kd import KdSession, kd_addr

    frames = _frames(wine_zoo)
    planted = fs.plant(wine_zoo, frames)
    with ntdump.open(wine_zoo.path) as d:
        s = KdSession(d)
        k = s.run("k").splitlines()
        assert k[0].split() == ["Child-SP", "RetAddr", "Call", "Site"]
        assert len(k) == 1 + len(frames)
        for line, f, nxt in zip(k[1:], planted.frames, [*planted.frames[1:], None], strict=True):
            sp, ret, site = line.split(maxsplit=2)
            assert sp == kd_addr(f.sp)
            assert ret == kd_addr(nxt.pc if nxt else 0)
            assert site == d.ln(f.pc)
        kn = s.run("kn").splitlines()
        assert kn[0].startswith(" # Child-SP") and kn[3].startswith("02 ")
        kb = s.run("kb 3").splitlines()
        assert "Args to Child" in kb[0] and len(kb) == 4
        # Args to Child of frame 0 = the four qwords above frame 1's return-address slot.
        arg = struct.unpack("<Q", d.read(planted.frames[1].sp, 8))[0]
        assert kb[1].split(" : ")[1].split()[0] == kd_addr(arg)
        kv = s.run("kv")
        assert f"(TrapFrame @ {kd_addr(planted.frames[5].slot)})" in kv
    assert main(["k", str(wine_zoo.path), "-n"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(" # Child-SP") and len(out) == 1 + len(frames)
    assert main(["k", str(wine_zoo.path), "--json"]) == 0
    assert '"how":"context"' in capsys.readouterr().out


def test_max_frames_and_hostile_stacks(wine_zoo):
    import dataclasses

    from ntdump.forge.scenario import _write

    frames = _frames(wine_zoo)
    planted = fs.plant(wine_zoo, frames)
    with ntdump.open(wine_zoo.path) as d:
        assert len(d.stack(max_frames=3)) == 3
        with pytest.raises(ValueError):
            d.stack(max_frames=0)
    # A return address that points into the kernel's headers (no code, no RUNTIME_FUNCTION):
    # the walk goes on as a leaf from there, reads garbage, and stops within its bounds.
    nt = wine_zoo.layout.module("ntoskrnl.exe")
    pa = wine_zoo.pt.translate(planted.frames[2].slot)
    old = wine_zoo.mem.read(pa, 8)
    wine_zoo.mem.write(pa, struct.pack("<Q", nt.base + 0x40))
    _write(wine_zoo.path, wine_zoo.fmt, wine_zoo.mem, wine_zoo.header, wine_zoo.layout)
    with ntdump.open(wine_zoo.path) as d:
        df = d.stack(max_frames=500)
        assert df["return_address"].tolist()[:3] == [f.pc for f in planted.frames[:2]] + [
            nt.base + 0x40]
        assert len(df) < 500
    wine_zoo.mem.write(pa, old)
    # A context whose stack pointer is unmapped: frame 0 alone, and the reason.
    hdr = wine_zoo.header
    bad = dataclasses.replace(hdr, context_rsp=wine_zoo.layout.unmapped_va,
                              context_registers={**(hdr.context_registers or {}),
                                                 "rsp": wine_zoo.layout.unmapped_va})
    _write(wine_zoo.path, wine_zoo.fmt, wine_zoo.mem, bad, wine_zoo.layout)
    with ntdump.open(wine_zoo.path) as d:
        df = d.stack()
        assert df["how"].tolist() == ["context"]
        assert df.attrs["warnings"]
    _write(wine_zoo.path, wine_zoo.fmt, wine_zoo.mem, hdr, wine_zoo.layout)


@pytest.mark.parametrize("machine,fmt", [("x86", "full"), ("x64", "kernel")])
def test_founding_story_stack_names_the_culprit_call(tmp_path, machine, fmt):
    """A bug check 0x41 stack on the founding story: KeBugCheckEx ← ExAllocatePoolWithTag ← the
    culprit just after its call to ExAllocatePool ← ACPI; kernel frames named from exports."""
    from ntdump.forge import story

    st = story.founding_story(tmp_path / f"s{machine}.dmp", machine=machine, fmt=fmt)
    sc = st.scenario
    nt = sc.layout.module("ntoskrnl.exe").image
    in_nt = fs.return_addresses(nt, target=nt.exports["KeBugCheckEx"],
                                function=nt.exports["ExAllocatePoolWithTag"])
    in_cul = fs.return_addresses(sc.culprit.image, import_name="ntoskrnl.exe!ExAllocatePool")
    acpi = fs.return_addresses(sc.layout.module("ACPI.sys").image, import_name="IoCreateDevice")
    assert len(in_nt) == len(in_cul) == len(acpi) == 1
    planted = fs.plant(sc, [CallSite("ntoskrnl.exe", nt.exports["KeBugCheckEx"]),
                            CallSite("ntoskrnl.exe", in_nt[0]),
                            CallSite(sc.culprit.name, in_cul[0]),
                            CallSite("ACPI.sys", acpi[0])])
    with ntdump.open(sc.path) as d:
        _check(d, planted)
        df = d.stack()
        assert df["symbol"].iloc[0] == "nt!KeBugCheckEx"
        assert df["symbol"].iloc[1].startswith("nt!ExAllocatePoolWithTag+0x")
        cul = sc.culprit.name.rsplit(".", 1)[0]
        assert df["module"].tolist() == ["nt", "nt", cul, "ACPI"]
        # The culprit's return address is just after its `call [ExAllocatePool slot]`.
        code = d.read(int(df["return_address"].iloc[2]) - 6, 6)
        slot = sc.culprit_iat_slot
        if machine == "x64":
            disp = int.from_bytes(code[2:], "little", signed=True)
            assert code[:2] == b"\xff\x15" and int(df["return_address"].iloc[2]) + disp == slot
        else:
            assert code == b"\xff\x15" + slot.to_bytes(4, "little")


def test_random_stack_bytes_never_break_the_walk(wine_zoo):
    """Seeded random stack contents (values near module code, stack addresses, garbage) under a
    real context: the walk ends within max_frames with frames in loaded modules, never raises."""
    import random

    from ntdump.forge.scenario import _write

    frames = _frames(wine_zoo)
    planted = fs.plant(wine_zoo, frames)
    lo, hi = wine_zoo.layout.stack_top - 0x2000, wine_zoo.layout.stack_top
    mods = wine_zoo.layout.modules
    saved = {va: wine_zoo.mem.read(wine_zoo.pt.translate(va), 8) for va in range(lo, hi, 8)}
    rng = random.Random(7)
    try:
        for _ in range(12):
            for va in range(planted.frames[0].sp, hi, 8):
                kind = rng.random()
                if kind < 0.3:
                    m = rng.choice(mods)
                    v = m.base + rng.randrange(m.size)
                elif kind < 0.5:
                    v = rng.randrange(lo - 0x100, hi + 0x100)
                else:
                    v = rng.getrandbits(64)
                wine_zoo.mem.write(wine_zoo.pt.translate(va), struct.pack("<Q", v))
            _write(wine_zoo.path, wine_zoo.fmt, wine_zoo.mem, wine_zoo.header, wine_zoo.layout)
            with ntdump.open(wine_zoo.path) as d:
                df = d.stack(max_frames=100)
                assert 1 <= len(df) <= 100
                assert df["module"].notna().all()
    finally:
        for va, b in saved.items():
            wine_zoo.mem.write(wine_zoo.pt.translate(va), b)
        _write(wine_zoo.path, wine_zoo.fmt, wine_zoo.mem, wine_zoo.header, wine_zoo.layout)
