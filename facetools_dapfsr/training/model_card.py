"""What a training run tells a model card: data, procedure, the command that reproduces it."""

from __future__ import annotations

import shlex
from typing import Any

from facetools_dapfsr.hub.cards import ModelCardInfo

# Options that describe the run's machine or bookkeeping, not the model: left out of the command.
NOT_IN_COMMAND = {"output_dir", "resume", "report_to", "record_samples", "push_to_hub", "num_workers"}


def reproduce_command(recipe: str, options: dict[str, Any], defaults: dict[str, Any]) -> str:
    """``python recipes/<recipe> --flag value ...`` with every option that differs from its default."""
    words = ["python", f"recipes/{recipe}"]
    for name, value in sorted(options.items()):
        if name in NOT_IN_COMMAND or defaults.get(name, object()) == value:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            words.append(flag if value else "--no-" + name.replace("_", "-"))
        elif value is not None:
            words += [flag, str(value)]
    return shlex.join(words)


def encoder_card_info(
    options: dict[str, Any],
    defaults: dict[str, Any],
    data_report: dict[str, Any] | None,
    samples_seen: int,
) -> ModelCardInfo:
    """Card facts of a ``train_encoder.py`` run (``options``: its ``training_args.json``;
    ``data_report``: None when the run had synthetic pairs only)."""
    source = str(options.get("data"))
    degradation = options.get("degradation") or "paper"
    parts = []
    if data_report is not None:
        limit = options.get("max_images")
        kept, total = data_report.get("kept"), data_report.get("total")
        skipped = " (the others had no face MTCNN accepted, or could not be read)" if kept != total else ""
        parts.append(
            f"`{source}` (split `{options.get('data_split')}`"
            + (f", first {limit} images" if limit else "")
            + f"): {kept} of {total} images used{skipped}. Faces are aligned to the model's 5-point "
            f"template and degraded on the fly (degradation `{degradation}`), seeded per sample."
        )
    if options.get("synthetic_data"):
        parts.append(
            f"Synthetic (W+, face) pairs rendered by the decoder (`dapfsr synthesize`, `{options['synthetic_data']}`), "
            f"LR made on the fly (degradation `{degradation}`); code loss weight {options.get('code_weight')}."
        )
    data = " ".join(parts)
    start = options.get("init_from")
    procedure = (
        ("Encoder trained from scratch" if not start else f"Encoder initialised from `{start}`, trained")
        + f" against the frozen decoder with MSE (weight {options.get('mse_weight')}) "
        f"+ VGG-19 perceptual loss (weight {options.get('perceptual_weight')}), Adam, learning rate "
        f"{options.get('learning_rate')} ({options.get('lr_schedule', 'constant')} schedule, "
        f"{options.get('lr_warmup_steps', 0)} warm-up steps), {options.get('max_steps')} steps of "
        f"{options.get('batch_size')} x {options.get('gradient_accumulation_steps')} faces per process "
        f"({samples_seen:,} training samples in all), seed {options.get('seed')}."
    )
    return ModelCardInfo(
        training_data=data,
        training_procedure=procedure,
        training_command=reproduce_command("train_encoder.py", options, defaults),
        trained_on_celeba="celeba" in source.lower() and data_report is not None,
    )


def chained_card_info(earlier: ModelCardInfo, later: ModelCardInfo, start: str) -> ModelCardInfo:
    """Card facts of a run that continued from another model: both stages, oldest first.

    ``start`` says where the later stage's starting weights are kept (e.g. a commit of the
    repository), since ``--init-from default`` names a different model once this one ships.
    """
    return ModelCardInfo(
        training_data=f"Stage 1: {earlier.training_data}\n\nStage 2: {later.training_data}",
        training_procedure=(
            f"Stage 1: {earlier.training_procedure}\n\nStage 2, starting from the stage-1 weights "
            f"({start}): {later.training_procedure}"
        ),
        training_command=f"# stage 1\n{earlier.training_command}\n# stage 2 (--init-from: {start})\n{later.training_command}",
        trained_on_celeba=earlier.trained_on_celeba or later.trained_on_celeba,
    )
