"""Segmentation probe: metrics against an independent confusion matrix, training, bad input."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from selfpatch.errors import SelfPatchError
from selfpatch.evaluate.seg import (
    FEATURE_DTYPES,
    IGNORE_INDEX,
    ProbeSettings,
    SegSplit,
    confusion_matrix,
    evaluate_probe,
    evaluate_seg,
    feature_mean_std,
    list_seg_pairs,
    load_split,
    segmentation_metrics,
    train_probe,
    upsampled_logits_at,
)

sys.path.insert(0, str(Path(__file__).parent))
from test_eval_data import make_seg  # noqa: E402


class ColourBackbone(torch.nn.Module):
    """Stand-in backbone: a patch's token is its mean colour (enough to separate the classes)."""

    patch_size = 4
    embed_dim = 3
    num_prefix_tokens = 0

    def grid_shape(self, height, width):
        return height // 4, width // 4

    def forward(self, images):
        pooled = F.avg_pool2d(images, 4)
        return pooled.flatten(2).transpose(1, 2)


def reference_metrics(pred: np.ndarray, target: np.ndarray, num_classes: int):
    """mIoU / aAcc / mAcc by plain loops over pixels and classes (independent of the module)."""
    conf = np.zeros((num_classes, num_classes), dtype=np.int64)
    for p, t in zip(pred.ravel(), target.ravel()):
        if t == IGNORE_INDEX:
            continue
        conf[t, p] += 1
    ious, accs = [], []
    for c in range(num_classes):
        tp = conf[c, c]
        gt = conf[c, :].sum()
        predicted = conf[:, c].sum()
        if gt + predicted - tp > 0:
            ious.append(tp / (gt + predicted - tp))
        if gt > 0:
            accs.append(tp / gt)
    a_acc = sum(conf[c, c] for c in range(num_classes)) / conf.sum()
    return 100 * np.mean(ious), 100 * a_acc, 100 * np.mean(accs), conf


def test_metrics_match_an_independent_confusion_matrix():
    rng = np.random.default_rng(0)
    c = 6
    target = rng.integers(0, c, size=(4, 17, 13))
    target[rng.random(target.shape) < 0.1] = IGNORE_INDEX
    target[target == 5] = 0  # class 5 absent from the GT ...
    pred = rng.integers(0, c - 1, size=target.shape)  # ... and from predictions: left out
    pred[0, 0, :4] = 4
    miou, aacc, macc, conf_ref = reference_metrics(pred, target, c)
    conf = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(target), c)
    assert np.array_equal(conf.numpy(), conf_ref)
    m = segmentation_metrics(conf)
    assert m["mIoU"] == pytest.approx(miou)
    assert m["aAcc"] == pytest.approx(aacc)
    assert m["mAcc"] == pytest.approx(macc)
    assert np.isnan(m["per_class_IoU"][5]) and np.isnan(m["per_class_Acc"][5])


def test_metrics_small_case_by_hand():
    # GT [0 0 1 1], prediction [0 1 1 1]: IoU0 = 1/2, IoU1 = 2/3; Acc0 = 1/2, Acc1 = 1.
    conf = confusion_matrix(torch.tensor([0, 1, 1, 1]), torch.tensor([0, 0, 1, 1]), 2)
    m = segmentation_metrics(conf)
    assert m["mIoU"] == pytest.approx(100 * (1 / 2 + 2 / 3) / 2)
    assert m["aAcc"] == pytest.approx(75.0)
    assert m["mAcc"] == pytest.approx(75.0)


def test_probe_learns_separable_features():
    # Token = one-hot of its class: a linear probe must reach 100% mIoU.
    g = torch.Generator().manual_seed(0)
    labels_small = torch.randint(0, 3, (8, 4, 4), generator=g)
    feats = F.one_hot(labels_small, 3).float() + 0.01 * torch.randn(8, 4, 4, 3, generator=g)
    full = labels_small.repeat_interleave(4, 1).repeat_interleave(4, 2)  # 16x16 labels
    split = SegSplit(feats, full, [lab.numpy() for lab in full], [])
    probe, loss = train_probe(split, 3, ProbeSettings(epochs=30, lr=0.05, batch_size=4))
    m = segmentation_metrics(evaluate_probe(probe, split, 3))
    assert m["mIoU"] > 90 and np.isfinite(loss)
    # Seeded: the same settings give the same probe.
    probe2, _ = train_probe(split, 3, ProbeSettings(epochs=30, lr=0.05, batch_size=4))
    assert torch.equal(probe.head.weight, probe2.head.weight)


def test_evaluate_seg_end_to_end(tmp_path):
    root = make_seg(tmp_path / "ade", num_train=8, num_val=4)
    out = evaluate_seg(ColourBackbone(), root, 3, ProbeSettings(epochs=15, lr=0.05), log=None)
    assert out["num_train"] == 8 and out["num_val"] == 4
    assert out["settings"]["image_size"] == 32
    assert out["mIoU"] > 50 and out["aAcc"] > 80
    assert len(out["per_class"]) == 3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_feature_mean_std_equals_the_whole_float64_computation(dtype):
    g = torch.Generator().manual_seed(0)
    feats = (3 + 2 * torch.randn(7, 3, 5, 4, generator=g)).to(dtype)
    feats[..., 3] = 1.5  # a constant dimension: std 0, clamped
    flat = feats.reshape(-1, 4).double()  # the independent computation, on the stored values
    mean, std = feature_mean_std(feats, chunk=2)  # chunks that do not divide M
    assert mean.dtype == std.dtype == torch.float32
    torch.testing.assert_close(mean.double(), flat.mean(0), rtol=0, atol=1e-6)
    torch.testing.assert_close(std[:3].double(), flat.std(0)[:3], rtol=1e-6, atol=1e-6)
    assert std[3] == pytest.approx(1e-6)


@pytest.mark.parametrize("name", ["float16", "bfloat16"])
def test_half_precision_feature_cache_stores_half_and_scores_like_float32(tmp_path, name):
    root = make_seg(tmp_path / "ade", num_train=8, num_val=4)
    pairs = list_seg_pairs(root, "val")
    half = load_split(ColourBackbone(), pairs, 32, 3, True, "cpu", 4,
                      feature_dtype=FEATURE_DTYPES[name])
    full = load_split(ColourBackbone(), pairs, 32, 3, True, "cpu", 4)
    assert half.features.dtype == FEATURE_DTYPES[name] and full.features.dtype == torch.float32
    assert half.features.element_size() * 2 == full.features.element_size()
    torch.testing.assert_close(half.features.float(), full.features, rtol=1e-2, atol=1e-2)
    settings = ProbeSettings(epochs=15, lr=0.05)
    ref = evaluate_seg(ColourBackbone(), root, 3, settings, log=None)
    out = evaluate_seg(ColourBackbone(), root, 3, ProbeSettings(epochs=15, lr=0.05,
                                                                feature_dtype=name), log=None)
    assert out["settings"]["feature_dtype"] == name
    assert out["mIoU"] > 50 and abs(out["mIoU"] - ref["mIoU"]) < 5


def test_unknown_feature_dtype_is_a_one_line_error(tmp_path):
    root = make_seg(tmp_path / "ade", num_train=2, num_val=2)
    with pytest.raises(SelfPatchError, match="--seg-feature-dtype must be one of"):
        evaluate_seg(ColourBackbone(), root, 3, ProbeSettings(feature_dtype="int8"), log=None)


def test_image_label_size_mismatch_names_both_files(tmp_path):
    root = make_seg(tmp_path / "ade", num_train=2, num_val=2)
    anno = root / "annotations" / "training" / "img_0001.png"
    Image.fromarray(np.zeros((20, 32), np.uint8), mode="L").save(anno)
    pairs = list_seg_pairs(root, "train")
    with pytest.raises(SelfPatchError, match=r"img_0001\.jpg.*32x32.*img_0001\.png.*20x32"):
        load_split(ColourBackbone(), pairs, 32, 3, True, "cpu", 4)


def test_label_out_of_range_during_evaluation(tmp_path):
    root = make_seg(tmp_path / "ade", num_train=2, num_val=2, num_classes=3)
    with pytest.raises(SelfPatchError, match=r"img_0000\.png.*value 3"):
        evaluate_seg(ColourBackbone(), root, 2, ProbeSettings(epochs=1), log=None)


@pytest.mark.parametrize("grid,size", [((12, 12), (192, 192)), ((7, 9), (50, 61)),
                                       ((6, 6), (6, 6)), ((24, 20), (16, 15)), ((1, 3), (8, 9))])
def test_upsampled_logits_at_equals_interpolate_at_those_pixels(grid, size):
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, *grid, generator=gen)
    where = torch.nonzero(torch.rand(3, *size, generator=gen) > 0.7, as_tuple=True)
    full = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    ours = upsampled_logits_at(logits, size, where)
    assert ours.shape == (where[0].numel(), 4)
    assert torch.allclose(ours, full.permute(0, 2, 3, 1)[where], atol=1e-5)


def test_probe_loss_and_gradient_equal_the_full_ignore_index_cross_entropy():
    """Training only on labelled pixels is the same objective as upsampling everything and
    letting cross_entropy ignore label 255 (values and gradients)."""
    gen = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 5, (2, 40, 36), generator=gen)
    labels[torch.rand(2, 40, 36, generator=gen) > 0.3] = IGNORE_INDEX
    base = torch.randn(2, 5, 5, 6, generator=gen)
    a, b = base.clone().requires_grad_(True), base.clone().requires_grad_(True)
    full = F.interpolate(a, size=(40, 36), mode="bilinear", align_corners=False)
    ref = F.cross_entropy(full, labels, ignore_index=IGNORE_INDEX)
    where = torch.nonzero(labels != IGNORE_INDEX, as_tuple=True)
    ours = F.cross_entropy(upsampled_logits_at(b, (40, 36), where), labels[where])
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)
    ref.backward()
    ours.backward()
    assert torch.allclose(a.grad, b.grad, atol=1e-6)


def test_split_labels_are_compact_and_exact(tmp_path):
    """Labels are kept as uint8 (1/8 of int64's memory, which matters for ADE20K's 20 000
    training images) with the same values as the int64 ids; the training split keeps no
    full-size copy."""
    root = make_seg(tmp_path / "ade", num_train=3, num_val=2)
    pairs = list_seg_pairs(root, "train")
    split = load_split(ColourBackbone(), pairs, 16, 3, True, "cpu", 4)
    train = load_split(ColourBackbone(), pairs, 16, 3, True, "cpu", 4, keep_full=False)
    assert split.labels.dtype == torch.uint8 and train.full_labels == []
    assert torch.equal(split.labels, train.labels)
    for i, (_, anno) in enumerate(pairs):
        raw = np.array(Image.open(anno)).astype(np.int64)
        ids = np.where((raw == 0) | (raw == 255), IGNORE_INDEX, raw - 1)  # by hand
        assert np.array_equal(split.full_labels[i], ids)
        # nearest resize to 16 px: pixel i takes source pixel floor(i * 32 / 16)
        assert np.array_equal(split.labels[i].numpy(), ids[::2, ::2])
