"""Weighted k-NN: hand-computed votes, separable clusters, the ImageFolder reader."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from selfpatch.errors import SelfPatchError
from selfpatch.evaluate.knn import evaluate_knn, knn_scores, list_image_folder, topk_accuracy

sys.path.insert(0, str(Path(__file__).parent))
from test_eval_data import make_knn  # noqa: E402
from test_eval_seg import ColourBackbone  # noqa: E402


def test_votes_by_hand():
    # Query e1; training points e1 (class 0), (e1 + e2)/sqrt2 (class 1), e2 (class 1).
    train = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])  # normalised inside
    labels = torch.tensor([0, 1, 1])
    query = torch.tensor([[2.0, 0.0]])
    s = knn_scores(train, labels, query, num_classes=2, k=2, temperature=0.5)
    assert s[0].tolist() == pytest.approx([math.exp(2.0), math.exp(math.sqrt(0.5) / 0.5)])
    s = knn_scores(train, labels, query, num_classes=2, k=3, temperature=0.5)
    assert s[0, 1] == pytest.approx(math.exp(math.sqrt(0.5) / 0.5) + 1.0)


def test_weighting_beats_majority():
    # One very close neighbour of class 0 outweighs two farther ones of class 1 at T=0.07:
    # exp(0.99/0.07) = 1.39e6 > 2 * exp(0.5/0.07) = 2.5e3.
    q = torch.tensor([[1.0, 0.0]])
    close = torch.tensor([[0.99, math.sqrt(1 - 0.99**2)]])
    far = torch.tensor([[0.5, math.sqrt(0.75)], [0.5, -math.sqrt(0.75)]])
    train = torch.cat([close, far])
    s = knn_scores(train, torch.tensor([0, 1, 1]), q, 2, k=3, temperature=0.07)
    assert s[0].tolist() == pytest.approx([math.exp(0.99 / 0.07), 2 * math.exp(0.5 / 0.07)],
                                          rel=1e-4)
    assert s.argmax(1).item() == 0
    # With a flat weighting (huge T) the majority wins.
    s = knn_scores(train, torch.tensor([0, 1, 1]), q, 2, k=3, temperature=1e6)
    assert s.argmax(1).item() == 1


def test_separable_clusters_are_classified_perfectly():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 16, generator=g) * 5
    train_y = torch.arange(5).repeat_interleave(30)
    test_y = torch.arange(5).repeat_interleave(10)
    train = centres[train_y] + torch.randn(150, 16, generator=g) * 0.3
    test = centres[test_y] + torch.randn(50, 16, generator=g) * 0.3
    top1, top5 = topk_accuracy(knn_scores(train, train_y, test, 5), test_y)
    assert top1 == 100.0 and top5 == 100.0


def test_topk_accuracy_by_hand():
    scores = torch.tensor([[0.1, 0.9, 0.0], [0.5, 0.3, 0.2]])
    top1, top5 = topk_accuracy(scores, torch.tensor([1, 1]))
    assert top1 == 50.0 and top5 == 100.0  # top-5 becomes top-3 with 3 classes


def test_image_folder_end_to_end(tmp_path):
    root = make_knn(tmp_path / "knn", num_classes=3, per_class=4)
    out = evaluate_knn(ColourBackbone(), root, log=None, batch_size=5)
    assert out["num_train"] == 12 and out["num_val"] == 6 and out["num_classes"] == 3
    assert out["top1"] == 100.0 and out["settings"]["embedding"] == "mean-pooled patch tokens"
    # Explicit embedder and centre crop path.
    out = evaluate_knn(ColourBackbone(), root, embed=lambda x: x.mean((2, 3)), image_size=16,
                       center_crop=True, log=None)
    assert out["top1"] == 100.0 and out["settings"]["image_size"] == 16


def test_val_class_missing_from_train(tmp_path):
    root = make_knn(tmp_path / "knn", num_classes=2)
    (root / "val" / "class_9").mkdir()
    with pytest.raises(SelfPatchError, match=r"class_9"):
        paths, labels, classes = list_image_folder(root, "train")
        list_image_folder(root, "val", classes)
