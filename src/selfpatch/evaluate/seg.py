"""``eval seg``: semantic segmentation with a linear probe on frozen patch tokens.

The paper fine-tunes a Semantic FPN on ADE20K; at our scale we train only a linear classifier
(a 1x1 convolution on the ``(h, w, D)`` token grid) on top of the frozen backbone:

- features are extracted once (images resized to ``image_size``) and cached in memory
  (float32, or float16 / bfloat16 with ``feature_dtype`` to halve the cache of large sets);
- each feature dimension is standardised with the training-set mean / std (a fixed affine
  map, i.e. a frozen BatchNorm, so that one learning rate suits every backbone);
- logits ``(B, C, h, w)`` are upsampled bilinearly to the label size and trained with
  cross-entropy over the labelled pixels (computed only there: :func:`upsampled_logits_at`);
  label 0 is ignored and classes ``1..C`` become ``0..C-1`` by default
  (ADE20K's ``reduce_zero_label``); 255 is always ignored;
- evaluation upsamples the logits to each validation label's *original* size and accumulates
  one confusion matrix (explicit ``torch.bincount``, no extra dependency), from which mIoU,
  aAcc and mAcc are computed as mmsegmentation does (classes absent from both GT and
  prediction are left out of the means).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from selfpatch.errors import SelfPatchError
from selfpatch.evaluate.datasets import read_label_png
from selfpatch.evaluate.features import extract_patch_features, to_normalized_tensor
from selfpatch.io import IMAGE_SUFFIXES, read_rgb

#: Label value ignored by the loss and the metrics (after the zero-label reduction).
IGNORE_INDEX = 255
#: Storage types of the feature cache (the probe itself always computes in float32).
FEATURE_DTYPES = {"float32": torch.float32, "float16": torch.float16,
                  "bfloat16": torch.bfloat16}
#: ADE20K split folder names.
SPLITS = {"train": "training", "val": "validation"}


@dataclass
class ProbeSettings:
    """Linear-probe training settings."""

    epochs: int = 10
    lr: float = 1e-2
    weight_decay: float = 1e-4
    batch_size: int = 32
    seed: int = 0
    reduce_zero_label: bool = True
    image_size: int | None = None  # None: native size of the first training image
    feature_dtype: str = "float32"  # storage of the cached features: one of FEATURE_DTYPES

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SegSplit:
    """One split in memory: cached features, training-size labels, original labels."""

    features: torch.Tensor  # (M, h, w, D)
    labels: torch.Tensor  # (M, H', W') at the resized image size (for training), uint8 ids
    full_labels: list[np.ndarray]  # M arrays (H_i, W_i), original size (for the metrics);
    # empty for the training split, which the metrics never read
    files: list[Path]


def list_seg_pairs(root: str | Path, split: str, limit: int = 0) -> list[tuple[Path, Path]]:
    """``(image, annotation)`` pairs of an ADE20K-layout split (``train`` or ``val``).

    Images are ``images/<training|validation>/*.jpg`` and each needs
    ``annotations/<same folder>/<same stem>.png``. ``limit > 0`` keeps the first files only.
    """
    root = Path(root)
    folder = SPLITS.get(split, split)
    image_dir, anno_dir = root / "images" / folder, root / "annotations" / folder
    if not image_dir.is_dir():
        raise SelfPatchError(f"{image_dir} does not exist; --seg-root must hold the ADE20K "
                             f"layout images/{folder}/ and annotations/{folder}/")
    images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise SelfPatchError(f"{image_dir} holds no .jpg/.png images; add the {split} images")
    if limit > 0:
        images = images[:limit]
    pairs = []
    for img in images:
        anno = anno_dir / f"{img.stem}.png"
        if not anno.is_file():
            raise SelfPatchError(f"image {img} has no annotation {anno}; add it or remove "
                                 "the image")
        pairs.append((img, anno))
    return pairs


def read_label(path: Path, num_classes: int, reduce_zero_label: bool) -> np.ndarray:
    """Label PNG -> ``(H, W)`` int64 train ids in ``0..C-1`` or :data:`IGNORE_INDEX`.

    Raises on any value outside the class range, naming the file and the value.
    """
    raw = read_label_png(path)
    top = num_classes if reduce_zero_label else num_classes - 1
    bad = raw[((raw > top) & (raw != IGNORE_INDEX)) | (raw < 0)]
    if bad.size:
        raise SelfPatchError(
            f"label file {path} holds value {int(bad.max())} outside 0..{top} "
            f"({num_classes} classes{', 0 = ignore' if reduce_zero_label else ''}, 255 = "
            "ignore); fix the file or pass the right --num-classes"
        )
    if reduce_zero_label:
        # 0 -> ignore, 1..C -> 0..C-1; 255 stays ignore.
        return np.where((raw == 0) | (raw == IGNORE_INDEX), IGNORE_INDEX, raw - 1)
    return raw


def native_size(path: Path, patch: int) -> int:
    """Side used when ``image_size`` is None: the first image's short side, floored to ``patch``."""
    img = read_rgb(path)
    side = min(img.height, img.width)
    return max(patch, side - side % patch)


def label_dtype(num_classes: int) -> torch.dtype:
    """Smallest integer type for train ids ``0..C-1`` and :data:`IGNORE_INDEX`: uint8 up to
    255 classes (ADE20K's 150 included) keeps a split's labels at 1/8 of int64's memory."""
    return torch.uint8 if num_classes <= IGNORE_INDEX else torch.int64


def load_split(backbone: torch.nn.Module, pairs: list[tuple[Path, Path]], size: int,
               num_classes: int, reduce_zero_label: bool, device: torch.device | str,
               batch_size: int, keep_full: bool = True,
               feature_dtype: torch.dtype = torch.float32) -> SegSplit:
    """Read, check and encode one split (features cached in memory as ``feature_dtype``;
    labels at the input size and, with ``keep_full``, also at their original size for the
    metrics)."""
    full_labels: list[np.ndarray] = []
    small_labels: list[torch.Tensor] = []
    dtype = label_dtype(num_classes)
    np_dtype = np.uint8 if dtype == torch.uint8 else np.int64

    def images():
        for img_path, anno_path in pairs:
            img = read_rgb(img_path)
            label = read_label(anno_path, num_classes, reduce_zero_label)
            if label.shape != (img.height, img.width):
                raise SelfPatchError(
                    f"image {img_path} is {img.height}x{img.width} but its annotation "
                    f"{anno_path} is {label.shape[0]}x{label.shape[1]}; they must match"
                )
            if keep_full:
                full_labels.append(label.astype(np_dtype))
            small = torch.from_numpy(label)[None, None].float()
            small = F.interpolate(small, size=(size, size), mode="nearest")
            small_labels.append(small[0, 0].to(dtype))
            yield to_normalized_tensor(img, (size, size))

    feats = extract_patch_features(backbone, images(), batch_size, device, feature_dtype)
    return SegSplit(feats, torch.stack(small_labels), full_labels, [p for p, _ in pairs])


class LinearProbe(nn.Module):
    """Standardisation + 1x1 convolution: ``(B, h, w, D)`` tokens -> ``(B, C, h, w)`` logits."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, num_classes: int) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.head = nn.Linear(mean.shape[0], num_classes)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = (feats.float() - self.mean) / self.std
        return self.head(x).permute(0, 3, 1, 2)


def bilinear_taps(size_in: int, size_out: int) -> tuple[torch.Tensor, torch.Tensor,
                                                         torch.Tensor]:
    """1-D bilinear resizing with ``align_corners=False``, as ``F.interpolate`` computes it.

    Output sample ``i`` is ``(1 - frac[i]) * x[lo[i]] + frac[i] * x[hi[i]]`` with source
    coordinate ``(i + 0.5) * size_in / size_out - 0.5`` clamped at 0 and at the last input.

    Returns:
        ``(lo, hi, frac)``, each ``(size_out,)`` (int64, int64, float32).
    """
    scale = size_in / size_out
    src = ((torch.arange(size_out, dtype=torch.float64) + 0.5) * scale - 0.5).clamp_min(0)
    lo = src.floor().long().clamp_max(size_in - 1)
    hi = (lo + 1).clamp_max(size_in - 1)
    return lo, hi, (src - lo).float()


def upsampled_logits_at(logits: torch.Tensor, size: tuple[int, int],
                        index: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Bilinearly upsampled logits, evaluated only at the pixels in ``index``.

    Args:
        logits: ``(B, C, h, w)`` probe logits on the token grid.
        size: ``(H, W)``, the label size they are upsampled to.
        index: ``(b, y, x)`` coordinates of the wanted label pixels, each ``(P,)``.

    Returns:
        ``(P, C)``: ``F.interpolate(logits, size, mode="bilinear")`` at those pixels (equal up
        to float rounding). Each pixel mixes its four grid neighbours; skipping the ignored
        pixels (about 3/4 of a built-in scene), which the loss discards anyway, makes the
        probe's training several times faster than upsampling whole label maps.
    """
    bsz, chans, h, w = logits.shape
    b, y, x = index
    dev = logits.device
    # Along x for every grid row (small: B x C x h x W), then along y only where needed.
    x0, x1, fx = bilinear_taps(w, size[1])
    cols = torch.arange(size[1])
    mix = torch.zeros(w, size[1])  # (w, W): output column i mixes inputs x0[i] and x1[i]
    mix.index_put_((x0, cols), 1 - fx, accumulate=True)
    mix.index_put_((x1, cols), fx, accumulate=True)
    rows = torch.einsum("bchw,wW->bhWc", logits, mix.to(dev))
    rows = rows.reshape(bsz * h * size[1], chans)  # (B*h*W, C)
    y0, y1, fy = (t.to(dev)[y] for t in bilinear_taps(h, size[0]))
    base = b * (h * size[1]) + x
    top = rows.index_select(0, base + y0 * size[1])
    bottom = rows.index_select(0, base + y1 * size[1])
    return top + (bottom - top) * fy[:, None]


def feature_mean_std(feats: torch.Tensor, chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and (unbiased) std of ``(M, h, w, D)`` features, as float32 ``(D,)``.

    Accumulated in float64 over ``chunk`` images at a time, so a float16 cache is never
    copied whole to float32 (that copy would undo the memory it saves).
    """
    d = feats.shape[-1]
    total = torch.zeros(d, dtype=torch.float64)
    total_sq = torch.zeros(d, dtype=torch.float64)
    for start in range(0, feats.shape[0], chunk):
        x = feats[start : start + chunk].reshape(-1, d).double()
        total += x.sum(0)
        total_sq += (x * x).sum(0)
    n = feats[..., 0].numel()
    mean = total / n
    var = (total_sq - n * mean * mean) / max(n - 1, 1)
    return mean.float(), var.clamp_min(0).sqrt().float().clamp_min(1e-6)


def train_probe(train: SegSplit, num_classes: int, settings: ProbeSettings,
                device: torch.device | str = "cpu") -> tuple[LinearProbe, float]:
    """Train the probe with AdamW and a cosine schedule; returns it and the last epoch's loss.

    The loss is the cross-entropy of the bilinearly upsampled logits over the labelled pixels
    of each batch (pixels with :data:`IGNORE_INDEX` do not count), averaged over those pixels.
    """
    feats = train.features
    mean, std = feature_mean_std(feats)
    label_size = tuple(train.labels.shape[-2:])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        probe = LinearProbe(mean, std, num_classes).to(device)
        gen = torch.Generator().manual_seed(settings.seed)
        opt = torch.optim.AdamW(probe.head.parameters(), lr=settings.lr,
                                weight_decay=settings.weight_decay)
        m = feats.shape[0]
        steps = max(1, settings.epochs * math.ceil(m / settings.batch_size))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        last = float("nan")
        for _ in range(settings.epochs):
            order = torch.randperm(m, generator=gen)
            total, count = 0.0, 0
            for start in range(0, m, settings.batch_size):
                idx = order[start : start + settings.batch_size]
                labels = train.labels[idx].to(device).long()
                where = torch.nonzero(labels != IGNORE_INDEX, as_tuple=True)
                if where[0].numel() == 0:  # a batch with only ignored pixels
                    continue
                logits = upsampled_logits_at(probe(feats[idx].to(device)), label_size, where)
                loss = F.cross_entropy(logits, labels[where])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item() * len(idx)
                count += len(idx)
            last = total / max(count, 1)
    return probe.eval(), last


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """``(C, C)`` int64 counts: rows = ground truth, columns = prediction; ignored pixels out."""
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    valid = (target != ignore_index) & (target >= 0) & (target < num_classes)
    idx = target[valid] * num_classes + pred[valid]
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes,
                                                                             num_classes)


def segmentation_metrics(conf: torch.Tensor) -> dict:
    """mIoU, aAcc, mAcc (percent) and per-class IoU / Acc from a confusion matrix.

    IoU_c = TP / (GT + Pred - TP), Acc_c = TP / GT; classes with an empty denominator are NaN
    and left out of the means (mmsegmentation's ``nanmean``); aAcc = sum TP / sum GT.
    """
    conf = conf.double()
    tp = conf.diag()
    gt = conf.sum(1)
    union = gt + conf.sum(0) - tp
    iou = torch.where(union > 0, tp / union.clamp_min(1), torch.tensor(float("nan")))
    acc = torch.where(gt > 0, tp / gt.clamp_min(1), torch.tensor(float("nan")))
    total = conf.sum()
    return {
        "mIoU": float(100 * iou.nanmean()),
        "aAcc": float(100 * tp.sum() / total) if total > 0 else float("nan"),
        "mAcc": float(100 * acc.nanmean()),
        "per_class_IoU": [float(100 * v) for v in iou],
        "per_class_Acc": [float(100 * v) for v in acc],
    }


@torch.no_grad()
def evaluate_probe(probe: LinearProbe, split: SegSplit, num_classes: int,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """Confusion matrix of the probe on a split, logits upsampled to each original label size."""
    conf = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    for i, label in enumerate(split.full_labels):
        logits = probe(split.features[i : i + 1].to(device))
        logits = F.interpolate(logits, size=label.shape, mode="bilinear", align_corners=False)
        conf += confusion_matrix(logits.argmax(1).cpu(), torch.from_numpy(label).long(),
                                 num_classes)
    return conf


def evaluate_seg(backbone: torch.nn.Module, root: str | Path, num_classes: int,
                 settings: ProbeSettings | None = None, device: torch.device | str = "cpu",
                 batch_size: int = 32, train_limit: int = 0, val_limit: int = 0,
                 class_names: tuple[str, ...] | None = None, log=print) -> dict:
    """Train the linear probe on ``train`` and score it on ``val`` of an ADE20K-layout root.

    Returns:
        ``{"mIoU", "aAcc", "mAcc" (percent), "per_class": [...], "settings": {...}, ...}``.
    """
    settings = settings or ProbeSettings()
    if num_classes < 1:
        raise SelfPatchError(f"--num-classes must be at least 1, got {num_classes}")
    start = time.perf_counter()
    train_pairs = list_seg_pairs(root, "train", train_limit)
    val_pairs = list_seg_pairs(root, "val", val_limit)
    size = settings.image_size or native_size(train_pairs[0][0], backbone.patch_size)
    if size % backbone.patch_size:
        raise SelfPatchError(f"--image-size {size} is not a multiple of the patch size "
                             f"{backbone.patch_size}; choose a multiple")
    if settings.feature_dtype not in FEATURE_DTYPES:
        raise SelfPatchError(f"--seg-feature-dtype must be one of {', '.join(FEATURE_DTYPES)}, "
                             f"got {settings.feature_dtype}")
    dtype = FEATURE_DTYPES[settings.feature_dtype]
    train = load_split(backbone, train_pairs, size, num_classes, settings.reduce_zero_label,
                       device, batch_size, keep_full=False, feature_dtype=dtype)
    val = load_split(backbone, val_pairs, size, num_classes, settings.reduce_zero_label,
                     device, batch_size, feature_dtype=dtype)
    t_feat = time.perf_counter() - start
    if log:
        log(f"seg: features of {len(train_pairs)} train / {len(val_pairs)} val images "
            f"({size}px) in {t_feat:.1f}s; training the probe")
    probe, loss = train_probe(train, num_classes, settings, device)
    metrics = segmentation_metrics(evaluate_probe(probe, val, num_classes, device))
    names = list(class_names) if class_names else [str(c) for c in range(num_classes)]
    if len(names) != num_classes:
        names = [str(c) for c in range(num_classes)]
    per_class = [{"class": n, "IoU": i, "Acc": a} for n, i, a in
                 zip(names, metrics.pop("per_class_IoU"), metrics.pop("per_class_Acc"))]
    return {
        **metrics,
        "per_class": per_class,
        "train_loss": loss,
        "settings": {**settings.to_dict(), "image_size": size, "num_classes": num_classes,
                     "root": str(root), "probe": "standardise + linear (1x1 conv)",
                     "optimizer": "AdamW, cosine schedule", "loss": "cross-entropy",
                     "upsampling": "bilinear to label size", "metrics": "confusion matrix"},
        "num_train": len(train_pairs),
        "num_val": len(val_pairs),
        "seconds": time.perf_counter() - start,
        "feature_seconds": t_feat,
    }
