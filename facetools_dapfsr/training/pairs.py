"""Training and validation pairs: aligned HR face -> LR face by the paper's degradation model.

Each sample is degraded with a generator seeded by the run seed and the sample's position in the
data stream (training) or its index (validation), so the LR faces are the same whatever the
number of processes, workers or restarts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from facetools_dapfsr.data.degradation import DegradationConfig, degrade
from facetools_dapfsr.data.faces import AlignedFaces
from facetools_dapfsr.data.synthetic import SyntheticPairs
from facetools_dapfsr.metrics.image import to_grey
from facetools_dapfsr.seeding import (
    AUGMENT_STREAM,
    SAMPLE_STREAM,
    SYNTHETIC_STREAM,
    VALIDATION_STREAM,
    generator_for,
)

Pair = tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]
"""``(lr [3, l, l], hr [3, h, h], valid [1, h, h], dataset index)``."""


@dataclass
class PairAugmentation:
    """Changes applied to a real HR face (and so to its LR) before degradation."""

    flip_probability: float = 0.0
    """Mirror the face left-right (the 5-point template is symmetric)."""
    grey_probability: float = 0.0
    """Make the face grey (Rec. 601 luma in all three channels): grey and infrared domains."""

    def apply(
        self, hr: torch.Tensor, valid: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        flip, grey = torch.rand(2, generator=generator).tolist()
        if flip < self.flip_probability:
            hr, valid = hr.flip(-1), valid.flip(-1)
        if grey < self.grey_probability:
            hr = to_grey(hr).expand_as(hr).contiguous()
        return hr, valid


class DegradedPairs(torch.utils.data.Dataset):
    """Wraps :class:`AlignedFaces`; indexed by ``(index, position)`` from a StreamSampler.

    ``canvas`` is the side the LR tensors come at (default ``lr_size``; see
    :func:`facetools_dapfsr.data.degradation.degrade`); ``augmentation`` changes the HR face
    first (from its own seeded stream, so the degradation draws do not depend on it).
    """

    def __init__(
        self,
        faces: AlignedFaces,
        lr_size: int,
        degradation: DegradationConfig,
        seed: int,
        canvas: int | None = None,
        augmentation: PairAugmentation | None = None,
    ) -> None:
        self.faces = faces
        self.lr_size = lr_size
        self.degradation = degradation
        self.seed = seed
        self.canvas = canvas
        self.augmentation = augmentation

    def __len__(self) -> int:
        return len(self.faces)

    def __getitem__(self, key: tuple[int, int]) -> Pair:
        index, position = key
        hr, valid = self.faces[index]
        if self.augmentation is not None:
            hr, valid = self.augmentation.apply(hr, valid, generator_for(AUGMENT_STREAM, self.seed, position))
        generator = generator_for(SAMPLE_STREAM, self.seed, position)
        lr = degrade(hr.unsqueeze(0), self.lr_size, self.degradation, generator, self.canvas)[0]
        return lr, hr, valid, index


class SyntheticDegradedPairs(torch.utils.data.Dataset):
    """Wraps :class:`SyntheticPairs`: ``(index, position) -> (lr, hr, ws, index)``, the LR made
    anew from the stored HR face with a seed of the sample's stream position."""

    def __init__(
        self, pairs: SyntheticPairs, lr_size: int, degradation: DegradationConfig, seed: int, canvas: int | None = None
    ) -> None:
        self.pairs = pairs
        self.lr_size = lr_size
        self.degradation = degradation
        self.seed = seed
        self.canvas = canvas

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        index, position = key
        ws, hr = self.pairs[index]
        generator = generator_for(SYNTHETIC_STREAM, self.seed, position)
        lr = degrade(hr.unsqueeze(0), self.lr_size, self.degradation, generator, self.canvas)[0]
        return lr, hr, ws, index


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
