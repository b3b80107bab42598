"""DAVIS J and F against cases computed by hand, and the per-object statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from selfpatch.evaluate.jf import (
    DavisScores,
    boundary_f_measure,
    boundary_map,
    boundary_matches,
    boundary_pixels,
    disk,
    region_similarity,
    sequence_scores,
    statistics,
)


def square(size=40, top=10, left=10, side=10):
    m = np.zeros((size, size), bool)
    m[top : top + side, left : left + side] = True
    return m


def test_j_shifted_squares_by_hand():
    # 10x10 squares shifted by 2 columns: overlap 10*8 = 80, union 100 + 100 - 80 = 120.
    assert region_similarity(square(), square(left=12)) == pytest.approx(80 / 120)
    # Shifted by 3 rows and 4 columns: overlap 7*6 = 42, union 200 - 42 = 158.
    assert region_similarity(square(), square(top=13, left=14)) == pytest.approx(42 / 158)


def test_boundary_ring_of_a_square():
    # seg2bmap marks the pixels that differ from their E/S/SE neighbour: for a 10x10 square at
    # rows/cols 10..19 that is the ring with corners (9, 9) and (19, 19): 4 * 10 = 40 pixels.
    b = boundary_map(square())
    assert b.sum() == 40
    assert b[9, 9:20].all() and b[19, 10:20].all() and b[9:20, 9].all() and b[10:20, 19].all()


def test_tolerance_radius():
    assert boundary_pixels(480, 854) == math.ceil(0.008 * math.hypot(480, 854)) == 8
    assert boundary_pixels(40, 40) == 1
    assert boundary_pixels(40, 40, bound_th=3) == 3


def test_disk_and_boundary_matches_by_hand():
    assert disk(1).sum() == 5 and disk(2).sum() == 13
    # One dst pixel at (4, 4): a src pixel is matched exactly when dy^2 + dx^2 <= r^2.
    dst = np.zeros((9, 9), bool)
    dst[4, 4] = True
    for r in (0, 1, 2, 3):
        for y in range(9):
            for x in range(9):
                src = np.zeros((9, 9), bool)
                src[y, x] = True
                near = (y - 4) ** 2 + (x - 4) ** 2 <= r * r
                assert boundary_matches(src, dst, r) == int(near), (r, y, x)
    # Counts per mask, nothing wraps around a border or leaks into the next mask: the src
    # pixels sit in the corners, the dst pixels at the opposite corners of the other masks.
    src = np.zeros((3, 6, 6), bool)
    dst = np.zeros((3, 6, 6), bool)
    src[:, 0, 0] = src[:, 5, 5] = True
    dst[0, 0, 2] = True  # 2 px from (0, 0): matched at r=2, not at r=1
    dst[1, 5, 5] = True  # on (5, 5)
    dst[2, 0, 5] = dst[2, 5, 0] = True  # 5 px from both corners
    assert boundary_matches(src, dst, 1).tolist() == [0, 1, 0]
    assert boundary_matches(src, dst, 2).tolist() == [1, 1, 0]
    assert boundary_matches(src, dst, 5).tolist() == [1, 1, 2]


def test_boundary_matches_equals_counting_through_a_brute_force_dilation():
    rng = np.random.default_rng(3)
    for radius, shape in ((1, (12, 17)), (3, (20, 23)), (8, (40, 31))):
        src = rng.random((4, *shape)) > 0.9
        dst = rng.random((4, *shape)) > 0.97
        h, w = shape
        expected = []
        for s_m, d_m in zip(src, dst):
            dil = np.zeros_like(d_m)  # brute force: every dst pixel paints its whole disk
            for y, x in zip(*np.nonzero(d_m)):
                for yy in range(max(0, y - radius), min(h, y + radius + 1)):
                    for xx in range(max(0, x - radius), min(w, x + radius + 1)):
                        if (yy - y) ** 2 + (xx - x) ** 2 <= radius * radius:
                            dil[yy, xx] = True
            expected.append(int((s_m & dil).sum()))
        assert boundary_matches(src, dst, radius).tolist() == expected


def test_f_shifted_squares_by_hand():
    # 40x40 frame -> radius ceil(0.008 * 56.6) = 1 (a plus-shaped disk). Shift by 2 columns:
    # of the 40 GT ring pixels 22 have a predicted boundary pixel within the plus (top row
    # x=10..19, bottom row x=10..19, right column rows 10 and 18); of the 40 predicted ones 22
    # too (top x=11..20, bottom x=12..20, left column rows 10, 18, 19). P = R = 22/40.
    f = boundary_f_measure(square(), square(left=12))
    assert f == pytest.approx(0.55)


def test_empty_and_perfect_conventions():
    gt, empty = square(), np.zeros((40, 40), bool)
    assert region_similarity(gt, gt) == 1 and boundary_f_measure(gt, gt) == 1
    assert region_similarity(gt, empty) == 0 and boundary_f_measure(gt, empty) == 0
    assert region_similarity(empty, gt) == 0 and boundary_f_measure(empty, gt) == 0
    assert region_similarity(empty, empty) == 1 and boundary_f_measure(empty, empty) == 1
    far = square(top=28, left=28, side=8)
    assert region_similarity(square(), far) == 0 and boundary_f_measure(square(), far) == 0


def test_vectorised_over_frames():
    gt = np.stack([square(), square(), np.zeros((40, 40), bool)])
    pred = np.stack([square(), square(left=12), np.zeros((40, 40), bool)])
    assert np.allclose(region_similarity(gt, pred), [1, 80 / 120, 1])
    assert np.allclose(boundary_f_measure(gt, pred), [1, 0.55, 1])


def test_statistics_by_hand():
    v = np.array([1, 1, 1, 0.5, 0.5, 0, 0, 0])
    # Bins from round(linspace(1, 8, 5)) - 1 = [0, 2, 3, 5, 7]: first v[0:3], last v[5:8].
    mean, recall, decay = statistics(v)
    assert mean == pytest.approx(0.5)
    assert recall == pytest.approx(3 / 8)
    assert decay == pytest.approx(1.0)


def test_sequence_scores_skip_first_and_last_frame_and_average_objects():
    t, size = 5, 40
    gt = np.zeros((t, size, size), np.int64)
    gt[:, 10:20, 10:20] = 1
    gt[:, 25:35, 25:35] = 2
    pred = gt.copy()
    pred[0] = 0  # frame 0 and the last frame are not scored
    pred[-1] = 0
    pred[2][gt[2] == 2] = 0  # object 2 lost in frame 2 only
    j, f = sequence_scores(gt, pred)
    assert j.shape == (2, 3)
    assert np.allclose(j[0], 1) and np.allclose(j[1], [1, 0, 1])
    assert np.allclose(f[1], [1, 0, 1])
    scores = DavisScores()
    scores.add_sequence("s", j, f)
    g = scores.global_results()
    assert g["J-Mean"] == pytest.approx((1 + 2 / 3) / 2)
    assert g["J&F-Mean"] == pytest.approx((g["J-Mean"] + g["F-Mean"]) / 2)
    assert [r["Sequence"] for r in scores.per_object()] == ["s_1", "s_2"]


def test_void_label_is_background(tmp_path):
    gt = np.zeros((3, 20, 20), np.int64)
    gt[:, 5:10, 5:10] = 1
    gt[:, 0, :] = 255
    j, f = sequence_scores(gt, np.where(gt == 255, 0, gt))
    assert np.allclose(j, 1) and np.allclose(f, 1)


def test_csv_files_like_the_official_toolkit(tmp_path):
    scores = DavisScores()
    scores.add_sequence("bike", np.array([[1.0, 0.5, 1.0]]), np.array([[1.0, 1.0, 0.0]]))
    g, s = scores.write_csv(tmp_path)
    assert g.name == "global_results-val.csv" and s.name == "per-sequence_results-val.csv"
    head, row = g.read_text().splitlines()
    assert head == "J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,F-Decay"
    assert row.split(",")[1] == "0.833"
    assert s.read_text().splitlines()[1] == "bike_1,0.833,0.667"


def test_f_measure_matches_the_toolkit_method_with_opencv():
    """The official toolkit dilates with cv2.dilate and skimage's disk; where both libraries
    are installed (the dev extra; selfpatch does not need them), F must agree exactly."""
    cv2 = pytest.importorskip("cv2")
    sk_disk = pytest.importorskip("skimage.morphology").disk
    rng = np.random.default_rng(0)
    for radius, shape in ((1, (40, 40)), (2, (128, 128)), (8, (120, 213))):
        masks = rng.random((3, *shape)) > 0.995
        others = rng.random((3, *shape)) > 0.99
        counts = boundary_matches(masks, others, radius)
        for m, o, c in zip(masks, others, counts):
            dil = cv2.dilate(o.astype(np.uint8), sk_disk(radius).astype(np.uint8)) > 0
            assert c == (m & dil).sum()
    # Whole F on blob-like masks at DAVIS's 480p tolerance (bound_pix = 8).
    yy, xx = np.mgrid[:480, :854]
    gt = np.stack([(yy - 240) ** 2 / 90**2 + (xx - 400 - 7 * t) ** 2 / 140**2 <= 1
                   for t in range(4)])
    pred = np.stack([(yy - 246) ** 2 / 85**2 + (xx - 395 - 9 * t) ** 2 / 150**2 <= 1
                     for t in range(4)])
    pred[2, 100:130, 600:700] = True  # a false blob far from the object
    for g, p, f in zip(gt, pred, boundary_f_measure(gt, pred)):
        kernel = sk_disk(8).astype(np.uint8)
        g_b, p_b = boundary_map(g), boundary_map(p)
        precision = (p_b & (cv2.dilate(g_b.astype(np.uint8), kernel) > 0)).sum() / p_b.sum()
        recall = (g_b & (cv2.dilate(p_b.astype(np.uint8), kernel) > 0)).sum() / g_b.sum()
        assert f == pytest.approx(2 * precision * recall / (precision + recall), abs=1e-12)


def test_boundary_map_matches_the_pixel_definition():
    # Definition, pixel by pixel: differs from the E, S or SE neighbour (outside = background);
    # the last row compares with E only, the last column with S only, the corner is never set.
    rng = np.random.default_rng(1)
    m = rng.random((9, 11)) > 0.5
    h, w = m.shape
    ref = np.zeros_like(m)
    for y in range(h):
        for x in range(w):
            east = m[y, x + 1] if x + 1 < w else False
            south = m[y + 1, x] if y + 1 < h else False
            se = m[y + 1, x + 1] if (y + 1 < h and x + 1 < w) else False
            if y == h - 1 and x == w - 1:
                ref[y, x] = False
            elif y == h - 1:
                ref[y, x] = m[y, x] != east
            elif x == w - 1:
                ref[y, x] = m[y, x] != south
            else:
                ref[y, x] = (m[y, x] != east) or (m[y, x] != south) or (m[y, x] != se)
    assert np.array_equal(boundary_map(m), ref)
