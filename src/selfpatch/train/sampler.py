"""A sampler whose order is a pure function of (seed, epoch), shardable and resumable."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochSampler(Sampler):
    """Yields ``(epoch, index)`` keys: a seeded permutation per epoch, split across ranks.

    The dataset receives the epoch with each index, so augmentations can be seeded by
    ``(seed, epoch, index)``: the same sample gets the same views whatever the number of
    processes or workers, and a resumed run continues bit-exactly. Each rank takes every
    ``world_size``-th element of the global permutation, trimmed to whole global batches.

    Args:
        n: dataset size. batch_size: per-rank batch. start_batch: batches of the first epoch
        already done (resume mid-epoch).
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.start_batch = 0

    @property
    def batches_per_epoch(self) -> int:
        return self.n // (self.batch_size * self.world_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.n, generator=g)
        used = perm[: self.batches_per_epoch * self.batch_size * self.world_size]
        mine = used[self.rank:: self.world_size]
        for i in mine[self.start_batch * self.batch_size:].tolist():
            yield (self.epoch, i)
