"""Degradation models (paper and realistic), padding of crops that leave the photo, pair augmentation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from facetools_dapfsr.data.alignment import align_face, template_points
from facetools_dapfsr.data.degradation import DegradationConfig, degrade, gaussian_blur, jpeg_compress
from facetools_dapfsr.training.pairs import PairAugmentation


def faces(batch: int = 6) -> torch.Tensor:
    torch.manual_seed(0)
    # Smooth random images: something blur and JPEG visibly change.
    return torch.nn.functional.interpolate(torch.rand(batch, 3, 16, 16), size=64, mode="bilinear").clamp(0, 1)


def test_paper_degradation_is_unchanged_by_the_canvas_default() -> None:
    hr = faces()
    a = degrade(hr, 16, DegradationConfig(), torch.Generator().manual_seed(1))
    b = degrade(hr, 16, DegradationConfig(), torch.Generator().manual_seed(1), canvas=16)
    assert a.shape == (6, 3, 16, 16) and torch.equal(a, b)
    assert not DegradationConfig().is_realistic


def test_realistic_degradation_is_seeded_and_varied() -> None:
    hr = faces()
    config = DegradationConfig.realistic()
    assert config.is_realistic
    a = degrade(hr, 16, config, torch.Generator().manual_seed(2), canvas=32)
    b = degrade(hr, 16, config, torch.Generator().manual_seed(2), canvas=32)
    c = degrade(hr, 16, config, torch.Generator().manual_seed(3), canvas=32)
    assert a.shape == (6, 3, 32, 32) and torch.equal(a, b) and not torch.equal(a, c)
    assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0
    clean = DegradationConfig.realistic(clean_probability=1.0)
    # All clean: the paper's LR at 16 px, only resized to the canvas.
    lr = degrade(hr, 16, clean, torch.Generator().manual_seed(2))
    assert lr.shape == (6, 3, 16, 16)
    assert DegradationConfig.realistic().clean() == DegradationConfig()


def test_blur_and_jpeg_change_an_image_and_keep_its_mean() -> None:
    image = faces(1)
    blurred = gaussian_blur(image, 1.5)
    assert blurred.shape == image.shape
    assert (blurred - image).abs().mean() > 1e-3
    assert abs(float(blurred.mean() - image.mean())) < 0.01
    compressed = jpeg_compress(image[0], 30)
    assert compressed.shape == image[0].shape and (compressed - image[0]).abs().mean() > 1e-3


def test_degradation_from_name_or_file(tmp_path: Path) -> None:
    assert DegradationConfig.from_name_or_file(None) == DegradationConfig()
    assert DegradationConfig.from_name_or_file("realistic") == DegradationConfig.realistic()
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"lr_size_range": [8, 32], "jpeg_probability": 1.0}))
    loaded = DegradationConfig.from_name_or_file(str(path))
    assert loaded.lr_size_range == (8, 32) and loaded.jpeg_probability == 1.0
    path.write_text(json.dumps({"jpeg": 1}))
    with pytest.raises(ValueError, match="unknown degradation field"):
        DegradationConfig.from_name_or_file(str(path))
    with pytest.raises(FileNotFoundError, match="neither"):
        DegradationConfig.from_name_or_file("nosuch.json")
    with pytest.raises(ValueError, match="lr_size_range"):
        DegradationConfig(lr_size_range=(32, 8))


def test_a_crop_leaving_the_photo_is_filled_from_the_photo_not_black() -> None:
    photo = torch.full((3, 64, 64), 0.8)
    # Landmarks of a face whose template crop runs far off the photo's left edge.
    landmarks = template_points(64) - np.array([40.0, 0.0])
    face, valid = align_face(photo, landmarks, 64)
    assert valid.mean() < 0.8  # a good part is padding...
    assert torch.allclose(face, torch.full_like(face, 0.8), atol=1e-5)  # ...filled from the photo
    zeros, _ = align_face(photo, landmarks, 64, padding_mode="zeros")
    assert float(zeros.min()) == 0.0


def test_pair_augmentation_flips_and_greys() -> None:
    hr = faces(1)[0]
    valid = torch.ones(1, 64, 64)
    valid[..., :5] = 0
    flipped, flipped_valid = PairAugmentation(flip_probability=1.0).apply(hr, valid, torch.Generator())
    assert torch.equal(flipped, hr.flip(-1)) and torch.equal(flipped_valid, valid.flip(-1))
    grey, _ = PairAugmentation(grey_probability=1.0).apply(hr, valid, torch.Generator())
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
    same, _ = PairAugmentation().apply(hr, valid, torch.Generator())
    assert torch.equal(same, hr)
