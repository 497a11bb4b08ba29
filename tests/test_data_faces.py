"""Training faces: sources through `datasets`, MTCNN landmarks cached once, alignment, bad data."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facetools_dapfsr.data.alignment import template_points
from facetools_dapfsr.data.faces import (
    AlignedFaces,
    FaceDataError,
    decode_image,
    find_landmarks,
    image_key,
    load_image_table,
)
from facetools_dapfsr.data.landmarks import (
    DetectorSettings,
    LandmarkCache,
    LandmarkDetector,
)
from facetools_dapfsr.images import read_image

SETTINGS = DetectorSettings(min_face_size=40.0)


def _noise_image(path: Path, seed: int = 0) -> None:
    pixels = (np.random.default_rng(seed).random((120, 100, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory, celeba_sample) -> Path:
    """4 real faces, one image without a face, one corrupt file, one empty file."""
    folder = tmp_path_factory.mktemp("mixed")
    for path in celeba_sample[:4]:
        shutil.copy(path, folder / path.name)
    _noise_image(folder / "noise.png")
    (folder / "broken.jpg").write_bytes(b"not a jpeg at all")
    (folder / "empty.jpg").write_bytes(b"")
    return folder


@pytest.fixture()
def cache_root(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("DAPFSR_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_bad_images_are_skipped_and_counted(mixed_folder, cache_root) -> None:
    faces = AlignedFaces.prepare(mixed_folder, 64, settings=SETTINGS)
    report = faces.report
    assert (report.total, report.kept, report.no_face, report.unreadable) == (7, 4, 1, 2)
    assert len(faces) == 4
    assert "noise.png (no_face)" in report.skipped_examples
    assert "3 unreadable" not in report.summary() and "2 unreadable" in report.summary()
    face, valid = faces[0]
    assert face.shape == (3, 64, 64) and valid.shape == (1, 64, 64)
    assert 0.0 <= float(face.min()) and float(face.max()) <= 1.0
    # CelebA photos are loosely cropped: the template's crop lies inside them.
    assert float(valid.mean()) > 0.95


def test_landmarks_are_detected_once_and_redetected_when_a_file_changes(mixed_folder, cache_root, tmp_path) -> None:
    folder = tmp_path / "faces"
    shutil.copytree(mixed_folder, folder)
    first = AlignedFaces.prepare(folder, 32, settings=SETTINGS)
    assert first.report.examined == 7
    cache_files = list((cache_root / "landmarks").glob("*.json"))
    assert len(cache_files) == 1

    second = AlignedFaces.prepare(folder, 32, settings=SETTINGS)
    assert second.report.examined == 0
    assert np.array_equal(first.landmarks, second.landmarks)

    # A changed file (new mtime) gets a new key and is examined again; the rest stays cached.
    changed = min(folder.glob("*.jpg"))
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    third = AlignedFaces.prepare(folder, 32, settings=SETTINGS)
    assert third.report.examined == 1


def test_aligned_face_puts_the_eyes_on_the_template(celeba_sample, cache_root) -> None:
    faces = AlignedFaces.prepare(celeba_sample[0].parent, 128, settings=SETTINGS, max_images=1)
    face, _ = faces[0]
    pixels = (face.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    # MTCNN needs context around a tightly cropped face: pad with grey, then undo the offset.
    pad = 64
    padded = np.pad(pixels, ((pad, pad), (pad, pad), (0, 0)), constant_values=128)
    found = LandmarkDetector(SETTINGS).detect([padded])[0]
    assert found is not None
    landmarks = found[0] - pad
    error = np.abs(landmarks[:2] - template_points(128)[:2]).max()
    assert error < 3.0, f"eyes {landmarks[:2]} vs template {template_points(128)[:2]}"


def test_empty_folder_is_a_clear_error(tmp_path, cache_root) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(FaceDataError, match="no image files"):
        AlignedFaces.prepare(tmp_path / "empty", 32)


def test_missing_folder_is_a_clear_error(tmp_path, cache_root) -> None:
    with pytest.raises(FaceDataError, match="no such folder"):
        AlignedFaces.prepare(tmp_path / "does-not-exist", 32)


def test_folder_without_any_face_is_a_clear_error(tmp_path, cache_root) -> None:
    folder = tmp_path / "noise"
    folder.mkdir()
    _noise_image(folder / "a.png", 1)
    _noise_image(folder / "b.png", 2)
    with pytest.raises(FaceDataError, match=r"no usable face.*0 of 2 images used \(2 without a face"):
        AlignedFaces.prepare(folder, 32, settings=SETTINGS)


def test_rows_with_image_bytes_are_keyed_by_content(celeba_sample, tmp_path) -> None:
    """Hub datasets carry image bytes without a local file: the key is the content hash."""
    import datasets

    payload = celeba_sample[0].read_bytes()
    table = datasets.Dataset.from_dict({"image": [{"bytes": payload, "path": None}, {"bytes": b"junk", "path": None}]})
    table = table.cast_column("image", datasets.Image(decode=False))
    assert image_key(table[0]["image"]).startswith("sha256:")
    cache = LandmarkCache(tmp_path / "lm.json", SETTINGS).load()
    rows, landmarks, report = find_landmarks(table, cache)
    assert rows == [0] and landmarks.shape == (1, 5, 2)
    assert (report.kept, report.unreadable) == (1, 1)
    reloaded = LandmarkCache(tmp_path / "lm.json", SETTINGS).load()
    assert set(reloaded.entries) == set(cache.entries)
    # Other detector settings make the cache a miss rather than a wrong answer.
    other = LandmarkCache(tmp_path / "lm.json", DetectorSettings(min_face_size=20.0)).load()
    assert other.entries == {}


def test_image_table_takes_the_named_image_column(tmp_path, celeba_sample) -> None:
    folder = tmp_path / "two"
    folder.mkdir()
    for path in celeba_sample[:2]:
        shutil.copy(path, folder / path.name)
    table = load_image_table(folder)
    assert table.column_names == ["image"] and len(table) == 2
    assert Path(table[0]["image"]["path"]).parent == folder.resolve()


def test_decode_reads_like_the_photo_reader(tmp_path) -> None:
    # Training and evaluation faces go through the photo reader of `dapfsr upscale`, so one file
    # gives the same pixels everywhere: grey, transparent (over white) and 16-bit grey images.
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((10, 12), 200, np.uint8), mode="L").save(grey)
    decoded = decode_image({"path": str(grey), "bytes": None})
    assert decoded.shape == (3, 10, 12) and torch.equal(decoded, read_image(grey).image)
    assert torch.allclose(decoded, torch.full_like(decoded, 200 / 255))
    buffer = io.BytesIO()
    Image.new("RGBA", (5, 6), (255, 0, 0, 0)).save(buffer, format="PNG")
    rgb = decode_image({"path": None, "bytes": buffer.getvalue()})
    assert rgb.shape == (3, 6, 5) and torch.equal(rgb[:, 0, 0], torch.ones(3))
    # 16 bits: a mid-grey gradient stays a mid-grey gradient (Pillow's convert("RGB") clips it to
    # white, which is what the training reader did before it used the photo reader).
    deep = tmp_path / "deep.png"
    Image.fromarray((np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 8).astype(np.uint16)).save(deep)
    decoded = decode_image({"path": str(deep), "bytes": None})
    expected = torch.from_numpy(np.arange(64 * 64, dtype=np.float32).reshape(64, 64) * 8 / 65535)
    assert torch.allclose(decoded[0], expected, atol=1e-6) and torch.equal(decoded[0], decoded[2])


def test_a_file_that_breaks_during_training_is_replaced_not_fatal(mixed_folder, cache_root, tmp_path) -> None:
    folder = tmp_path / "faces"
    folder.mkdir()
    for path in sorted(mixed_folder.glob("*.jpg"))[:4]:
        if path.stat().st_size > 100:
            shutil.copy(path, folder / path.name)
    faces = AlignedFaces.prepare(folder, 32, settings=SETTINGS)
    expected_next, _ = faces[1]
    Path(faces.path(0)).write_bytes(b"truncated")
    face, _ = faces[0]
    assert torch.equal(face, expected_next)


def test_unreachable_hub_dataset_is_a_clear_error(monkeypatch) -> None:
    import datasets
    import huggingface_hub

    # Offline mode is read at import time; patch the constants so no network call is attempted.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(FaceDataError, match="neither a local folder nor a loadable Hub dataset"):
        load_image_table("nobody-here/no-such-faces")
