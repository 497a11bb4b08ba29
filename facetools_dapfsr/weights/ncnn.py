"""A small reader for ncnn models (``.param`` text + ``.bin`` weights), without ncnn.

The ``.param`` file is text: the magic number ``7767517``, then ``layer_count blob_count``, then
one line per layer::

    Type  name  n_inputs n_outputs  input_blobs...  output_blobs...  key=value...

Keys are small integers; a negative key ``-23300 - k`` holds an array for key ``k`` written as
``count,v1,v2,...``. The ``.bin`` file is the layers' weights concatenated in layer order, with no
index: a reader must know, per layer type, how many values it loads and in which encoding. For a
``Convolution`` (the only weighted layer this reader supports) that is:

- ``weight_data``: a 4-byte tag, then ``weight_data_size`` (key 6) values. Tag 0 means float32;
  tag ``0x01306B47`` means float16, padded to a multiple of 4 bytes. Other tags are ncnn's
  quantised encodings, which no model we import uses; they are refused.
- ``bias_data`` (when key 5, ``bias_term``, is 1): ``num_output`` (key 0) float32 values, no tag.

Reading every layer this way and checking that the last one ends exactly at the end of the file
proves the layout was understood (a wrong guess anywhere shifts every later offset).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PARAM_MAGIC = 7767517
FLOAT32_TAG = 0x00000000
FLOAT16_TAG = 0x01306B47
ARRAY_KEY_BASE = -23300

WEIGHTLESS_TYPES = frozenset({"Input", "Split", "Concat", "Eltwise", "BinaryOp", "Interp", "ReLU", "Sigmoid"})
"""Layer types that hold no data in the ``.bin`` (their parameters are all in the ``.param``)."""


@dataclass
class Layer:
    """One ``.param`` line; ``weight`` / ``bias`` are filled for ``Convolution`` layers."""

    type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: dict[int, int | float | tuple[float, ...]]
    weight: np.ndarray | None = field(default=None, repr=False)
    bias: np.ndarray | None = field(default=None, repr=False)
    weight_dtype: str = ""
    """``"float32"`` or ``"float16"``: how the weights were stored in the ``.bin``."""

    def param(self, key: int, default: float | tuple[float, ...] = 0) -> float | tuple[float, ...]:
        return self.params.get(key, default)

    def scalar(self, key: int, default: float = 0) -> float:
        """A single-valued parameter; ValueError where the file gives an array for ``key``."""
        value = self.param(key, default)
        if not isinstance(value, tuple):
            return value
        raise ValueError(f"layer {self.name}: parameter {key} is an array {value}, expected one value")


@dataclass
class NCNNModel:
    """Layers of an ncnn model in file order, with the convolution weights decoded."""

    layers: list[Layer]
    blob_count: int

    @classmethod
    def load(cls, param_path: str | Path, bin_path: str | Path | None = None) -> NCNNModel:
        """Read ``model.param`` and its weights (default: the same stem with ``.bin``)."""
        param_path = Path(param_path)
        bin_path = Path(bin_path) if bin_path is not None else param_path.with_suffix(".bin")
        layers, blob_count = parse_param(param_path.read_text(encoding="utf-8"), str(param_path))
        read_weights(layers, bin_path.read_bytes(), str(bin_path))
        return cls(layers, blob_count)

    def of_type(self, type_name: str) -> list[Layer]:
        """Layers of one type, in file order."""
        return [layer for layer in self.layers if layer.type == type_name]


def _value(text: str) -> int | float:
    # ncnn writes floats with a '.' or an exponent; everything else is an int.
    return float(text) if any(c in text for c in ".eE") else int(text)


def parse_param(text: str, where: str = "<param>") -> tuple[list[Layer], int]:
    """The layers of a ``.param`` text and its blob count; ValueError on a malformed file."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != [str(PARAM_MAGIC)]:
        raise ValueError(f"{where}: not an ncnn param file (first line must be {PARAM_MAGIC})")
    if len(lines) < 2 or len(lines[1]) != 2:
        raise ValueError(f"{where}: second line must be 'layer_count blob_count'")
    layer_count, blob_count = int(lines[1][0]), int(lines[1][1])
    rows = lines[2:]
    if len(rows) != layer_count:
        raise ValueError(f"{where}: header declares {layer_count} layers, file has {len(rows)}")
    layers = []
    for row in rows:
        type_name, name, n_in, n_out = row[0], row[1], int(row[2]), int(row[3])
        blobs = row[4 : 4 + n_in + n_out]
        params: dict[int, int | float | tuple[float, ...]] = {}
        for item in row[4 + n_in + n_out :]:
            key_text, _, value_text = item.partition("=")
            key = int(key_text)
            if key <= ARRAY_KEY_BASE:
                count, *values = value_text.split(",")
                if len(values) != int(count):
                    raise ValueError(f"{where}: layer {name}: array {key} declares {count} values, has {len(values)}")
                params[ARRAY_KEY_BASE - key] = tuple(float(v) for v in values)
            else:
                params[key] = _value(value_text)
        layers.append(Layer(type_name, name, tuple(blobs[:n_in]), tuple(blobs[n_in:]), params))
    return layers, blob_count


def read_weights(layers: list[Layer], data: bytes, where: str = "<bin>") -> None:
    """Decode the ``.bin`` into ``layer.weight`` / ``layer.bias`` and check every byte is used."""
    offset = 0
    for layer in layers:
        if layer.type in WEIGHTLESS_TYPES:
            continue
        if layer.type != "Convolution":
            raise ValueError(
                f"{where}: layer {layer.name} is a {layer.type}, whose weight layout this reader does not know"
            )
        if layer.param(8) != 0:
            raise ValueError(f"{where}: layer {layer.name} is an int8 convolution, which this reader does not support")
        if layer.param(19) != 0:
            raise ValueError(
                f"{where}: layer {layer.name} takes its weights as an input (dynamic weight), not supported"
            )
        count = int(layer.scalar(6))
        num_output = int(layer.scalar(0))
        tag = int.from_bytes(data[offset : offset + 4], "little")
        offset += 4
        if tag == FLOAT16_TAG:
            layer.weight = _take(data, offset, np.dtype("<f2"), count, where, layer).astype(np.float32)
            layer.weight_dtype = "float16"
            offset += (count * 2 + 3) // 4 * 4  # fp16 data is padded to 4 bytes
        elif tag == FLOAT32_TAG:
            layer.weight = _take(data, offset, np.dtype("<f4"), count, where, layer)
            layer.weight_dtype = "float32"
            offset += count * 4
        else:
            raise ValueError(
                f"{where}: layer {layer.name}: weight tag {tag:#010x} (quantised weights) is not supported"
            )
        if int(layer.scalar(5)) == 1:
            layer.bias = _take(data, offset, np.dtype("<f4"), num_output, where, layer)
            offset += num_output * 4
    if offset != len(data):
        raise ValueError(f"{where}: the layers use {offset} bytes but the file has {len(data)}; layout not understood")


def _take(data: bytes, offset: int, dtype: np.dtype, count: int, where: str, layer: Layer) -> np.ndarray:
    if offset + count * dtype.itemsize > len(data):
        raise ValueError(f"{where}: layer {layer.name} needs {count} values at byte {offset}, past the end of the file")
    return np.frombuffer(data, dtype=dtype, count=count, offset=offset).copy()
