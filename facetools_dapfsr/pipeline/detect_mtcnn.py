"""The built-in ``mtcnn`` detect stage: the landmark service's photo search as a pipeline stage.

The search itself (MTCNN tuned for tiny faces, tiled for big photos) is
:meth:`facetools_dapfsr.data.landmarks.LandmarkDetector.detect_faces`; this stage reads its
settings from the pipeline's configuration and returns :class:`Detection` results.
"""

from __future__ import annotations

import numpy as np
import torch

from facetools_dapfsr.data.landmarks import (
    LandmarkDetector,
    MTCNNOptions,
    detection_upsample,
)
from facetools_dapfsr.pipeline.config import PipelineConfig
from facetools_dapfsr.pipeline.results import Detection


class MTCNNDetector:
    """MTCNN (facenet-pytorch) with 5 landmarks, configured for faces ``min_face_size`` px tall
    (``options``: :class:`~facetools_dapfsr.data.landmarks.MTCNNOptions`)."""

    def __init__(self, min_face_size: float = 10.0, options: MTCNNOptions | None = None, device: str = "cpu") -> None:
        self.min_face_size = float(min_face_size)
        self.options = options or MTCNNOptions()
        self.device = torch.device(device)
        self.landmarks = LandmarkDetector(device=self.device)  # keeps the networks between photos

    @classmethod
    def from_config(cls, config: PipelineConfig) -> MTCNNDetector:
        return cls(min_face_size=config.min_face_size, options=config.mtcnn, device=config.device)

    @property
    def upsample(self) -> float:
        """Factor applied to the photo before detection."""
        return detection_upsample(self.min_face_size, self.options)

    def detect(self, image: torch.Tensor) -> list[Detection]:
        faces = self.landmarks.detect_faces(image, self.min_face_size, self.options)
        return [
            Detection(
                box=faces.boxes[i].astype(np.float32),
                landmarks=faces.landmarks[i].astype(np.float32),
                score=float(faces.scores[i]),
            )
            for i in range(len(faces))
        ]
