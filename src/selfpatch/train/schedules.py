"""Per-iteration schedules (DINO): cosine with linear warm-up, and the teacher temperature."""

from __future__ import annotations

import numpy as np


def cosine_schedule(base: float, final: float, epochs: int, iters_per_epoch: int,
                    warmup_epochs: int = 0, warmup_start: float = 0.0,
                    warmup_endpoint: bool = False) -> np.ndarray:
    """``epochs * iters_per_epoch`` values: linear ``warmup_start -> base`` over the warm-up
    iterations, then half a cosine from ``base`` down (or up) to ``final``.

    ``warmup_endpoint``: the last warm-up step already equals ``base`` (DINO's and the
    SelfPatch authors' ``np.linspace`` default); without it the warm-up stops one increment
    short and ``base`` comes on the first cosine step.
    """
    total = epochs * iters_per_epoch
    warm = min(warmup_epochs * iters_per_epoch, total)
    warmup = (np.linspace(warmup_start, base, warm, endpoint=warmup_endpoint) if warm
              else np.array([]))
    t = np.arange(total - warm)
    span = max(total - warm, 1)
    cosine = final + 0.5 * (base - final) * (1 + np.cos(np.pi * t / span))
    return np.concatenate([warmup, cosine])


def teacher_temperature_schedule(warmup_temp: float, temp: float, warmup_epochs: int,
                                 epochs: int) -> np.ndarray:
    """Per-epoch teacher temperature: linear ``warmup_temp -> temp``, then constant."""
    warm = min(warmup_epochs, epochs)
    return np.concatenate([np.linspace(warmup_temp, temp, warm),
                           np.full(epochs - warm, temp)])
