"""What a stage object of each kind provides (structural protocols; no base class needed)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from facetools_dapfsr.pipeline.results import Detection, ImageResult

DETECT = "detect"
ALIGN = "align"
SUPER_RESOLVE = "super_resolve"
BACKGROUND = "background"
POST = "post"
STAGE_KINDS: tuple[str, ...] = (DETECT, ALIGN, SUPER_RESOLVE, BACKGROUND, POST)
"""Stage kinds in the order the pipeline runs them."""


@runtime_checkable
class Detector(Protocol):
    def detect(self, image: torch.Tensor) -> list[Detection]:
        """Faces in ``image`` (``[3, H, W]`` float in ``[0, 1]``), in its pixel coordinates."""
        ...


@runtime_checkable
class Aligner(Protocol):
    def align(
        self, image: torch.Tensor, detections: Sequence[Detection], size: int
    ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """Crop every detected face to ``size`` x ``size``.

        Returns:
            ``(faces [N, 3, size, size], valid [N, 1, size, size], matrices [N, 2, 3])`` where
            each matrix maps input-photo pixels to crop pixels and ``valid`` marks crop pixels
            that came from inside the photo.
        """
        ...


@runtime_checkable
class SuperResolver(Protocol):
    """A stage that can render faces at several sides also sets ``output_sizes`` (a tuple of
    ints) and accepts ``super_resolve(faces, size=N)``; the pipeline then asks for the smallest
    size that covers each face in the output (:mod:`facetools_dapfsr.pipeline.routing`)."""

    lr_size: int
    hr_size: int

    def super_resolve(self, faces: torch.Tensor) -> torch.Tensor:
        """``[N, 3, lr_size, lr_size]`` -> ``[N, 3, hr_size, hr_size]``, floats in ``[0, 1]``."""
        ...


@runtime_checkable
class BackgroundUpsampler(Protocol):
    def upscale(self, image: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
        """The whole photo (``[3, H, W]`` float in ``[0, 1]``) at ``out_size`` (``(height, width)``),
        as ``[3, height, width]`` uint8, mapping pixels as :mod:`facetools_dapfsr.pipeline.resample`
        does (pixel centres aligned, ``align_corners=False``) so that pasted faces line up."""
        ...


@runtime_checkable
class PostProcessor(Protocol):
    def process(self, result: ImageResult) -> None:
        """Edit ``result.composite`` in place (e.g. paste the super-resolved faces)."""
        ...


STAGE_PROTOCOLS: dict[str, type] = {
    DETECT: Detector,
    ALIGN: Aligner,
    SUPER_RESOLVE: SuperResolver,
    BACKGROUND: BackgroundUpsampler,
    POST: PostProcessor,
}
