"""Attention / PCA pictures: the top-fraction selection, PCA colours, and the figure files."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfpatch.errors import SelfPatchError
from selfpatch.evaluate.attention import (
    default_queries,
    evaluate_attention,
    parse_queries,
    pca_rgb,
    top_attention_mask,
)
from selfpatch.models.loading import load_backbone

sys.path.insert(0, str(Path(__file__).parent))
from test_eval_data import make_davis, make_seg  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def test_top_fraction_uses_head_mean_and_patch_block():
    # 1 prefix token + 10 patches, 2 heads. Query patch 3's head-averaged row over patches is
    # 0..9 scaled, so the top 10% (1 patch) is patch 9 and the top 30% patches 7, 8, 9. The
    # prefix column holds the largest weight but must not be counted.
    t = 11
    attn = torch.zeros(2, t, t)
    attn[0, 1 + 3, 1:] = torch.arange(10.0)
    attn[1, 1 + 3, 1:] = torch.arange(10.0) * 3
    attn[:, 1 + 3, 0] = 100.0
    assert top_attention_mask(attn, 3, 1, 0.1).nonzero().flatten().tolist() == [9]
    assert top_attention_mask(attn, 3, 1, 0.3).nonzero().flatten().tolist() == [7, 8, 9]
    # Heads disagreeing: head 0 prefers patch 0, head 1 patch 1 much more -> mean picks 1.
    attn = torch.zeros(2, 4, 4)
    attn[0, 0, 0], attn[1, 0, 1] = 0.6, 1.0
    assert top_attention_mask(attn, 0, 0, 0.25).nonzero().flatten().tolist() == [1]


def test_pca_rgb_range_and_structure():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(16, generator=g), torch.randn(16, generator=g)
    feats = torch.stack([a, b]).repeat(8, 1).reshape(2, 2, 4, 16)  # two token types
    rgb = pca_rgb(feats + 1e-3 * torch.randn(feats.shape, generator=g))
    assert rgb.shape == (2, 2, 4, 3)
    assert rgb.min() >= 0 and rgb.max() <= 1
    # The first component separates the two token types to the ends of the range.
    first = rgb[..., 0].flatten()
    assert (first.max() - first.min()) > 0.99


def test_default_queries():
    lab = np.zeros((32, 32), np.uint8)
    lab[4:13, 4:13] = 3  # biggest, centroid pixel (8, 8) -> patch (1, 1)
    lab[24:31, 24:31] = 1  # centroid (27, 27) -> patch (3, 3)
    lab[0, 31] = 255  # ignored
    assert default_queries(lab, 8, (4, 4)) == [(1, 1), (3, 3)]
    # A ring: its centroid is off the object, the query is still on it.
    ring = np.zeros((32, 32), np.uint8)
    ring[8:24, 8:24] = 2
    ring[10:22, 10:22] = 0
    (r, c), = default_queries(ring, 8, (4, 4))
    assert ring[r * 8 : r * 8 + 8, c * 8 : c * 8 + 8].any()
    # No annotation: fixed points.
    assert default_queries(None, 8, (10, 10)) == [(5, 5), (3, 3), (7, 7)]
    assert default_queries(None, 8, (4, 4)) == [(2, 2), (1, 1)]


def test_parse_queries():
    assert parse_queries("0.5,0.5;0.1,0.9") == [(0.5, 0.5), (0.1, 0.9)]
    with pytest.raises(SelfPatchError, match="row,col"):
        parse_queries("0.5")
    with pytest.raises(SelfPatchError, match="outside"):
        parse_queries("1.5,0.2")


def test_figures_are_written(tmp_path):
    seg = make_seg(tmp_path / "ade", num_train=1, num_val=2)
    davis = make_davis(tmp_path / "davis", num_seqs=1, num_frames=4)
    backbone = load_backbone("random:vit_tiny:8")
    out = evaluate_attention(backbone, tmp_path / "pics", seg, davis, num_images=2, log=None)
    for name in ("attention", "pca", "propagation"):
        path = Path(out["pictures"][name])
        assert path.is_file()
        with Image.open(path) as img:
            assert img.width > 100 and img.height > 100


def test_large_images_are_shrunk_for_the_pictures(tmp_path):
    from selfpatch.evaluate.attention import MAX_SIDE, sample_images

    root = make_seg(tmp_path / "ade", num_train=1, num_val=1, size=600)
    images, labels = sample_images(root, 1, 16)
    assert max(images[0].size) <= MAX_SIDE and images[0].width % 16 == 0
    assert labels[0].shape == (images[0].height, images[0].width)
