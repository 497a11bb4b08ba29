"""``dapfsr export --format onnx``: the built-in model's graphs run in onnxruntime and match PyTorch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from facetools_dapfsr import DAPFSR
from facetools_dapfsr.cli.main import main
from facetools_dapfsr.models.onnx_export import OnnxExport, check_onnx_export, export_onnx

onnxruntime = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def builtin(weights_cache) -> DAPFSR:
    return DAPFSR.default().float().eval()


def test_exported_built_in_model_matches_pytorch_at_any_batch_size(builtin, tmp_path, capsys) -> None:
    out = tmp_path / "onnx"
    assert main(["export", "--format", "onnx", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "max |difference|" in printed
    record = OnnxExport.from_folder(out)
    assert (record.encoder, record.decoder, record.size) == ("encoder.onnx", "decoder_128.onnx", 128)
    assert json.loads((out / "onnx_export.json").read_text())["lr_size"] == 16
    # The check the CLI ran (4 faces), and a batch of 1 and of 3 against the dynamic axis.
    assert check_onnx_export(builtin, out) < 1e-3
    encoder = onnxruntime.InferenceSession(str(out / record.encoder), providers=["CPUExecutionProvider"])
    decoder = onnxruntime.InferenceSession(str(out / record.decoder), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        lr = torch.rand(batch, 3, 16, 16, generator=torch.Generator().manual_seed(batch))
        face = decoder.run(None, {"ws": encoder.run(None, {"lr": lr.numpy()})[0]})[0]
        assert face.shape == (batch, 3, 128, 128)
        expected = builtin.upscale(lr, consistency=False).numpy()
        assert np.abs(face - expected).max() < 1e-3


def test_export_refuses_a_half_precision_model_and_an_unknown_size(builtin, tmp_path) -> None:
    with pytest.raises(ValueError, match="float32"):
        export_onnx(DAPFSR.default().half(), tmp_path / "half")
    with pytest.raises(ValueError, match="size must be one of"):
        export_onnx(builtin, tmp_path / "odd", size=100)
    assert not (tmp_path / "half").exists() and not (tmp_path / "odd").exists()


def test_an_unreadable_manifest_is_named(tmp_path) -> None:
    (tmp_path / "onnx_export.json").write_text("{not json")
    with pytest.raises(ValueError, match="onnx_export.json: not an ONNX export manifest"):
        OnnxExport.from_folder(tmp_path)
