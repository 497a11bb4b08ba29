"""Learning-rate schedules as pure functions of the step (so resuming needs no scheduler state)."""

from __future__ import annotations

import math

SCHEDULES = ("constant", "cosine")


def learning_rate_at(
    step: int,
    base: float,
    total_steps: int,
    warmup_steps: int = 0,
    schedule: str = "constant",
    final_fraction: float = 0.1,
) -> float:
    """The learning rate of optimizer step ``step`` (1-based).

    Linear warm-up over ``warmup_steps``, then either ``base`` (constant) or a cosine decay from
    ``base`` to ``final_fraction * base`` at ``total_steps``.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown learning-rate schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if warmup_steps > 0 and step <= warmup_steps:
        return base * step / warmup_steps
    if schedule == "constant":
        return base
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    return base * (final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress)))
