"""The ``Accelerator`` of a training run: device, precision, accumulation, tracker, DeepSpeed.

How the processes are started (one GPU, several, several machines, DeepSpeed) is decided by
``accelerate launch`` and its config file (see ``recipes/configs/``), not by the recipe.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import torch

from facetools_dapfsr.training.arguments import TrainingArguments

if TYPE_CHECKING:
    from accelerate import Accelerator

logger = logging.getLogger(__name__)


def tracker_backend(report_to: str) -> str | None:
    """``"tensorboard"`` when asked for (or ``auto`` and installed), else None."""
    if report_to == "none":
        return None
    from accelerate.utils import is_tensorboard_available

    if is_tensorboard_available():
        return "tensorboard"
    if report_to == "tensorboard":
        raise RuntimeError("--report-to tensorboard: install tensorboard (pip install tensorboard)")
    return None


def create_accelerator(args: TrainingArguments) -> Accelerator:
    """An ``Accelerator`` for ``args``; runs on the CPU (gloo) when no GPU is present."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    # Without a GPU, a multi-process launch needs cpu=True so that the processes use gloo on the
    # CPU (launch with --multi_gpu, see recipes/README.md). cpu=True would also silently drop a
    # DeepSpeed launch, so DeepSpeed is left to pick its own (CPU) accelerator.
    use_deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available() and not use_deepspeed,
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=tracker_backend(args.report_to),
        project_config=ProjectConfiguration(project_dir=args.output_dir, logging_dir=f"{args.output_dir}/logs"),
    )
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != accelerator.num_processes:
        # Seen with DeepSpeed on a machine without GPUs: every process believes it is alone and
        # they would train separate models.
        raise RuntimeError(
            f"the launcher started {launched} processes but accelerate sees {accelerator.num_processes}; "
            "multi-process DeepSpeed needs GPUs (on CPU use --multi_gpu, see recipes/README.md)"
        )
    if accelerator.state.deepspeed_plugin is not None:
        configure_deepspeed(accelerator, args)
    return accelerator


def configure_deepspeed(accelerator: Accelerator, args: TrainingArguments) -> None:
    """Fill the DeepSpeed config's ``auto`` values that accelerate cannot infer.

    accelerate takes the micro-batch size from a prepared DataLoader; the recipes build their own
    sharded loader (see :mod:`~facetools_dapfsr.training.sampling`), so it is set here.
    """
    config = accelerator.state.deepspeed_plugin.deepspeed_config
    if config.get("train_micro_batch_size_per_gpu", "auto") == "auto":
        config["train_micro_batch_size_per_gpu"] = args.batch_size
    if config.get("gradient_clipping") == "auto":
        config["gradient_clipping"] = args.max_grad_norm if args.max_grad_norm > 0 else 1e9


def fill_deepspeed_auto(
    config: dict[str, Any],
    *,
    batch_size: int,
    gradient_accumulation_steps: int,
    world_size: int,
    mixed_precision: str = "no",
    max_grad_norm: float = 0.0,
) -> dict[str, Any]:
    """A copy of a DeepSpeed config with every ``"auto"`` replaced as accelerate would.

    Used to check shipped configs with DeepSpeed's own parser outside a launch.
    """
    import copy

    filled = copy.deepcopy(config)
    values = {
        "train_micro_batch_size_per_gpu": batch_size,
        "gradient_accumulation_steps": gradient_accumulation_steps,
        "train_batch_size": batch_size * gradient_accumulation_steps * world_size,
        "gradient_clipping": max_grad_norm if max_grad_norm > 0 else 1e9,
    }
    for key, value in values.items():
        if filled.get(key) == "auto":
            filled[key] = value
    for precision in ("fp16", "bf16"):
        section = filled.get(precision)
        if isinstance(section, dict) and section.get("enabled") == "auto":
            section["enabled"] = mixed_precision == precision
    leftovers = _find_auto(filled)
    if leftovers:
        raise ValueError(f"no value known for 'auto' at {', '.join(leftovers)}")
    return filled


def _find_auto(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, dict):
        return [p for key, value in node.items() for p in _find_auto(value, f"{prefix}{key}.")]
    return [prefix.rstrip(".")] if node == "auto" else []


def describe(accelerator: Accelerator) -> str:
    """One line: processes, machines, device, precision, distributed type."""
    state = accelerator.state
    return (
        f"{accelerator.num_processes} process(es) ({state.distributed_type.value}) on {accelerator.device}, "
        f"mixed precision {accelerator.mixed_precision}, gradient accumulation {accelerator.gradient_accumulation_steps}"
    )


def broadcast_buffers(module: torch.nn.Module, accelerator: Accelerator) -> None:
    """Copy the main process's buffers (e.g. BatchNorm running statistics) to every process.

    DDP broadcasts buffers at the start of each forward, so after the last step every process
    holds statistics updated by its own batch; this makes the final models identical.
    """
    if accelerator.num_processes == 1:
        return
    for buffer in module.buffers():
        torch.distributed.broadcast(buffer.data, src=0)
