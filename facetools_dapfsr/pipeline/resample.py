"""Resampling the whole photo to the output size, in bands so that large photos fit in memory.

One mapping between input and output pixels is used everywhere (background, face pasting):
with per-axis factors ``s = out / in``, output pixel centre ``p'`` sits at input position
``(p' + 0.5) / s - 0.5`` (the ``align_corners=False`` convention of PyTorch and Pillow).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from facetools_dapfsr.data.alignment import rescale_matrix
from facetools_dapfsr.images import check_bit_depth, quantise

# Output pixels (per channel) resampled at once; bounds the temporary float buffers to a few
# tens of MB whatever the photo size.
BAND_PIXELS = 2_000_000
# Rows of input kept beyond the ones a band needs: bicubic reads 2 on each side.
HALO = 3


def output_size(input_size: tuple[int, int], scale: float) -> tuple[int, int]:
    """``(height, width)`` of the photo upscaled by ``scale``."""
    height, width = input_size
    return max(1, round(height * scale)), max(1, round(width * scale))


def input_to_output(input_size: tuple[int, int], out_size: tuple[int, int]) -> np.ndarray:
    """``[2, 3]`` affine mapping input pixel coordinates to output pixel coordinates."""
    sy = out_size[0] / input_size[0]
    sx = out_size[1] / input_size[1]
    return rescale_matrix(sx, sy)


def resample_image(
    image: torch.Tensor, out_size: tuple[int, int], band_pixels: int = BAND_PIXELS, bit_depth: int = 8
) -> torch.Tensor:
    """Bicubic resampling of a whole photo, computed band by band.

    Args:
        image: ``[C, H, W]`` float in ``[0, 1]``.
        out_size: ``(height, width)`` of the result.
        band_pixels: output pixels per band (memory bound); the result does not depend on it.
        bit_depth: 8 or 16, what the result is quantised to (the resampling itself is float).
    Returns:
        ``[C, height, width]`` uint8 (uint16 at 16 bits).
    """
    if image.ndim != 3 or not image.is_floating_point():
        raise ValueError(f"expected a float image [C, H, W], got {tuple(image.shape)} {image.dtype}")
    check_bit_depth(bit_depth)
    channels, height, width = image.shape
    out_h, out_w = out_size
    dtype = torch.uint16 if bit_depth == 16 else torch.uint8
    result = torch.empty(channels, out_h, out_w, dtype=dtype, device=image.device)
    rows_per_band = max(1, band_pixels // out_w)
    # Source coordinates of every output column / row centre.
    src_x = (torch.arange(out_w, dtype=torch.float64) + 0.5) * (width / out_w) - 0.5
    src_y = (torch.arange(out_h, dtype=torch.float64) + 0.5) * (height / out_h) - 0.5
    grid_x = ((2 * src_x + 1) / width - 1).to(image.dtype).to(image.device)
    for top in range(0, out_h, rows_per_band):
        bottom = min(out_h, top + rows_per_band)
        ys = src_y[top:bottom]
        first = max(0, math.floor(float(ys[0])) - HALO)
        last = min(height, math.floor(float(ys[-1])) + HALO + 1)
        band = image[:, first:last]
        grid_y = ((2 * (ys - first) + 1) / (last - first) - 1).to(image.dtype).to(image.device)
        grid = torch.stack(torch.meshgrid(grid_y, grid_x, indexing="ij")[::-1], dim=-1).unsqueeze(0)
        # "border" padding repeats edge pixels, as F.interpolate's bicubic does at the photo's
        # edges; inside the photo the halo keeps every tap within the band.
        out = F.grid_sample(band.unsqueeze(0), grid, mode="bicubic", padding_mode="border", align_corners=False)
        result[:, top:bottom] = quantise(out[0], bit_depth)
    return result


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """Float in ``[0, 1]`` -> uint8 with rounding (bicubic overshoot is clipped)."""
    return quantise(image, 8)
