"""LPIPS v0.1 (Zhang et al., CVPR 2018) as a small self-contained module.

Same computation as the reference ``lpips`` package: a fixed scaling layer, an ImageNet VGG-16 or
AlexNet trunk tapped after five ReLUs, channel-wise unit normalisation, squared differences, a
learned non-negative 1x1 "linear" head per tap, spatial mean, sum over taps. Weights come from
the ``lpips-vgg`` / ``lpips-alex`` weight sources. Inputs are ``[B, C, H, W]`` in ``[0, 1]``
(C = 3, or 1 for grey images, which are repeated to RGB).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class _TrunkSpec:
    # (kind, argument) in torchvision's ``features`` order, so indices match torchvision's.
    layers: tuple[tuple[str, tuple[int, ...]], ...]
    taps: tuple[int, ...]  # sequential indices of the ReLUs whose outputs are compared
    channels: tuple[int, ...]


def _vgg16_spec() -> _TrunkSpec:
    layers: list[tuple[str, tuple[int, ...]]] = []
    channels = 3
    for item in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512):
        if item == "M":
            layers.append(("maxpool", (2, 2)))
        else:
            layers += [("conv", (channels, int(item), 3, 1, 1)), ("relu", ())]
            channels = int(item)
    return _TrunkSpec(tuple(layers), taps=(3, 8, 15, 22, 29), channels=(64, 128, 256, 512, 512))


_ALEXNET_SPEC = _TrunkSpec(
    layers=(
        ("conv", (3, 64, 11, 4, 2)),
        ("relu", ()),
        ("maxpool", (3, 2)),
        ("conv", (64, 192, 5, 1, 2)),
        ("relu", ()),
        ("maxpool", (3, 2)),
        ("conv", (192, 384, 3, 1, 1)),
        ("relu", ()),
        ("conv", (384, 256, 3, 1, 1)),
        ("relu", ()),
        ("conv", (256, 256, 3, 1, 1)),
        ("relu", ()),
    ),
    taps=(1, 4, 7, 9, 11),
    channels=(64, 192, 384, 256, 256),
)

TRUNKS: dict[str, _TrunkSpec] = {"vgg": _vgg16_spec(), "alex": _ALEXNET_SPEC}

# The reference implementation's ScalingLayer: inputs in [-1, 1] -> ImageNet-normalised.
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


def _build_trunk(spec: _TrunkSpec) -> nn.Sequential:
    modules: list[nn.Module] = []
    for kind, args in spec.layers:
        if kind == "conv":
            in_ch, out_ch, kernel, stride, padding = args
            modules.append(nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding))
        elif kind == "relu":
            modules.append(nn.ReLU())
        else:
            kernel, stride = args
            modules.append(nn.MaxPool2d(kernel, stride=stride))
    # Layers after the last tap are never used.
    return nn.Sequential(*modules[: spec.taps[-1] + 1])


def _unit_normalise(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


class LPIPS(nn.Module):
    """Learned perceptual distance; ``forward(x, y)`` returns ``[B]`` distances (0 for x == y).

    Args:
        net: ``"vgg"`` (VGG-16 trunk, the usual choice for image restoration papers) or
            ``"alex"``.
    The constructor builds random weights; use :meth:`from_weights_cache` for the real ones.
    """

    shift: torch.Tensor
    scale: torch.Tensor

    def __init__(self, net: str = "vgg") -> None:
        super().__init__()
        if net not in TRUNKS:
            raise ValueError(f"net must be one of {sorted(TRUNKS)}, got {net!r}")
        self.net = net
        spec = TRUNKS[net]
        self.taps = spec.taps
        # Constants of the metric, not weights: kept out of the state dict.
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.trunk = _build_trunk(spec)
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in spec.channels)

    @classmethod
    def from_weights_cache(cls, net: str = "vgg", progress: bool = True) -> LPIPS:
        """Frozen metric in eval mode with the converted ``lpips-<net>`` weights."""
        from facetools_dapfsr.weights import load_weights

        model = cls(net)
        tensors, _ = load_weights(f"lpips-{net}", progress=progress)
        model.load_state_dict(tensors)
        return model.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(
                f"expected two [B, 3 or 1, H, W] images of one shape, got {tuple(x.shape)}, {tuple(y.shape)}"
            )
        batch = x.shape[0]
        both = torch.cat([x, y]).expand(-1, 3, -1, -1)
        h = ((2 * both - 1) - self.shift) / self.scale
        distance = x.new_zeros(batch)
        tap = 0
        for index, layer in enumerate(self.trunk):
            h = layer(h)
            if index == self.taps[tap]:
                fx, fy = _unit_normalise(h[:batch]), _unit_normalise(h[batch:])
                distance = distance + self.heads[tap]((fx - fy) ** 2).mean(dim=(1, 2, 3))
                tap += 1
        return distance
