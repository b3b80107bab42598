"""Views as a pure function of (seed, epoch, index): reproducible across workers and ranks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed that differs for every (seed, epoch, index)."""
    return (seed * 0x9E3779B1 + epoch * 0x85EBCA77 + index * 0xC2B2AE3D) % (2**63 - 1)


class SeededViews:
    """Wraps a dataset returning ``(image, ok)`` and applies ``transform`` under a fixed seed.

    Keys are ``(epoch, index)`` pairs (from :class:`selfpatch.train.sampler.EpochSampler`).
    The augmentation RNG is seeded per key inside ``torch.random.fork_rng`` so the caller's
    RNG stream is untouched (with ``num_workers=0`` the caller is the training process).
    """

    def __init__(self, dataset: Any, transform: Callable[[Any], Any], seed: int = 0) -> None:
        self.dataset, self.transform, self.seed = dataset, transform, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Any, bool]:
        epoch, index = key
        image, ok = self.dataset[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, epoch, index))
            return self.transform(image), ok
