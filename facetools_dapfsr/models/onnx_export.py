"""Export a DAP-FSR model to ONNX, for runtimes without PyTorch (onnxruntime, TensorRT, OpenVINO).

Two graphs, because they are used apart: the encoder is small and runs per face, the decoder
is the large prior and its output size is fixed per graph.

- ``encoder.onnx``: ``lr [B, 3, lr_size, lr_size]`` in ``[0, 1]`` -> ``ws [B, num_ws, w_dim]``
  (Eq. 2: ``mu_w + E(lr) * sigma_w``).
- ``decoder_<size>.onnx``: ``ws`` -> ``face [B, 3, size, size]`` in ``[0, 1]``, the template
  crop at ``size`` px (one of ``DAPFSR.output_sizes``).

The batch dimension is dynamic. What the graphs compute is ``DAPFSR.upscale(lr, size,
consistency=False)`` with the model's active adapter applied, if any: the LR consistency step
(:mod:`facetools_dapfsr.models.consistency`) optimises a registration per face, which is not a
fixed graph, so it stays in Python; ``onnx_export.json`` says so beside the files.

Uses ``torch.onnx.export(dynamo=True)``: the TorchScript exporter cannot export the encoder's
instance normalisation with a dynamic batch ("unknown channel size").
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from torch import nn

from facetools_dapfsr.fileio import atomic_path, atomic_write_text
from facetools_dapfsr.models.dapfsr import DAPFSR

OPSET = 18
MANIFEST_NAME = "onnx_export.json"


@dataclasses.dataclass
class OnnxExport:
    """What :func:`export_onnx` wrote, as recorded in ``onnx_export.json``."""

    encoder: str
    """File name of the encoder graph (``lr -> ws``)."""
    decoder: str
    """File name of the decoder graph (``ws -> face``)."""
    lr_size: int
    size: int
    num_ws: int
    w_dim: int
    opset: int = OPSET
    input_range: tuple[float, float] = (0.0, 1.0)
    consistency: str = (
        "not in the graphs: the outputs are DAPFSR.upscale(lr, size, consistency=False); "
        "apply facetools_dapfsr.models.consistency.enforce_consistency(face, lr) in Python"
    )

    @classmethod
    def from_folder(cls, folder: str | Path) -> OnnxExport:
        path = Path(folder) / MANIFEST_NAME
        try:
            data = json.loads(path.read_text())
            data["input_range"] = tuple(data["input_range"])
            return cls(**data)
        except (OSError, ValueError, TypeError, KeyError) as error:
            raise ValueError(f"{path}: not an ONNX export manifest ({error})") from error


class _Encode(nn.Module):
    """Eq. 2 on clamped input, as :meth:`DAPFSR.upscale` does before it renders."""

    def __init__(self, model: DAPFSR) -> None:
        super().__init__()
        self.model = model

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.model.w_mu + self.model.encoder(lr.clamp(0, 1)) * self.model.w_sigma


class _Render(nn.Module):
    def __init__(self, renderer: nn.Module) -> None:
        super().__init__()
        self.renderer = renderer

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        return self.renderer(ws).clamp(0, 1)


def export_onnx(model: DAPFSR, out_dir: str | Path, size: int | None = None) -> OnnxExport:
    """Write ``encoder.onnx``, ``decoder_<size>.onnx`` and ``onnx_export.json`` into ``out_dir``.

    ``model`` must be float32 (cast a copy with ``copy.deepcopy(model).float()``): ONNX runtimes
    on the CPU run float32, and a half-precision trace would fix fp16 arithmetic into the graph.
    Each file is written atomically.
    """
    dtypes = {tensor.dtype for tensor in model.state_dict().values() if tensor.is_floating_point()}
    if dtypes != {torch.float32}:
        names = ", ".join(sorted(str(dtype) for dtype in dtypes))
        raise ValueError(f"export needs a float32 model, this one holds {names}: export model.float()")
    side = model.decoder.check_size(size)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = OnnxExport(
        encoder="encoder.onnx",
        decoder=f"decoder_{side}.onnx",
        lr_size=int(model.config.lr_size),
        size=side,
        num_ws=model.num_ws,
        w_dim=model.w_dim,
    )
    was_training = model.training
    model.eval()
    try:
        lr = torch.rand(2, 3, record.lr_size, record.lr_size, device=model.w_mu.device)
        with torch.no_grad():
            ws = model.encode(lr)
        batch = torch.export.Dim("batch", min=1, max=4096)
        _export(_Encode(model), lr, "lr", "ws", out_dir / record.encoder, batch)
        _export(_Render(model.decoder.renderer(side)), ws, "ws", "face", out_dir / record.decoder, batch)
    finally:
        model.train(was_training)
    atomic_write_text(out_dir / MANIFEST_NAME, json.dumps(dataclasses.asdict(record), indent=2) + "\n")
    return record


def _export(
    module: nn.Module, example: torch.Tensor, input_name: str, output_name: str, path: Path, batch: object
) -> None:
    program = torch.onnx.export(
        module.eval(),
        (example,),
        dynamo=True,
        input_names=[input_name],
        output_names=[output_name],
        dynamic_shapes=({0: batch},),
        opset_version=OPSET,
        verbose=False,
    )
    assert program is not None  # dynamo=True always returns the ONNXProgram
    with atomic_path(path) as tmp:
        # One self-contained file (the decoder is about 30 MB, far below protobuf's 2 GB).
        program.save(str(tmp), external_data=False)


def check_onnx_export(model: DAPFSR, folder: str | Path, faces: int = 4, seed: int = 0) -> float:
    """Largest absolute difference between the graphs in ``folder`` (onnxruntime, CPU) and
    ``model.upscale(lr, size, consistency=False)`` on ``faces`` random LR faces.

    Raises ImportError when onnxruntime is not installed.
    """
    import onnxruntime  # optional: the onnx extra

    folder = Path(folder)
    record = OnnxExport.from_folder(folder)
    generator = torch.Generator().manual_seed(seed)
    lr = torch.rand(faces, 3, record.lr_size, record.lr_size, generator=generator)
    providers = ["CPUExecutionProvider"]
    encoder = onnxruntime.InferenceSession(str(folder / record.encoder), providers=providers)
    decoder = onnxruntime.InferenceSession(str(folder / record.decoder), providers=providers)
    ws = encoder.run(None, {"lr": lr.numpy()})[0]
    face = decoder.run(None, {"ws": ws})[0]
    expected = model.upscale(lr.to(model.w_mu.device), record.size, consistency=False).cpu()
    return float((torch.from_numpy(face) - expected).abs().max())
