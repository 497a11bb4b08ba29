"""What the pipeline produces: detections, per-face results and per-photo results.

Conventions: photos are float tensors ``[3, H, W]`` in ``[0, 1]``; the composite is a uint8
tensor ``[3, H', W']`` (a quarter of the memory of float, which matters for large photos), or
uint16 for a photo run at 16 bits (:attr:`ImageResult.bit_depth`; the rule is in
:mod:`~facetools_dapfsr.pipeline.stages`); coordinates are ``(x, y)`` pixels of the input photo with pixel centres at integers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass
class Detection:
    """One face found by a detector, in input-photo pixel coordinates."""

    box: np.ndarray
    """``[4]`` float: x1, y1, x2, y2."""
    landmarks: np.ndarray
    """``[5, 2]`` float: left eye, right eye, nose tip, left and right mouth corners."""
    score: float


@dataclass
class FaceResult:
    """One face through the pipeline."""

    detection: Detection
    lr_face: torch.Tensor | None = None
    """``[3, lr, lr]`` float crop given to the super-resolver."""
    lr_valid: torch.Tensor | None = None
    """``[1, lr, lr]``: 1 where the crop came from inside the photo, 0 where it is padding."""
    matrix: np.ndarray | None = None
    """``[2, 3]`` affine mapping input-photo pixels to ``lr_face`` pixels."""
    sr_face: torch.Tensor | None = None
    """``[3, size, size]`` float restored (super-resolved) face, ``None`` when the face was not
    super-resolved (see :attr:`path`)."""
    input_side: float | None = None
    """Side, in input-photo pixels, of the face's aligned crop (what the size rule compares)."""
    path: str | None = None
    """What happened to the face: ``super-resolved`` or ``resampled: <why>``
    (:mod:`facetools_dapfsr.pipeline.routing`)."""

    @property
    def box(self) -> np.ndarray:
        return self.detection.box

    @property
    def landmarks(self) -> np.ndarray:
        return self.detection.landmarks

    @property
    def score(self) -> float:
        return self.detection.score

    def to_record(self) -> dict[str, Any]:
        """JSON-ready summary (no pixels)."""
        return {
            "box": [round(float(v), 2) for v in self.box],
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
            "score": round(float(self.score), 4),
            "input_side": None if self.input_side is None else round(float(self.input_side), 2),
            "render_size": None if self.sr_face is None else int(self.sr_face.shape[-1]),
            "path": self.path,
        }


@dataclass
class ImageResult:
    """One photo through the pipeline; stages fill it in, observers read it."""

    source: str
    """Where the photo came from (a path, or a caller-chosen label)."""
    image: torch.Tensor
    """``[3, H, W]`` float input photo in ``[0, 1]``."""
    scale: float
    fidelity: float = 1.0
    """Weight of the restored faces against the resampled photo (see ``PipelineConfig.fidelity``)."""
    faces: list[FaceResult] = field(default_factory=list)
    composite: torch.Tensor | None = None
    """``[3, H', W']`` upscaled photo with the faces replaced: uint8, or uint16 at 16 bits."""
    bit_depth: int = 8
    """8 or 16: the composite's depth (uint8 or uint16), chosen before the background stage runs."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds spent per stage (``kind:name``)."""

    @property
    def input_size(self) -> tuple[int, int]:
        """``(height, width)`` of the input photo."""
        return int(self.image.shape[1]), int(self.image.shape[2])

    @property
    def output_size(self) -> tuple[int, int]:
        """``(height, width)`` of the composite."""
        from facetools_dapfsr.pipeline.resample import output_size

        return output_size(self.input_size, self.scale)
