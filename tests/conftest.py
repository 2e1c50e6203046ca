"""Shared fixtures: where the real test data lives, and forged dumps written to temp dirs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent


def data_dir() -> Path:
    """``$NTDUMP_TEST_DATA`` or ../shared/data beside the checkout."""
    env = os.environ.get("NTDUMP_TEST_DATA")
    if env:
        return Path(env)
    return _HERE.parent.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    d = data_dir()
    if not d.is_dir():
        pytest.skip(f"real test data not found at {d} (set NTDUMP_TEST_DATA)")
    return d


@pytest.fixture(scope="session")
def triage_dump(shared_data: Path) -> Path:
    return shared_data / "dumps" / "win10-19041-x64-triage.dmp"


@pytest.fixture(scope="session")
def full_head(shared_data: Path) -> Path:
    return shared_data / "dumps" / "win10-19045-x64-full-first16k.bin"
