"""The candidate video renderings of benchmarks/video_design.py that change an object's shape
(``ChangingLayout``), checked against the shipped renderer drawing the expected photo."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import video_design  # noqa: E402

from selfpatch.data.builtin.videos import Track, VideoLayout  # noqa: E402


def _photos() -> np.ndarray:
    """Three 28x28 'objects': asymmetric blocks, so a turn or a swap changes the mask."""
    photos = np.zeros((3, 28, 28), np.uint8)
    photos[0, 4:24, 6:12] = 200  # a tall bar on the left
    photos[0, 4:10, 6:22] = 200  # ... with an arm on top: an upside-down L
    photos[1, 8:20, 8:20] = 120  # a square, another grey
    photos[2, 20:26, 2:26] = 250  # a wide bar at the bottom
    return photos


def _layout(frames: int = 5) -> VideoLayout:
    background = np.full((64 + 16, 64 + 16, 3), 0.3, np.float32)
    track = Track(index=0, label=3, tint=(0.9, 0.5, 0.2), start=(30.0, 32.0),
                  control=(32.0, 32.0), end=(34.0, 32.0), scale_start=1.5, scale_end=1.5)
    return VideoLayout(64, frames, background, (0, 0), (8, 8), (track,))


def _changing(layout: VideoLayout, **changes) -> video_design.ChangingLayout:
    fields = {f.name: getattr(layout, f.name) for f in dataclasses.fields(VideoLayout)}
    return video_design.ChangingLayout(**fields, **changes)


def test_no_change_renders_as_shipped():
    photos, layout = _photos(), _layout()
    same = _changing(layout, partners=(-1,), turns=(0.0,))
    for frame in range(layout.frames):
        a, b = layout.render(photos, frame), same.render(photos, frame)
        np.testing.assert_allclose(a.rgb, b.rgb, atol=1e-6)
        assert np.array_equal(a.instance, b.instance)
        assert np.array_equal(a.semantic, b.semantic)


def test_morph_ends_as_the_partner_photo_and_starts_as_the_own():
    photos, layout = _photos(), _layout()
    morph = _changing(layout, partners=(2,), turns=())
    partner = dataclasses.replace(layout, tracks=(dataclasses.replace(layout.tracks[0], index=2),))
    first, last = morph.render(photos, 0), morph.render(photos, layout.frames - 1)
    assert np.array_equal(first.instance, layout.render(photos, 0).instance)
    expected = partner.render(photos, layout.frames - 1)
    assert np.array_equal(last.instance, expected.instance)
    np.testing.assert_allclose(last.rgb, expected.rgb, atol=1e-6)
    assert not np.array_equal(last.instance, layout.render(photos, layout.frames - 1).instance)
    assert set(np.unique(last.semantic)) == {0, 4}  # the class is kept (label 3 -> 4 on disk)


def test_turn_by_180_degrees_ends_upside_down():
    photos, layout = _photos(), _layout()
    turn = _changing(layout, partners=(), turns=(180.0,))
    flipped = photos.copy()
    flipped[0] = np.rot90(photos[0], 2)  # 180 degrees about the photo's centre, by hand
    last = turn.render(photos, layout.frames - 1)
    expected = layout.render(flipped, layout.frames - 1)
    assert np.array_equal(last.instance, expected.instance)
    np.testing.assert_allclose(last.rgb, expected.rgb, atol=2 / 255)
    # halfway it is neither the start nor the end pose
    middle = turn.render(photos, layout.frames // 2).instance
    assert not np.array_equal(middle, layout.render(photos, layout.frames // 2).instance)
    assert not np.array_equal(middle, layout.render(flipped, layout.frames // 2).instance)
