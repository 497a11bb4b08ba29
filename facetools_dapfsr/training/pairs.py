"""Training and validation pairs: aligned HR face -> LR face by the paper's degradation model.

Each sample is degraded with a generator seeded by the run seed and the sample's position in the
data stream (training) or its index (validation), so the LR faces are the same whatever the
number of processes, workers or restarts.
"""

from __future__ import annotations

import torch

from facetools_dapfsr.data.degradation import DegradationConfig, degrade
from facetools_dapfsr.data.faces import AlignedFaces
from facetools_dapfsr.training.seeding import (
    SAMPLE_STREAM,
    VALIDATION_STREAM,
    generator_for,
)

Pair = tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]
"""``(lr [3, l, l], hr [3, h, h], valid [1, h, h], dataset index)``."""


class DegradedPairs(torch.utils.data.Dataset):
    """Wraps :class:`AlignedFaces`; indexed by ``(index, position)`` from a StreamSampler."""

    def __init__(self, faces: AlignedFaces, lr_size: int, degradation: DegradationConfig, seed: int) -> None:
        self.faces = faces
        self.lr_size = lr_size
        self.degradation = degradation
        self.seed = seed

    def __len__(self) -> int:
        return len(self.faces)

    def __getitem__(self, key: tuple[int, int]) -> Pair:
        index, position = key
        hr, valid = self.faces[index]
        generator = generator_for(SAMPLE_STREAM, self.seed, position)
        lr = degrade(hr.unsqueeze(0), self.lr_size, self.degradation, generator)[0]
        return lr, hr, valid, index


class ValidationPairs(torch.utils.data.Dataset):
    """Fixed pairs for validation: item ``i`` is degraded with a seed derived from ``i``."""

    def __init__(self, faces: AlignedFaces, lr_size: int, degradation: DegradationConfig, seed: int, size: int) -> None:
        self.faces = faces
        self.lr_size = lr_size
        self.degradation = degradation
        self.seed = seed
        self.size = min(size, len(faces))

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> Pair:
        hr, valid = self.faces[index]
        generator = generator_for(VALIDATION_STREAM, self.seed, index)
        lr = degrade(hr.unsqueeze(0), self.lr_size, self.degradation, generator)[0]
        return lr, hr, valid, index


class FacesOnly(torch.utils.data.Dataset):
    """For GAN training: ``(index, position) -> (hr, valid, index)``, no degradation."""

    def __init__(self, faces: AlignedFaces) -> None:
        self.faces = faces

    def __len__(self) -> int:
        return len(self.faces)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, int]:
        index, _position = key
        hr, valid = self.faces[index]
        return hr, valid, index
