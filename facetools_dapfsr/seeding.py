"""Seeds derived from (run seed, step, rank...): the basis of exact resumption.

Every random draw of a training step comes from a seed that is a pure function of the run seed
and the step (and the rank, or the sample's position in the data stream). A resumed run therefore
draws exactly what the uninterrupted run drew, without restoring any generator state, and the
result does not depend on how many times the run was stopped.

A leaf module (numpy and torch only): the data layer (synthetic pairs) and training both use it.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (``numpy.random.SeedSequence``)."""
    if any(p < 0 for p in parts):
        raise ValueError(f"seed parts must be non-negative, got {parts}")
    state = np.random.SeedSequence(list(parts)).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def generator_for(*parts: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`derive_seed` of ``parts``."""
    return torch.Generator().manual_seed(derive_seed(*parts))


def seed_global_rngs(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and all GPUs) global generators."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


# Domain tags keep streams of different purposes apart.
STEP_STREAM = 1
SAMPLE_STREAM = 2
EPOCH_STREAM = 3
VALIDATION_STREAM = 4
INIT_STREAM = 5
SYNTHETIC_STREAM = 6
AUGMENT_STREAM = 7


def seed_step(seed: int, step: int, rank: int) -> None:
    """Reseed the global generators at the start of an optimizer step (noise inputs, dropout...)."""
    seed_global_rngs(derive_seed(STEP_STREAM, seed, step, rank))
