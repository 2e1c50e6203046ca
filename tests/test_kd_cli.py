"""The kd command line a WinDbg user can trust (issue 13, items 1-9).

Layouts are compared with the sample output of Microsoft's documentation pages of each command
(learn.microsoft.com: db/dd/dq "d, da, db, dc, dd, dD, df, dp, dq, du, dw (Display Memory)",
"dds, dps, dqs (Display Words and Symbols)", "x (Examine Symbols)", "lm (List Loaded Modules)",
"!poolused"); the transcribed lines are below each test's header.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import ntdump
from ntdump.cli import build_parser, main
from ntdump.forge import founding_story
from ntdump.kd import COMMAND_HELP, KdSession, parse_lm_options

KD64 = r"[0-9a-f]{8}`[0-9a-f]{8}"


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The founding story (Server 2003 x86 PAE): nt at e0800000, nothing mapped just below."""
    return founding_story(tmp_path_factory.mktemp("story") / "story.dmp").path


@pytest.fixture(scope="module")
def story64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return founding_story(tmp_path_factory.mktemp("story64") / "s64.dmp", machine="x64").path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


# -- 1. ?? for memory that cannot be read --------------------------------------------------------
# Documented db line: address, two spaces, 8 bytes "-" 8 bytes, two spaces, the characters;
# WinDbg prints "??" per byte (and "????????" per dword) it cannot read.
DB_LINE = re.compile(
    r"^(?P<addr>\S+)  (?P<hex>(?:[0-9a-f?]{2}[ -]){15}[0-9a-f?]{2})  (?P<txt>.{16})$")


def test_db_prints_question_marks_never_zeros(capsys, triage_dump):
    rc, out, _ = run(capsys, "db", triage_dump, "0", "-l", "16")
    assert rc == 0
    m = DB_LINE.match(out.splitlines()[0])
    assert m, out
    assert m["addr"] == "00000000`00000000"
    assert m["hex"] == " ".join(["??"] * 8) + "-" + " ".join(["??"] * 8)
    assert "00" not in m["hex"] and m["txt"] == "?" * 16
    # The API zero-fills only when asked.
    with ntdump.open(triage_dump) as d:
        assert d.read(0, 16, pad=True) == bytes(16)
        with pytest.raises(ntdump.TranslationError):
            d.read(0, 16)


def test_db_dd_dq_straddling_a_hole(capsys, story):
    rc, out, _ = run(capsys, "db", story, "e07ffff0", "-l", "0x20")
    lines = out.splitlines()
    assert rc == 0 and len(lines) == 2
    assert DB_LINE.match(lines[0])["hex"].count("??") == 16
    m = DB_LINE.match(lines[1])
    assert m["addr"] == "e0800000" and m["hex"].startswith("4d 5a") and m["txt"].startswith("MZ")
    _, out, _ = run(capsys, "dd", story, "e07ffff0", "-l", "0x20")
    assert out.splitlines() == ["e07ffff0  ???????? ???????? ???????? ????????",
                                "e0800000  00905a4d 00000003 00000004 0000ffff"]
    _, out, _ = run(capsys, "dq", story, "e07ffff0", "-l", "0x20")
    assert out.splitlines()[0] == "e07ffff0  ????????`???????? ????????`????????"
    assert out.splitlines()[1] == "e0800000  00000003`00905a4d 0000ffff`00000004"


def test_dps_prints_question_marks_per_element(story):
    with ntdump.open(story) as d:
        out = KdSession(d).run("dps e07ffff8 L4").splitlines()
    assert out == ["e07ffff8  ????????", "e07ffffc  ????????",
                   "e0800000  00905a4d", "e0800004  00000003"]


# -- 2. x -----------------------------------------------------------------------------------------
# Documented: one symbol a line, its address then module!name.
X_LINE = re.compile(r"^(?P<addr>[0-9a-f]{8}(?:`[0-9a-f]{8})?|\?{8}(?:`\?{8})?) (?P<mod>[^!\s]+)!"
                    r"(?P<name>\S+)(?: \(forwarded to (?P<fwd>\S+)\))?$")


def test_x_lists_matches_as_windbg(capsys, story):
    rc, out, err = run(capsys, "x", story, "nt!ExAlloc*")
    assert rc == 0 and not err
    rows = [X_LINE.match(line) for line in out.splitlines()]
    assert rows and all(rows), out
    names = {r["name"]: r["addr"] for r in rows}
    with ntdump.open(story) as d:
        assert names["ExAllocatePool"] == f"{d.symbol('nt!ExAllocatePool'):08x}"
    assert set(names) == {n for n in names if n.lower().startswith("exalloc")}


def test_x_says_why_nothing_is_listed(capsys, triage_dump):
    rc, out, err = run(capsys, "x", triage_dump, "nosuch!foo")
    assert rc == 1 and out == "" and "no loaded module matches 'nosuch'" in err
    assert err.count("\n") == 1
    # The real triage dump did not capture ntoskrnl's export directory.
    rc, out, err = run(capsys, "x", triage_dump, "nt!ExAlloc*")
    assert rc == 1 and out == ""
    assert "export directory" in err and "not readable" in err


def test_x_forwarded_exports(capsys, tmp_path, shared_data):
    """Wine's ntoskrnl.exe forwards Nls* variables to ntdll and hal.dll forwards KeLowerIrql to
    ntoskrnl.exe (pefile agrees: test_forge_kernel.py); `x nt!*` used to fail with a TypeError."""
    from ntdump.forge import scenario

    if not (shared_data / "pe" / "wine-x86_64").is_dir():
        pytest.skip("Wine PE files not in the shared data")
    path = tmp_path / "wine.dmp"
    scenario.wine_drivers(path, "x86_64", wine_dir=shared_data / "pe")
    rc, out, err = run(capsys, "x", path, "nt!*")
    assert rc == 0 and "TypeError" not in out + err
    rows = [X_LINE.match(line) for line in out.splitlines()]
    assert all(rows)
    fwd = {r["name"]: (r["addr"], r["fwd"]) for r in rows if r["fwd"]}
    assert fwd["NlsAnsiCodePage"] == ("????????`????????", "ntdll.NlsAnsiCodePage")
    _, out, _ = run(capsys, "x", path, "hal!KeLowerIrql")
    m = X_LINE.match(out.strip())
    assert m and m["fwd"] == "ntoskrnl.exe.KeLowerIrql" and re.fullmatch(KD64, m["addr"])


# -- 3. lm ----------------------------------------------------------------------------------------
# Documented: "start             end                 module name" (64-bit), start and end in kd
# form, the module name, its symbol state; sorted by start address unless "sm".
LM_HEAD64 = "start             end                 module name"


def _lm_rows(text: str) -> list[list[str]]:
    out = []
    for line in text.splitlines()[1:]:
        if not line.strip() or line.startswith("Unloaded"):
            break
        out.append(line.split())
    return out


def test_lm_sorted_and_filtered(capsys, triage_dump):
    rc, out, _ = run(capsys, "lm", triage_dump)
    assert rc == 0 and out.splitlines()[0] == LM_HEAD64
    rows = _lm_rows(out)
    with ntdump.open(triage_dump) as d:
        assert len(rows) == len(d.modules) > 100
        assert [r[0] for r in rows] == sorted(r[0] for r in rows)
        # The module list is in load order, which is not address order in this dump.
        assert [m.base for m in d.modules] != sorted(m.base for m in d.modules)
        amd = sorted((m for m in d.modules if m.kd_name.lower().startswith("amd")),
                     key=lambda m: m.base)
    for line in out.splitlines()[1:4]:
        assert re.match(rf"^{KD64} {KD64}   \S+", line)
    _, out, _ = run(capsys, "lm", triage_dump, "m", "amd*")
    assert [r[2] for r in _lm_rows(out)] == [m.kd_name for m in amd]
    assert len(amd) == 5
    _, out, _ = run(capsys, "lm", triage_dump, "vm", "amdppm")
    assert [r[2] for r in _lm_rows(out)[:1]] == ["amdppm"]
    assert "    Image path: \\SystemRoot\\System32\\drivers\\amdppm.sys" in out
    assert "    ImageSize:        0003B000" in out
    with ntdump.open(triage_dump) as d:
        s = KdSession(d)
        assert s.run("lmvm amdppm") == out.rstrip("\n")
        assert s.run("lmv m amdppm") == out.rstrip("\n")
        assert s.last_error is None


def test_lm_unloaded_loaded_only_and_symbols(story):
    with ntdump.open(story) as d:
        s = KdSession(d)
        full = s.run("lm")
        assert "\nUnloaded modules:\n" in full
        assert "dump_storport.sys" in full.split("Unloaded modules:")[1]
        only = s.run("lm o")
        assert "Unloaded" not in only and only == full.split("\n\nUnloaded")[0]
        lml = s.run("lml")
        names = [r[2] for r in _lm_rows(lml)]
        assert "nt" in names and "ACPI" not in names  # ACPI's image has no export directory
        assert all(r[3:5] == ["(export", "symbols)"] for r in _lm_rows(lml))
        assert s.run("lm 1m m n*").splitlines() == ["nt", "Ntfs"]
        assert s.run("lm sm").splitlines()[1].split()[2] == "ACPI"
        assert s.run("lm a e0801000").splitlines()[1].split()[2] == "nt"
    o = parse_lm_options("vmamdppm")
    assert o.verbose and o.pattern == "amdppm"


# -- 4. !poolused ---------------------------------------------------------------------------------
def test_poolused_wide_numbers_and_descriptions(story):
    with ntdump.open(story) as d:
        real = d.pool.used()
        big = real.copy()
        big["nonpaged_bytes"] = big["nonpaged_bytes"].astype("uint64") * 1000  # 10-digit bytes
        big["paged_bytes"] = (big["paged_bytes"].astype("uint64") + 1) * 1_000_003
        d.pool.used = lambda *a, **k: big  # type: ignore[method-assign]
        text = d.pool.used_text(sort="nonpaged")
    lines = text.splitlines()
    assert max(len(str(v)) for v in big["nonpaged_bytes"]) == 11
    rows = [line for line in lines[5:] if not line.startswith(" TOTAL")]
    total = lines[-1]
    for line in rows:
        nums, _, desc = line.partition("\t")
        tag, *vals = nums[1:5], *nums[5:].split()
        assert len(vals) == 4, line
        r = big[big["tag"].astype(str).str.rstrip() == tag.rstrip()].iloc[0]
        assert int(vals[1]) == int(r["nonpaged_bytes"]) and int(vals[3]) == int(r["paged_bytes"])
        assert desc == (str(r["description"]) if r["description"] else "")
    # Every number column ends under its heading, also with the wide numbers.
    head = lines[4]
    ends = [m.end() for m in re.finditer(r"\S+", head)][1:]
    for line in [*rows, total]:
        nums = line.partition("\t")[0]
        assert [m.end() for m in re.finditer(r"\d+", nums[5:])][-4:] == [e - 5 for e in ends]
    assert total.startswith(" TOTAL ")
    tot = [int(x) for x in total.split()[1:]]
    assert tot[1] == int(big["nonpaged_bytes"].sum()) and tot[3] == int(big["paged_bytes"].sum())


def test_poolused_description_after_a_tab(story):
    with ntdump.open(story) as d:
        line = next(x for x in d.pool.used_text().splitlines() if x.startswith(" None"))
    assert "\tuntagged allocation" in line


# -- 5. help --------------------------------------------------------------------------------------
def test_every_subcommand_help_has_a_description_and_the_address_syntax(capsys):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, sp in sub.choices.items():
        assert sp.description, name
        if any(a.dest == "dump" for a in sp._actions):
            text = sp.format_help()
            for piece in ("`", "0n", "mod!sym", "mod+off", "poi(", "@rip", "L?"):
                assert piece in text, (name, piece)


def test_cli_addresses_are_kd_expressions(capsys, story64):
    with ntdump.open(story64) as d:
        base = d.modules["nt"].base
    plain = f"{base >> 32:08x}`{base & 0xFFFFFFFF:08x}"
    _, by_number, _ = run(capsys, "db", story64, plain, "-l", "16")
    for expr in ("nt", f"0x{base:x}", f"0n{base}", "nt+10-10"):
        rc, out, _ = run(capsys, "db", story64, expr, "-l", "16")
        assert rc == 0 and out == by_number, expr
    rc, out, _ = run(capsys, "pte", story64, "nt+0x1000")
    assert rc == 0 and out.startswith(f"VA {(base + 0x1000) >> 32:08x}`")
    rc, _, err = run(capsys, "db", story64, "nosuch!x")
    assert rc == 2 and "nosuch!x" in err


def test_kd_help_and_unknown_commands(story):
    with ntdump.open(story) as d:
        s = KdSession(d)
        out = s.run(".help")
        assert s.run("help") == out
        for cmd, _ in COMMAND_HELP:
            assert sum(line.startswith(cmd) for line in out.splitlines()) == 1, cmd
        # Every command the session runs is listed.
        listed = " ".join(c for c, _ in COMMAND_HELP)
        for name in s._commands:
            assert name in listed, name
        assert "no such command" in s.run("frobnicate 1") and s.last_error
        assert "No export !frob found: no such command" in s.run("!frob")


def test_kd_c_exit_status(capsys, story):
    rc, out, _ = run(capsys, "kd", story, "-c", "? 1+1; lm m nt")
    assert rc == 0 and "Evaluate expression: 2" in out
    rc, out, _ = run(capsys, "kd", story, "-c", "? 1+1; frob; x nosuch!y")
    assert rc == 1 and "frob: no such command" in out and "Evaluate expression: 2" in out


def test_version_and_python_m(capsys):
    assert main(["--version"]) == 0  # main() returns argparse's status instead of exiting
    assert capsys.readouterr().out.strip() == f"ntdump {ntdump.__version__}"
    p = subprocess.run([sys.executable, "-m", "ntdump", "--version"], capture_output=True,
                       text=True, check=True)
    assert p.stdout.strip() == f"ntdump {ntdump.__version__}"


# -- 6. messages ----------------------------------------------------------------------------------
def test_messages_short_and_without_repeated_prefixes(capsys, triage_dump, tmp_path):
    rc, out, _ = run(capsys, "vm", triage_dump)
    assert rc == 0
    rows = [line for line in out.splitlines() if "not available" in line]
    assert len(rows) == 16  # every !vm line but the failure count (a warning, not a line)
    for line in rows:
        assert len(line.expandtabs()) <= 100, line
        assert line.count("(") == 1 and ";" not in line, line
    rc, out, _ = run(capsys, "vm", triage_dump, "--json")
    full = json.loads(out)["nonpaged_pool_usage"]["source"]
    assert "PoolTrackTable" in full and "PoolTrackTable: PoolTrackTable" not in full
    rc, _, err = run(capsys, "poolused", triage_dump)
    assert rc != 0 and err.count("\n") == 1
    words = re.findall(r"(\w+): ", err)
    assert all(a != b for a, b in itertools.pairwise(words)), err
    rc, _, err = run(capsys, "info", tmp_path)
    assert rc == 2 and err == f"ntdump: {tmp_path}: is a directory, not a dump file\n"


def test_batch_without_the_extra_says_how_to_install(tmp_path):
    code = ("import sys; sys.modules['pyarrow'] = None\n"
            "from ntdump.cli import main\n"
            f"sys.exit(main(['batch', {str(tmp_path)!r}, '--out', {str(tmp_path / 'o')!r}]))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.count("\n") == 1 and "pip install 'ntdump[batch]'" in p.stderr
    assert not (tmp_path / "o").exists()
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    cli = readme.split("## Command line", 1)[1].split("\n## ", 1)[0]
    assert "ntdump[batch]" in cli


def test_importer_evidence_in_words(story):
    with ntdump.open(story) as d:
        text = ntdump.triage(d).text()
        owners = d.pool.owners("None")
    assert "(both)" not in text
    assert "named in its import table and its address found as a pointer in the image" in text
    assert all("both" not in ev for ev in owners["evidence"])


# -- 7. an owner for every tag triage lists --------------------------------------------------------
def test_triage_names_an_owner_for_every_tag(story):
    with ntdump.open(story) as d:
        r = ntdump.triage(d)
        used = d.pool.used(owners=100)
    assert len(r.suspect_tags) >= 5
    known = {str(t): str(o) for t, o in zip(used["tag"], used["owners"], strict=True)}
    for t in r.suspect_tags:
        assert t["owners"], t["tag"]
        first = known[t["tag"]].split(", ")[0]
        if first:  # an image holds the tag: the same owner as d.pool.used()
            assert t["owners"][0]["module"] == first, t["tag"]
        else:  # no image does: the tag table's owner, said so
            with ntdump.open(story) as d:
                binary = d.pool.describe(t["tag"]).rsplit("[", 1)[1].split("!")[0].rstrip("]")
            assert t["owners"][0]["module"] == binary
            assert "pool tag table" in t["owners"][0]["evidence"]
    text = r.text()
    assert "owner unknown" not in text
    # Beyond the top three: every listed tag was looked up (Thre and Ntfx used to be skipped).
    with ntdump.open(story) as d:
        deep = ntdump.triage(d, top=40)
    listed = {t["tag"]: t for t in deep.suspect_tags}
    for tag in ("Thre", "Ntfx"):
        assert listed[tag]["owners"][0]["module"] == known[tag].split(", ")[0], tag
    assert sum(bool(t["owners"]) for t in deep.suspect_tags) > 3


# -- 8. addresses ---------------------------------------------------------------------------------
def test_frames_keep_uint64_and_show_hex(story64):
    with ntdump.open(story64) as d:
        df = d.modules.to_frame()
        nt = d.modules["nt"]
        dps = d.dps(nt.base, 2)
        syms = d.symbols("nt!ExAllocatePool")
    assert df["base"].dtype == "uint64" and int(df["base"].iloc[0]) == nt.base
    assert (df["base"] + 0x10).dtype == "uint64"
    shown = f"{nt.base >> 32:08x}`{nt.base & 0xFFFFFFFF:08x}"
    pd.set_option("display.max_columns", None)
    pd.set_option("display.width", 1000)
    assert shown in repr(df) and str(nt.base) not in repr(df)
    assert shown in df._repr_html_() and str(nt.base) not in df._repr_html_()
    assert shown in df.head(1).to_string() and shown in repr(df.sort_values("size"))
    assert set(df.attrs["address_columns"]) >= {"base", "end", "entry_point"}
    assert "size" not in df.attrs["address_columns"]
    assert shown in repr(dps) and dps["value"].dtype == "UInt64"
    assert syms["address"].dtype == "UInt64" and re.search(KD64, repr(syms))
    # Sizes and counts stay decimal.
    assert str(int(df["size"].iloc[0])) in repr(df)
    pd.reset_option("display.max_columns")
    pd.reset_option("display.width")


def test_json_and_csv_keep_integers_hex_on_request(capsys, story64):
    with ntdump.open(story64) as d:
        base = d.modules["nt"].base
    _, out, _ = run(capsys, "lm", story64, "--json")
    assert json.loads(out)[0]["base"] == base
    _, out, _ = run(capsys, "lm", story64, "--json", "--hex")
    assert json.loads(out)[0]["base"] == f"{base:#x}"
    _, out, _ = run(capsys, "lm", story64, "--csv", "--hex")
    assert pd.read_csv(__import__("io").StringIO(out))["base"][0] == f"{base:#x}"
    _, out, _ = run(capsys, "lm", story64, "--csv")
    assert int(pd.read_csv(__import__("io").StringIO(out))["base"][0]) == base


def test_kd_output_uses_kd_addresses(story64):
    with ntdump.open(story64) as d:
        s = KdSession(d)
        for cmd in ("!pte 0", "? nt", "ln nt+10", "dps nt L1", "db nt L10"):
            out = s.run(cmd)
            assert re.search(KD64, out), (cmd, out)
            assert not re.search(r"0x[0-9a-f]{9,}", out.split("\n")[0]), (cmd, out)


# -- 9. start-up: no pandas for import ntdump or ntdump info ---------------------------------
def _modules_after(code: str) -> set[str]:
    p = subprocess.run([sys.executable, "-c", code + "\nimport sys\n"
                        "print(' '.join(m for m in ('pandas', 'numpy', 'pyarrow', 'ntdump.forge',"
                        " 'http.client', 'ssl', 'ntdump.symbols.http')"
                        " if m in sys.modules))"],
                       capture_output=True, text=True, check=True)
    return set(p.stdout.split("\n")[-2].split())


_FEATURE_MODULES = ("ntdump.pool", "ntdump._search", "ntdump._symbols", "ntdump.symbolmap",
                    "ntdump.stack", "ntdump.vm", "ntdump.pe", "ntdump.modules", "ntdump._symsrv",
                    "ntdump.symbols.path")


def _features_after(code: str) -> set[str]:
    p = subprocess.run([sys.executable, "-c", code + "\nimport sys\n"
                        f"print(' '.join(m for m in {_FEATURE_MODULES!r} if m in sys.modules))"],
                       capture_output=True, text=True, check=True)
    return set(p.stdout.split("\n")[-2].split())


def test_open_and_header_reads_import_no_feature_module(triage_dump, tmp_path):
    """The Dump builds its feature objects (and imports their modules) on the first call that
    needs one: `import ntdump`, opening a dump and reading its header, memory or page tables
    load none of them; asking for modules loads them all, wired as before."""
    assert _features_after("import ntdump") == set()
    header = (f"import ntdump\nd = ntdump.open({str(triage_dump)!r})\n"
              "print(d.info.build, d.bugcheck.code, d.mode, repr(d))")
    assert _features_after(header) == set()
    modules = f"import ntdump\nassert len(ntdump.open({str(triage_dump)!r}).modules) > 100"
    assert _features_after(modules) == set(_FEATURE_MODULES)
    # The symbol path given to open (or the environment's) is the one the features get.
    d = ntdump.open(triage_dump, symbols=str(tmp_path), offline=True)
    assert (str(d.symbol_path), d.symbol_path.offline) == (str(tmp_path), True)
    env = (f"import os\nos.environ['_NT_SYMBOL_PATH'] = {str(tmp_path)!r}\nimport ntdump\n"
           f"assert str(ntdump.open({str(triage_dump)!r}).symbol_path) == {str(tmp_path)!r}")
    subprocess.run([sys.executable, "-c", env], check=True)


def test_import_and_info_do_not_import_pandas(triage_dump):
    assert _modules_after("import ntdump") == set()
    assert _modules_after("import ntdump.cli") == set()
    info = f"from ntdump.cli import main\nassert main(['info', {str(triage_dump)!r}]) == 0"
    assert _modules_after(info) == set()
    # ... and a frame still imports it when one is built.
    frame = f"import ntdump\nntdump.open({str(triage_dump)!r}).modules.to_frame()"
    assert {"pandas", "numpy"} <= _modules_after(frame)
    # the HTTP client (http.client, ssl, email: ~20 ms) loads only when a server is asked
    assert not {"http.client", "ssl"} & _modules_after(frame)
