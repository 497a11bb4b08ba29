"""What a stage object of each kind provides (structural protocols; no base class needed).

The composite's bit depth (the one place this contract is written down): it is uint8, unless the
caller asks for 16 bits (``pipeline(image, bit_depth=16)``, as ``dapfsr upscale`` and
``FaceUpscaler.enhance`` do for a 16-bit grey photo written to PNG or TIFF) and every post stage
declares it can edit a 16-bit composite; then it is uint16 (``ImageResult.bit_depth`` says which).
A ``background`` or ``post`` stage declares what it handles with a ``bit_depths`` attribute (a
tuple such as ``(8, 16)``); a stage without one handles 8 bits only, exactly as before 16-bit
photos existed:

- a background stage without 16 bits is called as ``upscale(image, out_size)`` and its uint8
  result is widened (``v * 257``, which maps 0-255 onto 0-65535 exactly), so the photo keeps
  only 8-bit precision away from the faces;
- a post stage without 16 bits keeps the whole composite at 8 bits (it sees uint8, as it always
  did), and the photo is written at 8 bits.
"""

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
    """A stage that can produce a 16-bit composite also sets ``bit_depths = (8, 16)`` and accepts
    ``upscale(image, out_size, bit_depth=16)``, returning uint16 (see the module's docstring)."""

    def upscale(self, image: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
        """The whole photo (``[3, H, W]`` float in ``[0, 1]``) at ``out_size`` (``(height, width)``),
        as ``[3, height, width]`` uint8, mapping pixels as :mod:`facetools_dapfsr.pipeline.resample`
        does (pixel centres aligned, ``align_corners=False``) so that pasted faces line up."""
        ...


@runtime_checkable
class PostProcessor(Protocol):
    """A stage that can edit a 16-bit (uint16) composite also sets ``bit_depths = (8, 16)``; it
    reads ``result.bit_depth`` (or the composite's dtype) to know which it has."""

    def process(self, result: ImageResult) -> None:
        """Edit ``result.composite`` in place (e.g. paste the super-resolved faces)."""
        ...


def stage_bit_depths(stage: object) -> tuple[int, ...]:
    """The composite bit depths a background or post stage declares; ``(8,)`` when it declares none."""
    return tuple(getattr(stage, "bit_depths", (8,)))


STAGE_PROTOCOLS: dict[str, type] = {
    DETECT: Detector,
    ALIGN: Aligner,
    SUPER_RESOLVE: SuperResolver,
    BACKGROUND: BackgroundUpsampler,
    POST: PostProcessor,
}
