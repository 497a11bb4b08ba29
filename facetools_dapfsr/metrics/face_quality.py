"""No-reference face image quality: a MobileNetV2 regressor (stand-in for FaceQnet's "FIQ").

The network and its preprocessing reproduce ``qualityface`` 1.0.3: torchvision's MobileNetV2
feature extractor, global average pooling, one linear unit; the input is the 128x128 RGB face
mapped from ``[0, 1]`` to ``[-1, 1]`` (``Normalize(mean=0.5, std=0.5)``). Scores are roughly in
``[0, 1]`` and depend on framing: on CelebA, a loose 128x128 centre crop scores about 0.9 (its
16->128 bicubic about 0.4), a face aligned to this project's tighter template about 0.65 (its
bicubic about 0.35). Compare scores only between images framed the same way.
Weights come from the ``face-quality`` weight source.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

WEIGHT_SOURCE = "face-quality"


class FaceQuality(nn.Module):
    """``forward(x)`` maps ``[B, C, H, W]`` faces in ``[0, 1]`` to ``[B]`` quality scores.

    ``C`` is 3 (RGB) or 1 (grey, repeated to RGB). The regressor was trained on 128x128 crops, so
    other sizes are resized to 128x128 (bilinear, antialiased) first.
    The constructor builds random weights; use :meth:`from_weights_cache` for the real ones.
    """

    INPUT_SIZE = 128

    def __init__(self) -> None:
        super().__init__()
        self.features = torchvision.models.mobilenet_v2(weights=None).features
        self.head = nn.Linear(1280, 1)

    @classmethod
    def from_weights_cache(cls, progress: bool = True) -> FaceQuality:
        """Frozen network in eval mode with the converted ``face-quality`` weights."""
        from facetools_dapfsr.weights import load_weights

        tensors, _ = load_weights(WEIGHT_SOURCE, progress=progress)
        model = cls()
        model.load_state_dict(tensors)
        return model.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"expected faces [B, 3 or 1, H, W], got shape {tuple(x.shape)}")
        x = x.expand(-1, 3, -1, -1)
        if x.shape[-2:] != (self.INPUT_SIZE, self.INPUT_SIZE):
            x = F.interpolate(x, size=(self.INPUT_SIZE,) * 2, mode="bilinear", antialias=True, align_corners=False)
        h = self.features((x - 0.5) / 0.5)
        return self.head(h.mean(dim=(2, 3))).squeeze(1)
