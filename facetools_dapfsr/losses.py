"""Feature losses on a normalised VGG-19: the perceptual loss (Eq. 4) and DAMMA's style statistics.

Images are ``[B, 3, H, W]`` RGB in ``[0, 1]``. The network is AdaIN's "normalised" VGG-19 (from the
``vgg19-normalised`` weight source): its first layer is a fixed 1x1 convolution that maps RGB in
``[0, 1]`` to the Caffe input (BGR * 255 minus the ImageNet mean), so no other preprocessing is
needed. Only the layers up to relu4_1 exist here.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

WEIGHT_SOURCE = "vgg19-normalised"

# (output channels of each padded 3x3 conv + ReLU, or "M" for 2x2 max-pooling) after the 1x1
# input conv. Sequential indices: relu1_1=3, relu2_1=10, relu3_1=17, relu4_1=30.
_VGG19_TO_RELU4_1: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512)
FEATURE_LAYERS: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
_FEATURE_INDICES: tuple[int, ...] = (3, 10, 17, 30)
FEATURE_CHANNELS: tuple[int, ...] = (64, 128, 256, 512)


def _build_layers() -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(3, 3, kernel_size=1)]
    channels = 3
    for item in _VGG19_TO_RELU4_1:
        if item == "M":
            # ceil_mode as in the Caffe model, so odd sizes keep their last row/column.
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
        else:
            # Reflection padding (not zeros) is what the normalised VGG was made with.
            layers += [nn.ReflectionPad2d(1), nn.Conv2d(channels, int(item), kernel_size=3), nn.ReLU()]
            channels = int(item)
    return nn.Sequential(*layers)


class VGGFeatures(nn.Module):
    """Normalised VGG-19 up to relu4_1.

    ``forward(x)`` takes ``[B, 3, H, W]`` RGB in ``[0, 1]`` and returns the tuple
    ``(relu1_1, relu2_1, relu3_1, relu4_1)`` with 64, 128, 256, 512 channels at strides 1, 2, 4, 8.
    The constructor builds random weights; use :meth:`from_weights_cache` for the real ones.
    """

    def __init__(self) -> None:
        super().__init__()
        self.layers = _build_layers()
        assert len(self.layers) == _FEATURE_INDICES[-1] + 1

    @classmethod
    def from_weights_cache(cls, progress: bool = True) -> VGGFeatures:
        """Frozen network in eval mode with the converted ``vgg19-normalised`` weights."""
        from facetools_dapfsr.weights import load_weights

        tensors, _ = load_weights(WEIGHT_SOURCE, progress=progress)
        model = cls()
        model.load_state_dict(tensors)
        return model.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected RGB images [B, 3, H, W], got shape {tuple(x.shape)}")
        features = []
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index in _FEATURE_INDICES:
                features.append(x)
        return tuple(features)


@functools.lru_cache(maxsize=4)
def _default_features(device: str) -> VGGFeatures:
    # One frozen copy per device, so the functional API does not reload weights on every call.
    return VGGFeatures.from_weights_cache(progress=False).to(device)


def default_vgg_features(device: torch.device | str = "cpu") -> VGGFeatures:
    """A shared, frozen :class:`VGGFeatures` on ``device`` (loaded once per device)."""
    return _default_features(str(torch.device(device)))


def perceptual_loss(x: torch.Tensor, y: torch.Tensor, vgg: VGGFeatures | None = None) -> torch.Tensor:
    """Eq. 4: sum over relu1_1, relu2_1, relu3_1, relu4_1 (equal weights 1) of the feature MSE.

    Args:
        x, y: ``[B, 3, H, W]`` RGB in ``[0, 1]``; gradients flow through both.
        vgg: the feature network; ``None`` uses :func:`default_vgg_features` on ``x``'s device.
    Returns:
        a scalar (each layer's MSE is a mean over batch, channels and positions).
    """
    vgg = vgg if vgg is not None else default_vgg_features(x.device)
    return sum((F.mse_loss(a, b) for a, b in zip(vgg(x), vgg(y), strict=True)), x.new_zeros(()))


def feature_mean_std(features: Sequence[torch.Tensor], eps: float = 1e-5) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-channel mean and standard deviation over positions, for each feature map.

    Used by the style loss of Eq. 9 (AdaIN statistics). ``eps`` is added to the variance so that
    the square root has a finite gradient on constant channels.

    Args:
        features: maps ``[B, C, H, W]`` (e.g. the output of :class:`VGGFeatures`).
    Returns:
        one ``(mean [B, C], std [B, C])`` pair per map.
    """
    stats = []
    for feature in features:
        flat = feature.flatten(2)
        mean = flat.mean(dim=2)
        std = (flat.var(dim=2, unbiased=False) + eps).sqrt()
        stats.append((mean, std))
    return stats


def style_loss(features_a: Sequence[torch.Tensor], features_b: Sequence[torch.Tensor]) -> torch.Tensor:
    """Eq. 9: sum over layers of the MSE between feature means plus the MSE between feature stds.

    ``features_b`` may have batch size 1 (one exemplar); it is broadcast against ``features_a``.
    """
    total = features_a[0].new_zeros(())
    for (mean_a, std_a), (mean_b, std_b) in zip(
        feature_mean_std(features_a), feature_mean_std(features_b), strict=True
    ):
        total = total + F.mse_loss(mean_a, mean_b.expand_as(mean_a)) + F.mse_loss(std_a, std_b.expand_as(std_a))
    return total
