"""A native StyleGAN2 generator in plain PyTorch (no custom CUDA ops; runs on CPU).

Follows the StyleGAN2 architecture (Karras et al. 2020, config-f): mapping network, modulated and
demodulated 3x3 convolutions (upsampling ones as stride-2 transposed convolutions followed by the
[1, 3, 3, 1] blur), per-layer noise, to-RGB skip connections. Kept pure PyTorch: the image skip
path is upsampled bilinearly (the same [1, 3, 3, 1] filter up to border handling) and there is no
activation clamping.

Modulated convolutions are computed in the batched form: scale the input channels by the style,
run one convolution shared by the whole batch, scale the output channels by the demodulation
factor. This is the same function as the per-sample grouped convolution of the reference
implementation and several times faster (see benchmarks/foundation.py).

Images leave :meth:`StyleGAN2Generator.synthesis` in ``[0, 1]``; internally the network works in
StyleGAN's ``[-1, 1]`` range.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facetools_dapfsr.config import StyleGAN2Config
from facetools_dapfsr.models.decoder import Decoder

if TYPE_CHECKING:
    from collections.abc import Iterable

LRELU_GAIN = math.sqrt(2.0)


class EqualizedLinear(nn.Module):
    """Linear layer with the equalized learning rate of StyleGAN (weights scaled at run time)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias_init: float = 0.0,
        lr_multiplier: float = 1.0,
        activation: bool = False,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init) / lr_multiplier))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)
        return F.leaky_relu(x, 0.2) * LRELU_GAIN if self.activation else x


class MappingNetwork(nn.Module):
    """z -> w: normalise the second moment of z, then an MLP with leaky ReLU."""

    def __init__(self, z_dim: int, w_dim: int, num_layers: int, lr_multiplier: float) -> None:
        super().__init__()
        dims = [z_dim] + [w_dim] * num_layers
        self.layers = nn.Sequential(
            *[
                EqualizedLinear(i, o, lr_multiplier=lr_multiplier, activation=True)
                for i, o in zip(dims[:-1], dims[1:], strict=True)
            ]
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)
        return self.layers(z)


# StyleGAN2's resampling filter [1, 3, 3, 1] (separable, normalised to sum 1).
_FIR_1D = torch.tensor([1.0, 3.0, 3.0, 1.0]) / 8.0


def upsample_blur(x: torch.Tensor) -> torch.Tensor:
    """The low-pass that follows a stride-2 transposed convolution: ``[B, C, 2H+1, 2W+1]`` ->
    ``[B, C, 2H, 2W]``, FIR ``[1, 3, 3, 1]`` with gain 4 (a quarter of the positions were zero)."""
    channels = x.shape[1]
    kernel = (torch.outer(_FIR_1D, _FIR_1D) * 4).to(device=x.device, dtype=x.dtype)
    return F.conv2d(x, kernel.expand(channels, 1, 4, 4), padding=1, groups=channels)


def modulated_conv2d(
    x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool = True, up: bool = False
) -> torch.Tensor:
    """Batched modulated convolution.

    Args:
        x: ``[B, I, H, W]`` input.
        weight: ``[O, I, k, k]`` shared kernel (already scaled by its gain).
        styles: ``[B, I]`` per-sample input-channel scales.
        demodulate: normalise each output channel to unit expected variance (StyleGAN2).
        up: upsample x2 as StyleGAN2 does: a stride-2 transposed convolution (a quarter of the
            multiply-adds of upsampling first and convolving at the output size), then a blur.
    """
    batch, in_channels = styles.shape
    if x.shape[:2] != (batch, in_channels):
        raise ValueError(f"input {tuple(x.shape)} does not match styles {tuple(styles.shape)}")
    x = x * styles.to(x.dtype).reshape(batch, in_channels, 1, 1)
    if up:
        x = upsample_blur(F.conv_transpose2d(x, weight.to(x.dtype).transpose(0, 1), stride=2))
    else:
        x = F.conv2d(x, weight.to(x.dtype), padding=weight.shape[-1] // 2)
    if demodulate:
        # sum over input channel and kernel of (w * s)^2, per sample and output channel
        kernel_energy = weight.square().sum(dim=(2, 3))  # [O, I]
        dcoefs = torch.rsqrt(styles.square() @ kernel_energy.t() + 1e-8)  # [B, O]
        x = x * dcoefs.to(x.dtype).reshape(batch, -1, 1, 1)
    return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally upsampling first) + noise + bias + leaky ReLU."""

    noise_const: torch.Tensor

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, upsample: bool) -> None:
        super().__init__()
        self.upsample = upsample
        self.resolution = resolution
        self.affine = EqualizedLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.weight_gain = 1.0 / math.sqrt(in_channels * 9)
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros(()))
        # Fixed noise used in eval mode so that rendering is deterministic.
        self.register_buffer("noise_const", torch.randn(resolution, resolution))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w)
        x = modulated_conv2d(x, self.weight * self.weight_gain, styles, demodulate=True, up=self.upsample)
        if self.training:
            noise = torch.randn(x.shape[0], 1, self.resolution, self.resolution, device=x.device, dtype=x.dtype)
        else:
            noise = self.noise_const.to(x.dtype)
        x = x + noise * self.noise_strength.to(x.dtype)
        x = x + self.bias.to(x.dtype).reshape(1, -1, 1, 1)
        return F.leaky_relu(x, 0.2) * LRELU_GAIN


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv to RGB, without demodulation (StyleGAN2's tRGB)."""

    def __init__(self, in_channels: int, w_dim: int) -> None:
        super().__init__()
        self.affine = EqualizedLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(3, in_channels, 1, 1))
        self.weight_gain = 1.0 / math.sqrt(in_channels)
        self.bias = nn.Parameter(torch.zeros(3))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False)
        return x + self.bias.to(x.dtype).reshape(1, -1, 1, 1)


class SynthesisBlock(nn.Module):
    """One resolution level: (const input or upsampling conv) + conv + tRGB skip."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int) -> None:
        super().__init__()
        self.resolution = resolution
        if resolution == 4:
            self.const = nn.Parameter(torch.randn(out_channels, 4, 4))
            self.convs = nn.ModuleList([SynthesisLayer(out_channels, out_channels, w_dim, 4, upsample=False)])
        else:
            self.convs = nn.ModuleList(
                [
                    SynthesisLayer(in_channels, out_channels, w_dim, resolution, upsample=True),
                    SynthesisLayer(out_channels, out_channels, w_dim, resolution, upsample=False),
                ]
            )
        self.torgb = ToRGBLayer(out_channels, w_dim)

    @property
    def num_conv(self) -> int:
        return len(self.convs)

    def forward(
        self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``ws [B, num_conv + 1, w_dim]``: one code per conv, then the tRGB code."""
        if x is None:
            x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1).to(ws.dtype)
        for index, conv in enumerate(self.convs):
            x = conv(x, ws[:, index])
        rgb = self.torgb(x, ws[:, self.num_conv])
        if img is not None:
            rgb = rgb + F.interpolate(img, scale_factor=2, mode="bilinear", align_corners=False)
        return x, rgb


class StyleGAN2Generator(Decoder):
    """StyleGAN2 generator behind the :class:`Decoder` interface.

    ``num_ws = 2 * log2(resolution) - 2``: the 4x4 block uses one conv code, every further block
    two, and each tRGB layer shares the code of the next block's first conv (the last one has its
    own slot).
    """

    def __init__(self, config: StyleGAN2Config) -> None:
        super().__init__()
        self.config = config
        self.resolution = config.resolution
        self.z_dim = config.z_dim
        self.w_dim = config.w_dim
        self.mapping_network = MappingNetwork(
            config.z_dim, config.w_dim, config.mapping_layers, config.mapping_lr_multiplier
        )
        resolutions = [2**i for i in range(2, int(np.log2(config.resolution)) + 1)]
        channels = {r: max(min(config.channel_base // r, config.channel_max), 1) for r in resolutions}
        blocks = [SynthesisBlock(channels[max(r // 2, 4)], channels[r], config.w_dim, r) for r in resolutions]
        self.blocks = nn.ModuleList(blocks)
        self.num_ws = sum(block.num_conv for block in blocks) + 1

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"expected z of shape [B, {self.z_dim}], got {tuple(z.shape)}")
        return self.mapping_network(z)

    def synthesis(self, ws: torch.Tensor) -> torch.Tensor:
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"expected ws of shape [B, {self.num_ws}, {self.w_dim}], got {tuple(ws.shape)}")
        x = img = None
        w_index = 0
        for block in cast("Iterable[SynthesisBlock]", self.blocks):  # a ModuleList iterates as nn.Module
            x, img = block(x, img, ws[:, w_index : w_index + block.num_conv + 1])
            w_index += block.num_conv
        assert img is not None  # the 4 px block always runs (resolution >= 4)
        return img * 0.5 + 0.5

    def modulation_parameter_names(self) -> list[str]:
        return [name for name, _ in self.named_parameters() if ".affine." in name]


class StyleGAN2Discriminator(nn.Module):
    """Residual StyleGAN2 discriminator (for training a native prior), images in ``[0, 1]``."""

    def __init__(self, resolution: int, channel_base: int = 32768, channel_max: int = 512) -> None:
        super().__init__()
        channels = lambda r: max(min(channel_base // r, channel_max), 1)  # noqa: E731
        self.from_rgb = nn.Conv2d(3, channels(resolution), 1)
        blocks = []
        r = resolution
        while r > 4:
            blocks.append(_DiscriminatorBlock(channels(r), channels(r // 2)))
            r //= 2
        self.blocks = nn.Sequential(*blocks)
        c4 = channels(4)
        self.conv = nn.Conv2d(c4 + 1, c4, 3, padding=1)
        self.fc = nn.Linear(c4 * 16, c4)
        self.out = nn.Linear(c4, 1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.from_rgb(img * 2 - 1), 0.2)
        x = self.blocks(x)
        # minibatch standard deviation (group over the whole batch, up to 4)
        group = min(4, x.shape[0])
        while x.shape[0] % group:
            group -= 1
        y = x.reshape(group, -1, *x.shape[1:]).std(dim=0, unbiased=False).mean(dim=(1, 2, 3))
        y = y.reshape(-1, 1, 1, 1).repeat(group, 1, x.shape[2], x.shape[3])
        x = F.leaky_relu(self.conv(torch.cat([x, y], 1)), 0.2)
        x = F.leaky_relu(self.fc(x.flatten(1)), 0.2)
        return self.out(x).squeeze(1)


class _DiscriminatorBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.avg_pool2d(self.skip(x), 2)
        x = F.leaky_relu(self.conv0(x), 0.2)
        x = F.avg_pool2d(F.leaky_relu(self.conv1(x), 0.2), 2)
        return (x + y) / math.sqrt(2.0)
