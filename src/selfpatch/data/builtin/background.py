"""Smooth random colour fields used as scene backgrounds.

A flat background would make "object vs. background" a colour-threshold problem; these fields
vary slowly in colour (a coarse grid of related colours, smoothly interpolated) and carry a
faint low-frequency grey texture, so a model has to use shape and texture to find objects.
"""

from __future__ import annotations

import colorsys
from functools import lru_cache

import numpy as np


@lru_cache(maxsize=64)
def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Smooth interpolation weights, float32 (n_out, n_in), rows summing to 1.

    Each coarse cell is a Gaussian bump centred on its cell (sigma = 0.6 cell); normalised
    Gaussian weights blend without the grid or diamond patterns that bilinear or smoothstep
    interpolation leave.
    """
    spacing = n_out / n_in
    centres = (np.arange(n_in) + 0.5) * spacing
    pos = np.arange(n_out) + 0.5
    weights = np.exp(-0.5 * ((pos[:, None] - centres[None, :]) / (0.6 * spacing)) ** 2)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def upsample_grid(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """Smoothly upsample a coarse grid.

    Args:
        grid: float32 (gh, gw, C).
    Returns:
        float32 (height, width, C).
    """
    rows = _interp_matrix(height, grid.shape[0])
    cols = _interp_matrix(width, grid.shape[1])
    gh, gw, channels = grid.shape
    # Two small matrix products (rows, then columns); far faster than einsum here.
    tmp = (rows @ grid.reshape(gh, gw * channels)).reshape(height, gw, channels)
    return cols @ tmp


def random_colour(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float]):
    """One RGB colour, float32 (3,) in [0, 1], with uniform hue and the given S and V ranges."""
    hue = rng.uniform(0.0, 1.0)
    rgb = colorsys.hsv_to_rgb(hue, rng.uniform(*sat), rng.uniform(*val))
    return np.asarray(rgb, dtype=np.float32)


def smooth_background(
    rng: np.random.Generator, height: int, width: int, gain: float = 1.0
) -> np.ndarray:
    """A random smooth colour field with a faint texture.

    Draws (in this order, so a seed fixes the result): the coarse grid size, a base colour,
    per-cell colour offsets, the texture grid and its amplitude. ``gain`` scales the finished
    field (a data version's :attr:`~selfpatch.data.builtin.looks.Look.background_gain`); it
    draws nothing, so the same seed gives the same field up to brightness.

    Returns:
        float32 (height, width, 3) in [0, 1].
    """
    cells = int(rng.integers(2, 6))
    base = random_colour(rng, sat=(0.1, 0.8), val=(0.2, 0.85))
    # Related colours: cells deviate from the base, more in brightness than in hue.
    offsets = rng.normal(0.0, 0.12, size=(cells, cells, 3)).astype(np.float32)
    offsets += rng.normal(0.0, 0.10, size=(cells, cells, 1)).astype(np.float32)
    field = upsample_grid(base + offsets, height, width)
    tex_cells = int(rng.integers(6, 16))
    amplitude = np.float32(rng.uniform(0.02, 0.10))
    texture = rng.normal(0.0, 1.0, size=(tex_cells, tex_cells, 1)).astype(np.float32)
    field += amplitude * upsample_grid(texture, height, width)
    np.clip(field, 0.0, 1.0, out=field)
    if gain != 1.0:
        field *= np.float32(gain)
    return field
