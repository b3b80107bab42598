"""Label propagation on cases with a known answer, and the DAVIS geometry helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from selfpatch.evaluate.davis import (
    PropagationSettings,
    davis_palette,
    labels_to_onehot,
    neighbourhood_mask,
    propagate_frame,
    propagate_labels,
    propagation_size,
    soft_to_labels,
    write_palette_png,
)
from selfpatch.evaluate.jf import DavisScores, sequence_scores


def translated_video(frames=8, size=16, dim=64, seed=0):
    """Two objects translating one patch per frame over a static background.

    Each object patch carries a unique random feature tied to (object, position within the
    object), so it has exactly one true match in every earlier frame; all background patches
    share one feature vector (any of them is a correct match). Returns features
    ``(T, size, size, D)`` and patch labels ``(T, size, size)``.
    """
    g = torch.Generator().manual_seed(seed)
    background = torch.randn(dim, generator=g)
    objects = {1: torch.randn(6, 5, dim, generator=g), 2: torch.randn(5, 6, dim, generator=g)}
    feats = background.expand(frames, size, size, dim).clone()
    labels = torch.zeros(frames, size, size, dtype=torch.long)
    for t in range(frames):
        for obj, (y, x) in ((1, (1 + t // 2, 1 + t)), (2, (9, 9 - t // 2))):
            code = objects[obj]
            feats[t, y : y + code.shape[0], x : x + code.shape[1]] = code
            labels[t, y : y + code.shape[0], x : x + code.shape[1]] = obj
    return feats, labels


def score(gt: np.ndarray, pred: np.ndarray) -> dict:
    scores = DavisScores()
    scores.add_sequence("v", *sequence_scores(gt, pred))
    return scores.global_results()


@pytest.mark.parametrize("radius", [12, 2])
def test_translated_video_is_propagated_exactly(radius):
    feats, labels = translated_video()
    first = torch.nn.functional.one_hot(labels[0], 3).permute(2, 0, 1).float()
    soft = propagate_labels(feats, first, PropagationSettings(size_mask_neighborhood=radius))
    assert soft.shape == (8, 3, 16, 16)
    assert torch.equal(soft.argmax(1), labels)
    # Scored at patch resolution the answer is exact.
    pred = np.stack([soft_to_labels(s, 1, (16, 16)) for s in soft])
    res = score(labels.numpy(), pred)
    assert res["J&F-Mean"] == pytest.approx(1.0)
    # At pixel level (patch 8, 128 px frames) only the protocol's bilinear upsampling rounds
    # the objects' corners.
    gt = labels.numpy().repeat(8, 1).repeat(8, 2)
    pred = np.stack([soft_to_labels(s, 8, gt.shape[1:]) for s in soft])
    res = score(gt, pred)
    assert res["J-Mean"] > 0.98 and res["F-Mean"] > 0.98 and res["J&F-Mean"] > 0.98


def test_window_restricts_sources():
    # The only source patch similar to the target lies 3 columns away: with radius 2 it is
    # out of reach and the closest in-window sources (all label 0) win.
    d = 4
    src = torch.zeros(1, 1 * 6, d)
    src[0, :, 1] = 1.0
    src[0, 5] = torch.tensor([1.0, 0, 0, 0])
    src = torch.nn.functional.normalize(src, dim=-1)
    labels = torch.zeros(1, 2, 6)
    labels[0, 0] = 1
    labels[0, 0, 5], labels[0, 1, 5] = 0, 1
    target = src[0].clone()
    target[2] = torch.tensor([1.0, 0, 0, 0])
    mask = neighbourhood_mask(1, 6, 2)
    out = propagate_frame(target, src, labels, mask, topk=1, temperature=0.1)
    assert out[:, 2].argmax() == 0
    out = propagate_frame(target, src, labels, None, topk=1, temperature=0.1)
    assert out[:, 2].argmax() == 1


def test_topk_weights_by_hand():
    # One target, three sources with cosines 1, 0.5, 0: top-2 at temperature 0.5 weigh
    # e^2 and e^1, normalised.
    target = torch.tensor([[1.0, 0.0]])
    src = torch.tensor([[[1.0, 0.0], [0.5, 0.75**0.5], [0.0, 1.0]]])
    labels = torch.eye(3)[None]  # source m has label m
    out = propagate_frame(target, src, labels, None, topk=2, temperature=0.5)
    e2, e1 = np.exp(2.0), np.exp(1.0)
    assert out[:, 0].tolist() == pytest.approx([e2 / (e1 + e2), e1 / (e1 + e2), 0.0])


def test_neighbourhood_mask_is_a_square_window():
    m = neighbourhood_mask(5, 5, 1).reshape(5, 5, 5, 5)
    assert m[2, 2].sum() == 9 and m[0, 0].sum() == 4 and m[0, 2].sum() == 6
    assert neighbourhood_mask(3, 3, 0).all()


def test_context_is_first_plus_last_n_frames():
    # Frame 3 resembles only frame 1's patch 0 (label 1, copied from frame 0's patch 1). With
    # n_last_frames=2 the context of frame 3 is frames 0, 1, 2 and the label is 1; with 1 it is
    # frames 0 and 2, where the best (weak) match has label 0.
    e = torch.eye(6)
    frames = [
        [e[0], e[1]],
        [e[1] + 0.5 * e[2], e[0]],
        [e[0], e[0]],
        [e[2] + 0.1 * e[0], e[0]],
    ]
    feats = torch.stack([torch.stack(f) for f in frames])[:, None]  # (T, 1, 2, D)
    first = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # patch 0 label 0, patch 1 label 1
    settings = PropagationSettings(topk=1, n_last_frames=2)
    assert propagate_labels(feats, first, settings)[3, :, 0, 0].argmax() == 1
    settings.n_last_frames = 1
    soft = propagate_labels(feats, first, settings)
    assert soft[1, :, 0, 0].argmax() == 1 and soft[3, :, 0, 0].argmax() == 0


def test_propagation_size_follows_dino():
    # DAVIS 480p frames: short side 480, long side 854 * 480 / 480 floored to 64 -> 832.
    assert propagation_size(480, 854, 8, 480) == (480, 832)
    assert propagation_size(854, 480, 16, 480) == (832, 480)
    assert propagation_size(128, 128, 8, None) == (128, 128)
    assert propagation_size(100, 130, 16, None) == (96, 128)


def test_onehot_and_upsampling():
    lab = np.zeros((16, 16), np.uint8)
    lab[:8, 8:] = 2
    oh = labels_to_onehot(lab, (2, 2), 3)
    assert oh.shape == (3, 2, 2) and oh[2, 0, 1] == 1 and oh[0, 1, 1] == 1
    assert np.array_equal(soft_to_labels(oh, 1, (2, 2)), [[0, 2], [0, 0]])
    # DINO's bilinear upsampling rounds the single-patch corner a little (by the diagonal).
    back = soft_to_labels(oh, 8, (16, 16))
    assert (back != lab).sum() == 6 and np.array_equal(back[:4], lab[:4])
    # Original frames that are not a multiple of the grid are resized back exactly.
    assert soft_to_labels(oh, 8, (20, 24)).shape == (20, 24)


def test_palette_png_roundtrip(tmp_path):
    pal = davis_palette()
    assert pal[0].tolist() == [0, 0, 0] and pal[1].tolist() == [128, 0, 0]
    assert pal[2].tolist() == [0, 128, 0] and pal[3].tolist() == [128, 128, 0]
    lab = np.array([[0, 1], [2, 3]], np.uint8)
    write_palette_png(tmp_path / "a.png", lab)
    img = Image.open(tmp_path / "a.png")
    assert img.mode == "P" and np.array_equal(np.asarray(img), lab)


def test_soft_to_labels_picks_the_first_of_tied_channels_and_matches_a_plain_argmax():
    # Channels 1 and 2 identical: after min-max normalisation they tie everywhere; the first
    # wins, as torch.argmax / np.argmax define it.
    gen = torch.Generator().manual_seed(0)
    soft = torch.rand(4, 6, 5, generator=gen)
    soft[2] = soft[1]
    ids = soft_to_labels(soft, 4, (24, 20))
    up = torch.nn.functional.interpolate(soft[None], scale_factor=4, mode="bilinear",
                                         align_corners=False)[0].numpy()
    lo, hi = up.min(axis=(1, 2), keepdims=True), up.max(axis=(1, 2), keepdims=True)
    expected = np.argmax((up - lo) / (hi - lo), axis=0)
    assert np.array_equal(ids, expected) and not (ids == 2).any()
