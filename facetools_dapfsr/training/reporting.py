"""Progress bar, periodic metrics, tracker, throughput and per-process run summaries.

The progress bar, ``metrics.jsonl`` and the tracker (TensorBoard) live on the main process only;
:meth:`RunReporter.reduce_mean` is a collective and must be called by every process at the same
steps (it is, because logging steps depend only on the step counter).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from facetools_dapfsr.fileio import atomic_write_text

if TYPE_CHECKING:
    from accelerate import Accelerator

METRICS_NAME = "metrics.jsonl"
# Steps excluded from the throughput figure: the first ones pay for lazy initialisation.
THROUGHPUT_WARMUP_STEPS = 2


class RunReporter:
    """Reports one run. ``start`` opens the bar and the tracker; ``close`` ends them."""

    def __init__(self, accelerator: Accelerator, output_dir: str | Path, max_steps: int, samples_per_step: int) -> None:
        self.accelerator = accelerator
        self.output_dir = Path(output_dir)
        self.max_steps = max_steps
        self.samples_per_step = samples_per_step
        self._bar: Any = None
        self._timer_start: float | None = None
        self._timer_first_step = 0
        self._start_step = 0
        self._last_step = 0
        self._tracking = False

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def start(self, project_name: str, start_step: int, hyperparameters: dict[str, Any]) -> None:
        if self.accelerator.log_with:
            config = {k: v for k, v in hyperparameters.items() if isinstance(v, int | float | str | bool)}
            self.accelerator.init_trackers(project_name, config=config)
            self._tracking = True
        if self.is_main:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=self.max_steps, initial=start_step, desc=project_name, unit="step", dynamic_ncols=True
            )
        self._start_step = start_step
        self._last_step = start_step

    def step_done(self, step: int) -> None:
        """Advance the bar and the throughput timer after optimizer step ``step``."""
        self._last_step = step
        if self._bar is not None:
            self._bar.update(1)
        if self._timer_start is None and step - self._start_step >= THROUGHPUT_WARMUP_STEPS:
            self._timer_start = time.perf_counter()
            self._timer_first_step = step

    def throughput(self) -> dict[str, float]:
        """Training images per second (all processes) over the steps after the warm-up."""
        if self._timer_start is None or self._last_step <= self._timer_first_step:
            return {}
        elapsed = time.perf_counter() - self._timer_start
        steps = self._last_step - self._timer_first_step
        return {
            "timed_steps": steps,
            "seconds_per_step": elapsed / steps,
            "samples_per_second": steps * self.samples_per_step / elapsed,
        }

    def reduce_mean(self, values: dict[str, torch.Tensor | float]) -> dict[str, float]:
        """Average scalar metrics over processes (a collective: call on every process)."""
        names = sorted(values)
        stacked = torch.tensor([float(values[n]) for n in names], dtype=torch.float64, device=self.accelerator.device)
        mean = self.accelerator.reduce(stacked, reduction="mean")
        return {n: float(v) for n, v in zip(names, mean.tolist(), strict=True)}

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Record metrics (main process: tracker, metrics.jsonl and the bar's postfix)."""
        if not self.is_main:
            return
        if self._tracking:
            self.accelerator.log(metrics, step=step)
        record = {"step": step, "time": time.time(), **metrics}
        with open(self.output_dir / METRICS_NAME, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self._bar is not None:
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in list(metrics.items())[:4]}, refresh=False)

    def message(self, text: str) -> None:
        """A line above the bar, main process only."""
        if not self.is_main:
            return
        if self._bar is not None:
            self._bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._tracking:
            self.accelerator.end_training()
            self._tracking = False


def state_dict_sha256(module: nn.Module) -> str:
    """Hash of a module's parameters and buffers (names, dtypes, shapes and values)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        value = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


def write_rank_summary(output_dir: str | Path, rank: int, summary: dict[str, Any]) -> Path:
    """``<output_dir>/summary_rank<r>.json``: what this process did (tests and audits read it)."""
    path = Path(output_dir) / f"summary_rank{rank}.json"
    atomic_write_text(path, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return path


def finish_run(
    accelerator: Accelerator,
    reporter: RunReporter,
    output_dir: str | Path,
    state: Any,
    data_report: dict[str, Any],
    modules: dict[str, nn.Module],
    sample_indices: list[int] | None = None,
) -> Path:
    """End a recipe: write this rank's summary (step, samples, a hash per module, throughput,
    data report), wait for every process, then close the reporter.

    ``modules`` maps a summary key prefix to a module: ``{"encoder": m}`` -> ``encoder_sha256``.
    """
    summary: dict[str, Any] = {
        "rank": accelerator.process_index,
        "world_size": accelerator.num_processes,
        "step": state.step,
        "samples_seen": state.samples_seen,
        **{f"{name}_sha256": state_dict_sha256(module) for name, module in modules.items()},
        "throughput": reporter.throughput(),
        "data": data_report,
        "distributed_type": accelerator.distributed_type.value,
    }
    if sample_indices is not None:
        summary["sample_indices"] = sample_indices
    path = write_rank_summary(output_dir, accelerator.process_index, summary)
    accelerator.wait_for_everyone()
    reporter.close()  # ends the tracker, which also tears down the process group: keep it last
    return path
