"""Train the DAP-FSR encoder (ResNet + ISTN + ALE) against a frozen decoder (paper Eq. 5).

The decoder is the imported FFHQ prior (``--config prior``, the default) or a native StyleGAN2
decoder trained with ``recipes/train_decoder.py`` (``--decoder PATH``). Faces are aligned to the
model's template and degraded on the fly by the paper's model (random rotation, translation and
scale, then downsampling to the LR size) or the realistic one (``--degradation realistic``),
seeded per sample.

Two signals, alone or together:

- the image loss (Eq. 5: pixel MSE + VGG-19 perceptual) on real faces (``--data``), which
  renders the frozen decoder forward and backward: faithful, and about 25x dearer per sample;
- the code loss on synthetic pairs from the decoder itself (``--synthetic-data``, made by
  ``dapfsr synthesize``): MSE between ``E(LR)`` and the pair's normalised code
  ``(w - mu) / sigma`` (the space of Eq. 2), with no decoder in the step.

``--init-from default`` continues from the built-in model's encoder.

    accelerate launch recipes/train_encoder.py --data ../shared/data/celeba/train --output-dir runs/enc

See recipes/README.md for multi-GPU, multi-node, DeepSpeed and CPU launches.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from facetools_dapfsr import DAPFSR, DAPFSRConfig
from facetools_dapfsr.config import MobileStyleGANConfig
from facetools_dapfsr.data.degradation import DegradationConfig
from facetools_dapfsr.data.faces import FaceDataError
from facetools_dapfsr.data.synthetic import SyntheticPairs, SyntheticPairsError
from facetools_dapfsr.hub.checkpoint import CONFIG_NAME, read_weights, resolve_file
from facetools_dapfsr.losses import VGGFeatures, perceptual_loss
from facetools_dapfsr.metrics.lpips import LPIPS
from facetools_dapfsr.models.dapfsr import default_model_path
from facetools_dapfsr.seeding import (
    INIT_STREAM,
    derive_seed,
    seed_global_rngs,
    seed_step,
)
from facetools_dapfsr.training.arguments import EncoderTrainingArguments, parse_arguments
from facetools_dapfsr.training.checkpointing import (
    TrainingState,
    load_checkpoint,
    resolve_resume,
    save_checkpoint,
)
from facetools_dapfsr.training.data import prepare_faces, stream_loader
from facetools_dapfsr.training.model_card import encoder_card_info
from facetools_dapfsr.training.native_decoder import (
    load_native_decoder,
    read_native_decoder_config,
)
from facetools_dapfsr.training.pairs import DegradedPairs, PairAugmentation, SyntheticDegradedPairs, ValidationPairs
from facetools_dapfsr.training.reporting import (
    RunReporter,
    finish_run,
)
from facetools_dapfsr.training.schedule import learning_rate_at
from facetools_dapfsr.training.setup import (
    broadcast_buffers,
    create_accelerator,
    describe,
)
from facetools_dapfsr.training.validation import (
    comparison_grid,
    evaluate_pairs,
    save_image,
)

logger = logging.getLogger("train_encoder")


def build_model(args: EncoderTrainingArguments) -> DAPFSR:
    """The model with its trained (or, for smoke runs, random) decoder, frozen, and W statistics."""
    config = DAPFSRConfig.from_preset_or_file(args.config)
    if args.decoder:
        config = dataclasses.replace(config, decoder=read_native_decoder_config(args.decoder))
    # Every process builds the same initial weights (DDP would broadcast the encoder anyway,
    # but the decoder is not wrapped).
    seed_global_rngs(derive_seed(INIT_STREAM, args.seed))
    model = DAPFSR(config)
    if args.decoder:
        model.decoder.load_state_dict(load_native_decoder(args.decoder, ema=True).state_dict(), strict=True)
    elif isinstance(config.decoder, MobileStyleGANConfig):
        from facetools_dapfsr.models.mobilestylegan import MobileStyleGANDecoder

        model.decoder = MobileStyleGANDecoder.from_weights_cache(config.decoder)
    else:
        logger.warning("the decoder is randomly initialised (no --decoder given): fine for smoke tests only")
    model.refresh_latent_statistics(num_samples=args.latent_samples, seed=args.seed)
    model.decoder.requires_grad_(False).eval()
    return model


def initialise_encoder(model: DAPFSR, source: str) -> None:
    """Copy the encoder weights of ``source`` ('default', a folder or a Hub id) into ``model``.

    Only its config and stored tensors are read: the decoder is the one ``model`` already has.
    """
    where = default_model_path() if source == "default" else source
    config = DAPFSRConfig.from_json_file(resolve_file(where, CONFIG_NAME))
    if config.encoder != model.config.encoder or config.decoder != model.config.decoder:
        raise ValueError(f"--init-from {source}: its config differs from --config; train it with its own config")
    tensors, _path = read_weights(where)
    prefix = "encoder."
    encoder = {name[len(prefix) :]: t.float() for name, t in tensors.items() if name.startswith(prefix)}
    model.encoder.load_state_dict(encoder, strict=True)


def lr_canvas(model: DAPFSR, degradation: DegradationConfig) -> int:
    """Side of the training LR tensors: the model's LR size, or the encoder's input size when
    LR sides vary (an LR above the model's size would lose detail on a smaller canvas)."""
    if degradation.lr_size_range is not None and degradation.lr_size_range[1] > model.config.lr_size:
        return model.config.encoder.input_size
    return model.config.lr_size


def masked_target(hr: torch.Tensor, valid: torch.Tensor, sr: torch.Tensor) -> torch.Tensor:
    """The HR face where it came from the photo, the output itself where it is padding: the
    loss neither rewards nor punishes what the model draws outside the photo."""
    return valid * hr + (1 - valid) * sr.detach()


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(EncoderTrainingArguments, argv, __doc__)
    try:
        # Before anything loads: a run must never write over (or prune) what it reads.
        args.check_output_dir()
    except ValueError as error:
        print(f"train_encoder.py: error: {error}", file=sys.stderr)
        return 2
    accelerator = create_accelerator(args)
    logging.basicConfig(
        level=logging.INFO if accelerator.is_main_process else logging.WARNING,
        format=f"%(asctime)s [rank {accelerator.process_index}] %(levelname)s %(name)s: %(message)s",
    )
    output_dir = Path(args.output_dir)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "training_args.json").write_text(args.to_json_string())
    device = accelerator.device

    model = build_model(args)
    if args.init_from:
        initialise_encoder(model, args.init_from)
    model = model.to(device)
    if not args.data and not args.synthetic_data:
        logger.error("give --data (real faces, image loss), --synthetic-data (code loss) or both")
        return 2
    try:
        # Without --data (code loss on synthetic pairs only), --validation-data still validates.
        faces, validation_faces = prepare_faces(args, model.config.hr_size, accelerator)
    except FaceDataError as error:
        logger.error("%s", error)
        return 2
    degradation = DegradationConfig.from_name_or_file(args.degradation)
    canvas = lr_canvas(model, degradation)
    lr_size = model.config.lr_size
    augmentation = PairAugmentation(args.flip_probability, args.grey_probability)
    train_pairs = (
        DegradedPairs(faces, lr_size, degradation, args.seed, canvas, augmentation) if faces is not None else None
    )
    synthetic_pairs = None
    if args.synthetic_data:
        try:
            synthetic = SyntheticPairs.load(args.synthetic_data)
            synthetic.check_decoder(model.decoder)
        except SyntheticPairsError as error:
            logger.error("%s", error)
            return 2
        synthetic_pairs = SyntheticDegradedPairs(synthetic, lr_size, degradation, args.seed, canvas)
    # Validation keeps the paper's protocol (clean LR at the model's size), so runs compare.
    validation_pairs = (
        ValidationPairs(validation_faces, lr_size, degradation.clean(), args.seed, args.validation_size)
        if validation_faces is not None
        else None
    )

    perceptual_net: torch.nn.Module | None = None
    if args.perceptual_weight > 0 and args.perceptual_net == "vgg19":
        perceptual_net = VGGFeatures.from_weights_cache(progress=False).to(device)
    elif args.perceptual_weight > 0:
        perceptual_net = LPIPS.from_weights_cache("vgg", progress=False).to(device)  # frozen
    lpips = None
    if validation_pairs is not None and args.lpips_net != "none":
        lpips = LPIPS.from_weights_cache(args.lpips_net, progress=False).to(device)

    encoder = model.encoder.train()
    optimizer = torch.optim.Adam(encoder.parameters(), lr=args.learning_rate, betas=(0.9, 0.999))
    encoder, optimizer = accelerator.prepare(encoder, optimizer)

    accumulation = args.gradient_accumulation_steps
    state = TrainingState(
        world_size=accelerator.num_processes,
        batch_size=args.batch_size,
        gradient_accumulation_steps=accumulation,
        seed=args.seed,
    )
    resume_from = resolve_resume(args.resume, output_dir)
    if resume_from is not None:
        try:
            saved = load_checkpoint(accelerator, resume_from)
        except ValueError as error:
            logger.error("%s", error)
            return 2
        saved.check_compatible(state)
        state.step, state.samples_seen = saved.step, saved.samples_seen
        logger.info("resumed from %s at step %d", resume_from, state.step)

    samples_per_step = args.batch_size * accumulation * accelerator.num_processes
    reporter = RunReporter(accelerator, output_dir, args.max_steps, samples_per_step)
    reporter.start("train_encoder", state.step, args.to_dict())
    reporter.message(describe(accelerator))
    if faces is not None:
        reporter.message(faces.report.summary())
    if synthetic_pairs is not None:
        reporter.message(f"{len(synthetic_pairs)} synthetic pairs from {args.synthetic_data}")

    def upscale(lr: torch.Tensor) -> torch.Tensor:
        # Eq. 2 with the unwrapped encoder: validation must not trigger DDP gradient hooks.
        module = accelerator.unwrap_model(encoder)
        codes = module(lr.to(next(module.parameters()).dtype)).float()
        return model.decoder.synthesis(model.w_mu + codes * model.w_sigma)

    def validate(step: int) -> None:
        if validation_pairs is None:
            return
        module = accelerator.unwrap_model(encoder)
        module.eval()
        metrics = evaluate_pairs(upscale, validation_pairs, accelerator, lpips)
        if step == 0:

            def bicubic(lr: torch.Tensor) -> torch.Tensor:
                size = model.config.hr_size
                return F.interpolate(lr, size=(size, size), mode="bicubic", align_corners=False)

            baseline = evaluate_pairs(bicubic, validation_pairs, accelerator, lpips)
            metrics.update({f"{k}_bicubic": v for k, v in baseline.items()})
        if accelerator.is_main_process and args.grid_size > 0:
            grid = comparison_grid(upscale, validation_pairs, args.grid_size, device)
            save_image(grid, output_dir / "samples" / f"step_{step:08d}.png")
        module.train()
        reporter.log(step, metrics)
        reporter.message(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))

    if state.step == 0:
        validate(0)

    start_batch = state.step * accumulation
    batches = iter(stream_loader(train_pairs, args, accelerator, start_batch)) if train_pairs is not None else None
    synthetic_batches = (
        iter(stream_loader(synthetic_pairs, args, accelerator, start_batch, args.synthetic_batch_size))
        if synthetic_pairs is not None
        else None
    )
    synthetic_rendered = round(args.synthetic_image_fraction * args.synthetic_batch_size)
    zero = torch.zeros((), device=device)

    def image_loss(sr: torch.Tensor, hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mse = F.mse_loss(sr, hr)
        if perceptual_net is None:
            return mse, zero
        if isinstance(perceptual_net, VGGFeatures):
            return mse, perceptual_loss(sr, hr, perceptual_net)
        return mse, perceptual_net(sr, hr).mean()

    seen: list[int] = []
    while state.step < args.max_steps:
        step = state.step + 1
        seed_step(args.seed, step, accelerator.process_index)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(
                step, args.learning_rate, args.max_steps, args.lr_warmup_steps, args.lr_schedule
            )
        totals = {"loss": 0.0, "mse": 0.0, "perceptual": 0.0, "code": 0.0}
        for _ in range(accumulation):
            with accelerator.accumulate(encoder):
                with accelerator.autocast():
                    # DeepSpeed's fp16/bf16 modes cast the module, not its inputs.
                    dtype = next(encoder.parameters()).dtype
                    mse, perceptual, code = zero, zero, zero
                    if batches is not None:
                        lr, hr, valid, index = next(batches)
                        lr, hr, valid = lr.to(device), hr.to(device), valid.to(device)
                        if args.record_samples:
                            seen.extend(index.tolist())
                        codes = encoder(lr.to(dtype)).float()
                        sr = model.decoder.synthesis(model.w_mu + codes * model.w_sigma).float()
                        mse, perceptual = image_loss(sr, masked_target(hr, valid, sr))
                    if synthetic_batches is not None:
                        lr_s, hr_s, ws_s, _index = next(synthetic_batches)
                        lr_s, hr_s, ws_s = lr_s.to(device), hr_s.to(device), ws_s.to(device)
                        codes_s = encoder(lr_s.to(dtype)).float()
                        code = F.mse_loss(codes_s, (ws_s - model.w_mu) / model.w_sigma)
                        if synthetic_rendered:
                            part = model.w_mu + codes_s[:synthetic_rendered] * model.w_sigma
                            sr_s = model.decoder.synthesis(part).float()
                            mse_s, perceptual_s = image_loss(sr_s, hr_s[:synthetic_rendered])
                            # Real and rendered synthetic faces weigh the same per face.
                            real = 0 if batches is None else args.batch_size
                            share = synthetic_rendered / (real + synthetic_rendered)
                            mse = (1 - share) * mse + share * mse_s
                            perceptual = (1 - share) * perceptual + share * perceptual_s
                    loss = args.mse_weight * mse + args.perceptual_weight * perceptual + args.code_weight * code
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(encoder.parameters(), args.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            for name, value in (("loss", loss), ("mse", mse), ("perceptual", perceptual), ("code", code)):
                totals[name] += float(value.detach()) / accumulation
        state.step = step
        state.samples_seen += samples_per_step
        reporter.step_done(step)
        if args.log_every and (step % args.log_every == 0 or step == args.max_steps):
            reporter.log(step, {f"train/{k}": v for k, v in reporter.reduce_mean(totals).items()})
        if args.validation_every and (step % args.validation_every == 0 or step == args.max_steps):
            validate(step)
        if step == args.max_steps or (args.checkpoint_every and step % args.checkpoint_every == 0):
            save_checkpoint(accelerator, output_dir, state, total_limit=args.checkpoints_total_limit)

    final_encoder = accelerator.unwrap_model(encoder)
    broadcast_buffers(final_encoder, accelerator)
    encoder_state = accelerator.get_state_dict(encoder)
    if accelerator.is_main_process:
        # A DeepSpeed fp16/bf16 engine holds a half-precision module; the release is float32.
        model.encoder = final_encoder.float()
        model.encoder.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in encoder_state.items()})
        model.card_info = encoder_card_info(
            args.to_dict(),
            EncoderTrainingArguments().to_dict(),
            faces.report.to_dict() if faces is not None else None,
            state.samples_seen,
        )
        model.save_pretrained(output_dir / "model")
        reporter.message(f"model written to {output_dir / 'model'}")
        if args.push_to_hub:
            url = model.push_to_hub(args.push_to_hub, commit_message=f"DAP-FSR encoder, step {state.step}")
            reporter.message(f"pushed to {url}")
    finish_run(
        accelerator,
        reporter,
        output_dir,
        state,
        faces.report.to_dict() if faces is not None else None,
        {"encoder": final_encoder},
        sample_indices=seen if args.record_samples else None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
