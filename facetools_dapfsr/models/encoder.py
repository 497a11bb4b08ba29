"""The DAP-FSR encoder E (paper section 4.1).

LR face -> (bilinear upsampling) -> Instance Spatial Transformer (ISTN) modules that warp the
unaligned face towards the canonical pose -> ResNet backbone tapped at C3, C4, C5 and global
pooling -> multi-scale pyramid context -> one Adaptive Latent Encoding (ALE) module per W+ slot
(channel attention over the context, then a small head) -> ``E(x) [B, num_ws, w_dim]``.

The manifold-preserving output ``w = mu_w + E(x) * sigma_w`` (Eq. 2) is applied by
:class:`~facetools_dapfsr.models.dapfsr.DAPFSR`, which owns the latent statistics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from facetools_dapfsr.config import EncoderConfig

IDENTITY_AFFINE = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


class InstanceSpatialTransformer(nn.Module):
    """Predicts an affine warp from an instance-normalised view of its input and applies it.

    Instance normalisation before the localisation network removes per-image contrast and
    brightness (which vary wildly across imaging domains) so the warp depends on geometry.
    The last layer is zero-initialised with an identity bias: the module starts as the identity.
    """

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.localisation = nn.Sequential(
            nn.Conv2d(channels, hidden, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, 6),
        )
        last = self.localisation[-1]
        assert isinstance(last, nn.Linear)  # the Linear(hidden, 6) just built
        nn.init.zeros_(last.weight)
        with torch.no_grad():
            last.bias.copy_(torch.tensor(IDENTITY_AFFINE))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        theta = self.localisation(self.norm(x)).reshape(-1, 2, 3).to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = _shortcut(in_channels, channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x), inplace=True)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.shortcut = _shortcut(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = F.relu(self.bn2(self.conv2(y)), inplace=True)
        y = self.bn3(self.conv3(y))
        return F.relu(y + self.shortcut(x), inplace=True)


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels))


RESNET_LAYOUTS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
}


class AdaptiveLatentEncoding(nn.Module):
    """ALE: channel attention over the pyramid context, then a head predicting one W+ code."""

    def __init__(self, in_channels: int, hidden: int, w_dim: int, reduction: int) -> None:
        super().__init__()
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, max(in_channels // reduction, 1), 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(max(in_channels // reduction, 1), in_channels, 1),
            nn.Sigmoid(),
        )
        self.head = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(hidden, w_dim),
        )

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        return self.head(context * self.attention(context))


class DAPFSREncoder(nn.Module):
    """``E``: LR face ``[B, 3, h, w]`` in ``[0, 1]`` -> normalised codes ``[B, num_ws, w_dim]``."""

    def __init__(self, config: EncoderConfig, num_ws: int, w_dim: int) -> None:
        super().__init__()
        self.config = config
        self.num_ws = num_ws
        self.w_dim = w_dim
        block, layers = RESNET_LAYOUTS[config.depth]
        width = config.base_width
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        stages = []
        stage_channels = []
        in_channels = width
        for index, count in enumerate(layers):
            channels = width * 2**index
            blocks = []
            for block_index in range(count):
                stride = 2 if (block_index == 0 and index > 0) else 1
                blocks.append(block(in_channels, channels, stride))
                in_channels = channels * block.expansion
            stages.append(nn.Sequential(*blocks))
            stage_channels.append(in_channels)
        self.stages = nn.ModuleList(stages)
        # ISTN at stage 0 warps the RGB input; at stage k, the output of ResNet stage k.
        self.istn = nn.ModuleDict(
            {
                str(stage): InstanceSpatialTransformer(
                    3 if stage == 0 else stage_channels[stage - 1], config.istn_hidden
                )
                for stage in config.istn_stages
            }
        )
        p = config.pyramid_channels
        # C3, C4, C5 are the outputs of ResNet stages 2, 3, 4 (torchvision's layer2..layer4).
        self.lateral = nn.ModuleList([nn.Conv2d(c, p, 1) for c in stage_channels[1:]])
        self.global_projection = nn.Linear(stage_channels[-1], p)
        self.ale = nn.ModuleList(
            [AdaptiveLatentEncoding(4 * p, config.ale_hidden, w_dim, config.ale_reduction) for _ in range(num_ws)]
        )

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        size = self.config.input_size
        x = F.interpolate(lr, size=(size, size), mode="bilinear", align_corners=False)
        x = x * 2 - 1  # centre the input for the backbone
        if "0" in self.istn:
            x = self.istn["0"](x)
        x = self.stem(x)
        taps = []
        for index, stage in enumerate(self.stages, start=1):
            x = stage(x)
            if str(index) in self.istn:
                x = self.istn[str(index)](x)
            taps.append(x)
        c3, c4, c5 = taps[1], taps[2], taps[3]
        target = c3.shape[-2:]
        pyramid = [self.lateral[0](c3)]
        for lateral, tap in zip(self.lateral[1:], (c4, c5), strict=True):
            pyramid.append(F.interpolate(lateral(tap), size=target, mode="bilinear", align_corners=False))
        c_global = self.global_projection(c5.mean(dim=(2, 3)))
        pyramid.append(c_global[:, :, None, None].expand(-1, -1, *target))
        context = torch.cat(pyramid, dim=1)
        return torch.stack([ale(context) for ale in self.ale], dim=1)
