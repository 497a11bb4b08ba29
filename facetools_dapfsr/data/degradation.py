"""Degradation models: HR face -> LR face, seeded.

The paper's model (the default, :class:`DegradationConfig`): following MTDN (as DAP-FSR does), an
aligned HR face is rotated, translated and scaled at random about its centre and then
downsampled, so the model learns to super-resolve *unaligned* tiny faces.

The realistic model (:meth:`DegradationConfig.realistic`) adds what real crops carry: an LR side
drawn from a range (8 to 64 px, log-uniform), Gaussian blur before downsampling, sensor noise and
JPEG compression, each with its own probability, and a share of samples left to the paper's clean
model. An LR made at a side other than the requested ``lr_size`` is resized (bilinear, as the
encoder resizes its input) to ``lr_size``, the *canvas*: a batch is one tensor, and its pixels
say how much detail the LR had.

Every draw comes from an explicit ``torch.Generator``: the same seed gives the same LR.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from facetools_dapfsr.config import build_dataclass


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
    lr_size_range: tuple[int, int] | None = None
    """LR side drawn log-uniformly in ``[min, max]`` px, then resized to the canvas; None: the
    canvas side itself (the paper)."""
    blur_probability: float = 0.0
    blur_sigma: tuple[float, float] = (0.5, 2.0)
    """Gaussian blur of the HR face (sigma in HR pixels, uniform) before downsampling."""
    noise_probability: float = 0.0
    noise_std: tuple[float, float] = (0.0, 0.03)
    """Gaussian noise added to the LR (std in [0, 1] units, uniform; grey or colour at 50/50)."""
    jpeg_probability: float = 0.0
    jpeg_quality: tuple[int, int] = (50, 95)
    """JPEG compression of the LR (quality uniform in the range)."""
    clean_probability: float = 0.0
    """Share of samples made by the paper's clean model instead (the canvas side, no blur,
    noise or JPEG), so a model trained on the realistic mix keeps the paper's protocol."""

    def __post_init__(self) -> None:
        for name in ("lr_size_range", "blur_sigma", "noise_std", "jpeg_quality"):
            value = getattr(self, name)
            if value is not None:
                value = tuple(value)
                if len(value) != 2 or value[0] > value[1]:
                    raise ValueError(f"{name} must be a (min, max) pair, got {value}")
                setattr(self, name, value)
        if self.lr_size_range is not None and self.lr_size_range[0] < 4:
            raise ValueError(f"lr_size_range must start at 4 px or more, got {self.lr_size_range}")
        for name in ("blur_probability", "noise_probability", "jpeg_probability", "clean_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")

    @property
    def is_realistic(self) -> bool:
        """Whether anything beyond the paper's misalignment + downsampling can happen."""
        return self.lr_size_range is not None or any(
            p > 0 for p in (self.blur_probability, self.noise_probability, self.jpeg_probability)
        )

    def clean(self) -> DegradationConfig:
        """The paper's part of this config: its misalignment, none of the realistic extras."""
        return DegradationConfig(
            max_rotation_degrees=self.max_rotation_degrees,
            max_translation=self.max_translation,
            min_scale=self.min_scale,
            max_scale=self.max_scale,
            padding_mode=self.padding_mode,
        )

    @classmethod
    def from_name_or_file(cls, name: str | None) -> DegradationConfig:
        """``None``/``"paper"``, ``"realistic"``, or a JSON file of :class:`DegradationConfig` fields."""
        if name in (None, "", "paper"):
            return cls()
        if name == "realistic":
            return cls.realistic()
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"degradation {name!r} is neither 'paper', 'realistic' nor a JSON file")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from error
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object of degradation fields")
        try:
            return build_dataclass(cls, data, "degradation")
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from error

    @classmethod
    def realistic(cls, clean_probability: float = 0.0) -> DegradationConfig:
        """LR sides 8-64 px, mild blur, noise and JPEG (each half the time): ``--degradation realistic``."""
        return cls(
            lr_size_range=(8, 64),
            blur_probability=0.5,
            noise_probability=0.5,
            jpeg_probability=0.5,
            clean_probability=clean_probability,
        )

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
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], dim=1)
    return theta.float()


def misalign(hr: torch.Tensor, theta: torch.Tensor, padding_mode: str = "reflection") -> torch.Tensor:
    """Apply ``theta [B, 2, 3]`` (from :func:`random_affine`) to ``hr [B, 3, H, W]``."""
    grid = F.affine_grid(theta.to(hr.dtype), list(hr.shape), align_corners=False)
    return F.grid_sample(hr, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


def downsample(image: torch.Tensor, size: int) -> torch.Tensor:
    """Antialiased bicubic downsampling to ``size`` x ``size``, clamped to ``[0, 1]``."""
    return F.interpolate(image, size=(size, size), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``[B, C, H, W]`` (kernel radius 3 sigma, reflected borders)."""
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = image.shape[1]
    padded = F.pad(image, (radius, radius, radius, radius), mode="reflect")
    horizontal = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(horizontal, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def jpeg_compress(image: torch.Tensor, quality: int) -> torch.Tensor:
    """Round-trip ``[3, H, W]`` in ``[0, 1]`` through JPEG at ``quality`` (Pillow's libjpeg, 4:2:0
    chroma as cameras store it)."""
    pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    decoded = np.asarray(Image.open(buffer).convert("RGB"))
    return torch.from_numpy(decoded.copy()).permute(2, 0, 1).to(device=image.device, dtype=image.dtype) / 255.0


def _uniform(generator: torch.Generator | None, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def to_canvas(lr: torch.Tensor, canvas: int) -> torch.Tensor:
    """Resize LR faces to the ``canvas`` side as the encoder resizes its input (bilinear)."""
    side = lr.shape[-1]
    if side == canvas:
        return lr
    return F.interpolate(
        lr, size=(canvas, canvas), mode="bilinear", align_corners=False, antialias=side > canvas
    ).clamp(0, 1)


def _realistic_one(
    hr: torch.Tensor, lr_size: int, config: DegradationConfig, generator: torch.Generator | None
) -> torch.Tensor:
    """One face ``[1, 3, H, W]`` through the realistic model (draws in a fixed order); the LR
    comes back at its own side (``lr_size`` for a clean sample)."""
    draws = torch.rand(5, generator=generator, dtype=torch.float64).tolist()
    theta = random_affine(1, config, generator).to(hr.device)
    if draws[0] < config.clean_probability:
        return downsample(misalign(hr, theta, config.padding_mode), lr_size)
    side = lr_size
    if config.lr_size_range is not None:
        low, high = config.lr_size_range
        side = round(math.exp(_uniform(generator, math.log(low), math.log(high))))
    image = hr
    if draws[1] < config.blur_probability:
        image = gaussian_blur(image, _uniform(generator, *config.blur_sigma))
    lr = downsample(misalign(image, theta, config.padding_mode), side)
    if draws[2] < config.noise_probability:
        std = _uniform(generator, *config.noise_std)
        grey = draws[3] < 0.5
        shape = (1, 1, side, side) if grey else (1, 3, side, side)
        noise = torch.randn(shape, generator=generator).to(lr.device, lr.dtype)
        lr = (lr + std * noise).clamp(0, 1)
    if draws[4] < config.jpeg_probability:
        low, high = config.jpeg_quality
        quality = int(round(_uniform(generator, low, high)))
        lr = jpeg_compress(lr[0], quality).unsqueeze(0)
    return lr.clamp(0, 1)


def degrade(
    hr: torch.Tensor,
    lr_size: int,
    config: DegradationConfig | None = None,
    generator: torch.Generator | None = None,
    canvas: int | None = None,
) -> torch.Tensor:
    """HR faces ``[B, 3, H, W]`` in ``[0, 1]`` -> unaligned LR faces ``[B, 3, canvas, canvas]``.

    ``lr_size`` is the LR side of the paper's model (and of clean samples); a realistic config
    draws each face's own side, blur, noise and JPEG, one after the other from ``generator``.
    Every LR is then resized to ``canvas`` (default ``lr_size``), see :func:`to_canvas`.
    """
    config = config or DegradationConfig()
    canvas = lr_size if canvas is None else canvas
    if config.is_realistic:
        return torch.cat([to_canvas(_realistic_one(face[None], lr_size, config, generator), canvas) for face in hr])
    theta = random_affine(hr.shape[0], config, generator).to(hr.device)
    return to_canvas(downsample(misalign(hr, theta, config.padding_mode), lr_size), canvas)
