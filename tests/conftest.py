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


@pytest.fixture(scope="session")
def celeba_sample(data_dir: Path) -> list[Path]:
    """A dozen real CelebA test-partition photos (sorted, so every run uses the same ones)."""
    files = sorted((data_dir / "celeba" / "test").glob("*.jpg"))[:12]
    if len(files) < 12:
        pytest.skip("celeba/test holds fewer than 12 images")
    return files


@pytest.fixture(scope="session")
def yaleb_subset(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Extended Yale B cut down for tests: 3 subjects x the same 12 illumination conditions
    (frontal-lit one included), as links into the shared data in the Yale B folder layout."""
    source = data_dir / "yaleb"
    subjects = ["yaleB01", "yaleB02", "yaleB03"]
    present = [{p.name[len(s) + 1 :] for p in (source / s).glob(f"{s}_P00A*.png")} for s in subjects]
    names = sorted(set.intersection(*present) - {"P00A+000E+00.png"})
    if len(names) < 11:
        pytest.skip("the shared Yale B data lacks the test subjects' images")
    conditions = ["P00A+000E+00.png", *names[:11]]
    root = tmp_path_factory.mktemp("yaleb")
    for subject in subjects:
        folder = root / subject
        folder.mkdir()
        for condition in conditions:
            original = source / subject / f"{subject}_{condition}"
            (folder / original.name).symlink_to(original.resolve())
    return root
