"""Short videos of moving, occluding objects (stand-in for DAVIS 2017).

Each object follows a quadratic Bezier path (smooth, gently curved), its size changes
linearly by up to +-25 % over the clip, and the background pans slowly (a camera drift), so
both objects and background move. Depth order is fixed: object k is in front of objects < k,
which is what makes occlusions. Frame 0 is re-drawn until every object shows enough pixels,
because label propagation starts from frame 0's masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from selfpatch.data.builtin.background import smooth_background
from selfpatch.data.builtin.looks import LATEST, Look
from selfpatch.data.builtin.render import (
    LABEL_ALPHA,
    OBJECT_SIDE,
    Placement,
    Rendered,
    composite,
)
from selfpatch.data.builtin.scenes import random_tint

#: Extra background border the camera can pan over, in pixels.
PAN = 16
#: Frame 0 must show each object on at least this many pixels ...
MIN_VISIBLE_PIXELS = 60
#: ... and at least this fraction of the pixels it would cover alone.
MIN_VISIBLE_FRACTION = 0.35


@dataclass(frozen=True)
class Track:
    """One object's motion. Points are canvas (x, y) pixels; t runs from 0 to 1."""

    index: int
    label: int
    tint: tuple[float, float, float]
    start: tuple[float, float]
    control: tuple[float, float]
    end: tuple[float, float]
    scale_start: float
    scale_end: float

    def at(self, t: float) -> Placement:
        """The object's placement at time ``t`` in [0, 1]."""
        u = 1.0 - t
        cx = u * u * self.start[0] + 2 * u * t * self.control[0] + t * t * self.end[0]
        cy = u * u * self.start[1] + 2 * u * t * self.control[1] + t * t * self.end[1]
        scale = self.scale_start + (self.scale_end - self.scale_start) * t
        return Placement(self.index, self.label, scale, cx, cy, self.tint)


@dataclass(frozen=True)
class VideoLayout:
    """Everything needed to render a clip.

    Attributes:
        background: float32 (size + PAN, size + PAN, 3), cropped per frame.
        pan_start, pan_end: (y, x) crop offsets at the first and last frame.
        tracks: objects, back to front.
    """

    size: int
    frames: int
    background: np.ndarray
    pan_start: tuple[int, int]
    pan_end: tuple[int, int]
    tracks: tuple[Track, ...]

    def time(self, frame: int) -> float:
        return frame / max(1, self.frames - 1)

    def background_at(self, t: float) -> np.ndarray:
        """The camera's view of the background at time ``t``: float32 (size, size, 3)."""
        oy = round(self.pan_start[0] + (self.pan_end[0] - self.pan_start[0]) * t)
        ox = round(self.pan_start[1] + (self.pan_end[1] - self.pan_start[1]) * t)
        return self.background[oy : oy + self.size, ox : ox + self.size]

    def render(self, photos: np.ndarray, frame: int, keep_alphas: bool = False) -> Rendered:
        """Frame ``frame`` (0-based); ``photos`` uint8 (N, 28, 28) is the tracks' split."""
        t = self.time(frame)
        return composite(self.background_at(t), [tr.at(t) for tr in self.tracks], photos,
                         keep_alphas)


def _sample_track(
    rng: np.random.Generator,
    labels: np.ndarray,
    size: int,
    scale: tuple[float, float],
    look: Look,
) -> Track:
    index = int(rng.integers(0, len(labels)))
    s0 = float(rng.uniform(*scale))
    s1 = s0 * float(rng.uniform(0.75, 1.25))
    margin = 0.3 * OBJECT_SIDE * max(s0, s1)
    low, high = margin, size - margin
    start = rng.uniform(low, high, size=2)
    # Travel 25..60 % of the frame in a random direction, clipped to stay inside.
    angle = rng.uniform(0, 2 * np.pi)
    length = rng.uniform(0.25, 0.6) * size
    end = np.clip(start + length * np.array([np.cos(angle), np.sin(angle)]), low, high)
    normal = np.array([-np.sin(angle), np.cos(angle)])
    control = (start + end) / 2 + rng.uniform(-0.15, 0.15) * size * normal
    return Track(
        index=index,
        label=int(labels[index]),
        tint=random_tint(rng, look),
        start=(float(start[0]), float(start[1])),
        control=(float(control[0]), float(control[1])),
        end=(float(end[0]), float(end[1])),
        scale_start=s0,
        scale_end=s1,
    )


def first_frame_visible(layout: VideoLayout, photos: np.ndarray) -> bool:
    """Whether every object shows enough pixels in frame 0 (see the module constants)."""
    frame = layout.render(photos, 0, keep_alphas=True)
    assert frame.alphas is not None
    for k in range(1, len(layout.tracks) + 1):
        visible = int((frame.instance == k).sum())
        alone = int((frame.alphas[k - 1] >= LABEL_ALPHA).sum())
        if visible < max(MIN_VISIBLE_PIXELS, MIN_VISIBLE_FRACTION * alone):
            return False
    return True


def sample_video(
    rng: np.random.Generator,
    photos: np.ndarray,
    labels: np.ndarray,
    size: int = 128,
    frames: int = 25,
    n_objects: tuple[int, int] = (2, 4),
    scale: tuple[float, float] = (1.3, 2.3),
    max_tries: int = 200,
    look: Look = LATEST,
) -> VideoLayout:
    """Draw a clip whose frame 0 shows every object (re-drawing the objects until it does).

    Args:
        rng: the clip's own generator.
        photos, labels: uint8 (N, 28, 28) and (N,) of the split the objects come from.
        look: the data version's colours.
    """
    background = smooth_background(rng, size + PAN, size + PAN, look.background_gain)
    pan_start = tuple(int(v) for v in rng.integers(0, PAN + 1, size=2))
    pan_end = tuple(int(v) for v in rng.integers(0, PAN + 1, size=2))
    count = int(rng.integers(n_objects[0], n_objects[1] + 1))
    for _ in range(max_tries):
        tracks = tuple(
            _sample_track(rng, labels, size, scale, look) for _ in range(count)
        )
        layout = VideoLayout(size, frames, background, pan_start, pan_end, tracks)
        if first_frame_visible(layout, photos):
            return layout
    raise RuntimeError(f"no clip with {count} visible objects in {max_tries} tries")
