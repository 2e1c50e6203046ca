"""Issue 12, case 4: no hangs or blow-ups — batch reads only regular files (FIFOs and devices are
error rows, never opened), does not follow symlinks out of the input tree unless asked, analyses
both of two same-named zip members; kd splits ``;`` in linear time and refuses nested
``!for_each_module``; display lengths are capped.

Hang guards run in a child process with a generous timeout: they detect a hang (the old code never
finished), they do not measure speed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import zipfile

import pytest

import ntdump
from ntdump import batch
from ntdump.batch._inputs import expand, sha256_file
from ntdump.forge import scenario
from ntdump.kd import KdSession, split_commands

unix = pytest.mark.skipif(sys.platform == "win32", reason="FIFOs, /dev/zero and symlinks: Unix")


@pytest.fixture(scope="module")
def dump(tmp_path_factory):
    return scenario.win10_x64(tmp_path_factory.mktemp("h") / "w10.dmp", size=32 << 20).path


def _run_child(code: str, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"hung (no answer within {timeout} s)")


@unix
def test_batch_fifo_and_dev_zero_symlink_are_error_rows_without_blocking(tmp_path, dump):
    root = tmp_path / "in"
    root.mkdir()
    shutil.copy(dump, root / "good.dmp")
    os.mkfifo(root / "pipe.dmp")
    (root / "zero.dmp").symlink_to("/dev/zero")
    code = """
        import sys
        from ntdump import batch
        res = batch.run(sys.argv[1], analyses=["info"], engine="serial", progress=False)
        st = res["status"]
        for _, r in st.iterrows():
            print(r["dump"].rsplit("/", 1)[-1], r["status"], r["error_type"])
    """
    r = _run_child(code, str(root))
    assert r.returncode == 0, r.stderr[-2000:]
    rows = {line.split()[0]: line.split()[1:] for line in r.stdout.splitlines()}
    assert rows["good.dmp"][0] == "ok"
    assert rows["pipe.dmp"] == ["error", "NotARegularFile"]
    assert rows["zero.dmp"][0] == "error"  # refused: leaves the tree (and is not a regular file)
    # Asked to follow links, /dev/zero is still refused: only regular files are read.
    units = {os.path.basename(u.name): u for u in expand(root, follow_symlinks=True)}
    assert units["zero.dmp"].kind == "error" and units["zero.dmp"].error[0] == "NotARegularFile"
    with pytest.raises(OSError):
        sha256_file("/dev/zero")


@unix
def test_symlinks_leaving_the_tree_are_not_followed_unless_asked(tmp_path, dump):
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.dmp"
    shutil.copy(dump, secret)
    root = tmp_path / "in"
    root.mkdir()
    (root / "inner.dmp").write_bytes(b"not a dump at all")
    (root / "link_in.dmp").symlink_to(root / "inner.dmp")
    (root / "passwd").symlink_to("/etc/passwd")
    (root / "secret.dmp").symlink_to(secret)
    units = {os.path.basename(u.name): u for u in expand(root)}
    assert units["passwd"].kind == "error" and units["passwd"].error[0] == "SymlinkRefused"
    assert units["secret.dmp"].kind == "error" and "follow_symlinks" in units["secret.dmp"].error[1]
    assert units["link_in.dmp"].kind == "file"  # stays inside the tree: read
    followed = {os.path.basename(u.name): u for u in expand(root, follow_symlinks=True)}
    assert followed["secret.dmp"].kind == "file"
    res = batch.run(root, analyses=["info"], engine="serial", progress=False,
                    follow_symlinks=True)
    st = res["status"].set_index(res["status"]["dump"].astype(str).map(os.path.basename))
    assert st.loc["secret.dmp", "status"] == "ok"


def test_zip_with_two_members_of_the_same_name_analyses_both(tmp_path, dump):
    other = scenario.win10_x64(tmp_path / "other.dmp", size=32 << 20, build=19045).path
    z = tmp_path / "two.zip"
    with zipfile.ZipFile(z, "w") as zf, pytest.warns(UserWarning, match="Duplicate name"):
        zf.write(dump, "MEMORY.DMP")
        zf.write(other, "MEMORY.DMP")
    res = batch.run(z, analyses=["info"], engine="serial", progress=False)
    info = res["info"]
    assert len(info) == 2
    assert sorted(int(b) for b in info["build"]) == [19041, 19045]
    assert sorted(res["status"]["dump"].astype(str).str.rsplit("!", n=1).str[-1]) == [
        "MEMORY.DMP#1", "MEMORY.DMP#2"]


def test_kd_split_is_linear_and_correct():
    assert split_commands("a;b ; ;c") == ["a", "b", "c"]
    assert split_commands("lm; !for_each_module s-d @#Base @#End 1; lm") == [
        "lm", "!for_each_module s-d @#Base @#End 1; lm"]
    # 1,000,000 separators: the old splitter (re-slicing the rest of the line per command) never
    # finished; a linear one answers at once.
    r = _run_child("""
        from ntdump.kd import split_commands
        line = "? 1;" * 250_000 + ";" * 1_000_000
        print(len(split_commands(line)))
    """)
    assert r.returncode == 0 and r.stdout.strip() == "250000", r.stderr[-1000:]


def test_nested_for_each_module_is_refused(dump):
    with ntdump.open(dump) as d:
        s = KdSession(d)
        nested = "!for_each_module " * 4 + "lm"
        out = s.run(nested)  # was 11^4 runs of lm (minutes, hundreds of MiB)
        assert out == "!for_each_module cannot be nested"
        assert s.failures == 1
        one = s.run("!for_each_module db @#Base L1")
        assert len(one.splitlines()) == len(d.modules) and s.failures == 1


def test_cli_db_huge_length_is_refused_at_once(dump, capsys):
    from ntdump.cli import main

    assert main(["db", str(dump), "fffff8026be00000", "-l", "0x100000000"]) == 2  # was a hang
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "display limit" in err
