"""Resumable checkpoints: ``accelerator.save_state`` + a JSON step counter + extra modules.

Layout::

    <output_dir>/checkpoints/step_00000500/
        model.safetensors, optimizer.bin, random_states_<rank>.pkl, ...   (accelerator.save_state)
        <name>.safetensors           modules that are not prepared (e.g. the EMA generator)
        training_state.json          step counter and the run's batch geometry

A checkpoint is written to ``.incomplete-step_...`` and renamed when every process has finished
writing, so a run killed while saving leaves no folder that ``--resume latest`` would pick.
All processes must call :func:`save_checkpoint` and :func:`load_checkpoint` (DeepSpeed writes
per-rank shards); the output folder must be shared by all machines (a network file system).

``training_state.json`` records the sha256 of every other file of the checkpoint. Resuming checks
them all, and that the safetensors tensors are finite, before anything is loaded: a checkpoint
with a flipped byte is refused naming the file instead of resuming into a model of ``inf``.
Checkpoints saved before the record existed get the checks their files allow: finite
safetensors, and ``torch.save`` archives whose every member passes its CRC-32.

Trusted input only: ``optimizer.bin``, ``scheduler.bin`` and ``random_states_*.pkl`` are written
by ``accelerator.save_state`` with ``torch.save`` and read back with ``torch.load``, and a
DeepSpeed checkpoint (ZeRO shards) is unpickled by DeepSpeed. Unpickling runs code: resume only
checkpoints your own runs wrote. The sha256 record refuses a checkpoint changed after its run
saved it, but whoever can write the folder can rewrite the record too.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors.torch import load_file, save_file
from torch import nn

from facetools_dapfsr.fileio import atomic_path, atomic_write_text
from facetools_dapfsr.integrity import check_finite, check_torch_archive, file_hashes, verify_file

if TYPE_CHECKING:
    from accelerate import Accelerator

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
STATE_NAME = "training_state.json"
INCOMPLETE_PREFIX = ".incomplete-"
_STEP_DIR = re.compile(r"^step_(\d+)$")
TORCH_SAVE_SUFFIXES = frozenset({".bin", ".pkl", ".pt", ".pth"})
"""Files accelerate (optimizer, scheduler, RNG states) and DeepSpeed (ZeRO shards) write with
``torch.save``."""


@dataclass
class TrainingState:
    """What a run needs, beyond weights and optimizer state, to continue exactly."""

    step: int = 0
    """Optimizer steps completed."""
    samples_seen: int = 0
    """Training images consumed by all processes together."""
    world_size: int = 1
    batch_size: int = 1
    gradient_accumulation_steps: int = 1
    seed: int = 0
    files_sha256: dict[str, str] = field(default_factory=dict)
    """sha256 of every other file of the checkpoint (relative path -> digest), written at save
    and checked before a resume loads anything; empty in checkpoints made before the record."""

    def to_json_string(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json_file(cls, path: Path) -> TrainingState:
        try:
            data = json.loads(path.read_text())
            state = cls(**data)
        except (OSError, json.JSONDecodeError, UnicodeDecodeError, TypeError) as error:
            raise ValueError(f"{path}: not a valid training state ({error}); resume from another checkpoint") from error
        for name, value in asdict(state).items():
            if name == "files_sha256":
                pairs = value.items() if isinstance(value, dict) else [(None, None)]
                if not all(isinstance(k, str) and isinstance(v, str) for k, v in pairs):
                    raise ValueError(f"{path}: files_sha256 must map file names to sha256 strings, got {value!r}")
            elif not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{path}: {name} must be a non-negative integer, got {value!r}")
        return state

    def check_compatible(self, other: TrainingState) -> None:
        """Warn when a resumed run's data stream differs from the saved one's."""
        for name in ("world_size", "batch_size", "gradient_accumulation_steps", "seed"):
            saved, now = getattr(self, name), getattr(other, name)
            if saved != now:
                logger.warning(
                    "resuming with %s=%s but the checkpoint was made with %s; the run continues but will "
                    "not match an uninterrupted one",
                    name,
                    now,
                    saved,
                )


def checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / CHECKPOINTS_DIR / f"step_{step:08d}"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(output_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name) and (p / STATE_NAME).is_file()]
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))  # type: ignore[union-attr]


def resolve_resume(resume: str | None, output_dir: str | Path) -> Path | None:
    """The checkpoint ``--resume`` names: ``latest`` (None when the run has none yet) or a folder.

    ``latest`` without a checkpoint starts a fresh run, so a preemptible job can always pass it.
    """
    if not resume:
        return None
    if resume == "latest":
        found = list_checkpoints(output_dir)
        if not found:
            logger.warning("--resume latest: no checkpoint in %s yet, starting from scratch", output_dir)
            return None
        return found[-1]
    path = Path(resume)
    if not (path / STATE_NAME).is_file():
        raise FileNotFoundError(f"--resume {resume}: not a checkpoint folder (no {STATE_NAME})")
    return path


def save_checkpoint(
    accelerator: Accelerator,
    output_dir: str | Path,
    state: TrainingState,
    extra_modules: dict[str, nn.Module] | None = None,
    total_limit: int | None = None,
) -> Path:
    """Save everything needed to resume after ``state.step`` steps; call on every process."""
    final = checkpoint_dir(output_dir, state.step)
    incomplete = final.parent / f"{INCOMPLETE_PREFIX}{final.name}"
    if accelerator.is_main_process and incomplete.exists():
        shutil.rmtree(incomplete)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(incomplete))
    accelerator.wait_for_everyone()  # every rank's shards are written before they are hashed
    if accelerator.is_main_process:
        for name, module in (extra_modules or {}).items():
            tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
            with atomic_path(incomplete / f"{name}.safetensors") as tmp:
                save_file(tensors, str(tmp))
        files = [p.relative_to(incomplete).as_posix() for p in incomplete.rglob("*") if p.is_file()]
        state = dataclasses.replace(state, files_sha256=file_hashes(incomplete, files))
        atomic_write_text(incomplete / STATE_NAME, state.to_json_string())
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        incomplete.rename(final)
        if total_limit:
            for old in list_checkpoints(output_dir)[:-total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(
    accelerator: Accelerator, path: str | Path, extra_modules: dict[str, nn.Module] | None = None
) -> TrainingState:
    """Restore models, optimizers, RNG states and extra modules; returns the saved state."""
    path = Path(path)
    # The step counter first: a checkpoint whose state cannot be read is refused before any
    # weights are touched.
    state = TrainingState.from_json_file(path / STATE_NAME)
    # training_state.json cannot record its own hash; its step is checked against the folder's
    # name instead (a flipped digit would resume at another step and train on silently).
    named = _STEP_DIR.match(path.name)
    if named and int(named.group(1)) != state.step:
        raise ValueError(
            f"{path / STATE_NAME}: records step {state.step} but the checkpoint folder is {path.name}; "
            "the file was changed, resume from another checkpoint"
        )
    verify_checkpoint(path, state)
    try:
        accelerator.load_state(str(path))
        for name, module in (extra_modules or {}).items():
            module.load_state_dict(load_file(str(path / f"{name}.safetensors")), strict=True)
    except Exception as error:  # truncated or corrupt files raise whatever their reader raises
        raise ValueError(f"checkpoint {path} cannot be loaded (truncated or corrupt file?): {error}") from error
    return state


def verify_checkpoint(path: Path, state: TrainingState) -> None:
    """Raise ``ValueError`` naming the file unless every file the state records is intact,
    every ``torch.save`` file it does not record is a whole archive (checkpoints saved before
    the record), and every safetensors file holds finite tensors; runs before any file is
    unpickled."""
    for name, digest in sorted(state.files_sha256.items()):
        verify_file(path / name, digest)
    for file in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TORCH_SAVE_SUFFIXES):
        if file.relative_to(path).as_posix() not in state.files_sha256:
            # Otherwise torch.load's error for a truncated file names no file, only the folder.
            check_torch_archive(file)
    for weights in sorted(path.rglob("*.safetensors")):
        try:
            tensors = load_file(str(weights))
        except Exception as error:  # whatever safetensors raises for a bad file
            raise ValueError(f"{weights}: cannot read safetensors file (truncated or corrupt?): {error}") from error
        check_finite(tensors, weights)
