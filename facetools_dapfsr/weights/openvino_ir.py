"""A small reader for OpenVINO IR (version 10/11) models: graph structure and constant tensors.

An IR model is an XML graph (``<layers>`` + ``<edges>``) plus a flat ``.bin`` file; every weight
is a ``Const`` layer whose ``<data>`` element gives the element type, shape, byte offset and byte
size of its values in the ``.bin``. Reading this directly lets us import weights without OpenVINO
at run time (it is a test-only dependency, used to check our PyTorch ports against it).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# IR element types -> numpy dtypes (the ones IR v10 exporters emit).
_ELEMENT_TYPES: dict[str, np.dtype] = {
    "f64": np.dtype("<f8"),
    "f32": np.dtype("<f4"),
    "f16": np.dtype("<f2"),
    "i64": np.dtype("<i8"),
    "i32": np.dtype("<i4"),
    "i16": np.dtype("<i2"),
    "i8": np.dtype("i1"),
    "u64": np.dtype("<u8"),
    "u32": np.dtype("<u4"),
    "u16": np.dtype("<u2"),
    "u8": np.dtype("u1"),
    "boolean": np.dtype("?"),
}


@dataclass(frozen=True)
class Port:
    """One input or output port of a layer."""

    id: int
    shape: tuple[int, ...]
    precision: str = ""
    names: tuple[str, ...] = ()


@dataclass
class Layer:
    """One node of the IR graph.

    ``inputs[k]`` is ``(source layer id, source port id)`` for input port ``k`` (in port order),
    filled from the graph's edges; ``consumers`` lists ``(layer id, port id)`` pairs fed by any
    output of this layer.
    """

    id: int
    name: str
    type: str
    version: str
    data: dict[str, str]
    input_ports: list[Port]
    output_ports: list[Port]
    inputs: list[tuple[int, int]] = field(default_factory=list)
    consumers: list[tuple[int, int]] = field(default_factory=list)

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Shape of the first output (most layers have one)."""
        return self.output_ports[0].shape


class IRModel:
    """An OpenVINO IR model: its layers, edges and constant tensors.

    Construction only holds data; use :meth:`load` to read files.
    """

    def __init__(self, name: str, version: int, layers: dict[int, Layer], weights: bytes) -> None:
        self.name = name
        self.version = version
        self.layers = layers
        self._weights = weights
        self._by_name = {layer.name: layer for layer in layers.values()}

    @classmethod
    def load(cls, xml_path: str | Path, bin_path: str | Path | None = None) -> IRModel:
        """Read ``model.xml`` and its weights file (default: the same stem with ``.bin``)."""
        xml_path = Path(xml_path)
        bin_path = Path(bin_path) if bin_path is not None else xml_path.with_suffix(".bin")
        root = ET.parse(xml_path).getroot()
        if root.tag != "net":
            raise ValueError(f"{xml_path}: not an OpenVINO IR file (root element <{root.tag}>)")
        version = int(root.get("version", "0"))
        if version < 10:
            raise ValueError(f"{xml_path}: IR version {version} is not supported (need 10 or newer)")
        layers: dict[int, Layer] = {}
        for element in root.iterfind("layers/layer"):
            data_element = element.find("data")
            layer = Layer(
                id=int(_required(element, "id")),
                name=element.get("name", ""),
                type=element.get("type", ""),
                version=element.get("version", ""),
                data=dict(data_element.attrib) if data_element is not None else {},
                input_ports=[_port(p) for p in element.iterfind("input/port")],
                output_ports=[_port(p) for p in element.iterfind("output/port")],
            )
            layers[layer.id] = layer
        # Edges name ports by id; map each destination port id to its position in the layer.
        incoming: dict[int, dict[int, tuple[int, int]]] = {i: {} for i in layers}
        for edge in root.iterfind("edges/edge"):
            src, src_port = int(_required(edge, "from-layer")), int(_required(edge, "from-port"))
            dst, dst_port = int(_required(edge, "to-layer")), int(_required(edge, "to-port"))
            incoming[dst][dst_port] = (src, src_port)
            layers[src].consumers.append((dst, dst_port))
        for layer_id, layer in layers.items():
            missing = [p.id for p in layer.input_ports if p.id not in incoming[layer_id]]
            if missing:
                raise ValueError(f"{xml_path}: layer {layer.name!r} has unconnected input ports {missing}")
            layer.inputs = [incoming[layer_id][p.id] for p in layer.input_ports]
        return cls(root.get("name", xml_path.stem), version, layers, bin_path.read_bytes())

    # -- graph queries ---------------------------------------------------------------------
    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers.values())

    def __getitem__(self, layer_id: int) -> Layer:
        return self.layers[layer_id]

    def by_name(self, name: str) -> Layer:
        """The layer called ``name`` (raises ``KeyError`` naming it when absent)."""
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no layer named {name!r} in IR model {self.name!r}") from None

    def of_type(self, type_name: str) -> list[Layer]:
        """Layers of one operation type, in id order."""
        return [layer for layer in self.layers.values() if layer.type == type_name]

    def parent(self, layer: Layer, index: int = 0) -> Layer:
        """The layer feeding input ``index`` of ``layer``."""
        return self.layers[layer.inputs[index][0]]

    def children(self, layer: Layer) -> list[Layer]:
        """Layers fed by ``layer`` (each once, in id order)."""
        return [self.layers[i] for i in sorted({dst for dst, _ in layer.consumers})]

    def topological_order(self) -> list[Layer]:
        """All layers, every one after the layers it reads from."""
        indegree = {i: len({src for src, _ in layer.inputs}) for i, layer in self.layers.items()}
        ready = sorted(i for i, d in indegree.items() if d == 0)
        order: list[Layer] = []
        while ready:
            layer = self.layers[ready.pop(0)]
            order.append(layer)
            for dst in sorted({dst for dst, _ in layer.consumers}):
                indegree[dst] -= 1
                if indegree[dst] == 0:
                    ready.append(dst)
        if len(order) != len(self.layers):
            raise ValueError(f"IR model {self.name!r} has a cycle")
        return order

    # -- constants -------------------------------------------------------------------------
    def const(self, layer: Layer | int | str) -> np.ndarray:
        """Values of a ``Const`` layer (given as layer, id or name), shaped as declared."""
        if isinstance(layer, int):
            layer = self.layers[layer]
        elif isinstance(layer, str):
            layer = self.by_name(layer)
        if layer.type != "Const":
            raise ValueError(f"layer {layer.name!r} is a {layer.type}, not a Const")
        element_type = layer.data["element_type"]
        if element_type not in _ELEMENT_TYPES:
            raise ValueError(f"layer {layer.name!r}: unsupported element type {element_type!r}")
        dtype = _ELEMENT_TYPES[element_type]
        offset, size = int(layer.data["offset"]), int(layer.data["size"])
        shape = _parse_shape(layer.data.get("shape", ""))
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if count * dtype.itemsize != size or offset + size > len(self._weights):
            raise ValueError(
                f"layer {layer.name!r}: shape {shape} of {element_type} does not fit "
                f"{size} bytes at offset {offset} (weights file has {len(self._weights)} bytes)"
            )
        values = np.frombuffer(self._weights, dtype=dtype, count=count, offset=offset)
        return values.reshape(shape).copy()

    def input_const(self, layer: Layer, index: int) -> np.ndarray:
        """Values of the ``Const`` feeding input ``index`` of ``layer``."""
        return self.const(self.parent(layer, index))


def _parse_shape(text: str) -> tuple[int, ...]:
    text = text.strip()
    return tuple(int(part) for part in text.split(",")) if text else ()


def _required(element: ET.Element, name: str) -> str:
    """An attribute the IR format requires; ValueError (a malformed file) where it is missing."""
    value = element.get(name)
    if value is None:
        raise ValueError(f"<{element.tag}> element without its {name!r} attribute")
    return value


def _port(element: ET.Element) -> Port:
    names = element.get("names")
    return Port(
        id=int(_required(element, "id")),
        shape=tuple(int(dim.text or 0) for dim in element.iterfind("dim")),
        precision=element.get("precision", ""),
        names=tuple(names.split(",")) if names else (),
    )
