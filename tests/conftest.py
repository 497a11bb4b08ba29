"""Shared fixtures: the persistent weight cache and the shared face data."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def find_data_dir() -> Path | None:
    """The shared data folder: ``$DAPFSR_DATA``, else ``<repo>/../shared/data``; None if absent."""
    configured = os.environ.get("DAPFSR_DATA")
    path = Path(configured) if configured else REPO_ROOT.parent / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared face data; tests that use it skip when it is not on this machine."""
    path = find_data_dir()
    if path is None:
        pytest.skip("shared face data not found (set DAPFSR_DATA or provide ../shared/data)")
    return path


@pytest.fixture(scope="session")
def weights_cache() -> Iterator[Path]:
    """A weight cache that outlives the test run, so real weights are fetched once per CI run.

    ``$DAPFSR_TEST_CACHE``, else ``<repo>/.cache-test``. ``DAPFSR_CACHE`` points at it for the
    rest of the session.
    """
    configured = os.environ.get("DAPFSR_TEST_CACHE")
    path = Path(configured) if configured else REPO_ROOT / ".cache-test"
    path.mkdir(parents=True, exist_ok=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DAPFSR_CACHE", str(path))
        yield path
