"""Placing Fashion-MNIST objects on a canvas and compositing them with exact labels.

An object's opacity (alpha) comes from its own pixels: Fashion-MNIST photos are light objects
on an exactly black surround, so alpha ramps from 0 to 1 over grey levels 8..40. Its colour
is a random tint times its grey-level shading, so the photo's texture stays visible.

Objects are drawn back to front ("painter's order"); the label of a pixel is the *last* object
whose resampled alpha is >= 0.5 there (:data:`LABEL_ALPHA`), else background. Hence a label
``k`` always means object ``k`` covers at least half of that pixel and no later object does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

#: Grey levels where alpha starts to rise and where it reaches 1.
ALPHA_RAMP: tuple[float, float] = (8.0, 40.0)
#: Shading of the darkest object pixel, so dark textures stay tinted rather than pure black.
SHADE_FLOOR = 0.15
#: A pixel belongs to an object where that object's alpha is at least this.
LABEL_ALPHA = 0.5
#: Side of the source photos.
OBJECT_SIDE = 28


@dataclass(frozen=True)
class Placement:
    """One object on a canvas.

    Attributes:
        index: index of the photo in its Fashion-MNIST split (train or test).
        label: Fashion-MNIST class 0..9 (semantic label ``label + 1`` on disk).
        scale: drawn side = 28 * scale pixels.
        cx, cy: centre on the canvas in pixels (continuous; pixel ``i`` spans [i, i+1)).
        tint: RGB in [0, 1].
    """

    index: int
    label: int
    scale: float
    cx: float
    cy: float
    tint: tuple[float, float, float]


@dataclass
class Rendered:
    """A composited canvas.

    Attributes:
        rgb: float32 (H, W, 3) in [0, 1].
        instance: uint8 (H, W); 0 = background, k = k-th placement (1-based, drawing order).
        semantic: uint8 (H, W); 0 = background, 1..10 = Fashion-MNIST class + 1.
        alphas: float32 (K, H, W) per-object alpha (only with ``keep_alphas``; else None).
    """

    rgb: np.ndarray
    instance: np.ndarray
    semantic: np.ndarray
    alphas: np.ndarray | None = None


def object_layers(photo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Alpha and premultiplied shading of one photo.

    Args:
        photo: uint8 (28, 28).
    Returns:
        alpha, alpha * shade: float32 (28, 28) each, in [0, 1].
    """
    grey = photo.astype(np.float32)
    lo, hi = ALPHA_RAMP
    alpha = np.clip((grey - lo) / (hi - lo), 0.0, 1.0)
    shade = SHADE_FLOOR + (1.0 - SHADE_FLOOR) * grey / 255.0
    return alpha, alpha * shade


def _resample(layer: np.ndarray, size: tuple[int, int], coeffs: tuple[float, ...]) -> np.ndarray:
    """Affine-resample a float32 layer (mode 'F') to ``size`` = (w, h); 0 outside the photo."""
    out = Image.fromarray(layer).transform(
        size, Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR
    )
    return np.asarray(out, dtype=np.float32)


def place(
    photo: np.ndarray, scale: float, cx: float, cy: float, height: int, width: int
) -> tuple[int, int, np.ndarray, np.ndarray] | None:
    """Resample a photo to its place on a ``height x width`` canvas (bilinear, sub-pixel).

    Only the object's bounding box (clipped to the canvas) is computed.

    Returns:
        (y0, x0, alpha, premultiplied shade) with float32 (h, w) patches whose top-left corner
        is canvas pixel (y0, x0); None when the object lies entirely off the canvas.
    """
    half = OBJECT_SIDE / 2 * scale
    x0, x1 = max(0, math.floor(cx - half)), min(width, math.ceil(cx + half))
    y0, y1 = max(0, math.floor(cy - half)), min(height, math.ceil(cy + half))
    if x1 <= x0 or y1 <= y0:
        return None
    alpha, premult = object_layers(photo)
    # PIL maps output pixel centre (x + 0.5) to input a * (x + 0.5) + c; we want canvas
    # position (x0 + x + 0.5 - cx) / scale from the photo's centre (14, 14).
    inv, mid = 1.0 / scale, OBJECT_SIDE / 2
    coeffs = (inv, 0.0, (x0 - cx) * inv + mid, 0.0, inv, (y0 - cy) * inv + mid)
    size = (x1 - x0, y1 - y0)
    return y0, x0, _resample(alpha, size, coeffs), _resample(premult, size, coeffs)


def composite(
    background: np.ndarray,
    placements: list[Placement] | tuple[Placement, ...],
    photos: np.ndarray,
    keep_alphas: bool = False,
) -> Rendered:
    """Draw ``placements`` over ``background`` in order (later objects on top).

    Args:
        background: float32 (H, W, 3) in [0, 1]; not modified.
        placements: at most 255 objects, back to front.
        photos: uint8 (N, 28, 28), the split the placements' ``index`` refers to.
        keep_alphas: also return every object's full-canvas alpha (for checks and tests).
    """
    height, width = background.shape[:2]
    rgb = background.astype(np.float32, copy=True)
    instance = np.zeros((height, width), dtype=np.uint8)
    alphas = np.zeros((len(placements), height, width), np.float32) if keep_alphas else None
    lut = np.zeros(256, dtype=np.uint8)
    for k, obj in enumerate(placements, start=1):
        lut[k] = obj.label + 1
        placed = place(photos[obj.index], obj.scale, obj.cx, obj.cy, height, width)
        if placed is None:
            continue
        y0, x0, alpha, premult = placed
        h, w = alpha.shape
        region = rgb[y0 : y0 + h, x0 : x0 + w]
        region *= (1.0 - alpha)[..., None]
        region += premult[..., None] * np.asarray(obj.tint, dtype=np.float32)
        instance[y0 : y0 + h, x0 : x0 + w][alpha >= LABEL_ALPHA] = k
        if alphas is not None:
            alphas[k - 1, y0 : y0 + h, x0 : x0 + w] = alpha
    np.clip(rgb, 0.0, 1.0, out=rgb)
    return Rendered(rgb=rgb, instance=instance, semantic=lut[instance], alphas=alphas)


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """float (H, W, 3) in [0, 1] -> uint8 (H, W, 3), rounded."""
    return (rgb * 255.0 + 0.5).astype(np.uint8)
