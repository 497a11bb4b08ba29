"""Nothing silently wrong: recorded hashes of model and checkpoint folders, finite tensors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from facetools_dapfsr import DAPFSR, DAPFSRConfig
from facetools_dapfsr.fileio import sha256_file
from facetools_dapfsr.integrity import CHECKSUMS_NAME, IntegrityError
from facetools_dapfsr.models.dapfsr import default_model_path
from facetools_dapfsr.training.checkpointing import STATE_NAME, TrainingState, load_checkpoint, save_checkpoint

SHIPPED_SHA256_PREFIX = "8f17e217"


@pytest.fixture()
def saved(tmp_path) -> tuple[DAPFSR, Path]:
    torch.manual_seed(0)
    model = DAPFSR(DAPFSRConfig.tiny()).eval()
    return model, model.save_pretrained(tmp_path / "model")


def overwrite_tail(path: Path, count: int = 64, value: int = 0x7E) -> None:
    """Overwrite ``count`` bytes at the end of the file: inside the last tensor's data, so the
    file still parses (what a bad disk block or a careless edit does)."""
    data = bytearray(path.read_bytes())
    data[-count:] = bytes([value]) * count
    path.write_bytes(bytes(data))


# -- model folders -------------------------------------------------------------------------------
def test_save_pretrained_records_the_weights_sha256(saved) -> None:
    _, folder = saved
    record = json.loads((folder / CHECKSUMS_NAME).read_text())
    assert record == {"format": 1, "sha256": {"model.safetensors": sha256_file(folder / "model.safetensors")}}


def test_overwritten_weights_are_refused_naming_the_file(saved) -> None:
    _, folder = saved
    overwrite_tail(folder / "model.safetensors")
    load_file(str(folder / "model.safetensors"))  # still a valid safetensors file
    with pytest.raises(IntegrityError, match=r"sha256 .* does not match the recorded") as caught:
        DAPFSR.from_pretrained(folder)
    assert str(folder / "model.safetensors") in str(caught.value) and "\n" not in str(caught.value)


def test_a_modified_shard_is_refused(tmp_path) -> None:
    torch.manual_seed(0)
    folder = DAPFSR(DAPFSRConfig.tiny()).save_pretrained(tmp_path / "m", max_shard_bytes=400_000)
    shards = sorted(folder.glob("model-*-of-*.safetensors"))
    recorded = json.loads((folder / CHECKSUMS_NAME).read_text())["sha256"]
    assert sorted(recorded) == sorted([p.name for p in shards] + ["model.safetensors.index.json"])
    overwrite_tail(shards[-1])
    with pytest.raises(IntegrityError, match=shards[-1].name):
        DAPFSR.from_pretrained(folder)


def test_a_folder_saved_before_checksums_loads_unchecked(saved) -> None:
    model, folder = saved
    (folder / CHECKSUMS_NAME).unlink()
    lr = torch.rand(2, 3, 16, 16)
    assert torch.equal(DAPFSR.from_pretrained(folder).upscale(lr), model.upscale(lr))


def test_an_unreadable_checksums_file_is_named(saved) -> None:
    _, folder = saved
    (folder / CHECKSUMS_NAME).write_text("[1, 2")
    with pytest.raises(IntegrityError, match=CHECKSUMS_NAME):
        DAPFSR.from_pretrained(folder)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_naming_file_and_tensor(saved, bad: float) -> None:
    model, folder = saved
    name = (
        "encoder.head.bias"
        if "encoder.head.bias" in model.state_dict()
        else next(n for n, t in model.state_dict().items() if n.startswith("encoder.") and t.is_floating_point())
    )
    tensors = load_file(str(folder / "model.safetensors"))
    tensors[name] = tensors[name].clone().fill_(bad)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / CHECKSUMS_NAME).unlink()  # a re-saved file would carry a matching record anyway
    with pytest.raises(IntegrityError, match="NaN or infinite") as caught:
        DAPFSR.from_pretrained(folder)
    assert str(folder / "model.safetensors") in str(caught.value) and name in str(caught.value)


def test_the_builtin_model_bytes_are_unchanged_and_checked() -> None:
    folder = default_model_path()
    assert sha256_file(folder / "model.safetensors").startswith(SHIPPED_SHA256_PREFIX)
    recorded = json.loads((folder / CHECKSUMS_NAME).read_text())["sha256"]
    assert recorded == {"model.safetensors": sha256_file(folder / "model.safetensors")}


# -- training checkpoints ------------------------------------------------------------------------
def make_run(tmp_path: Path):
    from accelerate import Accelerator

    torch.manual_seed(0)
    accelerator = Accelerator(cpu=True)
    module = torch.nn.Linear(4, 4)
    optimizer = torch.optim.Adam(module.parameters())
    module, optimizer = accelerator.prepare(module, optimizer)
    module(torch.rand(2, 4)).sum().backward()
    optimizer.step()
    extra = {"ema": torch.nn.Linear(4, 2)}
    folder = save_checkpoint(accelerator, tmp_path, TrainingState(step=3), extra_modules=extra)
    return accelerator, folder, extra


def test_checkpoints_record_every_file_and_resume_checks_them(tmp_path) -> None:
    accelerator, folder, extra = make_run(tmp_path)
    recorded = json.loads((folder / STATE_NAME).read_text())["files_sha256"]
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != STATE_NAME)
    assert sorted(recorded) == files and "ema.safetensors" in recorded
    assert load_checkpoint(accelerator, folder, extra_modules=extra).step == 3

    weights = next(folder.glob("model*.safetensors"))
    overwrite_tail(weights, count=16, value=0xFF)  # 0xFFFF... is NaN in float32
    with pytest.raises(ValueError, match="does not match the recorded") as caught:
        load_checkpoint(accelerator, folder, extra_modules=extra)
    assert str(weights) in str(caught.value)


def test_a_checkpoint_without_a_record_is_still_checked_for_non_finite_weights(tmp_path) -> None:
    accelerator, folder, extra = make_run(tmp_path)
    state = json.loads((folder / STATE_NAME).read_text())
    del state["files_sha256"]  # as checkpoints made before the record
    (folder / STATE_NAME).write_text(json.dumps(state))
    assert load_checkpoint(accelerator, folder, extra_modules=extra).step == 3
    tensors = load_file(str(folder / "ema.safetensors"))
    tensors["weight"] = torch.full_like(tensors["weight"], float("inf"))
    save_file(tensors, str(folder / "ema.safetensors"))
    with pytest.raises(ValueError, match="NaN or infinite") as caught:
        load_checkpoint(accelerator, folder, extra_modules=extra)
    assert str(folder / "ema.safetensors") in str(caught.value)


def test_a_malformed_record_is_named(tmp_path) -> None:
    accelerator, folder, extra = make_run(tmp_path)
    state = json.loads((folder / STATE_NAME).read_text())
    state["files_sha256"] = ["optimizer.bin"]
    (folder / STATE_NAME).write_text(json.dumps(state))
    with pytest.raises(ValueError, match="files_sha256 must map") as caught:
        load_checkpoint(accelerator, folder, extra_modules=extra)
    assert STATE_NAME in str(caught.value)


def test_report_folders_are_checked_before_the_work(tmp_path, capsys) -> None:
    """evaluate, sample and bench refuse an --out that cannot be created before any work (they
    failed with a traceback after the whole run)."""
    from facetools_dapfsr.cli.main import main

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    faces = tmp_path / "faces"
    faces.mkdir()
    for argv in (
        ["evaluate", "--target", str(faces), "--methods", "bicubic", "--out", str(blocker / "eval")],
        ["sample", "-n", "1", "--out", str(blocker / "samples")],
        ["bench", "--preset", "tiny", "--out", str(blocker / "bench.json")],
    ):
        assert main(argv) == 2, argv
        assert "is a file, not a folder" in capsys.readouterr().err
    assert main(["evaluate", "--target", str(faces), "--methods", "bicubic", "--out", str(faces)]) == 2
    assert "is a folder of input faces" in capsys.readouterr().err
