"""Speed: feed-forward faces/s, PULSE-style seconds per face, DAMMA adaptation time, peak memory.

Timings do not depend on the weights, so a model built from a preset (random encoder) measures
the same speed as a trained one of that configuration. Inputs are seeded uniform noise in
``[0, 1]``. PULSE-style optimisation and DAMMA cost the same for every step, so they are timed
over a few steps and extrapolated linearly to their usual step counts; the record says how many
steps were actually timed.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` per phase; on the CPU the process's
peak resident set size (``ru_maxrss``) after each phase, which includes everything loaded
before (Python, torch, the model) and never decreases.
"""

from __future__ import annotations

import dataclasses
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import torch

from facetools_dapfsr.evaluation.baselines import PULSEConfig, pulse_restore
from facetools_dapfsr.evaluation.runner import machine_description

if TYPE_CHECKING:
    from facetools_dapfsr.losses import VGGFeatures
    from facetools_dapfsr.models.dapfsr import DAPFSR


@dataclass
class BenchConfig:
    batch_sizes: tuple[int, ...] = (1, 32)
    """Feed-forward batch sizes."""
    min_seconds: float = 3.0
    """Feed-forward: repeat calls until this much time has passed..."""
    max_iterations: int = 50
    """...or this many calls were timed."""
    pulse_steps: int = 100
    """The PULSE-style step count the per-face time is given for."""
    pulse_timed_steps: int = 5
    """Steps actually timed (one face)."""
    damma_steps: int = 300
    """The DAMMA step count the adaptation time is given for (DAMMAConfig's default cap)."""
    damma_timed_steps: int = 3
    """DAMMA steps actually timed."""
    seed: int = 0

    def __post_init__(self) -> None:
        self.batch_sizes = tuple(self.batch_sizes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def best_time(step: Callable[[], object], repeats: int) -> float:
    """Fastest of ``repeats`` runs of ``step`` after one warm-up (the machine may be shared)."""
    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return min(times)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory_mb(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        return {"kind": "cuda_max_memory_allocated", "mb": torch.cuda.max_memory_allocated(device) / 2**20}
    # ru_maxrss is in KiB on Linux, bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return {"kind": "process_peak_rss", "mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20}


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def feed_forward(model: DAPFSR, batch_size: int, config: BenchConfig, device: torch.device) -> dict[str, Any]:
    """Faces per second of ``model.upscale`` at ``batch_size`` (after one warm-up call)."""
    generator = torch.Generator().manual_seed(config.seed)
    size = model.config.lr_size
    lr = torch.rand(batch_size, 3, size, size, generator=generator).to(device)
    _reset_peak(device)
    model.upscale(lr)  # warm-up: allocator, kernels, lazy initialisation
    _sync(device)
    iterations, started = 0, time.perf_counter()
    while iterations < config.max_iterations and (
        iterations == 0 or time.perf_counter() - started < config.min_seconds
    ):
        model.upscale(lr)
        _sync(device)
        iterations += 1
    elapsed = time.perf_counter() - started
    return {
        "batch_size": batch_size,
        "iterations": iterations,
        "seconds": elapsed,
        "faces_per_second": batch_size * iterations / elapsed,
        "peak_memory": _peak_memory_mb(device),
    }


def pulse_time(model: DAPFSR, config: BenchConfig, device: torch.device) -> dict[str, Any]:
    """Seconds per face of the PULSE-style baseline, extrapolated to ``config.pulse_steps``."""
    generator = torch.Generator().manual_seed(config.seed)
    size = model.config.lr_size
    lr = torch.rand(1, 3, size, size, generator=generator).to(device)
    pulse_restore(model, lr, PULSEConfig(steps=1))  # warm-up
    _reset_peak(device)
    _sync(device)
    started = time.perf_counter()
    pulse_restore(model, lr, PULSEConfig(steps=config.pulse_timed_steps))
    _sync(device)
    elapsed = time.perf_counter() - started
    per_step = elapsed / config.pulse_timed_steps
    return {
        "steps": config.pulse_steps,
        "timed_steps": config.pulse_timed_steps,
        "seconds_per_step": per_step,
        "seconds_per_face": per_step * config.pulse_steps,
        "peak_memory": _peak_memory_mb(device),
    }


def damma_time(model: DAPFSR, config: BenchConfig, device: torch.device, vgg: VGGFeatures | None) -> dict[str, Any]:
    """DAMMA adaptation seconds, extrapolated from ``config.damma_timed_steps`` steps."""
    from facetools_dapfsr.adaptation.damma import DAMMAConfig, run_damma
    from facetools_dapfsr.losses import VGGFeatures

    vgg = vgg if vgg is not None else VGGFeatures.from_weights_cache(progress=False)
    generator = torch.Generator().manual_seed(config.seed)
    size = model.config.hr_size
    exemplar = torch.rand(1, 3, size, size, generator=generator).to(device)
    # window = the timed steps: convergence is only checked after 2 windows, so every step runs.
    settings = DAMMAConfig(max_steps=config.damma_timed_steps, window=config.damma_timed_steps, seed=config.seed)
    run_damma(model, exemplar, config=dataclasses.replace(settings, max_steps=1), vgg=vgg, progress=False)  # warm-up
    _reset_peak(device)
    result = run_damma(model, exemplar, config=settings, vgg=vgg, progress=False)
    per_step = result.seconds / result.steps
    return {
        "steps": config.damma_steps,
        "timed_steps": result.steps,
        "batch_size": settings.batch_size,
        "seconds_per_step": per_step,
        "seconds": per_step * config.damma_steps,
        "peak_memory": _peak_memory_mb(device),
    }


def run_benchmark(
    model: DAPFSR,
    config: BenchConfig | None = None,
    device: str | torch.device = "cpu",
    vgg: VGGFeatures | None = None,
    damma: bool = True,
    pulse: bool = True,
) -> dict[str, Any]:
    """All speed figures of ``model`` on ``device`` as one JSON-ready dict."""
    config = config or BenchConfig()
    device = torch.device(device)
    model = model.to(device).eval()
    if vgg is not None:
        vgg = vgg.to(device)
    record: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_description(device),
        "settings": config.to_dict(),
        "model": {
            "config": model.config.to_dict(),
            "parameters": {
                "encoder": sum(p.numel() for p in model.encoder.parameters()),
                "decoder": sum(p.numel() for p in model.decoder.parameters()),
            },
        },
        "feed_forward": [feed_forward(model, b, config, device) for b in config.batch_sizes],
    }
    if pulse:
        record["pulse"] = pulse_time(model, config, device)
        single = 1.0 / record["feed_forward"][0]["faces_per_second"]
        best = max(r["faces_per_second"] for r in record["feed_forward"])
        record["pulse_over_feed_forward"] = {
            "batch_1": record["pulse"]["seconds_per_face"] / single,
            "best_batch": record["pulse"]["seconds_per_face"] * best,
            "paper_claim": 150,
        }
    if damma:
        record["damma"] = damma_time(model, config, device, vgg)
    record["peak_memory"] = (
        _peak_memory_mb(device)
        if device.type != "cuda"
        else {
            "kind": "cuda_max_memory_allocated (max over phases)",
            "mb": max(
                phase["peak_memory"]["mb"]
                for phase in [*record["feed_forward"], record.get("pulse"), record.get("damma")]
                if phase is not None
            ),
        }
    )
    return record
