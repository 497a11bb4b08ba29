"""Detection fallbacks: faces the RGB detector misses as they are (inverted intensities, tight
crops) are found, mapped back to the original image, and named; ``none`` turns them off."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from facetools_dapfsr import DAPFSR, DAPFSRConfig
from facetools_dapfsr.adaptation.exemplar import ExemplarError, load_exemplar
from facetools_dapfsr.data.alignment import template_points
from facetools_dapfsr.data.detection_fallbacks import (
    DEFAULT_FALLBACKS,
    LIFT_GAMMA,
    MIRROR_ORDER,
    PAD_GREY,
    apply_fallback,
    equalize,
    is_plausible_face,
    lift_shadows,
    parse_fallbacks,
)
from facetools_dapfsr.data.landmarks import DetectorSettings, LandmarkDetector
from facetools_dapfsr.evaluation.protocol import ProtocolConfig


def test_fallback_names_parse_and_bad_ones_are_refused() -> None:
    assert parse_fallbacks("default") == DEFAULT_FALLBACKS
    assert parse_fallbacks("none") == ()
    assert parse_fallbacks("pad, invert+equalize") == ("pad", "invert+equalize")
    for bad in ("flip", "pad+pad", "invert+", "lift+lift"):
        with pytest.raises(ValueError, match="unknown detector fallback"):
            parse_fallbacks(bad)
    # Saved in results.json as a list, read back as the same tuple.
    assert ProtocolConfig(detector_fallbacks=["pad"]).detector_fallbacks == ("pad",)


def test_transforms_invert_equalize_and_pad_with_the_offset_returned() -> None:
    image = np.random.default_rng(0).integers(100, 140, size=(20, 30, 3), dtype=np.uint8)
    inverted = apply_fallback(image, "invert")
    assert inverted.pad == 0 and np.array_equal(inverted.image, 255 - image)
    stretched = equalize(image)
    assert stretched.min() == 0 and stretched.max() == 255  # a 40-level image spread over 256
    flat = np.full((4, 4, 3), 7, dtype=np.uint8)
    assert np.array_equal(equalize(flat), flat)
    shown = apply_fallback(image, "pad+invert")
    padded, pad = shown.image, shown.pad
    assert pad == 12 and padded.shape == (44, 54, 3)
    assert np.array_equal(padded[pad:-pad, pad:-pad], 255 - image) and padded[0, 0, 0] == PAD_GREY


@pytest.fixture(scope="module")
def photo(data_dir) -> np.ndarray:
    files = sorted((data_dir / "celeba" / "test").glob("*.jpg"))
    if not files:
        pytest.skip("no CelebA test photos")
    path = files[0]
    return np.asarray(Image.open(path).convert("RGB"))


def test_an_inverted_face_is_found_only_with_the_fallbacks_and_where_the_face_is(photo) -> None:
    plain_detector = LandmarkDetector(DetectorSettings(fallbacks=()))
    detector = LandmarkDetector(DetectorSettings())
    truth = plain_detector.detect([photo])[0]
    assert truth is not None
    inverted = 255 - photo
    assert plain_detector.detect_with_fallbacks([inverted]) == [None]
    found = detector.detect_with_fallbacks([inverted])[0]
    assert found is not None
    landmarks, score, fallback = found
    assert "invert" in fallback and score >= DetectorSettings().min_score
    # Mapped back to the photo: within a few pixels of the landmarks of the photo itself.
    assert float(np.median(np.linalg.norm(landmarks - truth[0], axis=1))) < 4.0


def _dapfsr(*args: str, cache) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "DAPFSR_CACHE": str(cache)}
    code = "import sys; from facetools_dapfsr.cli.main import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=600, check=False
    )


def test_adapt_on_an_inverted_face_runs_with_the_fallbacks_and_says_why_not_without(
    photo, tmp_path, weights_cache
) -> None:
    exemplar = tmp_path / "inverted.png"
    Image.fromarray(255 - photo).save(exemplar)
    with pytest.raises(ExemplarError, match=r"no face found in the exemplar .*none"):
        load_exemplar(exemplar, 64, fallbacks=())
    assert "invert" in load_exemplar(exemplar, 64).fallback

    torch.manual_seed(0)
    model = DAPFSR(DAPFSRConfig.tiny()).eval()
    model.refresh_latent_statistics(num_samples=500)
    base = model.save_pretrained(tmp_path / "base")
    refused = _dapfsr(
        "adapt", "--exemplar", str(exemplar), "--model", str(base), "--out", str(tmp_path / "none"),
        "--detector-fallbacks", "none", "--quiet", cache=weights_cache,
    )  # fmt: skip
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.startswith("dapfsr: error: no face found in the exemplar")
    assert not (tmp_path / "none").exists()
    done = _dapfsr(
        "adapt", "--exemplar", str(exemplar), "--model", str(base), "--out", str(tmp_path / "adapter"),
        "--steps", "1", "--quiet", cache=weights_cache,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "found by the detection fallback" in done.stdout
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


def test_detector_settings_with_other_fallbacks_use_another_landmark_cache(tmp_path) -> None:
    from facetools_dapfsr.data.faces import default_landmark_cache

    plain = dataclasses.replace(DetectorSettings(), fallbacks=())
    assert default_landmark_cache("data", "train", plain) != default_landmark_cache("data", "train", DetectorSettings())


# -- the fallbacks for side and low light (Extended Yale B) ------------------------------------
FIRST_FALLBACKS = DEFAULT_FALLBACKS[:7]
"""The defaults before ``lift``, ``mirror``, ``symmetric`` and ``upscale`` existed."""


def test_lift_mirror_upscale_and_symmetric_map_landmarks_back_to_the_original() -> None:
    image = np.random.default_rng(1).integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    lifted = lift_shadows(image)
    assert lifted[image == 0].max() == 0 and lifted[image == 255].min() == 255
    assert lift_shadows(np.full((1, 1, 3), 32, dtype=np.uint8))[0, 0, 0] == round(255 * (32 / 255) ** LIFT_GAMMA)
    symmetric = apply_fallback(image, "symmetric").image
    assert np.array_equal(symmetric, symmetric[:, ::-1]) and (symmetric >= image).all()
    # Points drawn on the original, moved as the image is (mirror, x2, border), come back.
    points = np.array([[10, 8], [20, 8], [15, 12], [11, 16], [19, 16]], dtype=np.float32)
    shown = apply_fallback(image, "pad+lift+mirror+upscale")
    assert shown.image.shape == (88, 108, 3) and shown.scale == 2 and shown.mirrored_width == 30
    moved = points[list(MIRROR_ORDER)].copy()
    moved[:, 0] = 29 - moved[:, 0]
    moved = (moved + 0.5) * 2 - 0.5 + shown.pad
    assert np.allclose(shown.to_original(moved), points)
    assert parse_fallbacks("pad+lift+mirror+upscale, pad+symmetric") == ("pad+lift+mirror+upscale", "pad+symmetric")


def test_only_upright_face_geometry_is_plausible() -> None:
    face = template_points(128)
    assert is_plausible_face(face)
    assert not is_plausible_face(face[[1, 0, 2, 4, 3]])  # eyes and mouth corners swapped
    upside_down = face.copy()
    upside_down[:, 1] = 128 - upside_down[:, 1]
    assert not is_plausible_face(upside_down)
    squashed = face.copy()
    squashed[3:, 1] = squashed[0, 1] + 5  # the mouth on the eye line
    assert not is_plausible_face(squashed)


@pytest.fixture(scope="module")
def yaleb_reference(data_dir):
    """``(folder, reference points of a subject)``: the frontal-lit image's points, as the
    evaluation protocol finds them (its subject's images are pixel-registered)."""
    from facetools_dapfsr.adaptation.exemplar import find_landmarks, read_photo

    folder = data_dir / "yaleb"
    if not folder.is_dir():
        pytest.skip("no Extended Yale B images")

    def reference(subject: str) -> np.ndarray:
        found = find_landmarks(read_photo(folder / subject / f"{subject}_P00A+000E+00.png"), fallbacks=())
        assert found is not None
        return found[0]

    return folder, reference


@pytest.mark.parametrize(
    ("subject", "light", "fallback"),
    [
        ("yaleB06", "A-085E-20", "pad+lift"),  # lit from the far left and below: half the face black
        ("yaleB08", "A-085E-20", "pad+lift+mirror"),  # the same light, found only mirrored
    ],
)
def test_a_side_lit_yale_b_face_is_found_only_by_the_new_fallbacks_and_in_place(
    yaleb_reference, subject, light, fallback
) -> None:
    folder, reference = yaleb_reference
    path = folder / subject / f"{subject}_P00{light}.png"
    if not path.is_file():
        pytest.skip(f"{path.name} not in the Yale B folder")
    image = np.asarray(Image.open(path).convert("RGB"))
    before = LandmarkDetector(DetectorSettings(fallbacks=FIRST_FALLBACKS, fallback_min_score=0.95))
    assert before.detect_with_fallbacks([image]) == [None]
    found = LandmarkDetector(DetectorSettings()).detect_with_fallbacks([image])[0]
    assert found is not None
    landmarks, score, name = found
    assert name == fallback and score >= DetectorSettings().fallback_min_score
    # Within a few pixels of the frontal-lit image's points (the eyes are about 99 px apart).
    assert float(np.median(np.linalg.norm(landmarks - reference(subject), axis=1))) < 8.0
