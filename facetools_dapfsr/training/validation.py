"""Validation of a super-resolution model on held-out pairs: PSNR, LPIPS and an image grid.

Every process evaluates its share of the pairs (item ``i`` goes to process ``i mod W``); sums
are reduced, so the figures do not depend on the number of processes. PSNR leaves out pixels of
the aligned ground truth that came from outside the photo (alignment padding).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from facetools_dapfsr.fileio import atomic_path
from facetools_dapfsr.metrics.image import psnr
from facetools_dapfsr.training.sampling import dataset_length

if TYPE_CHECKING:
    from accelerate import Accelerator

    from facetools_dapfsr.metrics.lpips import LPIPS

Upscaler = Callable[[torch.Tensor], torch.Tensor]
"""LR ``[B, 3, l, l]`` in ``[0, 1]`` -> SR ``[B, 3, h, h]`` in ``[0, 1]``."""


@torch.no_grad()
def evaluate_pairs(
    upscale: Upscaler,
    pairs: torch.utils.data.Dataset,
    accelerator: Accelerator,
    lpips: LPIPS | None = None,
    batch_size: int = 16,
) -> dict[str, float]:
    """Mean PSNR (dB, padding excluded) and LPIPS over ``pairs``; call on every process."""
    device = accelerator.device
    mine = list(range(accelerator.process_index, dataset_length(pairs), accelerator.num_processes))
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # psnr sum, lpips sum, count
    for start in range(0, len(mine), batch_size):
        lr, hr, valid, _ = _collate([pairs[i] for i in mine[start : start + batch_size]])
        lr, hr, valid = lr.to(device), hr.to(device), valid.to(device)
        sr = upscale(lr).float().clamp(0, 1)
        totals[0] += psnr(sr, hr, mask=valid).double().sum()
        if lpips is not None:
            totals[1] += lpips(sr, hr).double().sum()
        totals[2] += len(lr)
    totals = accelerator.reduce(totals, reduction="sum")
    count = max(float(totals[2]), 1.0)
    metrics = {"val/psnr": float(totals[0]) / count}
    if lpips is not None:
        metrics["val/lpips"] = float(totals[1]) / count
    return metrics


def _collate(items: list[tuple]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    lr, hr, valid, index = zip(*items, strict=True)
    return torch.stack(lr), torch.stack(hr), torch.stack(valid), list(index)


@torch.no_grad()
def comparison_grid(upscale: Upscaler, pairs: torch.utils.data.Dataset, count: int, device: torch.device) -> np.ndarray:
    """``[rows * h, 3 * h, 3]`` uint8 image: one row per pair, ``LR (nearest) | output | HR``."""
    lr, hr, _, _ = _collate([pairs[i] for i in range(min(count, dataset_length(pairs)))])
    sr = upscale(lr.to(device)).float().clamp(0, 1).cpu()
    size = hr.shape[-1]
    lr_big = F.interpolate(lr, size=(size, size), mode="nearest")
    rows = torch.cat([lr_big, sr, hr], dim=3)  # side by side
    grid = torch.cat(list(rows), dim=1)  # stacked vertically
    return (grid.permute(1, 2, 0).numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)


def save_image(array: np.ndarray, path: str | Path) -> Path:
    """Write a uint8 ``[H, W, 3]`` array as PNG, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")
    return path
