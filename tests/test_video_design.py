"""The candidate video renderings of benchmarks/video_design.py that change an object's shape
(``ChangingLayout``), checked against the shipped renderer drawing the expected photo."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

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


def test_flicker_keeps_the_masks_and_shared_flicker_one_tint():
    photos, layout = _photos(), _layout()
    other = dataclasses.replace(layout.tracks[0], index=1, tint=(0.1, 0.4, 0.8),
                                start=(10.0, 10.0), control=(10.0, 10.0), end=(12.0, 10.0))
    layout = dataclasses.replace(layout, tracks=(layout.tracks[0], other))
    flicker = video_design.VARIANTS["flicker"][0](layout, 3)
    shared = video_design.VARIANTS["shared-flicker"][0](layout, 3)
    assert {t.tint for t in shared.tracks} == {layout.tracks[0].tint}
    assert [t.tint for t in flicker.tracks] == [t.tint for t in layout.tracks]
    changed = 0
    for frame in range(layout.frames):
        shipped, bad = layout.render(photos, frame), flicker.render(photos, frame)
        assert np.array_equal(shipped.instance, bad.instance)
        assert np.array_equal(shipped.instance, shared.render(photos, frame).instance)
        changed += not np.allclose(shipped.rgb, bad.rgb, atol=1e-3)
        # the same clip index draws the same footage
        np.testing.assert_array_equal(bad.rgb, flicker.render(photos, frame).rgb)
    assert changed == layout.frames


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



def _moving_block(frames: int = 4, size: int = 64, row: int = 16, col: int = 8,
                  step: int = 8, void: bool = False) -> np.ndarray:
    """``(T, size, size)`` ids: a 24x24 block of id 1 at ``(row, col)`` moving ``step`` px
    right per frame, and a fixed 16x16 block of id 2 on the 8 px grid; optionally a void
    (255) band around block 1."""
    gt = np.zeros((frames, size, size), np.uint8)
    for t in range(frames):
        x = col + step * t
        if void:
            gt[t, row - 2 : row + 26, x - 2 : x + 26] = 255
        gt[t, row : row + 24, x : x + 24] = 1
        gt[t, 40:56, 40:56] = 2
    return gt


def _scores(gt: np.ndarray, kind: str, patch: int = 8, short_side: int | None = None):
    from selfpatch.evaluate.jf import sequence_scores

    pred = video_design.mask_reference_predictions(kind, gt, patch, short_side)
    return pred, *sequence_scores(gt, pred)


def test_first_mask_repeats_frame_zero_with_void_as_background():
    gt = _moving_block(void=True)
    pred, j, _ = _scores(gt, "first-mask")
    expected = np.where(gt[0] == 255, 0, gt[0])
    assert all(np.array_equal(p, expected) for p in pred)
    assert np.allclose(j[1], 1.0)  # the fixed block is "tracked" by doing nothing
    # the moving block: overlap 16/24 of its width after 8 px, 8/24 after 16 px
    assert np.allclose(j[0], [16 / 32, 8 / 40])


def test_grid_oracles_track_blocks_that_sit_on_the_grid():
    gt = _moving_block(row=16, col=8, step=8)  # every edge on the 8 px patch grid
    for kind in ("grid-oracle", "grid-oracle-area"):
        _, j, f = _scores(gt, kind)
        assert j.min() > 0.85 and f.min() > 0.85, kind  # only the read-out rounds corners


@pytest.mark.parametrize("kind", ["grid-oracle", "grid-oracle-area"])
def test_grid_oracles_err_only_within_one_patch_of_a_boundary(kind):
    from scipy.ndimage import binary_dilation

    patch = 8
    gt = _moving_block(row=12, col=4, step=4)  # edges half a patch off the grid
    pred, _, _ = _scores(gt, kind, patch)
    for t in range(len(gt)):
        near = np.zeros(gt.shape[1:], bool)
        for k in (1, 2):
            m = gt[t] == k
            near |= binary_dilation(m, iterations=patch) & binary_dilation(~m, iterations=patch)
        assert not ((pred[t] != gt[t]) & ~near).any()


def test_area_fractions_beat_nearest_labels_off_the_grid():
    gt = _moving_block(row=12, col=4, step=4)
    _, j_nearest, _ = _scores(gt, "grid-oracle")
    _, j_area, _ = _scores(gt, "grid-oracle-area")
    assert j_area[0].mean() > j_nearest[0].mean() + 0.1


def test_grid_oracle_uses_the_upscaled_grid():
    """At a short side of twice the frame, patch 16 sees the same 8x8 grid as patch 8 natively:
    the two differ only where the read-out's nearest resize samples the upscaled map (< 1 %);
    a 4x4 grid (patch 16, native size) is coarser."""
    gt = _moving_block(row=12, col=4, step=4)
    a, j_a, _ = _scores(gt, "grid-oracle-area", 8, None)
    b, _, _ = _scores(gt, "grid-oracle-area", 16, 128)
    _, j_coarse, _ = _scores(gt, "grid-oracle-area", 16, None)
    assert (a != b).mean() < 0.01
    assert j_coarse.mean() < j_a.mean() - 0.1


def test_unknown_mask_reference_is_refused():
    with pytest.raises(ValueError, match="first-mask"):
        video_design.mask_reference_predictions("copy", _moving_block(), 8, None)
