"""``selfpatch finetune seg``: Semantic FPN fine-tuned end to end on ADE20K-layout data.

The backbone (any checkpoint this project writes, an export, or ``random:ARCH:PATCH``) is
trained together with the pyramid and the head, as the paper's Tab. 2 does; metrics (mIoU,
aAcc, mAcc) come from the same confusion-matrix code as the linear probe
(:mod:`selfpatch.evaluate.seg`), with ADE20K's ``reduce_zero_label``. Two presets:

- ``paper``: the paper's mmseg schedule (``semfpn_vit-s16_512x512_40k_ade20k``): 512 px crops,
  40k iterations, batch 32 (per process here: ``--batch-size``), AdamW lr 6e-5, weight decay
  0.01 (none on position embeddings, tokens and norms), linear warm-up over 1500 iterations,
  then poly decay (power 1); random scale 0.5-2.0 + crop + flip. For GPU users.
- ``cpu``: minutes on a laptop: the built-in scenes at their evaluation size, 300 iterations,
  batch 8, lr 3e-4 (a short run needs a larger step), flips only.

What differs from mmseg's pipeline: images are square-resized rather than resized on the
short side, and mmseg's photometric distortion is left out.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from selfpatch.errors import SelfPatchError
from selfpatch.evaluate.features import to_normalized_tensor
from selfpatch.evaluate.seg import (
    IGNORE_INDEX,
    confusion_matrix,
    list_seg_pairs,
    read_label,
    segmentation_metrics,
)
from selfpatch.finetune.loop import (
    optimisation_step,
    parameter_groups,
    save_finetuned,
    write_report,
)
from selfpatch.finetune.semantic_fpn import SemanticFPN
from selfpatch.io import read_rgb
from selfpatch.models.loading import load_backbone
from selfpatch.models.pyramid import ViTFeaturePyramid


@dataclass(frozen=True)
class FinetuneSegSettings:
    """Schedule and data geometry of one fine-tuning run (``PRESETS`` holds the two named)."""

    image_size: int = 192  # square side fed to the network (multiple of 32 and the patch)
    iters: int = 300
    batch_size: int = 8
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup_iters: int = 30
    scale_range: tuple[float, float] = (1.0, 1.0)  # random rescale before the crop
    pyramid: str = "simple"
    reduce_zero_label: bool = True
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS = {
    "cpu": FinetuneSegSettings(),
    "paper": FinetuneSegSettings(image_size=512, iters=40000, batch_size=32, lr=6e-5,
                                 weight_decay=0.01, warmup_iters=1500, scale_range=(0.5, 2.0)),
}


def _pair(image: Path, label: Path, settings: FinetuneSegSettings, num_classes: int,
          rng: random.Random | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One ``(3, S, S)`` normalised image and ``(S, S)`` int64 label; with ``rng`` the
    training augmentation (random scale, random crop back to S, horizontal flip)."""
    size = settings.image_size
    img = to_normalized_tensor(read_rgb(image))[None]
    lab = torch.from_numpy(read_label(label, num_classes, settings.reduce_zero_label))
    lab = lab[None, None].float()
    scale = rng.uniform(*settings.scale_range) if rng else 1.0
    side = max(size, int(round(size * scale)))
    img = F.interpolate(img, size=(side, side), mode="bilinear", align_corners=False)
    lab = F.interpolate(lab, size=(side, side), mode="nearest")
    if side > size:
        y, x = rng.randrange(side - size + 1), rng.randrange(side - size + 1)
        img, lab = img[..., y:y + size, x:x + size], lab[..., y:y + size, x:x + size]
    if rng and rng.random() < 0.5:
        img, lab = img.flip(-1), lab.flip(-1)
    return img[0], lab[0, 0].long()


def lr_at(it: int, settings: FinetuneSegSettings) -> float:
    """Linear warm-up from ~0, then poly decay (power 1) to 0, per iteration."""
    if it < settings.warmup_iters:
        return settings.lr * (1e-6 + (1 - 1e-6) * it / settings.warmup_iters)
    return settings.lr * (1 - it / settings.iters)


@torch.no_grad()
def evaluate_model(model: torch.nn.Module, pairs: list[tuple[Path, Path]], num_classes: int,
                   settings: FinetuneSegSettings, device: torch.device) -> dict:
    """mIoU / aAcc / mAcc over ``pairs``, logits up-sampled to each label's original size."""
    model.eval()
    conf = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    for image, label in pairs:
        x, _ = _pair(image, label, settings, num_classes, None)
        full = torch.from_numpy(read_label(label, num_classes, settings.reduce_zero_label))
        logits = model(x[None].to(device))
        logits = F.interpolate(logits, size=full.shape, mode="bilinear", align_corners=False)
        conf += confusion_matrix(logits.argmax(1).cpu(), full, num_classes)
    return segmentation_metrics(conf)


def finetune_seg(source: str, root: str | Path, num_classes: int,
                 settings: FinetuneSegSettings, device: torch.device | str = "cpu",
                 train_limit: int = 0, val_limit: int = 0, log=print,
                 save_to: tuple[Path, int] | None = None) -> dict:
    """Fine-tune ``source``'s backbone with a Semantic FPN on ``root``; return the metrics
    (and, with ``save_to=(out, index)``, keep the fine-tuned model: ``save_finetuned``)."""
    if num_classes < 1:
        raise SelfPatchError(f"--num-classes must be at least 1, got {num_classes}")
    device = torch.device(device)
    torch.manual_seed(settings.seed)
    rng = random.Random(settings.seed)
    train_pairs = list_seg_pairs(root, "train", train_limit)
    val_pairs = list_seg_pairs(root, "val", val_limit)
    backbone = load_backbone(source, device)
    if settings.image_size % 32 or settings.image_size % backbone.patch_size:
        raise SelfPatchError(f"--image-size {settings.image_size} must be a multiple of 32 and "
                             f"of the patch size {backbone.patch_size}")
    backbone.requires_grad_(True)
    model = SemanticFPN(ViTFeaturePyramid(backbone, settings.pyramid), num_classes).to(device)
    optimizer = torch.optim.AdamW(parameter_groups(model, settings.weight_decay),
                                  lr=settings.lr)
    start, last_loss = time.perf_counter(), math.nan
    order: list[int] = []
    for it in range(settings.iters):
        model.train()
        if len(order) < settings.batch_size:
            order += rng.sample(range(len(train_pairs)), len(train_pairs))
        batch = [_pair(*train_pairs[order.pop()], settings, num_classes, rng)
                 for _ in range(settings.batch_size)]
        images = torch.stack([b[0] for b in batch]).to(device)
        labels = torch.stack([b[1] for b in batch]).to(device)
        loss = F.cross_entropy(model(images), labels, ignore_index=IGNORE_INDEX)
        last_loss = optimisation_step(optimizer, loss, lr_at(it, settings), it, settings.iters,
                                      "seg", log)
    train_seconds = time.perf_counter() - start
    saved = save_finetuned(model, *save_to, source, "seg") if save_to else None
    metrics = segmentation_metrics_without_per_class(
        evaluate_model(model, val_pairs, num_classes, settings, device))
    return {**metrics, "train_loss": last_loss, "train_seconds": train_seconds,
            "model_file": str(saved) if saved else None,
            "num_train": len(train_pairs), "num_val": len(val_pairs),
            "settings": {**settings.to_dict(), "head": "Semantic FPN (mmseg FPNHead, 128 ch)",
                         "root": str(root), "num_classes": num_classes}}


def segmentation_metrics_without_per_class(metrics: dict) -> dict:
    """The summary numbers, with per-class lists kept under ``per_class``."""
    out = {k: v for k, v in metrics.items() if not k.startswith("per_class")}
    out["per_class"] = {"IoU": metrics["per_class_IoU"], "Acc": metrics["per_class_Acc"]}
    return out


def run_many(sources: list[str], root: str | Path, num_classes: int,
             settings: FinetuneSegSettings, out: Path, device: str = "cpu",
             train_limit: int = 0, val_limit: int = 0, log=print,
             save_models: bool = True) -> Path:
    """Fine-tune each source with the same settings and seed; write ``report.json`` and
    ``report.md`` (one row per source) into ``out``, and each fine-tuned model under
    ``out/models/`` unless ``save_models`` is False; return the markdown path."""
    rows = []
    for i, source in enumerate(sources):
        if log:
            log(f"finetune seg: {source}")
        result = finetune_seg(source, root, num_classes, settings, device, train_limit,
                              val_limit, log, save_to=(out, i) if save_models else None)
        rows.append({"source": source, **result})
    s = settings
    description = (f"Data: `{root}` ({rows[0]['num_train']} train / {rows[0]['num_val']} val "
                   f"images, {num_classes} classes). Schedule: {s.iters} iterations of batch "
                   f"{s.batch_size} at {s.image_size} px, AdamW lr {s.lr:g} (warm-up "
                   f"{s.warmup_iters}, poly), weight decay {s.weight_decay:g}, pyramid "
                   f"`{s.pyramid}`, seed {s.seed}.")
    return write_report(out, rows, "Semantic FPN fine-tuning", description,
                        [("mIoU", "mIoU"), ("aAcc", "aAcc"), ("mAcc", "mAcc"),
                         ("train_loss", "train loss"), ("train_seconds", "train s")])


def settings_from(preset: str, **overrides) -> FinetuneSegSettings:
    """A named preset with the given fields replaced (``None`` values are ignored)."""
    if preset not in PRESETS:
        raise SelfPatchError(f"--preset {preset!r} is not one of {', '.join(PRESETS)}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    try:
        return replace(PRESETS[preset], **changes)
    except TypeError as exc:
        raise SelfPatchError(f"bad fine-tuning setting: {exc}") from exc
