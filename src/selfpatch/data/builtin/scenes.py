"""Random multi-object scenes and single-object images.

Every item is a pure function of its own random generator, so an item can be regenerated
alone (tests do) and the result does not depend on how the build was split over processes.
"""

from __future__ import annotations

import numpy as np

from selfpatch.data.builtin.background import random_colour, smooth_background
from selfpatch.data.builtin.looks import LATEST, Look
from selfpatch.data.builtin.render import OBJECT_SIDE, Placement, Rendered, composite


def random_tint(rng: np.random.Generator, look: Look = LATEST) -> tuple[float, float, float]:
    """An object colour: any hue, fairly saturated and bright so the photo's shading shows."""
    r, g, b = random_colour(rng, sat=(0.25, 0.9), val=look.tint_value)
    return float(r), float(g), float(b)


def sample_scene(
    rng: np.random.Generator,
    labels: np.ndarray,
    size: int,
    n_objects: tuple[int, int] = (1, 3),
    scale: tuple[float, float] = (1.4, 2.8),
    look: Look = LATEST,
) -> tuple[np.ndarray, list[Placement]]:
    """Draw a scene: a background and 1..3 objects of random class, size, place and colour
    (v2's defaults; v1 used 1..5 objects of 0.7..2.5x, passed by the builder).

    Objects may overlap and may stick out of the canvas, but their centre keeps a quarter of
    their size away from the border, so most of each object is inside.

    Args:
        rng: the item's own generator.
        labels: uint8 (N,) classes of the split the objects come from.
        size: canvas side in pixels.
        look: the data version's colours.
    Returns:
        background float32 (size, size, 3), placements back to front.
    """
    background = smooth_background(rng, size, size, look.background_gain)
    count = int(rng.integers(n_objects[0], n_objects[1] + 1))
    placements = []
    for _ in range(count):
        index = int(rng.integers(0, len(labels)))
        s = float(rng.uniform(*scale))
        margin = 0.25 * OBJECT_SIDE * s
        cx, cy = rng.uniform(margin, size - margin, size=2)
        placements.append(
            Placement(index, int(labels[index]), s, float(cx), float(cy), random_tint(rng, look))
        )
    return background, placements


def render_scene(
    rng: np.random.Generator,
    photos: np.ndarray,
    labels: np.ndarray,
    size: int,
    n_objects: tuple[int, int] = (1, 3),
    scale: tuple[float, float] = (1.4, 2.8),
    keep_alphas: bool = False,
    look: Look = LATEST,
) -> tuple[Rendered, list[Placement]]:
    """Sample (:func:`sample_scene`) and composite one scene. ``photos``: uint8 (N, 28, 28)."""
    background, placements = sample_scene(rng, labels, size, n_objects, scale, look)
    return composite(background, placements, photos, keep_alphas=keep_alphas), placements


def render_single(
    rng: np.random.Generator,
    photos: np.ndarray,
    labels: np.ndarray,
    index: int,
    size: int,
    scale: tuple[float, float] = (1.6, 2.1),
    look: Look = LATEST,
) -> Rendered:
    """One given object, roughly centred and filling most of a ``size`` canvas (k-NN images).

    ``scale`` is relative to a 64-pixel canvas and follows ``size``.
    """
    background = smooth_background(rng, size, size, look.background_gain)
    s = float(rng.uniform(*scale)) * size / 64.0
    jitter = 0.06 * size
    cx, cy = size / 2 + rng.uniform(-jitter, jitter, size=2)
    tint = random_tint(rng, look)
    placement = Placement(index, int(labels[index]), s, float(cx), float(cy), tint)
    return composite(background, [placement], photos)
