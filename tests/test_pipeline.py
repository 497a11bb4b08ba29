"""The detect -> upscale pipeline on real photos: detection of tiny faces, sizes, face
replacement, untouched background, seamless pasting, tiled resampling and tiled detection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from facetools_dapfsr import DAPFSR, DAPFSRConfig
from facetools_dapfsr.data.alignment import (
    FACE_TEMPLATE,
    alignment_matrix,
    crop_footprint,
    invert_affine,
)
from facetools_dapfsr.pipeline import (
    Detection,
    FacePipeline,
    FaceResult,
    ImageResult,
    MTCNNOptions,
    PasteOptions,
    PathOptions,
    PipelineConfig,
)
from facetools_dapfsr.pipeline.align import TemplateAligner
from facetools_dapfsr.pipeline.detect_mtcnn import MTCNNDetector
from facetools_dapfsr.pipeline.paste import (
    FacePaster,
    face_to_output_matrix,
    feather_mask,
)
from facetools_dapfsr.pipeline.resample import output_size, resample_image, to_uint8

# Every face of the two group photos as (x1, y1, x2, y2) fractions of the photo's width and
# height: found by MTCNN at full resolution (faces 100+ px tall) and checked by eye.
REFERENCE_FACES = {
    "t1.jpg": [
        [0.043, 0.308, 0.128, 0.446],
        [0.209, 0.172, 0.286, 0.301],
        [0.362, 0.305, 0.447, 0.461],
        [0.582, 0.391, 0.657, 0.535],
        [0.709, 0.071, 0.791, 0.224],
        [0.885, 0.310, 0.959, 0.451],
    ],
    "breakingbad.jpg": [[0.324, 0.166, 0.447, 0.438], [0.653, 0.054, 0.824, 0.457]],
}
FACES_PER_PHOTO = {name: len(boxes) for name, boxes in REFERENCE_FACES.items()}


def downscale(image: Image.Image, factor: int) -> torch.Tensor:
    """A photo shrunk ``factor`` times (antialiased), as the pipeline's float ``[3, H, W]``."""
    small = image.convert("RGB").resize((round(image.width / factor), round(image.height / factor)), Image.LANCZOS)
    return torch.from_numpy(np.asarray(small, dtype=np.float32) / 255).permute(2, 0, 1).contiguous()


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / union


@pytest.fixture(scope="module")
def photos(data_dir: Path) -> dict[str, Image.Image]:
    folder = data_dir / "photos"
    return {name: Image.open(folder / name).convert("RGB") for name in FACES_PER_PHOTO}


@pytest.fixture(scope="module")
def reference_boxes(photos: dict[str, Image.Image]) -> dict[str, np.ndarray]:
    """The reference faces in full-resolution pixel coordinates."""
    return {
        name: np.array(REFERENCE_FACES[name]) * [image.width, image.height, image.width, image.height]
        for name, image in photos.items()
    }


@pytest.fixture(scope="module")
def tiny_model() -> DAPFSR:
    torch.manual_seed(0)
    return DAPFSR(DAPFSRConfig.tiny()).eval()


@pytest.mark.parametrize("factor", [4, 8])
@pytest.mark.parametrize("name", list(FACES_PER_PHOTO))
def test_every_visible_face_is_detected_in_downscaled_photos(photos, reference_boxes, name, factor):
    image = downscale(photos[name], factor)
    detections = MTCNNDetector(min_face_size=10).detect(image)
    assert len(detections) == FACES_PER_PHOTO[name], [d.score for d in detections]
    for reference in reference_boxes[name] / factor:
        best = max(box_iou(reference, d.box) for d in detections)
        assert best > 0.4, f"face at {reference.round()} not found in the {factor}x downscaled {name}"
    for detection in detections:
        assert detection.landmarks.shape == (5, 2)
        assert detection.score >= 0.9
        left_eye, right_eye, nose, left_mouth, right_mouth = detection.landmarks
        assert left_eye[0] < right_eye[0] and left_mouth[0] < right_mouth[0]


def test_tiled_detection_finds_the_same_faces_as_one_pass(photos, reference_boxes):
    """A small detection budget forces tiles + a coarse pass: the large-photo path."""
    image = downscale(photos["t1.jpg"], 2)
    tiled = MTCNNDetector(min_face_size=30, options=MTCNNOptions(max_side=300)).detect(image)
    assert len(tiled) == FACES_PER_PHOTO["t1.jpg"]
    for reference in reference_boxes["t1.jpg"] / 2:
        assert max(box_iou(reference, d.box) for d in tiled) > 0.5


def test_pipeline_replaces_faces_and_keeps_the_background(photos, tiny_model):
    image = downscale(photos["t1.jpg"], 8)
    # Pasted as rendered, every face: this test checks where faces go, not which are kept.
    config = PipelineConfig(
        model=tiny_model, scale=4, paste=PasteOptions(consistency=False), paths=PathOptions(replace="always")
    )
    pipeline = FacePipeline.from_config(config)
    result = pipeline(image, source="t1@8x")

    height, width = image.shape[1:]
    assert result.composite.dtype == torch.uint8
    assert tuple(result.composite.shape) == (3, round(height * 4), round(width * 4))
    assert len(result.faces) == FACES_PER_PHOTO["t1.jpg"]
    background = resample_image(image, result.composite.shape[1:])
    touched = torch.zeros(result.composite.shape[1:], dtype=torch.bool)
    for face in result.faces:
        assert tuple(face.lr_face.shape) == (3, 16, 16)
        assert tuple(face.sr_face.shape) == (3, 32, 32)
        assert face.path == "super-resolved" and face.input_side < 48
        assert face.lr_face.min() >= 0 and face.lr_face.max() <= 1
        to_output = face_to_output_matrix(face, result.input_size, result.output_size)
        x0, y0, x1, y1 = crop_footprint(invert_affine(to_output), 32, margin=1)
        touched[max(0, y0) : y1, max(0, x0) : x1] = True
        # The middle of the pasted face is the super-resolved face, not the photo.
        cx, cy = to_output @ np.array([15.5, 15.5, 1.0])
        centre = result.composite[:, round(cy) - 2 : round(cy) + 3, round(cx) - 2 : round(cx) + 3].float() / 255
        expected = face.sr_face[:, 12:20, 12:20].mean((1, 2))
        assert torch.allclose(centre.mean((1, 2)), expected, atol=0.08)
        photo = background[:, round(cy) - 2 : round(cy) + 3, round(cx) - 2 : round(cx) + 3].float() / 255
        assert (centre - photo).abs().mean() > 0.03, "the face was not replaced"
    # Outside the faces' footprints the output is exactly the resampled photo.
    assert torch.equal(result.composite[:, ~touched], background[:, ~touched])
    assert touched.float().mean() < 0.2


def test_pasted_faces_line_up_with_the_photo(photos):
    """With bicubic 'super-resolution' the pasted faces must match the photo they came from."""
    image = downscale(photos["t1.jpg"], 4)
    pipeline = FacePipeline.from_config(PipelineConfig(super_resolver="bicubic", scale=4))
    result = pipeline(image)
    background = resample_image(image, result.composite.shape[1:]).float() / 255
    composite = result.composite.float() / 255
    for face in result.faces:
        to_output = face_to_output_matrix(face, result.input_size, result.output_size)
        x0, y0, x1, y1 = crop_footprint(invert_affine(to_output), 128)
        pasted = composite[:, y0:y1, x0:x1]
        assert (pasted - background[:, y0:y1, x0:x1]).abs().mean() < 0.02
        # ...whereas a face pasted 3 output pixels off would not.
        assert (pasted - background[:, y0 + 3 : y1 + 3, x0:x1]).abs().mean() > 0.02


# Pastes every face as rendered: the blending tests below look at the mask alone.
AS_RENDERED = FacePaster(PasteOptions(consistency=False), replace="always")


def test_feathered_paste_has_no_seam():
    """A flat grey face on a flat background: the blend weight rises smoothly from 0 to 1."""
    size = 40  # face crop side in the input photo
    landmarks = FACE_TEMPLATE * size + 20
    image = torch.full((3, 80, 80), 0.1)
    aligner_faces, valid, matrices = TemplateAligner().align(image, [Detection(np.zeros(4), landmarks, 1.0)], 16)
    face = FaceResult(
        detection=Detection(np.zeros(4), landmarks, 1.0),
        lr_face=aligner_faces[0],
        lr_valid=valid[0],
        matrix=matrices[0],
        sr_face=torch.full((3, 32, 32), 0.9),
    )
    result = ImageResult(source="flat", image=image, scale=4, faces=[face])
    result.composite = resample_image(image, output_size((80, 80), 4))
    AS_RENDERED.process(result)
    weight = (result.composite[0].float() / 255 - 0.1) / 0.8
    assert weight.max() > 0.99 and weight.min() > -0.01
    assert weight[0, :].abs().max() < 0.01 and weight[:, 0].abs().max() < 0.01  # background untouched
    step = max(weight.diff(dim=0).abs().max(), weight.diff(dim=1).abs().max())
    assert step < 0.15, f"blend weight jumps by {step:.2f} between neighbouring pixels"
    mask = feather_mask(32)
    assert mask[0, 16, 16] == 1 and mask[0, 0, 0] == 0


def test_faces_at_the_photo_edge_fade_out():
    """Part of the crop lies outside the photo: those super-resolved pixels are not pasted."""
    landmarks = FACE_TEMPLATE * 40 - np.array([20.0, 0.0])  # left half of the face is outside
    image = torch.full((3, 60, 60), 0.1)
    detection = Detection(np.zeros(4), landmarks, 1.0)
    faces, valid, matrices = TemplateAligner().align(image, [detection], 16)
    assert 0.3 < valid.mean() < 0.7
    face = FaceResult(detection, faces[0], valid[0], matrices[0], torch.full((3, 32, 32), 0.9))
    result = ImageResult(source="edge", image=image, scale=2, faces=[face])
    result.composite = resample_image(image, (120, 120))
    AS_RENDERED.process(result)
    weight = (result.composite[0].float() / 255 - 0.1) / 0.8
    assert weight[:, :2].max() < 0.1  # the photo's edge keeps (nearly) its own pixels
    assert weight.max() > 0.9


def test_alignment_crop_matches_the_template():
    """The LR crop puts the landmarks where the model's template expects them."""
    landmarks = np.array([[30.0, 40], [50, 41], [40, 52], [32, 62], [48, 63]])
    matrix = alignment_matrix(landmarks, 16)
    image = torch.rand(3, 100, 100)
    faces, _, matrices = TemplateAligner().align(image, [Detection(np.zeros(4), landmarks, 1.0)], 16)
    np.testing.assert_allclose(matrices[0], matrix)
    assert tuple(faces.shape) == (1, 3, 16, 16)


def test_no_face_photo_is_still_upscaled(tiny_model):
    image = torch.linspace(0, 1, 40 * 60).reshape(1, 40, 60).repeat(3, 1, 1)
    result = FacePipeline.from_config(PipelineConfig(model=tiny_model, scale=2.5))(image)
    assert result.faces == []
    assert tuple(result.composite.shape) == (3, 100, 150)


@pytest.mark.parametrize("out_size", [(404, 628), (303, 471), (50, 70)])
def test_banded_resampling_matches_whole_image_bicubic(out_size):
    image = torch.rand(3, 101, 157)
    whole = to_uint8(F.interpolate(image[None], size=out_size, mode="bicubic", align_corners=False)[0])
    banded = resample_image(image, out_size, band_pixels=2000)
    assert (banded.int() - whole.int()).abs().max() <= 1
