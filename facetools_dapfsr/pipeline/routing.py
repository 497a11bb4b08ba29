"""Which faces the pipeline replaces, and at what size: the "never worse than the input" rule.

The model sees every face at its ``lr_size`` (16 px). A face that is larger in the photo loses
detail when it is shrunk to that size, so past some size re-rendering it makes the photo worse
than plain resampling (measured in ``benchmarks/face_size.py``; figures in
``benchmarks/RESULTS.md``). Per face, in this order:

0. **Choice.** ``faces="all"`` (default), ``"largest"`` (largest box), ``"center"`` (box centre
   nearest the photo's centre) or a list of indices into the detector's faces; ``min_score``
   drops detections below it (:func:`select_faces`).
1. **Size.** ``input_side`` is the side, in input-photo pixels, of the face's aligned crop (the
   template square the model's LR input covers; about 0.6 times the detector's box height,
   measured on the two group photos).
   A face with ``input_side > max_face_size`` is left to the background resampler
   (path ``resampled: larger than max_face_size``) and never reaches the super-resolver.
2. **Render size.** The others are super-resolved and rendered at the smallest size the
   super-resolver offers that covers the face's side in the output (``input_side * scale``),
   e.g. 128 px for a 16 px face at x8 and 256 px for a 32 px face at x8; larger faces get the
   largest size offered.
3. **Consistent with the photo.** Pasting keeps the photo's own content in every band the
   photo resolves: the restored face contributes only detail finer than one input pixel
   (``PasteOptions.consistency``, on by default). Measured on 32 CelebA faces at x4, this takes
   a 16 px face from 21.1 dB (as rendered) to 27.4 dB against 26.9 for resampling, LPIPS 0.110
   against 0.205; the rendered face alone is below resampling at every size.
4. **Sharper or not at all.** With ``replace="sharper"`` (the default) a restored face is pasted
   only where, warped into the output, it is sharper (:func:`sharpness`) than the resampled
   photo under it; otherwise the face keeps the resampled pixels (path ``resampled: not
   sharper``). ``replace="always"`` pastes every restored face.

``PathOptions`` (in :mod:`facetools_dapfsr.pipeline.config`) holds the thresholds; the CLI
exposes them as ``--max-face-size`` and ``--replace``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from facetools_dapfsr.metrics.image import to_grey
from facetools_dapfsr.pipeline.results import Detection

SUPER_RESOLVED = "super-resolved"
TOO_LARGE = "resampled: larger than max_face_size"
NOT_SHARPER = "resampled: not sharper"
"""Values of :attr:`FaceResult.path <facetools_dapfsr.pipeline.results.FaceResult.path>`."""


FaceChoice = str | Sequence[int]


def select_faces(
    detections: Sequence[Detection], image_size: tuple[int, int], choice: FaceChoice = "all", min_score: float = 0.0
) -> list[int]:
    """Indices of the detections to process, in detection order.

    Args:
        detections: the detector's faces.
        image_size: ``(height, width)`` of the photo (for ``"center"``).
        choice: ``"all"``, ``"largest"``, ``"center"`` or indices into ``detections``.
        min_score: detections scoring below it are never chosen.
    Raises:
        ValueError: an unknown choice or an index out of range.
    """
    kept = [i for i, d in enumerate(detections) if float(d.score) >= min_score]
    if isinstance(choice, str):
        if choice == "all":
            return kept
        if choice not in ("largest", "center"):
            raise ValueError(f"faces must be 'all', 'largest', 'center' or a list of indices, got {choice!r}")
        if not kept:
            return []
        boxes = np.stack([np.asarray(detections[i].box, dtype=np.float64) for i in kept])
        if choice == "largest":
            key = -(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        else:
            centre = np.array([image_size[1] - 1, image_size[0] - 1], dtype=np.float64) / 2
            key = np.linalg.norm((boxes[:, :2] + boxes[:, 2:]) / 2 - centre, axis=1)
        return [kept[int(np.argmin(key))]]
    indices = [int(i) for i in choice]
    bad = [i for i in indices if not 0 <= i < len(detections)]
    if bad:
        raise ValueError(f"face indices {bad} are out of range: the detector found {len(detections)} faces")
    return [i for i in sorted(set(indices)) if i in kept]


def crop_side(matrix: np.ndarray, lr_size: int) -> float:
    """Side, in input-photo pixels, of the ``lr_size`` crop that ``matrix`` (photo -> crop) cuts."""
    return float(lr_size / math.sqrt(abs(np.linalg.det(np.asarray(matrix)[:, :2]))))


def render_size(output_side: float, sizes: Sequence[int]) -> int:
    """The smallest of ``sizes`` at least ``output_side``, else the largest."""
    ordered = sorted(int(size) for size in sizes)
    for size in ordered:
        if size >= output_side:
            return size
    return ordered[-1]


def sharpness(images: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute Laplacian of the luma, per image: ``[B, C, H, W]`` -> ``[B]``.

    A blurred face has little energy in the Laplacian; resampling a small face up spreads it
    thin, while a face rendered by the prior carries its own fine detail. ``mask`` ``[B, 1, H, W]``
    weights the pixels (the paste mask, so that only the face is compared). Borders are left out
    (the Laplacian there sees padding).
    """
    grey = to_grey(images.float())
    kernel = grey.new_tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
    response = F.conv2d(grey, kernel).abs()
    if mask is None:
        return response.mean(dim=(1, 2, 3))
    weight = mask.float()[..., 1:-1, 1:-1]
    return (response * weight).sum(dim=(1, 2, 3)) / weight.sum(dim=(1, 2, 3)).clamp_min(1e-8)
