"""The built-in model: shipped small, loads offline, beats bicubic on real faces, carries its card."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open

from facetools_dapfsr import DAPFSR, DAPFSRConfig
from facetools_dapfsr.cli.main import main
from facetools_dapfsr.data.degradation import DegradationConfig
from facetools_dapfsr.data.faces import AlignedFaces
from facetools_dapfsr.hub.cards import ModelCardInfo
from facetools_dapfsr.metrics.image import psnr
from facetools_dapfsr.metrics.lpips import LPIPS
from facetools_dapfsr.models.dapfsr import default_model_path
from facetools_dapfsr.training.arguments import EncoderTrainingArguments
from facetools_dapfsr.training.model_card import reproduce_command
from facetools_dapfsr.training.pairs import ValidationPairs
from facetools_dapfsr.training.schedule import learning_rate_at

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED = default_model_path()
MAX_SHIPPED_BYTES = 30 * 2**20


@pytest.fixture(scope="module")
def builtin(weights_cache, monkeypatch_module) -> DAPFSR:
    # Offline: nothing may come from a model hub.
    monkeypatch_module.setenv("HF_HUB_OFFLINE", "1")
    return DAPFSR.default()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_shipped_weights_are_small_half_precision_and_match_the_recipe_config() -> None:
    weights = SHIPPED / "model.safetensors"
    assert weights.stat().st_size <= MAX_SHIPPED_BYTES
    with safe_open(str(weights), "pt") as handle:
        dtypes = {handle.get_slice(name).get_dtype() for name in handle.keys()}
        names = list(handle.keys())
    assert "F16" in dtypes and "F32" not in dtypes
    assert not [name for name in names if name.startswith("decoder.")]  # the prior comes from the cache
    shipped = DAPFSRConfig.from_json_file(SHIPPED / "config.json")
    assert shipped == DAPFSRConfig.from_json_file(REPO_ROOT / "recipes" / "configs" / "model_default.json")


def test_default_loads_offline_with_the_prior_and_its_card(builtin) -> None:
    assert builtin.config.decoder.type == "mobilestylegan"
    assert next(builtin.encoder.parameters()).dtype == torch.float32
    assert not builtin.training
    info = builtin.card_info
    assert "celeba/train" in info.training_data and info.trained_on_celeba
    # Both stages (the earlier release it continued from, then this run), each reproducible.
    assert info.training_command.count("python recipes/train_encoder.py") == 2
    assert "--init-from default" in info.training_command and "# stage 2" in info.training_command
    benchmarks = " ".join(row["benchmark"] for row in info.metrics)
    assert "test" in benchmarks and "yaleb" in benchmarks
    assert all(row["command"].startswith("dapfsr evaluate") for row in info.metrics)
    card = (SHIPPED / "README.md").read_text()
    for needle in ("## Intended use", "## Limitations", "random-face==2021.7.21.1", "CelebA", "non-commercial"):
        assert needle in card


def test_default_beats_bicubic_on_held_out_celeba_faces(builtin, data_dir) -> None:
    faces = AlignedFaces.prepare(str(data_dir / "celeba" / "test"), size=128, max_images=24)
    pairs = ValidationPairs(faces, 16, DegradationConfig(), seed=123, size=24)
    lr = torch.stack([pairs[i][0] for i in range(len(pairs))])
    hr = torch.stack([pairs[i][1] for i in range(len(pairs))])
    sr = builtin.upscale(lr)
    bicubic = F.interpolate(lr, size=(128, 128), mode="bicubic", align_corners=False).clamp(0, 1)
    lpips = LPIPS.from_weights_cache("vgg", progress=False)
    with torch.no_grad():
        ours = (psnr(sr, hr).mean().item(), lpips(sr, hr).mean().item())
        baseline = (psnr(bicubic, hr).mean().item(), lpips(bicubic, hr).mean().item())
    assert ours[0] > baseline[0], f"PSNR {ours[0]:.2f} dB vs bicubic {baseline[0]:.2f} dB"
    assert ours[1] < baseline[1], f"LPIPS {ours[1]:.3f} vs bicubic {baseline[1]:.3f}"


def test_a_batch_of_32_gives_the_faces_of_32_batches_of_1(builtin) -> None:
    """Batching is only a speed-up: the pipeline's path (encoder + render, no model consistency)
    gives every face as if it ran alone, and so do the model's registration + back-projection on
    the same rendered faces. (Through the whole consistency step the render's float rounding,
    which depends on the batch size, moves the registration's optimum a little: up to 0.03 on a
    pixel, before and after the batching work alike.)"""
    import dataclasses

    from facetools_dapfsr.models.consistency import enforce_consistency

    lr = torch.rand(32, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    no_refine = dataclasses.replace(builtin.config.consistency, refine_steps=0)
    with torch.inference_mode():
        batched = builtin.upscale(lr, consistency=False)
        single = torch.cat([builtin.upscale(face[None], consistency=False) for face in lr])
        assert float((batched - single).abs().max()) < 1e-4
        consistent = enforce_consistency(batched[:8], lr[:8], no_refine)
        consistent_single = torch.cat(
            [enforce_consistency(f[None], x[None], no_refine) for f, x in zip(batched, lr[:8], strict=False)]
        )
    assert float((consistent - consistent_single).abs().max()) < 1e-5


def test_upscale_without_model_uses_the_builtin_one(builtin, tmp_path, capsys) -> None:
    out = tmp_path / "astronaut_x4.png"
    report = tmp_path / "report.json"
    status = main(
        [
            "upscale",
            str(REPO_ROOT / "examples" / "astronaut.png"),
            "-o",
            str(out),
            "--report",
            str(report),
            "--no-progress",
        ]
    )
    assert status == 0, capsys.readouterr().err
    assert Image.open(out).size == (512, 512)
    (record,) = json.loads(report.read_text())["images"]
    assert len(record["faces"]) == 1


def test_save_pretrained_renders_the_card_and_keeps_its_facts(tmp_path) -> None:
    model = DAPFSR(DAPFSRConfig.tiny())
    model.card_info = ModelCardInfo(
        training_data="forty faces",
        training_command="python recipes/train_encoder.py --max-steps 3",
        metrics=[
            {
                "benchmark": "toy",
                "method": "DAP-FSR",
                "psnr": 21.5,
                "lpips": 0.25,
                "command": "dapfsr evaluate --target toy",
            }
        ],
    )
    folder = model.save_pretrained(tmp_path / "m", dtype=torch.float16)
    card = (folder / "README.md").read_text()
    assert "${" not in card and "forty faces" in card and "| toy | DAP-FSR | 21.50 | - | 0.250 | - | - | - |" in card
    assert "dapfsr evaluate --target toy" in card
    assert "non-commercial" not in card  # a native decoder on unnamed data carries no CelebA/FFHQ terms
    again = DAPFSR.from_pretrained(folder)
    assert again.card_info == model.card_info
    for name, tensor in model.encoder.state_dict().items():
        if tensor.is_floating_point():
            assert torch.equal(again.encoder.state_dict()[name], tensor.half().float())


def test_reproduce_command_lists_only_changed_options() -> None:
    defaults = EncoderTrainingArguments().to_dict()
    options = {**defaults, "data": "faces/", "max_steps": 7, "output_dir": "runs/x", "lr_schedule": "cosine"}
    assert reproduce_command("train_encoder.py", options, defaults) == (
        "python recipes/train_encoder.py --data faces/ --lr-schedule cosine --max-steps 7"
    )


def test_learning_rate_schedule() -> None:
    assert learning_rate_at(5, 1.0, 100, warmup_steps=10) == pytest.approx(0.5)
    assert learning_rate_at(50, 1.0, 100) == 1.0
    assert learning_rate_at(10, 1.0, 110, warmup_steps=10, schedule="cosine") == pytest.approx(1.0)
    assert learning_rate_at(110, 1.0, 110, warmup_steps=10, schedule="cosine") == pytest.approx(0.1)
    with pytest.raises(ValueError, match="schedule"):
        learning_rate_at(1, 1.0, 10, schedule="step")


def test_a_continued_run_card_lists_both_stages() -> None:
    from facetools_dapfsr.training.model_card import chained_card_info

    earlier = ModelCardInfo(
        training_data="A", training_procedure="P1", training_command="python recipes/train_encoder.py --x 1"
    )
    later = ModelCardInfo(
        training_data="B", training_procedure="P2", training_command="python recipes/train_encoder.py --init-from default",
        trained_on_celeba=True,
    )  # fmt: skip
    both = chained_card_info(earlier, later, "commit abc")
    assert both.training_data == "Stage 1: A\n\nStage 2: B"
    assert "commit abc" in both.training_procedure and both.trained_on_celeba
    assert both.training_command.splitlines() == [
        "# stage 1", "python recipes/train_encoder.py --x 1",
        "# stage 2 (--init-from: commit abc)", "python recipes/train_encoder.py --init-from default",
    ]  # fmt: skip
