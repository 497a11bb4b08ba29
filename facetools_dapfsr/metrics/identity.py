"""Identity: is a super-resolved face still the same person? dlib's ResNet face descriptor.

dlib's face recognition network (a ResNet-29 trained with a metric loss, 128-D descriptors,
99.38% on LFW) calls two faces the same person when their descriptors are less than
:data:`SAME_PERSON_THRESHOLD` (0.6, dlib's own) apart. ``identity_distance`` of an output is its
descriptor's distance to its HR face's; ``identity_verified`` is whether that is below 0.6.

Input: dlib computes descriptors on a 150 px "face chip" cut by its 5-point landmark predictor
with 25% padding, wider than this project's template crop. Two crops are offered:

- ``"chip"`` (default): the face (the template crop, reflect-padded to twice its side so the
  wider chip stays filled) gets dlib's own landmarks and chip, as dlib's examples do;
- ``"template"``: the template crop itself, resized to 150 px, taken as the chip.

``benchmarks/identity_crop.py`` measures, for each, the distances between HR faces of the same
CelebA identity and of different identities (figures in ``benchmarks/RESULTS.md``).

dlib is an optional dependency: ``pip install "facetools-dapfsr[identity]"`` (the prebuilt
``dlib-bin`` wheel). The network's weights come from the ``dlib-face-recognition`` weight source.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

WEIGHT_SOURCE = "dlib-face-recognition"
SAME_PERSON_THRESHOLD = 0.6
"""dlib's threshold: descriptors closer than this are the same person."""
CHIP_SIZE = 150
CHIP_PADDING = 0.25
CROPS = ("chip", "template")


class IdentityUnavailableError(RuntimeError):
    """dlib is not installed (the ``identity`` extra)."""


def import_dlib() -> Any:
    try:
        import dlib
    except ImportError as error:
        raise IdentityUnavailableError(
            'the identity metric needs dlib: pip install "facetools-dapfsr[identity]" (the prebuilt dlib-bin wheel)'
        ) from error
    return dlib


def is_available() -> bool:
    """Whether dlib can be imported (the identity metric can run)."""
    try:
        import_dlib()
    except IdentityUnavailableError:
        return False
    return True


class IdentityDescriptor:
    """``descriptors(faces)``: ``[B, 3|1, H, W]`` template-aligned faces in ``[0, 1]`` -> ``[B, 128]``.

    Build with :meth:`from_weights_cache` (reads the weights, loads dlib's networks).
    """

    def __init__(self, recognizer: Any, predictor: Any, crop: str = "chip") -> None:
        if crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
        self.recognizer = recognizer
        self.predictor = predictor
        self.crop = crop

    @classmethod
    def from_weights_cache(cls, crop: str = "chip", progress: bool = True) -> IdentityDescriptor:
        from facetools_dapfsr.weights import load_weights

        dlib = import_dlib()
        tensors, _ = load_weights(WEIGHT_SOURCE, progress=progress)
        # dlib deserialises from a path only: hand it the verified bytes in a private folder.
        with tempfile.TemporaryDirectory(prefix="dapfsr-dlib-") as folder:
            paths = {}
            for key, tensor in tensors.items():
                paths[key] = Path(folder) / f"{key}.dat"
                paths[key].write_bytes(tensor.numpy().tobytes())
            recognizer = dlib.face_recognition_model_v1(str(paths["descriptor"]))
            predictor = dlib.shape_predictor(str(paths["shape_predictor_5"]))
        return cls(recognizer, predictor, crop)

    def _chip(self, face: np.ndarray) -> np.ndarray:
        dlib = import_dlib()
        if self.crop == "template":
            image = torch.from_numpy(face).permute(2, 0, 1)[None].float()
            resized = F.interpolate(
                image, size=(CHIP_SIZE, CHIP_SIZE), mode="bilinear", antialias=True, align_corners=False
            )
            return resized[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
        side = face.shape[0]
        pad = side // 2
        padded = np.ascontiguousarray(np.pad(face, ((pad, pad), (pad, pad), (0, 0)), mode="reflect"))
        box = dlib.rectangle(pad, pad, pad + side - 1, pad + side - 1)  # the face fills the crop
        shape = self.predictor(padded, box)
        return dlib.get_face_chip(padded, shape, size=CHIP_SIZE, padding=CHIP_PADDING)

    def descriptors(self, faces: torch.Tensor) -> torch.Tensor:
        if faces.ndim != 4 or faces.shape[1] not in (1, 3):
            raise ValueError(f"expected faces [B, 3 or 1, H, W], got shape {tuple(faces.shape)}")
        pixels = (faces.detach().float().clamp(0, 1).expand(-1, 3, -1, -1) * 255).round().to(torch.uint8)
        out = []
        for face in pixels.permute(0, 2, 3, 1).cpu().numpy():
            chip = np.ascontiguousarray(self._chip(np.ascontiguousarray(face)))
            out.append(np.asarray(self.recognizer.compute_face_descriptor(chip), dtype=np.float32))
        return torch.from_numpy(np.stack(out))

    def distance(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``[B]`` descriptor distances between each output face and its target face."""
        return (self.descriptors(output) - self.descriptors(target)).norm(dim=1)
