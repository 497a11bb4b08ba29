"""Shared training pieces, in process: sampling, seeds, options, checkpoints folders, GAN terms,
native decoder folders, and the shipped launch configurations (DeepSpeed's own parser)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
import torch

from facetools_dapfsr.config import DAPFSRConfig, StyleGAN2Config
from facetools_dapfsr.models.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
from facetools_dapfsr.seeding import derive_seed
from facetools_dapfsr.training.arguments import (
    TrainingArguments,
    build_parser,
    parse_arguments,
)
from facetools_dapfsr.training.checkpointing import (
    INCOMPLETE_PREFIX,
    STATE_NAME,
    TrainingState,
    checkpoint_dir,
    list_checkpoints,
    resolve_resume,
)
from facetools_dapfsr.training.gan import (
    MappedGenerator,
    discriminator_loss,
    ema_beta,
    generator_loss,
    path_length_penalty,
    r1_penalty,
    update_ema,
)
from facetools_dapfsr.training.native_decoder import (
    load_native_decoder,
    read_native_decoder_config,
    save_native_decoder,
    stylegan2_config_from,
)
from facetools_dapfsr.training.reporting import state_dict_sha256
from facetools_dapfsr.training.sampling import StreamSampler
from facetools_dapfsr.training.setup import fill_deepspeed_auto

CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "configs"


# -- sampling and seeds ----------------------------------------------------------------------------
def _take(sampler: StreamSampler, count: int) -> list[tuple[int, int]]:
    iterator = iter(sampler)
    return [next(iterator) for _ in range(count)]


def test_processes_see_disjoint_data_within_an_epoch() -> None:
    n, batch, world = 24, 3, 4
    shares = [_take(StreamSampler(n, batch, world, rank, seed=7), n // world) for rank in range(world)]
    indices = [index for share in shares for index, _ in share]
    assert sorted(indices) == list(range(n))  # one epoch, each image exactly once
    positions = [p for share in shares for _, p in share]
    assert sorted(positions) == list(range(n))


def test_resuming_the_stream_continues_it_exactly() -> None:
    whole = _take(StreamSampler(10, 2, 2, 1, seed=3), 40)
    resumed = _take(StreamSampler(10, 2, 2, 1, seed=3, start_batch=7), 26)
    assert resumed == whole[14:]


def test_epochs_are_reshuffled_and_seeded() -> None:
    stream = [i for i, _ in _take(StreamSampler(8, 8, 1, 0, seed=1), 16)]
    assert sorted(stream[:8]) == sorted(stream[8:]) == list(range(8))
    assert stream[:8] != stream[8:]
    assert stream == [i for i, _ in _take(StreamSampler(8, 8, 1, 0, seed=1), 16)]
    assert stream != [i for i, _ in _take(StreamSampler(8, 8, 1, 0, seed=2), 16)]


def test_derived_seeds_are_distinct_and_stable() -> None:
    seeds = {derive_seed(1, 0, step, rank) for step in range(50) for rank in range(4)}
    assert len(seeds) == 200
    assert derive_seed(1, 2, 3) == derive_seed(1, 2, 3)
    with pytest.raises(ValueError):
        derive_seed(-1)


# -- options ---------------------------------------------------------------------------------------
def test_options_parse_and_round_trip_through_json(tmp_path) -> None:
    args = parse_arguments(
        TrainingArguments,
        ["--data", "faces/", "--max-steps", "5", "--batch-size", "2", "--mixed-precision", "bf16", "--record-samples"],
    )
    assert (args.data, args.max_steps, args.batch_size, args.mixed_precision, args.record_samples) == (
        "faces/",
        5,
        2,
        "bf16",
        True,
    )
    path = tmp_path / "args.json"
    path.write_text(args.to_json_string())
    assert TrainingArguments.from_json_file(path) == args


def test_invalid_options_exit_with_a_message(capsys) -> None:
    with pytest.raises(SystemExit):
        parse_arguments(TrainingArguments, ["--batch-size", "0"])
    assert "--batch_size must be at least 1" in capsys.readouterr().err.replace("-", "_").replace("__", "--")
    with pytest.raises(SystemExit):
        parse_arguments(TrainingArguments, ["--mixed-precision", "fp8"])
    help_text = build_parser(TrainingArguments).format_help()
    for flag in (
        "--data",
        "--max-steps",
        "--batch-size",
        "--gradient-accumulation-steps",
        "--mixed-precision",
        "--output-dir",
        "--checkpoint-every",
        "--resume",
        "--push-to-hub",
    ):
        assert flag in help_text


# -- checkpoint folders ----------------------------------------------------------------------------
def test_resume_latest_ignores_incomplete_checkpoints(tmp_path) -> None:
    assert resolve_resume("latest", tmp_path) is None
    for step in (2, 10):
        folder = checkpoint_dir(tmp_path, step)
        folder.mkdir(parents=True)
        (folder / STATE_NAME).write_text(TrainingState(step=step).to_json_string())
    (checkpoint_dir(tmp_path, 12).parent / f"{INCOMPLETE_PREFIX}step_00000012").mkdir()
    checkpoint_dir(tmp_path, 11).mkdir()  # no state file: interrupted copy
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000002", "step_00000010"]
    assert resolve_resume("latest", tmp_path) == checkpoint_dir(tmp_path, 10)
    assert resolve_resume(str(checkpoint_dir(tmp_path, 2)), tmp_path) == checkpoint_dir(tmp_path, 2)
    with pytest.raises(FileNotFoundError, match="not a checkpoint"):
        resolve_resume(str(tmp_path / "nope"), tmp_path)


def test_a_damaged_checkpoint_is_refused_naming_the_file(tmp_path) -> None:
    from accelerate import Accelerator

    from facetools_dapfsr.training.checkpointing import load_checkpoint, save_checkpoint

    accelerator = Accelerator(cpu=True)
    module = torch.nn.Linear(4, 4)
    optimizer = torch.optim.Adam(module.parameters())
    module, optimizer = accelerator.prepare(module, optimizer)
    module(torch.rand(2, 4)).sum().backward()
    optimizer.step()
    folder = save_checkpoint(accelerator, tmp_path, TrainingState(step=3))
    assert load_checkpoint(accelerator, folder).step == 3

    state = folder / STATE_NAME
    good = state.read_text()
    for damaged, message in (("{", "not a valid training state"), ('{"step": -1}', "step must be a non-negative")):
        state.write_text(damaged)
        with pytest.raises(ValueError, match=message) as caught:
            load_checkpoint(accelerator, folder)
        assert STATE_NAME in str(caught.value)
    state.write_text(good.replace('"step": 3', '"step": 0'))  # one flipped digit
    assert '"step": 0' in state.read_text()
    with pytest.raises(ValueError, match="records step 0 but the checkpoint folder is step_00000003"):
        load_checkpoint(accelerator, folder)
    state.write_text(good)
    optimizer_file = next(folder.glob("optimizer*.bin"))
    intact = optimizer_file.read_bytes()
    optimizer_file.write_bytes(intact[:100])  # truncated
    # The sha256 recorded in training_state.json notices it first, naming the file ...
    with pytest.raises(ValueError, match="does not match the recorded") as caught:
        load_checkpoint(accelerator, folder)
    assert str(optimizer_file) in str(caught.value)
    # ... and in a checkpoint saved before that record, torch.save's archive does (each member
    # carries a CRC-32): truncated, or one byte of the optimizer's tensors flipped.
    state.write_text(json.dumps({k: v for k, v in json.loads(good).items() if k != "files_sha256"}))
    with zipfile.ZipFile(io.BytesIO(intact)) as archive:
        largest = max(archive.infolist(), key=lambda member: member.file_size)
        offset = intact.index(archive.read(largest))
    flipped = bytearray(intact)
    flipped[offset] ^= 0xFF
    for damaged, message in ((intact[:100], "truncated or corrupt"), (bytes(flipped), "fails its CRC-32 check")):
        optimizer_file.write_bytes(damaged)
        with pytest.raises(ValueError, match=message) as caught:
            load_checkpoint(accelerator, folder)
        assert str(caught.value).startswith(f"{optimizer_file}: ")
    optimizer_file.write_bytes(intact)
    assert load_checkpoint(accelerator, folder).step == 3  # an intact one resumes


# -- GAN terms and the native decoder folder -------------------------------------------------------
def test_gan_terms_behave() -> None:
    torch.manual_seed(0)
    config = DAPFSRConfig.tiny().decoder
    generator = MappedGenerator(StyleGAN2Generator(config))
    discriminator = StyleGAN2Discriminator(config.resolution, config.channel_base, config.channel_max)
    fake, ws = generator(torch.randn(4, config.z_dim))
    assert fake.shape == (4, 3, 32, 32) and ws.shape == (4, generator.generator.num_ws, config.w_dim)
    real = torch.rand(4, 3, 32, 32, requires_grad=True)
    logits_real = discriminator(real)
    assert float(r1_penalty(logits_real, real).detach()) > 0
    confident = torch.full((4,), 20.0)
    assert float(discriminator_loss(confident, -confident)) < 1e-6
    assert float(generator_loss(confident)) < 1e-6 < float(generator_loss(-confident))
    penalty, lengths = path_length_penalty(fake, ws, torch.zeros(()))
    assert penalty.requires_grad and float(lengths) > 0
    ema = StyleGAN2Generator(config)
    update_ema(ema, generator.generator, beta=0.0)
    assert state_dict_sha256(ema) == state_dict_sha256(generator.generator)
    assert ema_beta(32, 32) == pytest.approx(0.5)


def test_native_decoder_folder_round_trip(tmp_path) -> None:
    config = DAPFSRConfig.tiny().decoder
    torch.manual_seed(1)
    generator, ema = StyleGAN2Generator(config), StyleGAN2Generator(config)
    folder = save_native_decoder(tmp_path / "decoder", generator, ema)
    assert read_native_decoder_config(folder) == config
    assert stylegan2_config_from(str(folder)) == config
    assert state_dict_sha256(load_native_decoder(folder, ema=True)) == state_dict_sha256(ema)
    assert state_dict_sha256(load_native_decoder(folder, ema=False)) == state_dict_sha256(generator)
    assert stylegan2_config_from("paper") == StyleGAN2Config(resolution=128)
    with pytest.raises(ValueError, match="not a native StyleGAN2"):
        stylegan2_config_from("prior")


# -- shipped launch configurations -----------------------------------------------------------------
def _deepspeed_configs() -> list[Path]:
    found = [p for p in sorted(CONFIGS.glob("*.json")) if "zero_optimization" in json.loads(p.read_text())]
    assert found, "no DeepSpeed config shipped"
    return found


@pytest.mark.parametrize("path", _deepspeed_configs(), ids=lambda p: p.name)
@pytest.mark.parametrize("precision", ["no", "bf16", "fp16"])
def test_deepspeed_configs_pass_deepspeeds_own_parser(path: Path, precision: str) -> None:
    from deepspeed.runtime.config import DeepSpeedConfig  # in the test extra

    filled = fill_deepspeed_auto(
        json.loads(path.read_text()),
        batch_size=4,
        gradient_accumulation_steps=2,
        world_size=1,
        mixed_precision=precision,
    )
    parsed = DeepSpeedConfig(filled)
    assert parsed.train_batch_size == 8
    assert parsed.zero_optimization_stage == 2
    assert parsed.bfloat16_config.enabled == (precision == "bf16")
    assert parsed.float16_config.enabled == (precision == "fp16")


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_accelerate_configs_load_with_accelerate(path: Path) -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    assert config.num_processes >= 1
    if config.distributed_type.value == "DEEPSPEED":
        ds_file = Path(config.deepspeed_config["deepspeed_config_file"])
        assert (CONFIGS.parents[1] / ds_file).is_file()
