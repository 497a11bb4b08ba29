"""Converter for ``face-quality``: the qualityface 1.0.3 MobileNetV2 regressor.

The checkpoint is a ``DataParallel`` state dict of ``QualityNet`` (backbone = torchvision's
MobileNetV2 wrapped by siriusbackbone, head = ``classify``). siriusbackbone's wrapper registers
the same feature modules twice (``backbone.net.features`` and ``backbone.backbone.features``), so
one copy is kept. Keys match :class:`facetools_dapfsr.metrics.face_quality.FaceQuality`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

CHECKPOINT = "qualityface/checkpoints/last.pth"
_FEATURES = "module.backbone.net.features."
_DUPLICATE = "module.backbone.backbone.features."
_HEAD = "module.classify."


def convert(extracted: Mapping[str, Path]) -> dict[str, torch.Tensor]:
    from facetools_dapfsr.metrics.face_quality import FaceQuality

    state = torch.load(extracted["qualityface"] / CHECKPOINT, map_location="cpu", weights_only=True)
    tensors: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith(_FEATURES):
            tensors["features." + key[len(_FEATURES) :]] = value
        elif key.startswith(_HEAD):
            tensors["head." + key[len(_HEAD) :]] = value
    for key, value in state.items():
        if key.startswith(_DUPLICATE) and not torch.equal(value, tensors["features." + key[len(_DUPLICATE) :]]):
            raise ValueError(f"{CHECKPOINT}: {key} differs from its twin; unexpected checkpoint layout")
    FaceQuality().load_state_dict(tensors)
    return tensors
