"""The landmark service (`data/landmarks.py`), its cache, the border re-search of the fallback
ladder, and the pixel-centre and crop-box conventions of `data/alignment.py` that every
detector, aligner and paster uses."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from facetools_dapfsr.data import landmarks as landmarks_module
from facetools_dapfsr.data.alignment import (
    crop_corners,
    crop_footprint,
    original_points,
    resampled_points,
    rescale_matrix,
)
from facetools_dapfsr.data.detection_fallbacks import (
    detect_with_fallbacks,
    search_again_with_border,
)
from facetools_dapfsr.data.landmarks import (
    DetectorSettings,
    LandmarkCache,
    LandmarkDetector,
    MTCNNOptions,
)
from facetools_dapfsr.pipeline.resample import input_to_output


# -- conventions --------------------------------------------------------------------------------
def test_resampling_maps_pixel_centres_and_edges_one_way() -> None:
    # Pixel 0 covers [-0.5, 0.5]: x2 puts its centre at 0.5 and keeps the image edge at -0.5.
    assert resampled_points(np.array([0.0, -0.5, 9.5]), 2.0).tolist() == [0.5, -0.5, 19.5]
    points = np.array([[3.0, 7.0], [10.25, 0.0]])
    for factor in (0.5, 2.0, 3.0, 1 / 3):
        assert np.allclose(original_points(resampled_points(points, factor), factor), points)
    matrix = rescale_matrix(2.0, 3.0)
    moved = points @ matrix[:, :2].T + matrix[:, 2]
    assert np.allclose(moved[:, 0], resampled_points(points[:, 0], 2.0))
    assert np.allclose(moved[:, 1], resampled_points(points[:, 1], 3.0))
    assert np.array_equal(input_to_output((10, 20), (30, 40)), rescale_matrix(2.0, 3.0))


def test_crop_corners_and_footprint_of_a_crop() -> None:
    matrix = rescale_matrix(0.5, 0.5)  # a 64 px source -> its 32 px crop
    assert np.allclose(crop_corners(matrix, 32), [[-0.5, -0.5], [63.5, -0.5], [-0.5, 63.5], [63.5, 63.5]])
    # A margin in crop pixels is two source pixels here.
    assert np.allclose(crop_corners(matrix, 32, margin=1.0)[[0, 3]], [[-2.5, -2.5], [65.5, 65.5]])
    assert crop_footprint(matrix, 32) == (-1, -1, 65, 65)  # exclusive end
    assert crop_footprint(matrix, 32, margin=2) == (-3, -3, 67, 67)


# -- the border re-search of the fallback ladder --------------------------------------------------
def _fake_detector(tight: bool, found_with_border: bool = True):
    """A 100 px image whose face fills it (eyes 60 px apart) or not (20 px); with the grey border
    (40 px a side) the face is found 2 px further in."""
    eyes_apart = 60.0 if tight else 20.0
    plain = np.array([[50 - eyes_apart / 2, 40], [50 + eyes_apart / 2, 40], [50, 55], [35, 70], [65, 70]])

    def detect(image: np.ndarray):
        if image.shape[:2] == (100, 100):
            return plain.copy(), "plain"
        if image.shape[:2] == (180, 180) and found_with_border:
            return plain + 40 - np.array([2.0, 0.0]) * np.sign(plain - 50), "bordered"
        return None

    return detect, plain


def test_a_face_that_fills_the_image_is_searched_again_with_the_border() -> None:
    image = np.zeros((100, 100, 3), np.uint8)
    detect, plain = _fake_detector(tight=True)
    (points, extra), fallback = detect_with_fallbacks(detect, image, ("invert", "pad"))
    assert fallback == "pad" and extra == "bordered"
    assert np.allclose(points[:2, 0], [22.0, 78.0])
    # Without the border among the fallbacks, or when the border finds nothing, the face stays.
    assert detect_with_fallbacks(detect, image, ("invert",))[1] is None
    lost, _ = _fake_detector(tight=True, found_with_border=False)
    assert detect_with_fallbacks(lost, image, ("pad",))[1] is None
    # A face inside the image is kept as found.
    inside, inside_plain = _fake_detector(tight=False)
    (points, extra), fallback = detect_with_fallbacks(inside, image, ("pad",))
    assert fallback is None and extra == "plain" and np.array_equal(points, inside_plain)
    # The same rule after a fallback: a face found by `invert` that fills the image is looked for
    # with `pad+invert`.
    found = (plain, "plain")
    again = search_again_with_border(lambda name: (plain + 1, name), found, "invert", ("invert", "pad+invert"), 100)
    assert again[1] == "pad+invert" and again[0][1] == "pad+invert"


# -- the cache ----------------------------------------------------------------------------------
def test_cache_is_valid_for_its_settings_and_format_version_only(tmp_path, monkeypatch) -> None:
    path = tmp_path / "lm.json"
    cache = LandmarkCache(path, settings=None, format_version=2)
    cache.add("a.png", [[1.0, 2.0]] * 5)
    cache.add("b.png", None)
    cache.finish()
    saved = json.loads(path.read_text())
    assert saved == {"format_version": 2, "entries": {"a.png": [[1.0, 2.0]] * 5, "b.png": None}}
    assert LandmarkCache(path, settings=None, format_version=2).load().entries == cache.entries
    assert LandmarkCache(path, settings=None, format_version=3).load().entries == {}
    assert LandmarkCache(path, settings=DetectorSettings(), format_version=2).load().entries == {}

    # A long pass saves as it goes.
    monkeypatch.setattr(landmarks_module, "CACHE_SAVE_EVERY", 2)
    other = tmp_path / "other.json"
    running = LandmarkCache(other, DetectorSettings())
    running.add("a.png", {"status": "no_face"})
    running.checkpoint()
    assert not other.exists()
    running.add("b.png", {"status": "no_face"})
    running.checkpoint()
    assert set(LandmarkCache(other, DetectorSettings()).load().entries) == {"a.png", "b.png"}


# -- the service ---------------------------------------------------------------------------------
def test_one_detector_serves_every_search_and_keeps_its_networks(celeba_sample) -> None:
    photo = np.asarray(Image.open(celeba_sample[0]).convert("RGB"))
    image = torch.from_numpy(photo.copy()).permute(2, 0, 1).float() / 255
    detector = LandmarkDetector()
    best = detector.detect([photo])[0]
    assert best is not None
    largest = detector.detect([photo], largest=True)[0]
    assert largest is not None and np.array_equal(largest[0], best[0])  # one face: the same one
    faces = detector.detect_faces(image, 40.0, MTCNNOptions())
    assert len(faces) == 1 and faces.boxes.shape == (1, 4)
    found = detector.find_face(image, fallbacks=())
    assert found is not None and found[1] is None
    # Other MTCNN settings per search, the same face within a pixel or two.
    for points in (faces.landmarks[0], found[0]):
        assert float(np.abs(points - best[0]).max()) < 3.0
    assert detector.network(40.0) is detector.network(40.0)
    with pytest.raises(ValueError, match=r"expected an image \[3, H, W\]"):
        detector.detect_faces(image[:1], 40.0, MTCNNOptions())
