"""The built-in ``template`` aligner: 5-point similarity warp of each face to the model's template."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from facetools_dapfsr.data.alignment import (
    alignment_matrix,
    crop_footprint,
    invert_affine,
    warp_affine,
)
from facetools_dapfsr.pipeline.config import PipelineConfig
from facetools_dapfsr.pipeline.results import Detection

# Extra input pixels around a face's footprint, so that the antialiasing filter warp_affine
# applies when shrinking sees real neighbours rather than the edge of the cut-out.
FILTER_MARGIN = 2


class TemplateAligner:
    """Crops each face straight from the photo at the requested (LR) size.

    Cropping directly at LR size (antialiased when shrinking) gives the super-resolver the
    faithful tiny face the photo holds, rather than a re-blurred enlargement of it.
    """

    @classmethod
    def from_config(cls, config: PipelineConfig) -> TemplateAligner:
        return cls()

    def align(
        self, image: torch.Tensor, detections: Sequence[Detection], size: int
    ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        channels, height, width = image.shape
        faces = torch.zeros(len(detections), channels, size, size, dtype=image.dtype)
        valid = torch.zeros(len(detections), 1, size, size, dtype=image.dtype)
        matrices = np.zeros((len(detections), 2, 3))
        for i, detection in enumerate(detections):
            matrix = alignment_matrix(detection.landmarks, size)
            matrices[i] = matrix
            # Warp only the part of the photo the crop covers: warping the whole photo per face
            # would cost time and memory proportional to the photo, not the face.
            x0, y0, x1, y1 = crop_footprint(matrix, size, margin=FILTER_MARGIN + 2 * _shrink(matrix))
            x0, y0, x1, y1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
            if x1 <= x0 or y1 <= y0:
                continue  # the crop lies entirely outside the photo: all padding
            shifted = matrix.copy()
            shifted[:, 2] += matrix[:, :2] @ np.array([x0, y0], dtype=np.float64)
            region = image[:, y0:y1, x0:x1].unsqueeze(0)
            face, _ = warp_affine(region, shifted, (size, size))
            faces[i] = face[0]
            # Validity relative to the whole photo, not to the cut-out warp_affine saw.
            valid[i] = _photo_validity(matrix, size, height, width).to(image.dtype)
        return faces, valid, matrices


def _shrink(matrix: np.ndarray) -> int:
    """How many input pixels one crop pixel spans (at least 1)."""
    scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
    return max(1, math.ceil(1.0 / max(scale, 1e-6)))


def _photo_validity(matrix: np.ndarray, size: int, height: int, width: int) -> torch.Tensor:
    """``[1, size, size]``: 1 where the crop pixel's centre falls inside the photo.

    Per pixel rather than :func:`crop_footprint`'s box: a rotated crop's box holds pixels that
    are not the photo's; the photo covers ``-0.5 .. side - 0.5`` (pixel centres at integers)."""
    inverse = invert_affine(matrix)
    ys, xs = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64), indexing="ij")
    src_x = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    src_y = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    inside = (src_x >= -0.5) & (src_x <= width - 0.5) & (src_y >= -0.5) & (src_y <= height - 0.5)
    return torch.from_numpy(inside.astype(np.float32)).unsqueeze(0)
