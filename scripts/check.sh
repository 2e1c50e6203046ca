#!/usr/bin/env bash
# Every check CI runs, in order: formatting and lints first (fast failures), then Rust tests, then the
# Python tests (pytest's summary is the last line). Run from anywhere after `pip install -e '.[test]'`.
set -euo pipefail
cd "$(dirname "$0")/.."
# ../shared/data beside the checkout; from a `git worktree` elsewhere, beside the main checkout.
if [ -z "${NTDUMP_TEST_DATA:-}" ]; then
    NTDUMP_TEST_DATA="$(cd .. && pwd)/shared/data"
    main_tree="$(cd "$(git rev-parse --git-common-dir 2>/dev/null || echo .git)/.." && pwd)"
    [ -d "$NTDUMP_TEST_DATA" ] || NTDUMP_TEST_DATA="$(dirname "$main_tree")/shared/data"
fi
export NTDUMP_TEST_DATA
echo "== cargo fmt";    cargo fmt --all --check
echo "== cargo clippy"; cargo clippy --workspace --all-targets -- -D warnings
# The fuzz targets are their own workspace (cargo-fuzz needs nightly to run them): they must still compile,
# or they rot unseen (two had, until this check).
echo "== fuzz targets"; cargo check -q --manifest-path fuzz/Cargo.toml
echo "== ruff";         python -m ruff check python tests benchmarks
echo "== imports";      lint-imports            # the floors of python/ntdump: pyproject.toml
echo "== mypy";         python -m mypy python/ntdump
echo "== stubtest";     python -m mypy.stubtest ntdump._native
echo "== cargo test"
# The binding crate (src/, ntdump-python) is compiled by clippy above and by maturin (pip install);
# its test harness is built only when it has tests or doc examples (today none): that skips a debug
# build and link of pyo3 + numpy + the core that would run zero tests.
if grep -rqE '#\[test\]|#\[cfg\(test\)\]|```' src; then
    cargo test --workspace
else
    cargo test --workspace --exclude ntdump-python
fi
echo "== pytest";       python -m pytest -q
