"""RRDBNet: the x4 super-resolution network of ESRGAN / Real-ESRGAN, in plain PyTorch.

Architecture (Wang et al. 2018, "ESRGAN"; Real-ESRGAN x4plus uses it unchanged)::

    x -> conv_first -> [RRDB x num_blocks] -> conv_body -> (+ conv_first's output)
      -> nearest x2 -> up1 -> lrelu -> nearest x2 -> up2 -> lrelu -> conv_hr -> lrelu -> conv_last

An RRDB is three residual dense blocks in a row, the whole scaled by ``residual_scale`` and added
to its input; a dense block is five 3x3 convolutions, each reading the block's input concatenated
with every earlier convolution's output (``features + k * growth`` channels), the last one back to
``features`` channels, again scaled and added to the input. All activations are LeakyReLU(0.2).

Images are ``[B, 3, H, W]`` RGB in ``[0, 1]``, in and out (the output is not clamped).
The constructor builds random weights; :meth:`RRDBNet.from_weights_cache` loads Real-ESRGAN x4plus.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

WEIGHT_SOURCE = "realesrgan-x4plus"
SCALE = 4
"""The network's fixed upscaling factor (two nearest-neighbour x2 steps)."""


@dataclass(frozen=True)
class RRDBNetConfig:
    """Sizes of the network; the defaults are Real-ESRGAN x4plus's (16.7M parameters)."""

    num_blocks: int = 23
    """Residual-in-residual dense blocks in the trunk."""
    features: int = 64
    """Channels of the trunk."""
    growth: int = 32
    """Channels each dense convolution adds."""
    residual_scale: float = 0.2
    """Weight of a block's output before it is added to the block's input (stabilises the deep trunk)."""
    negative_slope: float = 0.2
    """Slope of every LeakyReLU."""


class DenseBlock(nn.Module):
    """Five densely connected 3x3 convolutions with a scaled residual."""

    def __init__(self, config: RRDBNetConfig) -> None:
        super().__init__()
        f, g = config.features, config.growth
        self.convs = nn.ModuleList(nn.Conv2d(f + k * g, g if k < 4 else f, 3, padding=1) for k in range(5))
        self.residual_scale = config.residual_scale
        self.negative_slope = config.negative_slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for conv in self.convs[:-1]:
            features.append(F.leaky_relu(conv(torch.cat(features, dim=1)), self.negative_slope))
        return x + self.residual_scale * self.convs[-1](torch.cat(features, dim=1))


class RRDB(nn.Module):
    """Three dense blocks with a scaled residual around them."""

    def __init__(self, config: RRDBNetConfig) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(DenseBlock(config) for _ in range(3)))
        self.residual_scale = config.residual_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.residual_scale * self.blocks(x)


class RRDBNet(nn.Module):
    """``[B, 3, H, W]`` -> ``[B, 3, 4H, 4W]``, RGB in ``[0, 1]``."""

    scale = SCALE

    def __init__(self, config: RRDBNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or RRDBNetConfig()
        f = self.config.features
        self.conv_first = nn.Conv2d(3, f, 3, padding=1)
        self.body = nn.Sequential(*(RRDB(self.config) for _ in range(self.config.num_blocks)))
        self.conv_body = nn.Conv2d(f, f, 3, padding=1)
        self.up1 = nn.Conv2d(f, f, 3, padding=1)
        self.up2 = nn.Conv2d(f, f, 3, padding=1)
        self.conv_hr = nn.Conv2d(f, f, 3, padding=1)
        self.conv_last = nn.Conv2d(f, 3, 3, padding=1)

    @classmethod
    def from_weights_cache(cls, progress: bool = True) -> RRDBNet:
        """Frozen network in eval mode with the converted ``realesrgan-x4plus`` weights."""
        from facetools_dapfsr.weights import load_weights

        tensors, _ = load_weights(WEIGHT_SOURCE, progress=progress)
        model = cls()
        model.load_state_dict(tensors)
        return model.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected RGB images [B, 3, H, W], got shape {tuple(x.shape)}")
        slope = self.config.negative_slope
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = F.leaky_relu(self.up1(F.interpolate(feat, scale_factor=2, mode="nearest")), slope)
        feat = F.leaky_relu(self.up2(F.interpolate(feat, scale_factor=2, mode="nearest")), slope)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), slope))


def conv_layout(config: RRDBNetConfig | None = None) -> list[tuple[str, bool]]:
    """Every convolution in execution order, as ``(parameter prefix, followed by a LeakyReLU)``.

    Converters use it to match a foreign file's layer list to this module, one convolution after
    the other (an exported graph lists them in this order too).
    """
    config = config or RRDBNetConfig()
    layout = [("conv_first", False)]
    for b in range(config.num_blocks):
        for d in range(3):
            layout += [(f"body.{b}.blocks.{d}.convs.{k}", k < 4) for k in range(5)]
    layout += [("conv_body", False), ("up1", True), ("up2", True), ("conv_hr", True), ("conv_last", False)]
    return layout
