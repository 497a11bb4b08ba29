"""A deterministic, sharded, resumable stream of training samples.

The stream is the concatenation of seeded permutations of the data set, one per epoch.
Micro-batch ``k`` of the whole job covers stream positions ``[k * W * B, (k + 1) * W * B)``
(``W`` processes, ``B`` images each); process ``r`` takes the ``r``-th slice of ``B``. So the
processes see disjoint images within an epoch, and resuming at micro-batch ``k`` only needs ``k``:
no sampler state is saved. Each sample carries its stream position, which seeds its degradation
(see :mod:`facetools_dapfsr.training.pairs`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sized

import torch

from facetools_dapfsr.seeding import EPOCH_STREAM, derive_seed


def dataset_length(dataset: torch.utils.data.Dataset) -> int:
    """``len(dataset)`` of a map-style data set (torch's ``Dataset`` does not declare ``__len__``)."""
    if not isinstance(dataset, Sized):
        raise TypeError(f"expected a data set with a length, got {type(dataset).__name__}")
    return len(dataset)


class StreamSampler(torch.utils.data.Sampler):
    """Yields ``(dataset index, stream position)`` pairs forever, for one process.

    Args:
        num_items: size of the data set.
        batch_size: images per process per micro-batch.
        num_replicas: number of processes.
        rank: this process.
        seed: run seed (the permutations derive from it).
        start_batch: first micro-batch to yield (``step * gradient_accumulation_steps`` when
            resuming after ``step`` optimizer steps).
    """

    def __init__(
        self, num_items: int, batch_size: int, num_replicas: int = 1, rank: int = 0, seed: int = 0, start_batch: int = 0
    ) -> None:
        if num_items < 1:
            raise ValueError("the data set is empty")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside 0..{num_replicas - 1}")
        self.num_items = num_items
        self.batch_size = batch_size
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.start_batch = start_batch
        self._epoch = -1
        self._permutation: torch.Tensor | None = None

    def item_at(self, position: int) -> int:
        """Data set index at a stream position."""
        epoch, offset = divmod(position, self.num_items)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(derive_seed(EPOCH_STREAM, self.seed, epoch))
            self._permutation = torch.randperm(self.num_items, generator=generator)
            self._epoch = epoch
        assert self._permutation is not None
        return int(self._permutation[offset])

    def positions(self, batch: int) -> range:
        """Stream positions of this process's share of micro-batch ``batch``."""
        first = (batch * self.num_replicas + self.rank) * self.batch_size
        return range(first, first + self.batch_size)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        batch = self.start_batch
        while True:
            for position in self.positions(batch):
                yield self.item_at(position), position
            batch += 1
