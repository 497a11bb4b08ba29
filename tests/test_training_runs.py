"""The training recipes as real processes on the CPU: `accelerate launch` with 2 processes (gloo),
two "machines" on loopback, a killed-and-resumed run, a resumed DeepSpeed ZeRO-2 run, the decoder
recipe, and bad data.

All runs use the tiny configuration on a few real CelebA photos (plus one image without a face
and one corrupt file, which every run must skip and count).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

from facetools_dapfsr import DAPFSR
from facetools_dapfsr.data.faces import AlignedFaces
from facetools_dapfsr.data.landmarks import DetectorSettings
from facetools_dapfsr.training.reporting import state_dict_sha256

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
ENCODER = str(REPO / "recipes" / "train_encoder.py")
DECODER = str(REPO / "recipes" / "train_decoder.py")
TIMEOUT = 240


@pytest.fixture(scope="module")
def faces_dir(tmp_path_factory, celeba_sample) -> Path:
    folder = tmp_path_factory.mktemp("faces")
    for path in celeba_sample[:8]:
        shutil.copy(path, folder / path.name)
    pixels = (np.random.default_rng(0).random((120, 100, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(folder / "noise.png")
    (folder / "broken.jpg").write_bytes(b"not an image")
    return folder


@pytest.fixture(scope="module")
def landmarks(faces_dir, tmp_path_factory) -> Path:
    """Landmarks detected once here; every run below reads them from this cache file."""
    path = tmp_path_factory.mktemp("landmarks") / "landmarks.json"
    AlignedFaces.prepare(faces_dir, 32, settings=DetectorSettings(), cache_path=path)
    return path


@pytest.fixture(scope="module")
def run_env(tmp_path_factory, weights_cache) -> dict[str, str]:
    # Load the real VGG-19 and LPIPS weights once here, so that runs only read the cache.
    from facetools_dapfsr.losses import VGGFeatures
    from facetools_dapfsr.metrics.lpips import LPIPS

    VGGFeatures.from_weights_cache(progress=False)
    LPIPS.from_weights_cache("alex", progress=False)
    home = tmp_path_factory.mktemp("hf_home")
    env = dict(os.environ)
    env.update(
        DAPFSR_CACHE=str(weights_cache),
        HF_HOME=str(home),  # no user accelerate config, a private datasets cache
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="1",  # 2 processes on 2 cores; also makes CPU kernels deterministic
        PYTHONUNBUFFERED="1",
    )
    return env


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _accelerate(*args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--dynamo_backend",
        "no",
        "--mixed_precision",
        "no",
        *args,
    ]


def _common(faces_dir: Path, landmarks: Path, output: Path, *extra: str) -> list[str]:
    return [
        "--config", "tiny", "--data", str(faces_dir), "--landmark-cache", str(landmarks),
        "--output-dir", str(output), "--batch-size", "2", "--report-to", "none", "--log-every", "2",
        *extra,
    ]  # fmt: skip


def _run(command: list[str], env: dict[str, str], expect_ok: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    if expect_ok and result.returncode != 0:
        pytest.fail(
            f"exit {result.returncode}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-6000:]}"
        )
    return result


def _summaries(output: Path, world: int) -> list[dict]:
    return [json.loads((output / f"summary_rank{r}.json").read_text()) for r in range(world)]


def _check_two_ranks(output: Path, steps: int, batch: int = 2) -> list[dict]:
    ranks = _summaries(output, 2)
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert [r["step"] for r in ranks] == [steps, steps]
    assert ranks[0]["encoder_sha256"] == ranks[1]["encoder_sha256"]
    seen = [r["sample_indices"] for r in ranks]
    assert len(seen[0]) == len(seen[1]) == steps * batch
    # Training sets here hold a multiple of the 4 images a step takes, so every step lies within
    # one epoch and the two ranks' images must differ.
    for k in range(steps):
        assert not set(seen[0][k * batch : (k + 1) * batch]) & set(seen[1][k * batch : (k + 1) * batch])
    # Bad files were skipped and counted, not fatal.
    data = ranks[0]["data"]
    assert (data["total"], data["no_face"], data["unreadable"]) == (10, 1, 1)
    model = DAPFSR.from_pretrained(output / "model")
    assert state_dict_sha256(model.encoder) == ranks[0]["encoder_sha256"]
    # The model card names the data and the command that reproduces the run.
    assert model.card_info.training_command.startswith("python recipes/train_encoder.py")
    assert "--max-steps" in model.card_info.training_command
    assert "8 of 10 images used" in model.card_info.training_data
    assert model.card_info.training_command in (output / "model" / "README.md").read_text()
    return ranks


def test_two_processes_train_one_model_on_different_data(faces_dir, landmarks, run_env, tmp_path) -> None:
    output = tmp_path / "run"
    command = _accelerate(
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--main_process_port", str(_free_port()),
        ENCODER,
        *_common(faces_dir, landmarks, output, "--max-steps", "4", "--record-samples",
                 "--validation-size", "4", "--validation-every", "2", "--lpips-net", "alex", "--grid-size", "2"),
    )  # fmt: skip
    _run(command, run_env)
    ranks = _check_two_ranks(output, steps=4)
    assert ranks[0]["distributed_type"] == "MULTI_CPU"
    metrics = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    validated = [m["step"] for m in metrics if "val/psnr" in m]
    assert validated == [0, 2, 4]
    assert all(np.isfinite(m["val/lpips"]) for m in metrics if "val/lpips" in m)
    assert (output / "samples" / "step_00000004.png").is_file()


def test_two_machines_on_loopback(faces_dir, landmarks, run_env, tmp_path) -> None:
    output = tmp_path / "run"
    port = str(_free_port())
    machines = []
    for rank in (0, 1):
        command = _accelerate(
            "--multi_gpu", "--num_processes", "2", "--num_machines", "2", "--machine_rank", str(rank),
            "--main_process_ip", "127.0.0.1", "--main_process_port", port,
            ENCODER,
            *_common(faces_dir, landmarks, output, "--max-steps", "3", "--record-samples", "--validation-size", "0"),
        )  # fmt: skip
        machines.append(
            subprocess.Popen(
                command, env=run_env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
    for machine in machines:
        out, _ = machine.communicate(timeout=TIMEOUT)
        assert machine.returncode == 0, out[-5000:]
    _check_two_ranks(output, steps=3)


def test_killed_run_resumes_to_the_uninterrupted_result(faces_dir, landmarks, run_env, tmp_path) -> None:
    steps = "10"
    args = ("--max-steps", steps, "--checkpoint-every", "2", "--gradient-accumulation-steps", "2",
            "--validation-size", "2", "--validation-every", "4", "--lpips-net", "none", "--grid-size", "0")  # fmt: skip
    reference = tmp_path / "uninterrupted"
    _run([sys.executable, ENCODER, *_common(faces_dir, landmarks, reference, *args)], run_env)

    output = tmp_path / "interrupted"
    command = [sys.executable, ENCODER, *_common(faces_dir, landmarks, output, *args)]
    victim = subprocess.Popen(command, env=run_env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first_checkpoint = output / "checkpoints" / "step_00000002"
    deadline = time.monotonic() + TIMEOUT
    while not first_checkpoint.is_dir():
        assert victim.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    assert not (output / "model").exists(), "the run finished before it could be killed"

    resumed = _run(
        [sys.executable, ENCODER, *_common(faces_dir, landmarks, output, *args, "--resume", "latest")], run_env
    )
    assert "resumed from" in resumed.stderr
    expected, got = _summaries(reference, 1)[0], _summaries(output, 1)[0]
    assert got["step"] == expected["step"] == int(steps)
    assert got["samples_seen"] == expected["samples_seen"]
    assert got["encoder_sha256"] == expected["encoder_sha256"]
    a, b = (
        load_file(str(reference / "model" / "model.safetensors")),
        load_file(str(output / "model" / "model.safetensors")),
    )
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)


def _decoder_run(faces_dir: Path, landmarks: Path, output: Path, env: dict[str, str], *extra: str) -> None:
    command = _accelerate(
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--main_process_port", str(_free_port()),
        DECODER,
        *_common(faces_dir, landmarks, output, "--checkpoint-every", "2", "--r1-interval", "2", "--pl-weight", "2",
                 "--pl-interval", "2", "--validation-every", "2", "--grid-size", "4", "--record-samples", *extra),
    )  # fmt: skip
    _run(command, env)


def test_decoder_recipe_trains_a_prior_the_encoder_recipe_uses(faces_dir, landmarks, run_env, tmp_path) -> None:
    decoder_run = tmp_path / "decoder"
    _decoder_run(faces_dir, landmarks, decoder_run, run_env, "--max-steps", "4")
    ranks = _summaries(decoder_run, 2)
    for key in ("generator_sha256", "discriminator_sha256", "generator_ema_sha256"):
        assert ranks[0][key] == ranks[1][key], key
    assert not set(ranks[0]["sample_indices"][:2]) & set(ranks[1]["sample_indices"][:2])
    assert sorted(p.name for p in (decoder_run / "decoder").iterdir()) == ["config.json", "model.safetensors"]
    assert (decoder_run / "checkpoints" / "step_00000004" / "generator_ema.safetensors").is_file()

    # Stopping after 2 steps and resuming to 4 (2 processes, R1 and path length on) gives the
    # same generator, discriminator and EMA as the run above.
    staged = tmp_path / "staged"
    _decoder_run(faces_dir, landmarks, staged, run_env, "--max-steps", "2")
    _decoder_run(faces_dir, landmarks, staged, run_env, "--max-steps", "4", "--resume", "latest")
    resumed = _summaries(staged, 2)
    for key in ("generator_sha256", "discriminator_sha256", "generator_ema_sha256"):
        assert resumed[0][key] == resumed[1][key] == ranks[0][key], key

    encoder_run = tmp_path / "encoder"
    _run(
        [sys.executable, ENCODER,
         *_common(faces_dir, landmarks, encoder_run, "--decoder", str(decoder_run / "decoder"), "--max-steps", "2",
                  "--validation-size", "0")],
        run_env,
    )  # fmt: skip
    model = DAPFSR.from_pretrained(encoder_run / "model")
    ema = load_file(str(decoder_run / "decoder" / "model.safetensors"))
    key = next(k for k in ema if k.startswith("generator_ema."))
    assert bool((model.decoder.state_dict()[key.removeprefix("generator_ema.")] == ema[key]).all())


DEEPSPEED_CONFIG = "recipes/configs/deepspeed_zero2.yaml"
ZERO_SHARD = "pytorch_model/zero_pp_rank_0_mp_rank_00_optim_states.pt"


def _deepspeed_run(
    faces_dir: Path, landmarks: Path, output: Path, env: dict[str, str], *extra: str, expect_ok: bool = True
):
    """The encoder recipe under the shipped ZeRO-2 config, one process: on a machine without GPU
    DeepSpeed picks its CPU accelerator (several CPU processes would train separate models)."""
    pytest.importorskip("deepspeed")
    # accelerate's DeepSpeed plugin imports transformers (DeepSpeedPlugin.select ->
    # set_deepspeed_weakref -> HfDeepSpeedConfig), so the deepspeed and test extras list it.
    pytest.importorskip("transformers", reason="accelerate's DeepSpeed plugin needs transformers")
    command = _accelerate(
        "--config_file", DEEPSPEED_CONFIG, "--num_processes", "1",
        ENCODER,
        *_common(faces_dir, landmarks, output, "--checkpoint-every", "2", "--validation-size", "0", *extra),
    )  # fmt: skip
    return _run(command, env, expect_ok=expect_ok)


@pytest.fixture(scope="module")
def deepspeed_runs(faces_dir, landmarks, run_env, tmp_path_factory) -> dict[str, Path]:
    """A 4-step ZeRO-2 run, and one stopped after 2 steps and resumed to 4."""
    root = tmp_path_factory.mktemp("deepspeed")
    _deepspeed_run(faces_dir, landmarks, root / "uninterrupted", run_env, "--max-steps", "4")
    _deepspeed_run(faces_dir, landmarks, root / "staged", run_env, "--max-steps", "2")
    # Kept before the resume writes step 4, for the test of a changed checkpoint below.
    shutil.copytree(root / "staged" / "checkpoints", root / "after-2-steps" / "checkpoints")
    resumed = _deepspeed_run(faces_dir, landmarks, root / "staged", run_env, "--max-steps", "4", "--resume", "latest")
    assert "resumed from" in resumed.stderr and "step_00000002" in resumed.stderr
    return {"uninterrupted": root / "uninterrupted", "staged": root / "staged", "after-2-steps": root / "after-2-steps"}


def test_a_deepspeed_run_resumes_to_the_uninterrupted_result(deepspeed_runs) -> None:
    import torch

    expected, got = _summaries(deepspeed_runs["uninterrupted"], 1)[0], _summaries(deepspeed_runs["staged"], 1)[0]
    assert expected["distributed_type"] == got["distributed_type"] == "DEEPSPEED"
    assert got["step"] == expected["step"] == 4 and got["samples_seen"] == expected["samples_seen"]
    assert got["encoder_sha256"] == expected["encoder_sha256"]
    checkpoint = deepspeed_runs["after-2-steps"] / "checkpoints" / "step_00000002"
    # A DeepSpeed checkpoint (ZeRO-2 shards), recorded like any other; reading its settings
    # unpickles it, as resuming does: this run wrote it.
    assert ZERO_SHARD in json.loads((checkpoint / "training_state.json").read_text())["files_sha256"]
    states = torch.load(
        checkpoint / "pytorch_model" / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False
    )
    assert states["ds_config"]["zero_optimization"]["stage"] == 2


class _Unpickled:
    """Unpickling it creates ``marker``: the code a rewritten checkpoint could run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_changed_deepspeed_checkpoint_is_refused_before_it_is_unpickled(
    deepspeed_runs, faces_dir, landmarks, run_env, tmp_path
) -> None:
    import torch

    output = tmp_path / "run"
    shutil.copytree(deepspeed_runs["after-2-steps"], output)
    shard = output / "checkpoints" / "step_00000002" / ZERO_SHARD
    marker = tmp_path / "unpickled"
    torch.save({"optimizer_state_dict": _Unpickled(marker)}, shard)  # the run's record still holds the old hash
    result = _deepspeed_run(
        faces_dir, landmarks, output, run_env, "--max-steps", "4", "--resume", "latest", expect_ok=False
    )
    assert result.returncode != 0
    assert f"{shard}: sha256 " in result.stderr and "does not match the recorded" in result.stderr
    assert not marker.exists()  # refused before DeepSpeed read the shard
    assert not (output / "model").exists() and not (output / "checkpoints" / "step_00000004").exists()


def test_unusable_data_fails_clearly(run_env, tmp_path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _run([sys.executable, ENCODER, "--config", "tiny", "--data", str(empty), "--output-dir", str(tmp_path / "a"),
                   "--report-to", "none"], run_env, expect_ok=False)  # fmt: skip
    assert result.returncode == 2
    assert "no image files found" in result.stderr
    assert "Traceback" not in result.stderr

    no_faces = tmp_path / "no_faces"
    no_faces.mkdir()
    pixels = (np.random.default_rng(1).random((90, 90, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(no_faces / "noise.png")
    (no_faces / "broken.png").write_bytes(b"")
    result = _run([sys.executable, ENCODER, "--config", "tiny", "--data", str(no_faces), "--output-dir", str(tmp_path / "b"),
                   "--report-to", "none"], run_env, expect_ok=False)  # fmt: skip
    assert result.returncode == 2
    assert "no usable face" in result.stderr and "1 without a face, 1 unreadable" in result.stderr
