"""Command-line options of the training recipes, as dataclasses (saved with each run as JSON).

:class:`TrainingArguments` holds what every recipe shares (data, steps, batch, precision,
checkpoints, validation, logging); a recipe subclasses it with its own fields. The command-line
parser is generated from the fields, their defaults and their ``help`` metadata, so a field is
declared once.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from facetools_dapfsr.config import DAPFSRConfig
from facetools_dapfsr.fileio import check_can_create, check_not_an_input
from facetools_dapfsr.training.schedule import SCHEDULES

T = TypeVar("T", bound="TrainingArguments")


def option(default: Any, help: str, choices: Sequence[Any] | None = None) -> Any:
    """A dataclass field with its command-line help."""
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class TrainingArguments:
    """Options every training recipe accepts."""

    data: str | None = option(None, "Training images: a local image folder or a Hub dataset id.")
    data_split: str = option("train", "Split of --data (an image folder without split folders is 'train').")
    image_column: str | None = option(None, "Column holding the images (default: the first image column).")
    max_images: int | None = option(None, "Use only the first N images of --data (quick runs).")
    min_face_size: float = option(40.0, "Smallest face (px) the landmark detector looks for.")
    landmark_cache: str | None = option(
        None, "Landmark cache JSON (default: under $DAPFSR_CACHE/landmarks, one file per data source)."
    )
    output_dir: str = option("runs/train", "Where checkpoints, logs and the final model go.")
    max_steps: int = option(1000, "Optimizer steps to train for (the run ends at this step).")
    batch_size: int = option(8, "Images per process per micro-batch.")
    gradient_accumulation_steps: int = option(1, "Micro-batches per optimizer step.")
    learning_rate: float = option(1e-4, "Adam learning rate.")
    max_grad_norm: float = option(0.0, "Clip the gradient norm to this value (0: no clipping).")
    mixed_precision: str | None = option(
        None,
        "Autocast precision; default: what `accelerate launch` / its config says, else no. "
        "fp16 needs a GPU; bf16 works on recent GPUs and on CPU.",
        ("no", "fp16", "bf16"),
    )
    seed: int = option(0, "Seed of initialisation, data order and degradation (same seed, same run).")
    num_workers: int = option(0, "DataLoader worker processes per training process.")
    checkpoint_every: int = option(500, "Save a resumable checkpoint every N steps (0: only at the end).")
    checkpoints_total_limit: int | None = option(3, "Keep at most this many checkpoints (oldest deleted).")
    resume: str | None = option(
        None, "Resume from 'latest' (newest checkpoint in --output-dir) or a checkpoint folder."
    )
    log_every: int = option(10, "Log training metrics every N steps.")
    validation_data: str | None = option(
        None, "Held-out images (folder or Hub id). Default: hold out --validation-size images of --data."
    )
    validation_split: str = option("train", "Split of --validation-data.")
    validation_size: int = option(64, "Held-out images used for validation (0 disables validation).")
    validation_every: int = option(500, "Validate every N steps (also at the start and the end).")
    report_to: str = option("auto", "Tracker: 'tensorboard', 'none', or 'auto' (TensorBoard when installed).")
    push_to_hub: str | None = option(None, "At the end, upload the final model to this Hub repo id.")
    record_samples: bool = option(False, "Write the dataset indices each process consumed (audit of data sharding).")

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "gradient_accumulation_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("checkpoint_every", "validation_every", "log_every", "validation_size", "num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must not be negative, got {getattr(self, name)}")
        if self.report_to not in ("auto", "tensorboard", "none"):
            raise ValueError(f"--report-to must be auto, tensorboard or none, got {self.report_to!r}")

    # -- inputs and outputs ---------------------------------------------------------------------
    def input_paths(self) -> dict[str, str | None]:
        """Options naming files or folders the run reads (a recipe adds its own)."""
        return {"--data": self.data, "--validation-data": self.validation_data}

    def check_output_dir(self) -> None:
        """Raise ``ValueError`` when ``--output-dir`` is, or contains, an input (the run writes
        ``model/``, checkpoints and samples there, and deletes old checkpoints) or cannot be
        created. Recipes call it before any model loads."""
        check_not_an_input(self.output_dir, "--output-dir", self.input_paths())
        check_can_create(self.output_dir, f"--output-dir {self.output_dir}")

    # -- JSON ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json_file(cls, path: str | Path) -> typing.Self:
        data = json.loads(Path(path).read_text())
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown option(s) {', '.join(unknown)}")
        return cls(**data)


@dataclass
class EncoderTrainingArguments(TrainingArguments):
    """Options of the encoder recipe (plus every shared training option)."""

    config: str = option("prior", "Model: a preset (tiny, paper, prior) or a DAP-FSR config JSON file.")
    decoder: str | None = option(
        None, "Native StyleGAN2 decoder folder written by train_decoder.py; replaces the config's decoder."
    )
    mse_weight: float = option(1.0, "Weight of the pixel MSE (Eq. 3).")
    perceptual_weight: float = option(
        0.01,
        "Weight of the VGG-19 perceptual loss (Eq. 4). The normalised VGG sees Caffe-scaled pixels, "
        "so its feature MSE is ~100x the pixel MSE on faces; 0.01 keeps the two terms comparable.",
    )
    perceptual_net: str = option(
        "vgg19",
        "Perceptual term of the image loss: 'vgg19' (the paper's Eq. 4 feature MSE) or 'lpips-vgg' "
        "(LPIPS with the VGG-16 backbone, about 30x smaller in value: raise --perceptual-weight).",
        ("vgg19", "lpips-vgg"),
    )
    degradation: str | None = option(
        None, "Degradation of the training LR: 'paper' (default), 'realistic', or a DegradationConfig JSON file."
    )
    flip_probability: float = option(0.0, "Mirror each real training face left-right with this probability.")
    grey_probability: float = option(0.0, "Make each real training face grey with this probability (grey/IR domains).")
    init_from: str | None = option(
        None, "Start the encoder from this model's weights: 'default' (the built-in model), a folder or a Hub id."
    )
    synthetic_data: str | None = option(
        None, "Synthetic (W+, HR) pairs from `dapfsr synthesize`: adds the code loss on them (with or without --data)."
    )
    synthetic_batch_size: int = option(32, "Synthetic pairs per process per micro-batch.")
    code_weight: float = option(1.0, "Weight of the code loss: MSE between E(LR) and the pair's (w - mu) / sigma.")
    synthetic_image_fraction: float = option(
        0.0, "Share of each synthetic batch also scored by the image loss (rendered through the decoder)."
    )
    lpips_net: str = option("vgg", "LPIPS backbone for validation ('none' skips LPIPS).", ("vgg", "alex", "none"))
    grid_size: int = option(8, "Validation faces in the LR | output | HR grid saved at each validation.")
    latent_samples: int = option(10_000, "Mapping-network samples for the W statistics of Eq. 2 (native decoder).")
    lr_schedule: str = option("constant", "Learning-rate schedule after warm-up.", SCHEDULES)
    lr_warmup_steps: int = option(0, "Linear learning-rate warm-up over the first N steps.")

    def input_paths(self) -> dict[str, str | None]:
        inputs = super().input_paths()
        inputs.update(
            {
                # A preset name is not a file, even when a folder of that name exists.
                "--config": None if self.config in DAPFSRConfig.PRESETS else self.config,
                "--decoder": self.decoder,
                "--init-from": None if self.init_from == "default" else self.init_from,
                "--synthetic-data": self.synthetic_data,
                "--degradation": self.degradation,
            }
        )
        return inputs

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.synthetic_batch_size < 1:
            raise ValueError(f"--synthetic-batch-size must be at least 1, got {self.synthetic_batch_size}")
        for name in ("flip_probability", "grey_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.synthetic_image_fraction <= 1.0:
            raise ValueError(f"--synthetic-image-fraction must be in [0, 1], got {self.synthetic_image_fraction}")
        if self.lr_warmup_steps < 0:
            raise ValueError(f"--lr-warmup-steps must not be negative, got {self.lr_warmup_steps}")


# -- command line -------------------------------------------------------------------------------
def build_parser(cls: type[TrainingArguments], description: str | None = None) -> argparse.ArgumentParser:
    """An ``argparse`` parser with one ``--option-name`` per dataclass field."""
    parser = argparse.ArgumentParser(description=description or cls.__doc__)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        kind, optional = _base_type(hints[f.name])
        help_text = f.metadata.get("help", "")
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=help_text)
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif callable(f.default_factory):
            default = f.default_factory()
        else:
            raise TypeError(f"{cls.__name__}.{f.name} has no default: every command-line option needs one")
        parser.add_argument(
            flag,
            type=kind,
            default=default,
            choices=f.metadata.get("choices"),
            help=f"{help_text} (default: {default})" if not optional or default is not None else help_text,
        )
    return parser


def _base_type(hint: Any) -> tuple[type, bool]:
    """``int | None`` -> ``(int, True)``; ``str`` -> ``(str, False)``."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"unsupported option type {hint}")
        return args[0], True
    return hint, False


def parse_arguments(cls: type[T], argv: Sequence[str] | None = None, description: str | None = None) -> T:
    """Parse ``argv`` (default ``sys.argv[1:]``) into ``cls``; invalid values exit with usage."""
    parser = build_parser(cls, description)
    namespace = parser.parse_args(argv)
    try:
        return cls(**vars(namespace))
    except ValueError as error:
        parser.error(str(error))
        raise  # unreachable: parser.error exits
