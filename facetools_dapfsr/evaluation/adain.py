"""AdaIN style transfer (Huang & Belongie, ICCV 2017), for the paper's Table 3 baseline.

Encoder: the normalised VGG-19 up to relu4_1 (:class:`facetools_dapfsr.losses.VGGFeatures`).
AdaIN: the content's relu4_1 features, re-normalised to the style's per-channel mean and std.
Decoder: the published AdaIN decoder (mirror of the encoder, nearest upsampling, reflection
padding), weights from the ``adain-decoder`` weight source. Images are RGB in ``[0, 1]``; sides
must be multiples of 8 (relu4_1 has stride 8).
"""

from __future__ import annotations

import torch
from torch import nn

from facetools_dapfsr.losses import VGGFeatures, feature_mean_std

WEIGHT_SOURCE = "adain-decoder"

# (in, out) channels of the decoder's 3x3 convolutions; "up" = 2x nearest upsampling. The layer
# positions (conv indices 1, 5, 8, ...) match the released state dict.
_PLAN: tuple[tuple[int, int] | str, ...] = (
    (512, 256),
    "up",
    (256, 256),
    (256, 256),
    (256, 256),
    (256, 128),
    "up",
    (128, 128),
    (128, 64),
    "up",
    (64, 64),
    (64, 3),
)


def _build_decoder() -> nn.Sequential:
    layers: list[nn.Module] = []
    for step in _PLAN:
        if step == "up":
            layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
            continue
        assert isinstance(step, tuple)
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(step[0], step[1], 3), nn.ReLU()]
    return nn.Sequential(*layers[:-1])  # no activation after the last convolution


class AdaINDecoder(nn.Module):
    """relu4_1 features ``[B, 512, h, w]`` -> RGB ``[B, 3, 8h, 8w]`` (random weights until loaded)."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = _build_decoder()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


def adaptive_instance_norm(content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """``content`` features with the per-channel mean and std of ``style`` (batch 1 broadcasts)."""
    (c_mean, c_std), (s_mean, s_std) = feature_mean_std([content, style])
    normalised = (content - c_mean[..., None, None]) / c_std[..., None, None]
    return normalised * s_std[..., None, None] + s_mean[..., None, None]


class StyleTransfer(nn.Module):
    """``forward(content, style)`` renders ``content`` faces in the style of ``style``.

    Build with :meth:`from_weights_cache`; the constructor takes the two networks.
    """

    def __init__(self, encoder: VGGFeatures, decoder: AdaINDecoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    @classmethod
    def from_weights_cache(cls, encoder: VGGFeatures | None = None, progress: bool = False) -> StyleTransfer:
        from facetools_dapfsr.weights import load_weights

        decoder = AdaINDecoder()
        tensors, _ = load_weights(WEIGHT_SOURCE, progress=progress)
        decoder.load_state_dict(tensors)
        encoder = encoder if encoder is not None else VGGFeatures.from_weights_cache(progress=progress)
        return cls(encoder, decoder).eval().requires_grad_(False)

    @torch.no_grad()
    def forward(self, content: torch.Tensor, style: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
        """Args: content ``[B, 3, H, W]``, style ``[1 or B, 3, H', W']`` in ``[0, 1]``; ``strength``
        in ``[0, 1]`` blends the content's own statistics (0) with the style's (1)."""
        if content.shape[-1] % 8 or content.shape[-2] % 8:
            raise ValueError(f"content sides must be multiples of 8, got {tuple(content.shape[-2:])}")
        content_features = self.encoder(content)[-1]
        style_features = self.encoder(style)[-1]
        target = adaptive_instance_norm(content_features, style_features)
        target = strength * target + (1 - strength) * content_features
        return self.decoder(target).clamp(0, 1)
