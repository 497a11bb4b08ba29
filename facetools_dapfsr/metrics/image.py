"""Full-reference pixel metrics: PSNR and SSIM.

Images are ``[B, C, H, W]`` (or ``[C, H, W]``) float tensors in ``[0, max_val]``; results are one
value per image (``[B]``, or a 0-d tensor for unbatched input). An optional ``mask``
(``[B, 1, H, W]`` or ``[1, H, W]``, 1 = valid) restricts the metric to valid pixels, e.g. to keep
an aligned ground truth's padding out of the score.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# ITU-R BT.601 luma weights, the usual "grey" for PSNR/SSIM on faces.
_LUMA = (0.299, 0.587, 0.114)


def to_grey(x: torch.Tensor) -> torch.Tensor:
    """BT.601 luma of RGB ``[..., 3, H, W]`` (no offset, same range as the input); grey passes."""
    if x.shape[-3] == 1:
        return x
    if x.shape[-3] != 3:
        raise ValueError(f"expected 1 or 3 channels, got shape {tuple(x.shape)}")
    weights = x.new_tensor(_LUMA).view(3, 1, 1)
    return (x * weights).sum(dim=-3, keepdim=True)


def _prepare(
    x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None, grey: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, bool]:
    if x.shape != y.shape:
        raise ValueError(f"images differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
    unbatched = x.ndim == 3
    if unbatched:
        x, y = x.unsqueeze(0), y.unsqueeze(0)
        mask = mask.unsqueeze(0) if mask is not None else None
    if x.ndim != 4:
        raise ValueError(f"expected [B, C, H, W] or [C, H, W], got shape {tuple(x.shape)}")
    x, y = x.double(), y.double()  # float64: the tiny errors of near-identical images matter
    if grey:
        x, y = to_grey(x), to_grey(y)
    if mask is not None:
        mask = mask.to(x.dtype).expand(x.shape[0], 1, *x.shape[-2:])
    return x, y, mask, unbatched


def psnr(
    x: torch.Tensor,
    y: torch.Tensor,
    max_val: float = 1.0,
    cap: float = 100.0,
    mask: torch.Tensor | None = None,
    grey: bool = False,
) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, ``10 log10(max_val^2 / MSE)``, per image.

    The MSE is over all channels and (valid) pixels. Identical images (MSE = 0) would give
    infinity; the result is clipped to ``cap`` (default 100 dB), so identical images give exactly
    ``cap`` and averages over a data set stay finite.

    Args:
        x, y: images in ``[0, max_val]``.
        max_val: the peak value (1.0 for ``[0, 1]`` images, 255 for 8-bit).
        cap: upper limit of the result, in dB.
        mask: optional validity mask (1 = counted).
        grey: compare BT.601 luma instead of RGB.
    """
    x, y, mask, unbatched = _prepare(x, y, mask, grey)
    squared = (x - y) ** 2
    if mask is None:
        mse = squared.mean(dim=(1, 2, 3))
    else:
        mse = (squared * mask).sum(dim=(1, 2, 3)) / (mask.sum(dim=(1, 2, 3)) * x.shape[1]).clamp_min(1)
    # MSE = 0 gives +inf, which the clamp turns into the cap.
    value = (10 * torch.log10(max_val**2 / mse)).clamp(max=cap).float()
    return value[0] if unbatched else value


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    coords = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    max_val: float = 1.0,
    mask: torch.Tensor | None = None,
    grey: bool = False,
    window_size: int = 11,
    sigma: float = 1.5,
) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004), per image.

    Gaussian window of ``window_size`` 11 and ``sigma`` 1.5, K1 = 0.01, K2 = 0.03, statistics over
    "valid" windows only (no padding), as in the reference MATLAB code. The SSIM map is averaged
    over positions and then over channels (RGB averaged), or computed on BT.601 luma with
    ``grey=True``. Identical images give 1.0. With a ``mask``, only windows that lie entirely
    on valid pixels are averaged.
    """
    x, y, mask, unbatched = _prepare(x, y, mask, grey)
    channels = x.shape[1]
    if min(x.shape[-2:]) < window_size:
        raise ValueError(f"images of size {tuple(x.shape[-2:])} are smaller than the {window_size}px SSIM window")
    g = _gaussian_window(window_size, sigma, x.dtype, x.device)
    window = (g[:, None] * g[None, :]).expand(channels, 1, window_size, window_size)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window, groups=channels)

    c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    if mask is None:
        value = ssim_map.mean(dim=(1, 2, 3))
    else:
        # A window counts when every pixel under it is valid (box filter of the mask == 1).
        box = torch.ones(1, 1, window_size, window_size, dtype=x.dtype, device=x.device)
        inside = (F.conv2d(mask, box) >= window_size**2 - 0.5).to(x.dtype)
        count = inside.sum(dim=(1, 2, 3)) * channels
        value = (ssim_map * inside).sum(dim=(1, 2, 3)) / count.clamp_min(1)
    value = value.float()
    return value[0] if unbatched else value
