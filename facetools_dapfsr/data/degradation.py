"""The paper's degradation model: random affine misalignment, then downsampling to the LR size.

Following MTDN (as DAP-FSR does), an aligned HR face is rotated, translated and scaled at random
about its centre and then downsampled, so the model learns to super-resolve *unaligned* tiny
faces. Every draw comes from an explicit ``torch.Generator``: the same seed gives the same LR.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class DegradationConfig:
    """Ranges of the random similarity applied before downsampling (uniform draws)."""

    max_rotation_degrees: float = 10.0
    """Rotation in [-max, max] degrees."""
    max_translation: float = 0.06
    """Shift in [-max, max] of the image side, per axis."""
    min_scale: float = 0.9
    max_scale: float = 1.1
    """Zoom factor range (1 = unchanged)."""
    padding_mode: str = "reflection"
    """How pixels warped in from outside the crop are filled ("reflection", "border", "zeros")."""

    @classmethod
    def aligned(cls) -> DegradationConfig:
        """No misalignment: plain downsampling."""
        return cls(max_rotation_degrees=0.0, max_translation=0.0, min_scale=1.0, max_scale=1.0)


def random_affine(batch: int, config: DegradationConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw ``[B, 2, 3]`` affine matrices in ``affine_grid``'s normalised output->input form."""
    u = torch.rand(batch, 4, generator=generator, dtype=torch.float64)
    angle = (2 * u[:, 0] - 1) * math.radians(config.max_rotation_degrees)
    scale = config.min_scale + u[:, 1] * (config.max_scale - config.min_scale)
    shift = (2 * u[:, 2:] - 1) * config.max_translation * 2  # normalised coordinates span 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], dim=1
    )
    return theta.float()


def misalign(hr: torch.Tensor, theta: torch.Tensor, padding_mode: str = "reflection") -> torch.Tensor:
    """Apply ``theta [B, 2, 3]`` (from :func:`random_affine`) to ``hr [B, 3, H, W]``."""
    grid = F.affine_grid(theta.to(hr.dtype), list(hr.shape), align_corners=False)
    return F.grid_sample(hr, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


def downsample(image: torch.Tensor, size: int) -> torch.Tensor:
    """Antialiased bicubic downsampling to ``size`` x ``size``, clamped to ``[0, 1]``."""
    return F.interpolate(image, size=(size, size), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)


def degrade(
    hr: torch.Tensor,
    lr_size: int,
    config: DegradationConfig | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """HR faces ``[B, 3, H, W]`` in ``[0, 1]`` -> unaligned LR faces ``[B, 3, lr_size, lr_size]``."""
    config = config or DegradationConfig()
    theta = random_affine(hr.shape[0], config, generator).to(hr.device)
    return downsample(misalign(hr, theta, config.padding_mode), lr_size)
