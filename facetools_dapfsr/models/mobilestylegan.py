"""The imported FFHQ face prior: a MobileStyleGAN-compatible generator in plain PyTorch.

The architecture is the one of the OpenVINO IR shipped in the ``random-face`` wheel (see
:mod:`facetools_dapfsr.weights.convert_prior`, which reads it): a StyleGAN2-style mapping network
and a MobileStyleGAN synthesis network (distilled from StyleGAN2-FFHQ) that renders the 1024 px
FFHQ frame.

Synthesis network, from a 4x4 learned constant:

- ``conv1``: modulated 3x3 convolution (512 -> 512) at 4x4;
- seven blocks, each doubling the resolution (8, 16, ..., 512): a modulated inverse Haar
  wavelet upsampling (channels / 4), then two modulated depthwise-separable 3x3 convolutions;
- ``to_img``: a modulated 1x1 convolution to 12 Haar wavelet channels (3 colours x LL, LH, HL,
  HH), and the final image (1024 px) is their inverse Haar transform.

Every modulated layer multiplies its input channels by a style ``(A w + b) * scale`` (no
demodulation, no tanh: the exported network has none). Each convolution then adds a fixed noise
map (baked into the export), a bias and a leaky ReLU (slope 0.2). The network was exported for a
single ``w``; here each of the 23 style-modulation layers reads its own W+ slot, in forward order::

    slot 0            conv1
    slot 1 + 3 i      blocks[i].up      (i = 0..6)
    slot 2 + 3 i      blocks[i].conv1
    slot 3 + 3 i      blocks[i].conv2
    slot 22           to_img (and the early-exit heads)

so a broadcast W+ (all slots equal) reproduces the exported network exactly.

Early exit (``render_size`` 512 or 256 instead of 1024): the last one or two blocks run at half
(quarter) resolution. Their wavelet upsampling keeps only the LL band, halved (the orthonormal
Haar LL band is twice the 2x2 mean, so this is the box-downsampled map the upsampling would
have produced), their noise maps are box-downsampled, and a re-fitted to-image head (same shape
as ``to_img``, fitted at conversion time by least squares to the Haar coefficients of the
box-downsampled full render) makes the smaller frame.

Crop window: :meth:`MobileStyleGANDecoder.synthesis` needs only the part of the frame its HR
crop reads (about 40% of the side). From block 3 on, the network runs on a window of the hidden
maps around that part, with a margin wide enough that the zero padding at the window's inner
edges never reaches it, so the crop is the same as from the full frame (exactly, up to float
rounding).

Cost of one 128 px HR crop, convolution FLOPs relative to rendering the full frame and cropping
it, and PSNR against that crop (``benchmarks/prior.py``): crop window at 1024 px 0.38 (exact);
early exit at 512 px 0.31 (about 34 dB); at 256 px 0.29 (about 27 dB, visibly softer).

Conventions: W+ is ``[B, 23, 512]``; the synthesis network's frame is in ``[-1, 1]``; the
decoder's public outputs (:meth:`MobileStyleGANDecoder.render_frame`,
:meth:`MobileStyleGANDecoder.synthesis`) are in ``[0, 1]``.
"""

from __future__ import annotations

import math
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facetools_dapfsr.config import MobileStyleGANConfig
from facetools_dapfsr.data.alignment import (
    alignment_matrix,
    crop_footprint,
    resampled_points,
    sampling_grid,
    warp_plan,
)
from facetools_dapfsr.models.decoder import Decoder

W_STAT_SAMPLES = 10_000
W_STAT_SEED = 0
"""The sampling of the stored W statistics (``w_mean``, ``w_std``), measured when the prior is
converted into the weights cache."""

W_DIM = 512
Z_DIM = 512
MAPPING_LAYERS = 8
CHANNELS = (512, 512, 512, 512, 512, 256, 128, 64)
"""Channels of ``conv1`` (4x4) and of the seven blocks (8 .. 512 px hidden resolution)."""
FRAME_SIZE = 1024
"""Side of the full FFHQ frame."""
NUM_WS = 2 + 3 * (len(CHANNELS) - 1)
WAVELET_CHANNELS = 12
"""Output of a to-image layer: 3 colours of LL, then 3 colours x (LH, HL, HH)."""
NEGATIVE_SLOPE = 0.2
MAPPING_GAIN = math.sqrt(2.0)
RENDER_SIZES = (256, 512, FRAME_SIZE)
"""Frame sides that can be rendered: the full frame and two early exits."""
TO_IMG_SLOT = NUM_WS - 1
WINDOW_FROM_BLOCK = 3
"""When only part of the frame is needed (the HR crop), blocks from this one on run on a window
of the hidden maps (the earlier ones are cheap at 32 px and below)."""


def _skipped_upsamplings(render_size: int) -> int:
    """How many of the last blocks run without upsampling for a frame of ``render_size`` px."""
    if render_size not in RENDER_SIZES:
        raise ValueError(f"render_size must be one of {RENDER_SIZES}, got {render_size}")
    return int(math.log2(FRAME_SIZE // render_size))


def inverse_haar(x: torch.Tensor) -> torch.Tensor:
    """One level of the orthonormal inverse 2-D Haar transform, in the export's channel layout.

    Args:
        x: ``[B, 4C, h, w]``: the ``C`` LL channels, then ``C x 3`` detail channels
            (channel-major; bands 0 = high-pass along rows, 1 = along columns, 2 = both).
    Returns:
        ``[B, C, 2h, 2w]``, in channels-last memory layout.
    """
    batch, channels4, height, width = x.shape
    if channels4 % 4:
        raise ValueError(f"inverse_haar needs 4C channels, got {channels4}")
    channels = channels4 // 4
    # Work channels-last: the convolutions around it are 2-3x faster in that layout on CPU.
    t = x.permute(0, 2, 3, 1)
    # Output pixel (2i + a, 2j + b) = sum_k band_k[i, j] * g_k,row[a] * g_k,col[b] with the Haar
    # synthesis filters g0 = (1, 1) / sqrt(2), g1 = (1, -1) / sqrt(2): +-1/2 times the bands, a 4x4
    # Hadamard butterfly. (A matmul with the 3x4 synthesis matrix did the same as a batched matmul
    # of one 3x4 product per pixel, the slowest op of the render at batch 32.)
    low = t[..., :channels]
    detail = t[..., channels:].unflatten(-1, (channels, 3))
    d0, d1, d2 = detail[..., 0], detail[..., 1], detail[..., 2]
    s, d, u, v = low + d2, low - d2, d0 + d1, d0 - d1
    if torch.is_grad_enabled() and x.requires_grad:
        rows = [torch.stack([s + u, d + v], dim=3), torch.stack([d - v, s - u], dim=3)]  # [B, h, w, b, C] for a
        out = torch.stack(rows, dim=2).mul(0.5)
    else:  # no autograd: write the four sub-pixels straight into the interleaved output
        out = t.new_empty(batch, height, 2, width, 2, channels)
        torch.add(s, u, out=out[:, :, 0, :, 0])
        torch.add(d, v, out=out[:, :, 0, :, 1])
        torch.sub(d, v, out=out[:, :, 1, :, 0])
        torch.sub(s, u, out=out[:, :, 1, :, 1])
        out.mul_(0.5)
    return out.reshape(batch, 2 * height, 2 * width, channels).permute(0, 3, 1, 2)


def haar(image: torch.Tensor) -> torch.Tensor:
    """Forward transform matching :func:`inverse_haar` (``inverse_haar(haar(x)) == x``).

    Args:
        image: ``[B, C, H, W]`` with even ``H`` and ``W``.
    Returns:
        ``[B, 4C, H/2, W/2]`` in the layout :func:`inverse_haar` reads.
    """
    batch, channels, height, width = image.shape
    blocks = image.reshape(batch, channels, height // 2, 2, width // 2, 2).permute(0, 1, 2, 4, 3, 5)
    blocks = blocks.reshape(batch, channels, height // 2, width // 2, 4)
    # The synthesis basis is orthonormal, so analysis is its transpose.
    bands = blocks @ _HAAR_SYNTHESIS.to(dtype=image.dtype, device=image.device).T  # [B, C, h, w, k]
    low = bands[..., 0]
    high = bands[..., 1:].permute(0, 1, 4, 2, 3).reshape(batch, 3 * channels, height // 2, width // 2)
    return torch.cat([low, high], 1)


_G0 = torch.tensor([1.0, 1.0], dtype=torch.float64) / math.sqrt(2.0)
_G1 = torch.tensor([1.0, -1.0], dtype=torch.float64) / math.sqrt(2.0)
_HAAR_SYNTHESIS = (
    torch.stack([torch.outer(_G0, _G0), torch.outer(_G1, _G0), torch.outer(_G0, _G1), torch.outer(_G1, _G1)])
    .reshape(4, 4)
    .float()
)
"""``[band k, sub-pixel (a, b)]``: the 2x2 synthesis patch of each Haar band."""


def _modulate(x: torch.Tensor, style: torch.Tensor, overwrite: bool) -> torch.Tensor:
    """``x * style``, in place when the caller allows it (``x`` is a hidden map nobody reads again)
    and autograd is off (its backward pass may need ``x``). At batch 32 each new map of the last
    blocks is a few hundred MB that the kernel maps and zeroes afresh (page faults, about a
    quarter of the render's time before): a buffer not allocated is time saved."""
    if overwrite and not torch.is_grad_enabled() and not x.requires_grad and 0 not in x.stride():
        return x.mul_(style)
    return x * style


class Modulation(nn.Linear):
    """The style affine of one modulated layer: ``w [B, w_dim] -> (A w + b) * scale [B, C, 1, 1]``.

    ``scale`` is the equalised-learning-rate constant of the layer it feeds (``1 /
    sqrt(fan_in)``; 1 for the wavelet upsampling), kept outside the weights as in the export so
    that adapting ``A`` and ``b`` (DAMMA) behaves as in the original network.
    """

    def __init__(self, w_dim: int, channels: int, scale: float = 1.0) -> None:
        super().__init__(w_dim, channels, bias=True)
        self.scale = scale

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        style = F.linear(w, self.weight, self.bias)
        return (style * self.scale)[:, :, None, None]


class StyledConv(nn.Module):
    """Modulated 3x3 convolution + fixed noise + bias + leaky ReLU.

    The modulation is applied to the input (``conv(x * s)``): one convolution shared by the
    whole batch, which is what the export computes (no demodulation, so no per-sample weights).

    Args:
        channels_in: input channels.
        channels_out: output channels.
        size: side of the (square) feature map, for the noise buffer.
        separable: depthwise 3x3 followed by pointwise 1x1 (the blocks) instead of a dense 3x3
            (``conv1``).
        w_dim: size of a W code.
    """

    noise: torch.Tensor

    def __init__(self, channels_in: int, channels_out: int, size: int, separable: bool, w_dim: int = W_DIM) -> None:
        super().__init__()
        self.separable = separable
        self.modulation = Modulation(w_dim, channels_in, scale=1.0 / math.sqrt(channels_in * 9))
        if separable:
            self.weight_dw = nn.Parameter(torch.zeros(channels_in, 1, 3, 3))
            self.weight_pw = nn.Parameter(torch.zeros(channels_out, channels_in, 1, 1))
        else:
            self.weight = nn.Parameter(torch.zeros(channels_out, channels_in, 3, 3))
        self.bias = nn.Parameter(torch.zeros(channels_out))
        # The export froze one noise draw (already multiplied by its learned strength).
        self.register_buffer("noise", torch.zeros(1, 1, size, size))

    def forward(
        self,
        x: torch.Tensor,
        w: torch.Tensor,
        resolution: int | None = None,
        offset: tuple[int, int] = (0, 0),
        overwrite: bool = False,
    ) -> torch.Tensor:
        """Args:
        x: ``[B, C_in, h, w]``: the whole map, or a window of it.
        w: ``[B, w_dim]`` style code.
        resolution: side of the whole map this layer runs at (default: ``x``'s); below the
            noise map's side for the early exits.
        offset: ``(top, left)`` of the window ``x`` within the whole map.
        overwrite: ``x`` may be modulated in place (outside autograd).
        """
        x = _modulate(x, self.modulation(w), overwrite)
        if self.separable:
            x = F.conv2d(x, self.weight_dw, padding=1, groups=x.shape[1])
            x = F.conv2d(x, self.weight_pw)
        else:
            x = F.conv2d(x, self.weight, padding=1)
        # In place: the convolution's output is not needed for its backward pass.
        noise = self.noise
        resolution = x.shape[-1] if resolution is None else resolution
        if noise.shape[-1] != resolution:  # early exit: this layer runs below its resolution
            noise = F.avg_pool2d(noise, noise.shape[-1] // resolution)
        top, left = offset
        noise = noise[:, :, top : top + x.shape[-2], left : left + x.shape[-1]]
        x = x.add_(noise).add_(self.bias[None, :, None, None])
        return F.leaky_relu(x, NEGATIVE_SLOPE, inplace=True)


class WaveletUpsample(nn.Module):
    """Modulated inverse-Haar upsampling: ``C`` channels at ``h`` -> ``C / 4`` at ``2h``.

    The first quarter of the (modulated) channels is the LL band, the rest the three detail
    bands, channel-major (``[C/4, 3]``).
    """

    def __init__(self, channels_in: int, w_dim: int = W_DIM) -> None:
        super().__init__()
        if channels_in % 4:
            raise ValueError(f"wavelet upsampling needs channels divisible by 4, got {channels_in}")
        self.modulation = Modulation(w_dim, channels_in, scale=1.0)

    def forward(self, x: torch.Tensor, w: torch.Tensor, upsample: bool = True, overwrite: bool = False) -> torch.Tensor:
        """``upsample=False`` (early exit): the LL band / 2, i.e. the 2x2 mean of the upsampled
        map, at the input resolution. ``overwrite``: ``x`` may be modulated in place (outside
        autograd)."""
        if upsample:
            return inverse_haar(_modulate(x, self.modulation(w), overwrite))
        quarter = x.shape[1] // 4
        return x[:, :quarter] * (self.modulation(w)[:, :quarter] * 0.5)


class ToWavelets(nn.Module):
    """Modulated 1x1 convolution to the 12 Haar wavelet channels of an RGB image (no activation)."""

    def __init__(self, channels_in: int, w_dim: int = W_DIM) -> None:
        super().__init__()
        self.modulation = Modulation(w_dim, channels_in, scale=1.0 / math.sqrt(channels_in))
        self.weight = nn.Parameter(torch.zeros(WAVELET_CHANNELS, channels_in, 1, 1))
        self.bias = nn.Parameter(torch.zeros(WAVELET_CHANNELS))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x * self.modulation(w), self.weight, self.bias)


class SynthesisBlock(nn.Module):
    """Wavelet upsampling + two modulated separable convolutions; reads three W+ slots."""

    def __init__(self, channels_in: int, channels_out: int, size: int) -> None:
        super().__init__()
        self.up = WaveletUpsample(channels_in)
        self.conv1 = StyledConv(channels_in // 4, channels_out, size, separable=True)
        self.conv2 = StyledConv(channels_out, channels_out, size, separable=True)

    def forward(
        self,
        x: torch.Tensor,
        ws: torch.Tensor,
        upsample: bool = True,
        resolution: int | None = None,
        offset: tuple[int, int] = (0, 0),
        overwrite: bool = False,
    ) -> torch.Tensor:
        """Args:
        x: ``[B, C_in, h, w]`` hidden maps (or a window of them).
        ws: ``[B, 3, w_dim]``: the slots of ``up``, ``conv1``, ``conv2``.
        upsample: ``False`` runs the block at its input resolution (early exit).
        resolution, offset: side of the whole output map and the window's ``(top, left)``
            in it (see :class:`StyledConv`).
        overwrite: ``x`` may be modulated in place (outside autograd); the block's own
            intermediate maps always may.
        """
        x = self.up(x, ws[:, 0], upsample, overwrite)
        x = self.conv1(x, ws[:, 1], resolution, offset, overwrite=True)
        return self.conv2(x, ws[:, 2], resolution, offset, overwrite=True)


class MappingNetwork(nn.Module):
    """``z [B, 512] -> w [B, 512]``: pixel norm, then 8 x (linear, leaky ReLU 0.2, x sqrt 2).

    Weights are stored with StyleGAN2's equalised-learning-rate multipliers already applied.
    """

    def __init__(self, z_dim: int = Z_DIM, w_dim: int = W_DIM, num_layers: int = MAPPING_LAYERS) -> None:
        super().__init__()
        dims = [z_dim] + [w_dim] * num_layers
        self.layers = nn.ModuleList(nn.Linear(dims[i], dims[i + 1]) for i in range(num_layers))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z * torch.rsqrt(z.square().mean(1, keepdim=True) + 1e-8)
        for layer in self.layers:
            x = F.leaky_relu(layer(x), NEGATIVE_SLOPE) * MAPPING_GAIN
        return x


class SynthesisNetwork(nn.Module):
    """W+ ``[B, 23, 512]`` -> FFHQ frame ``[B, 3, S, S]`` in ``[-1, 1]``, ``S`` in :data:`RENDER_SIZES`."""

    def __init__(self) -> None:
        super().__init__()
        self.const = nn.Parameter(torch.zeros(1, CHANNELS[0], 4, 4))
        self.conv1 = StyledConv(CHANNELS[0], CHANNELS[0], 4, separable=False)
        self.blocks = nn.ModuleList(
            SynthesisBlock(CHANNELS[i], CHANNELS[i + 1], 8 * 2**i) for i in range(len(CHANNELS) - 1)
        )
        self.to_img = ToWavelets(CHANNELS[-1])
        # Early-exit heads, keyed by the frame side they produce; fitted at conversion time.
        self.exit_heads = nn.ModuleDict(
            {str(size): ToWavelets(CHANNELS[-1]) for size in RENDER_SIZES if size != FRAME_SIZE}
        )

    def features(
        self, ws: torch.Tensor, render_size: int = FRAME_SIZE, region: tuple[int, int, int, int] | None = None
    ) -> torch.Tensor:
        """Hidden maps after the last block, what the to-image head reads.

        Args:
            ws: ``[B, 23, 512]``.
            render_size: side of the frame (1024, or an early exit).
            region: ``(top, left, bottom, right)`` in frame pixels, all even: compute only the
                maps under it (see :meth:`forward`).
        Returns:
            ``[B, 64, render_size / 2, render_size / 2]``, or the region's half size.
        """
        if region is not None and any(v % 2 for v in region):
            raise ValueError(f"feature regions must have even bounds, got {region}")
        hidden, (top, left) = self._features(ws, render_size, region)
        if region is None:
            return hidden
        region_top, region_left, region_bottom, region_right = (v // 2 for v in region)
        return hidden[:, :, region_top - top : region_bottom - top, region_left - left : region_right - left]

    def _features(
        self, ws: torch.Tensor, render_size: int, region: tuple[int, int, int, int] | None
    ) -> tuple[torch.Tensor, tuple[int, int]]:
        """Hidden maps after the last block, on a window that covers ``region`` (frame pixels)
        when given; also returns the window's ``(top, left)`` at the hidden maps' resolution."""
        skipped = _skipped_upsamplings(render_size)
        x = self.const.expand(ws.shape[0], -1, -1, -1).to(ws.dtype)
        x = x.contiguous(memory_format=torch.channels_last)  # faster convolutions on CPU
        x = self.conv1(x, ws[:, 0])
        resolution, top, left = x.shape[-1], 0, 0
        for i, block in enumerate(self.blocks):
            if region is not None and i == WINDOW_FROM_BLOCK:
                top, bottom, left, right = self._window(region, render_size, resolution)
                x = x[:, :, top:bottom, left:right]
            upsample = i < len(self.blocks) - skipped
            if upsample:
                resolution, top, left = 2 * resolution, 2 * top, 2 * left
            # x is the previous block's output (or a window of it), read by nothing else.
            x = block(x, ws[:, 1 + 3 * i : 4 + 3 * i], upsample, resolution, (top, left), overwrite=True)
        return x, (top, left)

    def _window(
        self, region: tuple[int, int, int, int], render_size: int, resolution: int
    ) -> tuple[int, int, int, int]:
        """``(top, bottom, left, right)`` at ``resolution`` of the window that renders ``region``
        exactly. Each 3x3 convolution zero-pads the window, which corrupts one more pixel along
        its inner edges; upsampling doubles the corrupted band, so add that margin."""
        corrupted = 0
        for i in range(WINDOW_FROM_BLOCK, len(self.blocks)):
            corrupted = (2 * corrupted if i < len(self.blocks) - _skipped_upsamplings(render_size) else corrupted) + 2
        scale = render_size // resolution  # frame pixels per hidden pixel where the window starts
        margin = math.ceil(2 * corrupted / scale)  # the final inverse Haar doubles it once more
        region_top, region_left, region_bottom, region_right = region
        return (
            max(region_top // scale - margin, 0),
            min(-(-region_bottom // scale) + margin, resolution),
            max(region_left // scale - margin, 0),
            min(-(-region_right // scale) + margin, resolution),
        )

    def head(self, render_size: int) -> ToWavelets:
        """The to-image layer used for a frame of ``render_size`` px."""
        # exit_heads holds ToWavelets only (a ModuleDict lookup is typed nn.Module).
        return self.to_img if render_size == FRAME_SIZE else cast("ToWavelets", self.exit_heads[str(render_size)])

    def forward(
        self, ws: torch.Tensor, render_size: int = FRAME_SIZE, region: tuple[int, int, int, int] | None = None
    ) -> torch.Tensor:
        """Render the frame, or only ``region = (top, left, bottom, right)`` of it (frame pixels,
        end-exclusive), which costs a fraction and matches the full render there.

        Returns ``[B, 3, render_size, render_size]`` (or the region's size) in ``[-1, 1]``.
        """
        if ws.ndim != 3 or ws.shape[1:] != (NUM_WS, W_DIM):
            raise ValueError(f"expected ws [B, {NUM_WS}, {W_DIM}], got {tuple(ws.shape)}")
        if region is not None:
            top, left, bottom, right = region
            if not (0 <= top < bottom <= render_size and 0 <= left < right <= render_size):
                raise ValueError(f"region {region} is not inside the {render_size} px frame")
            # The head's wavelets are at half the frame's side: widen the region to even bounds.
            even = (top - top % 2, left - left % 2, bottom + bottom % 2, right + right % 2)
            hidden = self.features(ws, render_size, even)
        else:
            hidden = self.features(ws, render_size)
        frame = inverse_haar(self.head(render_size)(hidden, ws[:, TO_IMG_SLOT]))
        if region is not None:
            frame = frame[:, :, top - even[0] : bottom - even[0], left - even[1] : right - even[1]]
        return frame.contiguous()


class TemplateCropRenderer(nn.Module):
    """``ws -> `` the template face crop at ``size`` px, with the crop's geometry (the frame
    window to render, the antialiasing pre-shrink, the sampling grid) fixed when it is built:
    :meth:`MobileStyleGANDecoder.render` in a form ``torch.export`` and ONNX can trace.

    Only the part of the frame the crop reads is rendered (about a third of the cost); pasted
    into an empty frame, it gives the same crop as the full frame would.
    """

    grid: torch.Tensor

    def __init__(self, decoder: MobileStyleGANDecoder, size: int) -> None:
        super().__init__()
        self.synthesis_network = decoder.synthesis_network
        self.render_size = render_size = decoder.render_size
        self.region = decoder.crop_region(render_size, size)
        matrix = torch.as_tensor(decoder.crop_matrix(render_size, size), dtype=torch.float64)[None]
        self.shrink, matrix = warp_plan(matrix, (render_size, render_size))
        source = self.shrink or (render_size, render_size)
        grid = sampling_grid(matrix, source, (size, size)).float()
        self.register_buffer("grid", grid.to(decoder.frame_landmarks.device), persistent=False)

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        top, left, bottom, right = self.region
        size = self.render_size
        window = (self.synthesis_network(ws, size, self.region) + 1.0) * 0.5
        # The crop is cheap; doing it in float32 keeps bf16 autocast from degrading the resampling.
        frame = F.pad(window.float(), (left, size - right, top, size - bottom))
        if self.shrink is not None:
            frame = F.interpolate(frame, size=self.shrink, mode="bilinear", antialias=True, align_corners=False)
        grid = self.grid.expand(ws.shape[0], -1, -1, -1)
        return F.grid_sample(frame, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class MobileStyleGANDecoder(Decoder):
    """The imported FFHQ prior behind the :class:`Decoder` interface.

    :meth:`synthesis` renders the FFHQ frame at ``config.render_size`` and crops the model's HR
    face (``config.resolution`` px) with the 5-point template of
    :mod:`facetools_dapfsr.data.alignment`, using the frame's mean landmarks (buffer
    ``frame_landmarks``, measured at conversion time). Build with random weights, then load a
    converted state dict, or use :meth:`from_weights_cache`.
    """

    w_mean: torch.Tensor
    w_std: torch.Tensor
    frame_landmarks: torch.Tensor

    def __init__(self, config: MobileStyleGANConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else MobileStyleGANConfig()
        if self.config.render_size not in RENDER_SIZES:
            raise ValueError(f"render_size must be one of {RENDER_SIZES}, got {self.config.render_size}")
        if self.config.resolution < 1:
            raise ValueError(f"resolution must be positive, got {self.config.resolution}")
        self.num_ws = NUM_WS
        self.w_dim = W_DIM
        self.z_dim = Z_DIM
        self.resolution = self.config.resolution
        self.render_size = self.config.render_size
        self.mapping_network = MappingNetwork()
        self.synthesis_network = SynthesisNetwork()
        self.register_buffer("w_mean", torch.zeros(W_DIM))
        self.register_buffer("w_std", torch.ones(W_DIM))
        # [5, 2] mean landmarks of the FFHQ frame in 1024 px pixel coordinates: place the HR crop.
        self.register_buffer("frame_landmarks", torch.zeros(5, 2))

    @classmethod
    def from_weights_cache(cls, config: MobileStyleGANConfig | None = None) -> MobileStyleGANDecoder:
        """Build the decoder and load the converted prior from the weights cache (strictly).

        Returned in eval mode with every parameter frozen; re-enable ``requires_grad`` on
        :meth:`modulation_parameters` to adapt them.
        """
        from facetools_dapfsr.weights import load_weights

        config = config if config is not None else MobileStyleGANConfig()
        tensors, _provenance = load_weights(config.weights)
        decoder = cls(config)
        decoder.load_state_dict(tensors, strict=True)
        return decoder.eval().requires_grad_(False)

    # -- Decoder interface -------------------------------------------------------------------
    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"expected z [B, {self.z_dim}], got {tuple(z.shape)}")
        return self.mapping_network(z)

    def render_frame(self, ws: torch.Tensor) -> torch.Tensor:
        """W+ ``[B, 23, 512]`` -> FFHQ frame ``[B, 3, render_size, render_size]`` in ``[0, 1]``."""
        return (self.synthesis_network(ws, self.render_size) + 1.0) * 0.5

    def crop_matrix(self, render_size: int | None = None, resolution: int | None = None) -> np.ndarray:
        """``[2, 3]`` similarity from frame pixels (at ``render_size``) to the pixels of the face
        crop of side ``resolution`` (default: the model's HR size)."""
        size = self.render_size if render_size is None else render_size
        resolution = self.resolution if resolution is None else resolution
        landmarks = self.frame_landmarks.detach().double().cpu().numpy()
        if not np.isfinite(landmarks).all() or np.ptp(landmarks[:, 0]) <= 0:
            raise RuntimeError("frame_landmarks are not set: load converted weights first")
        landmarks = resampled_points(landmarks, size / FRAME_SIZE)
        return alignment_matrix(landmarks, resolution)

    def crop_region(self, render_size: int | None = None, resolution: int | None = None) -> tuple[int, int, int, int]:
        """``(top, left, bottom, right)``: the frame pixels the face crop of side ``resolution``
        reads (with the support of its resampling filters), at ``render_size``."""
        size = self.render_size if render_size is None else render_size
        side = self.resolution if resolution is None else resolution
        matrix = self.crop_matrix(size, side)
        # warp_affine prefilters by 1 / (2 * scale) when shrinking, then samples bilinearly:
        # a few frame pixels of support either side, more the stronger the shrink.
        scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
        margin = math.ceil(2.0 / min(scale, 1.0)) + 2
        left, top, right, bottom = crop_footprint(matrix, side, margin)
        return max(top, 0), max(left, 0), min(bottom, size), min(right, size)

    def synthesis(self, ws: torch.Tensor) -> torch.Tensor:
        return self.render(ws)

    @property
    def output_sizes(self) -> tuple[int, ...]:
        """The model's HR size and its doublings up to the prior's 1024 px frame: the same
        template crop, read from the frame at more pixels."""
        sizes = [self.resolution]
        while sizes[-1] * 2 <= FRAME_SIZE:
            sizes.append(sizes[-1] * 2)
        return tuple(sizes)

    def render(self, ws: torch.Tensor, size: int | None = None) -> torch.Tensor:
        """The template crop at ``size`` px, read straight from the frame rendered at
        ``config.render_size`` (the exit the encoder was trained through: codes from a 256 px
        exit rendered at a larger exit are sharper but other faces, see
        ``benchmarks/render_size.py``)."""
        return self.renderer(size)(ws)

    def renderer(self, size: int | None = None) -> TemplateCropRenderer:
        return TemplateCropRenderer(self, self.check_size(size))

    def modulation_parameter_names(self) -> list[str]:
        """Style affines (weight and bias) of the 23 modulated layers used at this ``render_size``
        (the early-exit head replaces ``to_img`` when the frame is rendered smaller)."""
        head = "to_img" if self.render_size == FRAME_SIZE else f"exit_heads.{self.render_size}"
        prefixes = ["conv1"]
        for i in range(len(self.synthesis_network.blocks)):
            prefixes += [f"blocks.{i}.up", f"blocks.{i}.conv1", f"blocks.{i}.conv2"]
        prefixes.append(head)
        return [f"synthesis_network.{prefix}.modulation.{param}" for prefix in prefixes for param in ("weight", "bias")]

    @torch.no_grad()
    def w_statistics(
        self, num_samples: int = W_STAT_SAMPLES, seed: int = W_STAT_SEED, batch_size: int = 1000
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The stored W statistics when asked for the sampling they were measured with at conversion
        time (``W_STAT_SAMPLES`` samples, seed ``W_STAT_SEED``), so that every machine gets the same
        numbers; any other sampling is measured afresh, as for any decoder."""
        if (num_samples, seed) == (W_STAT_SAMPLES, W_STAT_SEED):
            return self.w_mean.clone(), self.w_std.clone()
        return super().w_statistics(num_samples=num_samples, seed=seed, batch_size=batch_size)
