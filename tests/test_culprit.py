"""Issue 10, sections 2 and 3: d.analyze() and bucket ids, evidence-ranked culprits in triage.

The dumps come from ``ntdump.forge.suspects.crash_story``: a GUID-named culprit among legitimate
importers of ExAllocatePool (Wine's real drivers, read from the shared test data), neither first
nor last by name or load order, in three families (2003 x86 PAE 0x41, 7 x64 0xC2, 10 x64 0xD1),
and healthy variants of the same machines.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil

import pytest

import ntdump
import ntdump.batch
from ntdump import culprits
from ntdump.analyze import bucket_id, bucket_prefix, function_of
from ntdump.cli import main
from ntdump.forge import suspects
from ntdump.forge.header import DEFAULT_SYSTEM_TIME
from ntdump.kd import KdSession

DATA = pathlib.Path(os.environ.get("NTDUMP_TEST_DATA",
                                   pathlib.Path(__file__).parents[2] / "shared" / "data"))
WINE = DATA / "pe"
DOCS = pathlib.Path(__file__).parents[1] / "docs"
FAMILIES = ("2003", "win7", "win10")
KD = suspects.CULPRIT.rsplit(".", 1)[0]
HOUR = 36_000_000_000  # FILETIME units

needs_wine = pytest.mark.skipif(not (WINE / "wine-i386" / "hidclass.sys").is_file(),
                                reason=f"Wine PE files not found under {WINE} "
                                "(set NTDUMP_TEST_DATA)")


@pytest.fixture(scope="module")
def stories(tmp_path_factory):
    if not (WINE / "wine-i386" / "hidclass.sys").is_file():
        pytest.skip(f"Wine PE files not found under {WINE} (set NTDUMP_TEST_DATA)")
    root = tmp_path_factory.mktemp("suspects")
    out = {}
    for fam in FAMILIES:
        for leak in (True, False):
            out[fam, leak] = suspects.crash_story(root / f"{fam}-{'leak' if leak else 'ok'}.dmp",
                                                  fam, wine_dir=WINE, leak=leak)
    return out


def _driver_names(d):
    return [m for m in d.modules if m.kd_name not in ("nt", "hal")]


# -- the forge: the culprit is hidden among legitimate importers ------------------------------
@pytest.mark.parametrize("fam", FAMILIES)
def test_culprit_neither_first_nor_last(stories, fam):
    s = stories[fam, True]
    imp = s.importers
    assert suspects.CULPRIT in imp and len(imp) >= 6
    assert set(suspects.LEGIT_IMPORTERS) <= set(imp)
    for order in (imp, sorted(imp, key=str.lower), sorted(imp)):
        assert order[0] != suspects.CULPRIT and order[-1] != suspects.CULPRIT
    names = [m.name for m in s.layout.modules]
    assert names.index(suspects.CULPRIT) not in (0, len(names) - 1)


@needs_wine
@pytest.mark.parametrize("fam", FAMILIES)
@pytest.mark.parametrize("leak", [True, False])
def test_machine_could_exist(stories, fam, leak):
    """The forged machine obeys forge.machine's rules (issue 9): counters as written, and as
    ntdump reads the tracker back."""
    from ntdump.forge import machine

    s = stories[fam, leak]
    physical = sum(n for _, n in s.runs)
    highest = max(b + n for b, n in s.runs) - 1
    with ntdump.open(s.path) as d:
        used = d.pool.used(owners=0)
        problems = machine.check_counters(
            s.vm, family=s.layout.family, machine=s.machine, physical_pages=physical,
            highest_pfn=highest, pae=s.machine == "x86",
            tracker_nonpaged_bytes=int(used["nonpaged_bytes"].sum()),
            tracker_paged_bytes=int(used["paged_bytes"].sum()), tags=len(used))
        assert d.vm().physical_memory_pages == physical
    assert problems == [], problems


@needs_wine
def test_wine_importers_checked_by_pefile():
    pefile = pytest.importorskip("pefile")
    for arch in ("wine-i386", "wine-x86_64"):
        for name in suspects.WINE_IMPORTERS:
            pe = pefile.PE(str(WINE / arch / name), fast_load=False)
            names = {i.name for e in pe.DIRECTORY_ENTRY_IMPORT for i in e.imports
                     if e.dll.lower() == b"ntoskrnl.exe"}
            assert b"ExAllocatePool" in names, (arch, name)
            pe.close()


@pytest.mark.parametrize("fam", FAMILIES)
def test_importers_found_both_ways(stories, fam):
    d = ntdump.open(stories[fam, True].path)
    imp = d.importers("nt!ExAllocatePool")
    got = {str(m) for m in imp["module"]}
    assert got == {n.rsplit(".", 1)[0] for n in stories[fam, True].importers}


# -- section 3: evidence-ranked culprits -------------------------------------------------------
@pytest.mark.parametrize("fam", FAMILIES)
def test_triage_names_the_culprit_first(stories, fam):
    s = stories[fam, True]
    d = ntdump.open(s.path)
    r = ntdump.triage(d).to_dict()
    top = r["suspect_drivers"][0]
    assert top["name"] == suspects.CULPRIT
    # the score is the sum of the documented weights it shows
    assert top["score"] == pytest.approx(sum(e["weight"] for e in top["evidence"]))
    kinds = {e["name"] for e in top["evidence"]}
    assert {"owns_top_tag", "leaked_blocks", "guid_name", "path_outside",
            "build_machine_pdb"} <= kinds
    if fam == "win10":  # 0xD1: parameter 4 is the faulting IP, inside the culprit
        assert "faulting_ip" in kinds
    # every legitimate importer ranks below, by a clear margin
    others = {x["name"]: x["score"] for x in r["suspect_drivers"][1:]}
    assert set(suspects.LEGIT_IMPORTERS) <= set(others)
    assert top["score"] - max(others.values()) >= culprits.SEPARATION
    # every verdict that blames a driver names the culprit and no other driver
    # file names, and the kd names of the other importers ("disk" is also an English word)
    drivers = [m.name for m in _driver_names(d)] + [n.rsplit(".", 1)[0]
                                                    for n in suspects.LEGIT_IMPORTERS]
    blaming = [v for v in r["verdicts"] if "caused by" in v["text"] or "leaked by" in v["text"]]
    assert blaming, r["verdicts"]
    for v in blaming:
        assert suspects.CULPRIT in v["text"]
        for name in drivers:
            if name not in (suspects.CULPRIT, KD):
                assert not re.search(rf"\b{re.escape(name)}\b", v["text"]), (name, v["text"])
        assert any(suspects.CULPRIT in e for e in v["evidence"])
        for e in v["evidence"]:  # the evidence names no other driver
            for name in drivers:
                if name not in (suspects.CULPRIT, KD):
                    assert not re.search(rf"\b{re.escape(name)}\b", e), (name, e)
    assert "leaked by " + suspects.CULPRIT in r["pool"]["verdict"]


@pytest.mark.parametrize("fam", FAMILIES)
def test_triage_report_valid_and_shows_weights(stories, fam):
    jsonschema = pytest.importorskip("jsonschema")
    d = ntdump.open(stories[fam, True].path)
    rep = ntdump.triage(d)
    doc = json.loads(rep.to_json())
    jsonschema.validate(doc, json.loads((DOCS / "triage-schema.json").read_text()))
    text = rep.text()
    assert "(+2 guid_name)" in text and "leaked_blocks)" in text
    assert doc["bugcheck"]["bucket"] == d.analyze().bucket


@pytest.mark.parametrize("fam", FAMILIES)
def test_healthy_blames_no_one(stories, fam):
    d = ntdump.open(stories[fam, False].path)
    r = ntdump.triage(d).to_dict()
    assert r["suspect_drivers"] == []
    names = [m.name for m in _driver_names(d)]
    for v in r["verdicts"]:
        assert "caused by" not in v["text"] and "leaked by" not in v["text"]
        for n in names:
            assert n not in v["text"]
    assert r["pool"]["verdict"].startswith("pool is healthy")
    assert d.analyze().probably_caused_by is None
    assert d.analyze().bucket == "MANUALLY_INITIATED_CRASH"


def test_weights_documented():
    doc = (DOCS / "triage.md").read_text()
    for name, w in culprits.WEIGHTS.items():
        assert re.search(rf"`{name}`\s*\|\s*{w:g}\s*\|", doc), name
    assert f"{culprits.SEPARATION:g}" in doc


def test_tie_is_reported_not_picked(stories):
    """Two legitimate importers with the same evidence: the ranking says they are not separated,
    and the report's verdict names both and says so."""
    d = ntdump.open(stories["win10", False].path)
    owners = [("hidparse", "imports nt!ExAllocatePool (both)"),
              ("usbd", "imports nt!ExAllocatePool (both)")]
    rk = culprits.rank(d, None, top_tag="None", top_tag_owners=owners, leaking=True)
    assert sorted(rk.tied) == ["hidparse.sys", "usbd.sys"]
    assert rk.suspects[0].score == rk.suspects[1].score
    # and with the culprit's evidence, it is not a tie
    owners.append((KD, "imports nt!ExAllocatePool (both)"))
    rk = culprits.rank(d, None, top_tag="None", top_tag_owners=owners, leaking=True)
    assert rk.tied == [] and rk.best is not None and rk.best.name == suspects.CULPRIT


def test_tie_in_report(stories, monkeypatch):
    d = ntdump.open(stories["2003", True].path)
    real = culprits.rank

    def tied(*a, **kw):
        rk = real(*a, **kw)
        a_, b_ = rk.suspects[0], rk.suspects[1]
        b_.evidence = list(a_.evidence)
        return culprits.Ranking([a_, b_], [a_.name, b_.name], rk.notes)

    monkeypatch.setattr(culprits, "rank", tied)
    r = ntdump.triage(d).to_dict()
    pool = next(v for v in r["verdicts"] if "depletion" in v["text"])
    assert " or " in pool["text"] and "does not separate" in pool["text"]
    assert any("does not separate" in e for e in pool["evidence"])


@pytest.mark.parametrize(("name", "expect"), [
    ("kx7q2vbn.sys", True), ("3f9a0c1e.sys", True), ("hidclass.sys", False),
    ("1394ohci.sys", False), ("i8042prt.sys", False), ("storahci.sys", False),
    ("a.sys", False), ("deadbeef.sys", False)])
def test_random_looking(name, expect):
    assert culprits.random_looking(name) is expect


@pytest.mark.parametrize(("path", "expect"), [
    ("\\SystemRoot\\System32\\drivers\\ACPI.sys", None),
    ("\\SystemRoot\\system32\\ntoskrnl.exe", None),
    ("\\WINDOWS\\system32\\DRIVERS\\disk.sys", None),
    ("\\SystemRoot\\System32\\DriverStore\\FileRepository\\x.inf_amd64_1\\x.sys", None),
    ("\\??\\C:\\ProgramData\\Vndr\\a.sys", "path_outside"),
    ("\\SystemRoot\\System32\\evil\\a.sys", "path_outside"),
    ("\\??\\C:\\Windows\\Temp\\a.sys", "path_outside"),
    ("", "path_missing")])
def test_path_evidence(path, expect):
    got = culprits.path_evidence(path)
    assert (got[0] if got else None) == expect


# -- section 2: analyze and buckets ------------------------------------------------------------
EXPECTED_PREFIX = {"2003": "0x41_POOL_EMPTY", "win7": "0xC2_8", "win10": "AV"}


@pytest.mark.parametrize("fam", FAMILIES)
def test_analyze_without_stack_parts(stories, fam):
    s = stories[fam, True]
    a = ntdump.open(s.path).analyze()
    bc = a.to_dict()["bugcheck"]
    assert bc["code"] == s.bugcheck_code and bc["params"] == list(s.bugcheck_params)
    assert all(bc["meanings"]), bc  # every parameter explained for these codes
    assert a.bucket.startswith(EXPECTED_PREFIX[fam] + "_")
    json.loads(a.to_json())
    assert "FAILURE_BUCKET_ID:  " + a.bucket in a.text()
    assert a.bucket in a._repr_html_()
    if fam == "win10":
        assert a.faulting_ip == s.culprit_call_return and a.faulting_module == KD
        assert a.probably_caused_by["image"] == suspects.CULPRIT


@pytest.mark.parametrize("fam", FAMILIES)
def test_analyze_bucket_and_probably_caused_by(stories, fam):
    """0x41 and 0xC2: from the walked stack (the culprit is the allocator's caller); 0xD1: the
    faulting IP is in the culprit."""
    a = ntdump.open(stories[fam, True].path).analyze()
    assert a.bucket == f"{EXPECTED_PREFIX[fam]}_{KD}!unknown_function"
    assert a.probably_caused_by["image"] == suspects.CULPRIT
    if fam != "win10":
        assert a.allocator_callers == [KD]


@pytest.mark.parametrize("fam", FAMILIES)
def test_stack_lists_the_culprit_and_kernel_frames(stories, fam):
    s = stories[fam, True]
    df = ntdump.open(s.path).stack()
    assert list(df.columns) == ["frame", "sp", "return_address", "symbol", "module", "how"]
    syms = [str(x) for x in df["symbol"]]
    mods = [str(x) for x in df["module"]]
    i = mods.index(KD)
    assert syms[i].startswith(KD + "+0x")
    # the culprit's frame is at the return address just after its call to ExAllocatePool
    assert int(df["return_address"].iloc[i]) == s.culprit_call_return
    assert [int(v) for v in df["return_address"]] == [f.pc for f in s.frames]
    assert str(df["how"].iloc[i]) == ("frame-chain" if fam == "2003" else "unwind")
    above = syms[:i]
    assert above[0].startswith("nt!KeBugCheckEx")
    if fam == "win10":
        assert all(x.startswith("nt!") for x in above)
    elif fam == "win7":  # x64 ExAllocatePool tail-jumps: no frame of its own
        assert [x.split("+")[0] for x in above] == ["nt!KeBugCheckEx", "nt!ExAllocatePoolWithTag"]
    else:
        assert [x.split("+")[0] for x in above] == ["nt!KeBugCheckEx", "nt!ExAllocatePoolWithTag",
                                                    "nt!ExAllocatePool"]


def test_bucket_rule():
    assert bucket_prefix(0xD1, [0, 2, 0, 0]) == "AV"
    assert bucket_prefix(0x7E, [0xC0000005, 0, 0, 0]) == "AV"
    assert bucket_prefix(0x7E, [0x80000003, 0, 0, 0]) == "0x7E"
    assert bucket_prefix(0x1000007E, [0xFFFFFFFFC0000005, 0, 0, 0]) == "AV"  # sign-extended
    assert bucket_prefix(0xC2, [0x9B, 0, 0, 0]) == "0xC2_9B"
    assert bucket_id(0x41, [1, 2, 3, 4], "mydrv!Alloc+0x10") == "0x41_POOL_EMPTY_mydrv!Alloc"
    assert bucket_id(0xD1, [1, 2, 3, 4], "mydrv+0x1080") == "AV_mydrv!unknown_function"
    assert bucket_id(0x133, [1, 2, 3, 4], None) == "0x133_UNKNOWN"
    assert function_of("nt!ExAllocatePool+0x13") == ("nt", "ExAllocatePool")


def test_cli_analyze_and_kd(stories, capsys):
    p = str(stories["win10", True].path)
    assert main(["analyze", p, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["bucket"].startswith("AV_" + KD)
    assert main(["analyze", p]) == 0
    assert "Probably caused by : " + suspects.CULPRIT in capsys.readouterr().out
    with ntdump.open(p) as d:
        out = KdSession(d).run("!analyze -v")
        assert "DRIVER_IRQL_NOT_LESS_OR_EQUAL (d1)" in out and "FAILURE_BUCKET_ID:  AV_" in out
        short = KdSession(d).run("!analyze")
        assert short.startswith("DRIVER_IRQL_NOT_LESS_OR_EQUAL (d1)\nArguments:")
        assert short.endswith("FAILURE_BUCKET_ID:  " + d.analyze().bucket)
        assert "Probably caused by : " + suspects.CULPRIT in short


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """Four machines: srv1 and srv2 crash in 0xD1 (twice on srv1), srv3 in 0x41, srv4 healthy
    (manual crash); times a day apart; one dump copied twice (same SHA-256: counted once)."""
    if not (WINE / "wine-i386" / "hidclass.sys").is_file():
        pytest.skip(f"Wine PE files not found under {WINE} (set NTDUMP_TEST_DATA)")
    root = tmp_path_factory.mktemp("fleet")
    plan = [("srv1", "a.dmp", "win10", True, 0), ("srv1", "b.dmp", "win10", True, 24),
            ("srv2", "a.dmp", "win10", True, 48), ("srv3", "a.dmp", "2003", True, 12),
            ("srv4", "a.dmp", "win7", False, 36)]
    for machine, name, fam, leak, h in plan:
        (root / machine).mkdir(exist_ok=True)
        suspects.crash_story(root / machine / name, fam, wine_dir=WINE, leak=leak,
                             system_time=DEFAULT_SYSTEM_TIME + h * HOUR)
    shutil.copy(root / "srv3" / "a.dmp", root / "srv3" / "copy.dmp")
    return root


def test_batch_buckets(fleet):
    res = ntdump.batch.run([str(fleet)], analyses=["analyze"], engine="serial")
    assert (res["status"]["status"].astype(str) == "ok").all()
    a = res["analyze"]
    assert len(a) == 6 and list(a.columns[:3]) == ["dump", "dump_sha256", "bucket"]
    b = res["buckets"]
    assert list(b.columns) == ["bucket", "dumps", "machines", "first_seen", "last_seen"]
    rows = {str(r["bucket"]): r for _, r in b.iterrows()}
    av = next(k for k in rows if k.startswith("AV_"))
    assert str(b["bucket"].iloc[0]) == av  # most dumps first
    assert (rows[av]["dumps"], rows[av]["machines"]) == (3, 2)
    assert rows[av]["last_seen"] - rows[av]["first_seen"] == __import__("pandas").Timedelta(
        hours=48)
    pool = next(k for k in rows if k.startswith("0x41_POOL_EMPTY_"))
    assert (rows[pool]["dumps"], rows[pool]["machines"]) == (1, 1)  # the copy counts once
    assert rows["MANUALLY_INITIATED_CRASH"]["dumps"] == 1
    # the same answer from two local workers
    res2 = ntdump.batch.run([str(fleet)], analyses=["analyze"], engine="local", workers=2,
                            progress=False)
    __import__("pandas").testing.assert_frame_equal(res2["buckets"], b)


def test_cli_batch_prints_buckets(fleet, tmp_path, capsys):
    out = tmp_path / "res"
    assert main(["batch", str(fleet), "--out", str(out), "--engine", "serial",
                 "--analyses", "info,analyze", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "crash buckets" in text and "MANUALLY_INITIATED_CRASH" in text
    assert (out / "buckets.parquet").is_file()
    back = ntdump.batch.read_parquet(out)
    assert int(back["buckets"]["dumps"].sum()) == 5


# -- the analyses given the planted ground truth as the stack (independent of the walker) --------
def _planted_stack(d, s):
    import pandas as pd

    fr = s.frames
    rows = {"frame": [], "sp": [], "return_address": [], "symbol": [], "module": [], "how": []}
    for i, f in enumerate(fr):
        m = d.modules.at(f.pc)
        rows["frame"].append(i)
        rows["sp"].append(f.sp)
        rows["return_address"].append(f.pc)  # d.stack(): where frame i is
        rows["symbol"].append(d.ln(f.pc))
        rows["module"].append(m.kd_name)
        rows["how"].append(f.how)
    return pd.DataFrame(rows)


@pytest.mark.parametrize("fam", FAMILIES)
def test_evidence_from_the_stack(stories, fam, monkeypatch):
    """With the crash stack (here the planted ground truth standing in for d.stack()), the culprit
    is the allocator's caller (0x41, 0xC2) or on the stack under the faulting IP (0xD1), the
    bucket names it, and it still ranks first by a clear margin."""
    s = stories[fam, True]
    d = ntdump.open(s.path)
    monkeypatch.setattr(type(d), "stack", lambda self, *a, **k: _planted_stack(self, s),
                        raising=False)
    a = d.analyze()
    assert a.bucket == f"{EXPECTED_PREFIX[fam]}_{KD}!unknown_function"
    assert a.probably_caused_by["image"] == suspects.CULPRIT
    assert a.probably_caused_by["frame"] == next(f.index for f in s.frames
                                                 if f.module == suspects.CULPRIT)
    assert a.allocator_callers == ([] if fam == "win10" else [KD])
    assert "STACK_TEXT" in a.text()
    if fam != "win10":
        assert "nt!ExAllocatePoolWithTag+0x" in a.text()
    r = ntdump.triage(d).to_dict()
    top = r["suspect_drivers"][0]
    assert top["name"] == suspects.CULPRIT
    kinds = {e["name"] for e in top["evidence"]}
    assert ("allocator_caller" in kinds) == (fam != "win10")
    assert ("on_crash_stack" in kinds) == (fam == "win10")
    crash = next(v for v in r["verdicts"] if v["text"].startswith("Bug check"))
    assert crash["text"].endswith("most likely caused by " + suspects.CULPRIT)
    healthy = ntdump.open(stories[fam, False].path)
    monkeypatch.setattr(type(healthy), "stack",
                        lambda self, *a, **k: _planted_stack(self, stories[fam, False]),
                        raising=False)
    assert ntdump.triage(healthy).to_dict()["suspect_drivers"] == []


def test_real_triage_dump_bucket():
    """The real Windows 10 triage dump: 0x1000007E with STATUS_ACCESS_VIOLATION (stored
    sign-extended) at amdppm+0x334c — an AV bucket in amdppm, amdppm the probable cause."""
    path = DATA / "dumps" / "win10-19041-x64-triage.dmp"
    if not path.is_file():
        pytest.skip(f"real triage dump not found at {path}")
    with ntdump.open(path) as d:
        a = d.analyze()
        assert a.bucket.startswith("AV_amdppm!")
        assert a.probably_caused_by["image"].lower() == "amdppm.sys"
        assert a.faulting_symbol == "amdppm+0x334c"
        r = ntdump.triage(d).to_dict()
        assert r["suspect_drivers"][0]["name"].lower() == "amdppm.sys"
