"""Splitting a run's photos across processes started by ``accelerate launch`` and merging results.

Without a distributed launch everything runs in this process. Under ``accelerate launch``
(``WORLD_SIZE`` > 1) each process takes every ``world_size``-th photo starting at its rank, so
each photo is processed exactly once, and the per-photo records are gathered to every process.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

T = TypeVar("T")


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available, then ``mps``, else ``cpu``; anything else unchanged."""
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    return device


@dataclass
class Shard:
    """This process's place in the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"
    state: Any = None
    """The ``accelerate.PartialState`` of a distributed run, else ``None``."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_local_main(self) -> bool:
        return self.local_rank == 0

    def take(self, items: Sequence[T]) -> list[T]:
        """This process's share: strided, so shares differ in size by at most one."""
        return list(items[self.rank :: self.world_size])

    def gather(self, records: list[Any]) -> list[Any]:
        """All processes' records (a collective call: every process must make it)."""
        if self.world_size == 1:
            return list(records)
        from accelerate.utils import gather_object

        return list(gather_object(records))

    def finish(self) -> None:
        """Wait for every process, then leave the process group.

        Call after the main process wrote its outputs: a launcher stops the remaining processes
        as soon as one exits with an error, which could otherwise cut the main one short.
        """
        if self.world_size == 1:
            return
        self.state.wait_for_everyone()
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def open_shard(device: str = "auto") -> Shard:
    """The shard of this process; initialises the process group under ``accelerate launch``.

    Args:
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``... In a distributed run each process
            uses its own device (``cuda:<local rank>``) unless ``device`` is ``cpu``, in which
            case processes talk over gloo.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Shard(device=resolve_device(device))
    from accelerate import PartialState

    cpu = resolve_device(device) == "cpu"
    state = PartialState(cpu=cpu)
    return Shard(
        rank=state.process_index,
        world_size=state.num_processes,
        local_rank=state.local_process_index,
        device=str(state.device),
        state=state,
    )
