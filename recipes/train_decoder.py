"""Train a native StyleGAN2 decoder (face prior) on aligned faces, for users who want their own.

Non-saturating logistic loss, lazy R1 regularisation of the discriminator, style mixing, an EMA
copy of the generator, optional path-length regularisation. The result is a decoder folder
(``config.json`` + ``model.safetensors`` with ``generator.*`` and ``generator_ema.*``) that
``recipes/train_encoder.py --decoder PATH`` uses as its frozen prior.

    accelerate launch recipes/train_decoder.py --config paper --data ../shared/data/celeba/train

DeepSpeed is not supported here (accelerate's DeepSpeed integration takes one model per engine,
a GAN has two); use DDP (multi-GPU / multi-node configs).
"""

from __future__ import annotations

import copy
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from facetools_dapfsr.config import DAPFSRConfig
from facetools_dapfsr.data.faces import FaceDataError
from facetools_dapfsr.models.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
from facetools_dapfsr.seeding import (
    INIT_STREAM,
    derive_seed,
    generator_for,
    seed_global_rngs,
    seed_step,
)
from facetools_dapfsr.training.arguments import (
    TrainingArguments,
    option,
    parse_arguments,
)
from facetools_dapfsr.training.checkpointing import (
    TrainingState,
    load_checkpoint,
    resolve_resume,
    save_checkpoint,
)
from facetools_dapfsr.training.data import prepare_faces, stream_loader
from facetools_dapfsr.training.gan import (
    MappedGenerator,
    discriminator_loss,
    ema_beta,
    generator_loss,
    path_length_penalty,
    r1_penalty,
    update_ema,
    update_pl_mean,
)
from facetools_dapfsr.training.native_decoder import (
    save_native_decoder,
    stylegan2_config_from,
)
from facetools_dapfsr.training.pairs import FacesOnly
from facetools_dapfsr.training.reporting import (
    RunReporter,
    finish_run,
)
from facetools_dapfsr.training.setup import (
    broadcast_buffers,
    create_accelerator,
    describe,
)
from facetools_dapfsr.training.validation import save_image

logger = logging.getLogger("train_decoder")
GRID_SEED = 123  # fixed latents for the sample grids, comparable across steps and runs


@dataclass
class DecoderTrainingArguments(TrainingArguments):
    """Options of the decoder recipe (plus every shared training option)."""

    config: str = option(
        "tiny",
        "Generator: a DAP-FSR preset (its decoder: tiny, paper), a StyleGAN2Config JSON or a DAP-FSR config JSON.",
    )
    learning_rate: float = option(0.0025, "Adam learning rate of G and D (StyleGAN2: 0.0025).")
    r1_gamma: float = option(1.0, "R1 weight (StyleGAN2 FFHQ-256: 1; larger for larger images).")
    r1_interval: int = option(16, "Apply R1 every N steps (lazy regularisation), scaled by N.")
    pl_weight: float = option(0.0, "Path-length regularisation weight (0 disables; StyleGAN2: 2).")
    pl_interval: int = option(4, "Apply path-length regularisation every N steps, scaled by N.")
    style_mixing: float = option(0.9, "Probability of style mixing per batch.")
    ema_half_life: float = option(10_000.0, "Half-life of the EMA generator, in training images.")
    validation_size: int = option(0, "Unused by the decoder recipe (no held-out metric); kept at 0.")
    grid_size: int = option(16, "EMA generator samples (fixed latents) saved at each --validation-every.")

    def input_paths(self) -> dict[str, str | None]:
        inputs = super().input_paths()
        # A preset name is not a file, even when a folder of that name exists.
        inputs["--config"] = None if self.config in DAPFSRConfig.PRESETS else self.config
        return inputs


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(DecoderTrainingArguments, argv, __doc__)
    try:
        # Before anything loads: a run must never write over (or prune) what it reads.
        args.check_output_dir()
    except ValueError as error:
        print(f"train_decoder.py: error: {error}", file=sys.stderr)
        return 2
    accelerator = create_accelerator(args)
    logging.basicConfig(
        level=logging.INFO if accelerator.is_main_process else logging.WARNING,
        format=f"%(asctime)s [rank {accelerator.process_index}] %(levelname)s %(name)s: %(message)s",
    )
    if accelerator.state.deepspeed_plugin is not None:
        logger.error("train_decoder.py does not support DeepSpeed (two models); launch with a DDP config")
        return 2
    output_dir = Path(args.output_dir)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "training_args.json").write_text(args.to_json_string())
    device = accelerator.device

    config = stylegan2_config_from(args.config)
    seed_global_rngs(derive_seed(INIT_STREAM, args.seed))
    generator = StyleGAN2Generator(config)
    discriminator = StyleGAN2Discriminator(config.resolution, config.channel_base, config.channel_max)
    mapped = MappedGenerator(generator, args.style_mixing).train()
    generator_ema = copy.deepcopy(generator).eval().requires_grad_(False).to(device)

    if not args.data:
        logger.error("--data is required: an image folder or a Hub dataset id")
        return 2
    try:
        faces, _ = prepare_faces(args, config.resolution, accelerator)
    except FaceDataError as error:
        logger.error("%s", error)
        return 2
    assert faces is not None  # --data was given

    betas = (0.0, 0.99)
    optimizer_g = torch.optim.Adam(mapped.parameters(), lr=args.learning_rate, betas=betas, eps=1e-8)
    optimizer_d = torch.optim.Adam(discriminator.parameters(), lr=args.learning_rate, betas=betas, eps=1e-8)
    mapped, discriminator, optimizer_g, optimizer_d = accelerator.prepare(
        mapped, discriminator, optimizer_g, optimizer_d
    )
    g_module = accelerator.unwrap_model(mapped)
    d_module = accelerator.unwrap_model(discriminator)

    accumulation = args.gradient_accumulation_steps
    state = TrainingState(
        world_size=accelerator.num_processes,
        batch_size=args.batch_size,
        gradient_accumulation_steps=accumulation,
        seed=args.seed,
    )
    extra = {"generator_ema": generator_ema}
    resume_from = resolve_resume(args.resume, output_dir)
    if resume_from is not None:
        try:
            saved = load_checkpoint(accelerator, resume_from, extra_modules=extra)
        except ValueError as error:
            logger.error("%s", error)
            return 2
        saved.check_compatible(state)
        state.step, state.samples_seen = saved.step, saved.samples_seen
        logger.info("resumed from %s at step %d", resume_from, state.step)

    samples_per_step = args.batch_size * accumulation * accelerator.num_processes
    beta = ema_beta(samples_per_step, args.ema_half_life)
    reporter = RunReporter(accelerator, output_dir, args.max_steps, samples_per_step)
    reporter.start("train_decoder", state.step, args.to_dict())
    reporter.message(describe(accelerator))
    reporter.message(faces.report.summary())
    grid_z = torch.randn(args.grid_size, config.z_dim, generator=generator_for(GRID_SEED)).to(device)

    def save_samples(step: int) -> None:
        if not accelerator.is_main_process or args.grid_size <= 0:
            return
        with torch.no_grad():
            ws = generator_ema.mapping(grid_z).unsqueeze(1).repeat(1, generator_ema.num_ws, 1)
            images = generator_ema.synthesis(ws).clamp(0, 1).cpu()
        columns = int(np.ceil(np.sqrt(len(images))))
        rows = [torch.cat(list(images[i : i + columns]), dim=2) for i in range(0, len(images), columns)]
        rows[-1] = torch.nn.functional.pad(rows[-1], (0, rows[0].shape[2] - rows[-1].shape[2]))
        grid = torch.cat(rows, dim=1).permute(1, 2, 0).numpy()
        save_image((grid * 255 + 0.5).clip(0, 255).astype(np.uint8), output_dir / "samples" / f"step_{step:08d}.png")

    if state.step == 0:
        save_samples(0)

    batches = iter(stream_loader(FacesOnly(faces), args, accelerator, start_batch=state.step * accumulation))
    seen: list[int] = []
    while state.step < args.max_steps:
        step = state.step + 1
        seed_step(args.seed, step, accelerator.process_index)
        totals = {"loss_d": 0.0, "loss_g": 0.0, "r1": 0.0, "pl": 0.0}
        do_r1 = args.r1_gamma > 0 and step % args.r1_interval == 0
        do_pl = args.pl_weight > 0 and step % args.pl_interval == 0

        # Discriminator: real faces vs generated ones. G runs unwrapped (no DDP hooks, no grad).
        for _ in range(accumulation):
            real, _valid, index = next(batches)
            real = real.to(device).requires_grad_(do_r1)
            if args.record_samples:
                seen.extend(index.tolist())
            with accelerator.accumulate(discriminator):
                with torch.no_grad(), accelerator.autocast():
                    fake, _ = g_module(torch.randn(args.batch_size, config.z_dim, device=device))
                with accelerator.autocast():
                    logits_real = discriminator(real)
                    logits_fake = discriminator(fake.float())
                    loss_d = discriminator_loss(logits_real, logits_fake)
                    r1 = r1_penalty(logits_real, real) if do_r1 else torch.zeros((), device=device)
                    total_d = loss_d + r1 * (args.r1_gamma / 2 * args.r1_interval)
                accelerator.backward(total_d)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(discriminator.parameters(), args.max_grad_norm)
                optimizer_d.step()
                optimizer_d.zero_grad()
            totals["loss_d"] += float(loss_d.detach()) / accumulation
            totals["r1"] += float(r1.detach()) / accumulation

        # Generator: fool the (unwrapped, frozen) discriminator.
        d_module.requires_grad_(False)
        for _ in range(accumulation):
            with accelerator.accumulate(mapped):
                with accelerator.autocast():
                    fake, ws = mapped(torch.randn(args.batch_size, config.z_dim, device=device))
                    loss_g = generator_loss(d_module(fake.float()))
                    total_g = loss_g
                    if do_pl:
                        pl, pl_batch_mean = path_length_penalty(fake.float(), ws, g_module.pl_mean)
                        update_pl_mean(g_module.pl_mean, accelerator.reduce(pl_batch_mean, reduction="mean"))
                        total_g = total_g + pl * (args.pl_weight * args.pl_interval)
                        totals["pl"] += float(pl.detach()) / accumulation
                accelerator.backward(total_g)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(mapped.parameters(), args.max_grad_norm)
                optimizer_g.step()
                optimizer_g.zero_grad()
            totals["loss_g"] += float(loss_g.detach()) / accumulation
        d_module.requires_grad_(True)
        update_ema(generator_ema, g_module.generator, beta)

        state.step = step
        state.samples_seen += samples_per_step
        reporter.step_done(step)
        if args.log_every and (step % args.log_every == 0 or step == args.max_steps):
            reporter.log(step, {f"train/{k}": v for k, v in reporter.reduce_mean(totals).items()})
        if args.validation_every and (step % args.validation_every == 0 or step == args.max_steps):
            save_samples(step)
        if step == args.max_steps or (args.checkpoint_every and step % args.checkpoint_every == 0):
            save_checkpoint(
                accelerator, output_dir, state, extra_modules=extra, total_limit=args.checkpoints_total_limit
            )

    broadcast_buffers(g_module, accelerator)
    broadcast_buffers(d_module, accelerator)
    if accelerator.is_main_process:
        folder = save_native_decoder(output_dir / "decoder", g_module.generator, generator_ema)
        reporter.message(f"decoder written to {folder}")
        if args.push_to_hub:
            from huggingface_hub import HfApi

            api = HfApi()
            api.create_repo(args.push_to_hub, exist_ok=True)
            commit = api.upload_folder(
                repo_id=args.push_to_hub,
                folder_path=str(folder),
                commit_message=f"StyleGAN2 decoder, step {state.step}",
            )
            reporter.message(f"pushed to {commit}")
    finish_run(
        accelerator,
        reporter,
        output_dir,
        state,
        faces.report.to_dict(),
        {"generator": g_module, "discriminator": d_module, "generator_ema": generator_ema},
        sample_indices=seen if args.record_samples else None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
