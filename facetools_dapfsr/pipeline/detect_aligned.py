"""The built-in ``aligned`` detect stage: every input photo is one face, already aligned.

For domains where no detector finds faces (infrared, thermal, dark crops) or where the user's
own detector or a manual annotation already cropped them: each photo must be a square crop to
the model's face template (any side; ``dapfsr evaluate --aligned`` reads folders of the same
crops), and its face is taken to be the template's five points at that side, as GFPGAN's
``has_aligned`` does. No detector runs. The rest of the pipeline is unchanged, including the
size rule (:mod:`facetools_dapfsr.pipeline.routing`): a crop small enough for the model is super-resolved,
a large one is left to the resampler.
"""

from __future__ import annotations

import numpy as np
import torch

from facetools_dapfsr.data.alignment import aligned_crop_points
from facetools_dapfsr.pipeline.config import PipelineConfig
from facetools_dapfsr.pipeline.results import Detection


class AlignedInputDetector:
    """``detect(image)``: the whole square photo as one template-aligned face (score 1)."""

    @classmethod
    def from_config(cls, config: PipelineConfig) -> AlignedInputDetector:
        return cls()

    def detect(self, image: torch.Tensor) -> list[Detection]:
        height, width = image.shape[-2:]
        try:
            landmarks = aligned_crop_points(width, height)
        except ValueError as error:
            raise ValueError(
                f"--aligned: {error}; crop it to the template or let the detector find the face"
            ) from error
        # Pixel centres at integers: the photo spans -0.5 .. side - 0.5.
        box = np.array([-0.5, -0.5, width - 0.5, height - 0.5], dtype=np.float32)
        return [Detection(box=box, landmarks=landmarks.astype(np.float32), score=1.0)]
