"""``selfpatch finetune det``: Mask R-CNN + FPN on a pre-trained ViT, COCO box and mask AP.

The paper's Tab. 1 setting, with torchvision's Mask R-CNN (the heads, RPN, RoIAlign and
losses are torchvision's) on :class:`~selfpatch.models.pyramid.ViTFeaturePyramid`, and AP from
pycocotools' ``COCOeval`` (``pip install selfpatch[finetune]``). Data in COCO layout: an
``instances_*.json`` and its image folder; the built-in scenes get one from
:mod:`selfpatch.data.builtin.coco`. Two presets:

- ``paper``: the authors' mmdet schedule (``mask_rcnn_vit_small_12_p16_1x_coco``): 12 epochs
  (lr x0.1 after epochs 8 and 11), AdamW lr 5e-5, weight decay 0.05 (none on position
  embeddings, tokens and norms), 1000 warm-up iterations, short side 480-800 (max 1333) and
  flips, the pyramid from blocks 4, 6, 8, 12 (``multilevel``). Their DETR-style random crop
  is left out. For GPU users (``--iters`` = 12 epochs of your data / batch).
- ``cpu``: minutes on a laptop: the built-in scenes at 192 px, 300 iterations, batch 4,
  AdamW 1e-4, flips; 64 sampled RoIs per image, 300 RPN proposals, 20 detections per image
  and the first 100 validation images (torchvision: 512, 2000, 100, all); heads half as
  wide (128-channel pyramid, 512-wide box MLP, two mask convs instead of four).
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from selfpatch.errors import SelfPatchError
from selfpatch.finetune.loop import (
    optimisation_step,
    parameter_groups,
    save_finetuned,
    write_report,
)
from selfpatch.io import read_rgb
from selfpatch.models.loading import load_backbone
from selfpatch.models.pyramid import ViTFeaturePyramid

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class FinetuneDetSettings:
    """Schedule and geometry of one detection fine-tuning run."""

    min_sizes: tuple[int, ...] = (192,)  # short side, one drawn per training image
    max_size: int = 192
    test_size: int = 192
    iters: int = 300
    batch_size: int = 4
    lr: float = 1e-4
    weight_decay: float = 0.05
    warmup_iters: int = 30
    lr_drops: tuple[float, ...] = (8 / 12, 11 / 12)  # fractions of iters: lr x 0.1 after each
    pyramid: str = "simple"
    seed: int = 0
    # torchvision's Mask R-CNN defaults (the paper's mmdet values are the same); the cpu
    # preset lowers them, which is most of the time a small image spends in the RoI heads.
    rois_per_image: int = 512  # sampled RoIs per training image (box_batch_size_per_image)
    rpn_post_nms_train: int = 2000
    detections_per_image: int = 100
    val_limit: int = 0  # score only the first N validation images (0 = all)
    # Head widths (torchvision's = mmdet's Mask R-CNN: 256-channel pyramid, 1024-wide box MLP,
    # four 3x3 mask convs). The cpu preset halves them: on 2 CPU cores most of a step is the
    # pyramid/mask convolutions and RoIAlign's backward, which all scale with these.
    channels: int = 256
    box_hidden: int = 1024
    mask_convs: int = 4

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS = {
    "cpu": FinetuneDetSettings(rois_per_image=64, rpn_post_nms_train=300,
                               detections_per_image=20, val_limit=100, channels=128,
                               box_hidden=512, mask_convs=2),
    "paper": FinetuneDetSettings(min_sizes=tuple(range(480, 801, 32)), max_size=1333,
                                 test_size=800, iters=90000, batch_size=16, lr=5e-5,
                                 weight_decay=0.05, warmup_iters=1000, pyramid="multilevel"),
}


def settings_from(preset: str, **overrides) -> FinetuneDetSettings:
    """A named preset with the given fields replaced (``None`` values are ignored)."""
    if preset not in PRESETS:
        raise SelfPatchError(f"--preset {preset!r} is not one of {', '.join(PRESETS)}")
    return replace(PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None})


def _coco_api():
    try:
        from pycocotools import mask as mask_utils
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as exc:
        raise SelfPatchError("finetune det needs pycocotools: pip install "
                             "'selfpatch[finetune]' (or pip install pycocotools)") from exc
    return COCO, COCOeval, mask_utils


class CocoDetection:
    """Images and targets of a COCO ``instances_*.json`` (crowd annotations left out).

    ``dataset[i]`` -> ``(image (3, H, W) float in [0, 1], target)`` with torchvision's
    target fields: ``boxes`` ``(N, 4)`` xyxy, ``labels`` ``(N,)`` in ``1..C`` (categories in
    id order), ``masks`` ``(N, H, W)`` uint8.
    """

    def __init__(self, annotations: str | Path, images: str | Path) -> None:
        COCO, _, _ = _coco_api()
        path = Path(annotations)
        if not path.is_file():
            raise SelfPatchError(f"annotation file {path} does not exist; check the path")
        try:
            with open(path) as fh:
                data = json.load(fh)
            missing = {"images", "annotations", "categories"} - set(data)
        except (OSError, ValueError) as exc:
            raise SelfPatchError(f"annotation file {path} is not JSON ({exc}); use a COCO "
                                 "instances_*.json") from exc
        if missing:
            raise SelfPatchError(f"annotation file {path} lacks {', '.join(sorted(missing))}; "
                                 "use a COCO instances_*.json")
        self.coco = COCO()
        self.coco.dataset = data
        self.coco.createIndex()
        self.path, self.images = path, Path(images)
        self.ids = sorted(self.coco.imgs)
        self.category_ids = sorted(self.coco.cats)
        self.label_of = {c: i + 1 for i, c in enumerate(self.category_ids)}

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        info = self.coco.imgs[self.ids[index]]
        file = self.images / info["file_name"]
        if not file.is_file():
            raise SelfPatchError(f"{self.path} names image {file}, which does not exist; "
                                 "point the image folder at the annotations' images")
        image = torch.from_numpy(np.asarray(read_rgb(file), dtype=np.float32) / 255)
        image = image.permute(2, 0, 1).contiguous()
        anns = [a for a in self.coco.imgToAnns[info["id"]] if not a.get("iscrowd", 0)]
        anns = [a for a in anns if a["bbox"][2] > 0 and a["bbox"][3] > 0]
        boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                               a["bbox"][1] + a["bbox"][3]] for a in anns],
                             dtype=torch.float32).reshape(-1, 4)
        masks = (torch.from_numpy(np.stack([self.coco.annToMask(a) for a in anns]))
                 if anns else torch.zeros(0, *image.shape[1:], dtype=torch.uint8))
        labels = torch.tensor([self.label_of[a["category_id"]] for a in anns],
                              dtype=torch.int64)
        return image, {"boxes": boxes, "labels": labels, "masks": masks,
                       "image_id": info["id"]}


def _flip(image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
    w = image.shape[-1]
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = w - target["boxes"][:, [2, 0]]
    return image.flip(-1), {**target, "boxes": boxes, "masks": target["masks"].flip(-1)}


def coco_ap(coco_gt, results: list[dict], image_ids: list[int] | None = None) -> dict:
    """Box and mask AP (percent) of COCO-format ``results`` against ``coco_gt`` (a pycocotools
    ``COCO``) over ``image_ids`` (default all). No detections at all scores 0 (pycocotools
    cannot load an empty list)."""
    _, COCOeval, _ = _coco_api()
    keys = ("AP", "AP50", "AP75")
    out = {}
    for kind, name in (("bbox", "box"), ("segm", "mask")):
        if not results:
            out.update({f"{name}_{k}": 0.0 for k in keys})
            continue
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(results), kind)
        evaluator.params.imgIds = sorted(image_ids or coco_gt.getImgIds())
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
        # -1 means "no ground truth of this kind": report 0, not a negative AP
        out.update({f"{name}_{k}": max(0.0, 100 * float(evaluator.stats[i]))
                    for i, k in enumerate(keys)})
    return out


def build_model(backbone: torch.nn.Module, num_classes: int,
                settings: FinetuneDetSettings) -> torch.nn.Module:
    """torchvision Mask R-CNN on the ViT pyramid (``num_classes`` + background), its heads
    ``settings.channels`` wide (torchvision's own heads when the widths are its defaults)."""
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

    c, n = settings.channels, num_classes + 1
    return MaskRCNN(ViTFeaturePyramid(backbone, settings.pyramid, out_channels=c),
                    box_head=TwoMLPHead(c * 7 * 7, settings.box_hidden),  # 7x7 RoIAlign
                    box_predictor=FastRCNNPredictor(settings.box_hidden, n),
                    mask_head=MaskRCNNHeads(c, [c] * settings.mask_convs, 1),
                    mask_predictor=MaskRCNNPredictor(c, c, n),
                    min_size=settings.min_sizes, max_size=settings.max_size,
                    image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD),
                    box_batch_size_per_image=settings.rois_per_image,
                    rpn_post_nms_top_n_train=settings.rpn_post_nms_train,
                    box_detections_per_img=settings.detections_per_image)


@torch.no_grad()
def predict(model: torch.nn.Module, dataset: CocoDetection, settings: FinetuneDetSettings,
            device: torch.device) -> list[dict]:
    """COCO-format detections (boxes xywh, masks as compressed RLE) on every image."""
    _, _, mask_utils = _coco_api()
    model.eval()
    model.transform.min_size = (settings.test_size,)
    results = []
    for i in range(min(len(dataset), settings.val_limit or len(dataset))):
        image, target = dataset[i]
        (out,) = model([image.to(device)])
        masks = (out["masks"][:, 0] > 0.5).cpu().numpy().astype(np.uint8)
        for box, label, score, mask in zip(out["boxes"].cpu().tolist(),
                                           out["labels"].cpu().tolist(),
                                           out["scores"].cpu().tolist(), masks):
            rle = mask_utils.encode(np.asfortranarray(mask))
            rle["counts"] = rle["counts"].decode()
            results.append({"image_id": target["image_id"],
                            "category_id": dataset.category_ids[label - 1],
                            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                            "score": score, "segmentation": rle})
    model.transform.min_size = settings.min_sizes
    return results


def finetune_det(source: str, train: CocoDetection, val: CocoDetection,
                 settings: FinetuneDetSettings, device: torch.device | str = "cpu",
                 log=print, save_to: tuple[Path, int] | None = None) -> dict:
    """Fine-tune ``source``'s backbone with Mask R-CNN on ``train``; AP on ``val`` (and,
    with ``save_to=(out, index)``, keep the fine-tuned model: ``save_finetuned``)."""
    if train.category_ids != val.category_ids:
        raise SelfPatchError(f"{train.path} and {val.path} have different categories; use "
                             "annotation files of one data set")
    device = torch.device(device)
    torch.manual_seed(settings.seed)
    rng = random.Random(settings.seed)
    backbone = load_backbone(source, device)
    backbone.requires_grad_(True)
    model = build_model(backbone, train.num_classes, settings).to(device)
    optimizer = torch.optim.AdamW(parameter_groups(model, settings.weight_decay),
                                  lr=settings.lr)
    drops = [int(f * settings.iters) for f in settings.lr_drops]
    order: list[int] = []
    start, last = time.perf_counter(), math.nan
    for it in range(settings.iters):
        model.train()
        warm = min(1.0, (it + 1) / max(1, settings.warmup_iters))
        lr = settings.lr * warm * 0.1 ** sum(it >= d for d in drops)
        images, targets = [], []
        while len(images) < settings.batch_size:
            if not order:
                order = rng.sample(range(len(train)), len(train))
            image, target = train[order.pop()]
            if rng.random() < 0.5:
                image, target = _flip(image, target)
            images.append(image.to(device))
            targets.append({k: v.to(device) for k, v in target.items() if k != "image_id"})
        loss = sum(model(images, targets).values())
        last = optimisation_step(optimizer, loss, lr, it, settings.iters, "det", log)
    train_seconds = time.perf_counter() - start
    saved = save_finetuned(model, *save_to, source, "det") if save_to else None
    n_val = min(len(val), settings.val_limit or len(val))
    metrics = coco_ap(val.coco, predict(model, val, settings, device), val.ids[:n_val])
    return {**metrics, "train_loss": last, "train_seconds": train_seconds,
            "model_file": str(saved) if saved else None,
            "num_train": len(train), "num_val": n_val,
            "settings": {**settings.to_dict(), "model": "torchvision Mask R-CNN + ViT pyramid",
                         "train": str(train.path), "val": str(val.path)}}


def run_many(sources: list[str], train: CocoDetection, val: CocoDetection,
             settings: FinetuneDetSettings, out: Path, device: str = "cpu", log=print,
             save_models: bool = True) -> Path:
    """Fine-tune each source with the same settings and seed; write report.json / .md and,
    unless ``save_models`` is False, each fine-tuned model under ``out/models/``."""
    rows = []
    for i, source in enumerate(sources):
        if log:
            log(f"finetune det: {source}")
        rows.append({"source": source, **finetune_det(
            source, train, val, settings, device, log,
            save_to=(out, i) if save_models else None)})
    s = settings
    description = (f"Train `{train.path}` ({len(train)} images), val `{val.path}` "
                   f"({rows[0]['num_val']} images scored), {train.num_classes} classes. "
                   f"Schedule: {s.iters} iterations of batch {s.batch_size}, short side "
                   f"{list(s.min_sizes)} (max {s.max_size}), test {s.test_size}, AdamW lr "
                   f"{s.lr:g} (warm-up {s.warmup_iters}, x0.1 at "
                   f"{[round(f, 3) for f in s.lr_drops]} of the run), weight decay "
                   f"{s.weight_decay:g}, pyramid `{s.pyramid}`, seed {s.seed}.")
    return write_report(out, rows, "Mask R-CNN fine-tuning", description,
                        [("box_AP", "box AP"), ("box_AP50", "box AP50"), ("mask_AP", "mask AP"),
                         ("mask_AP50", "mask AP50"), ("train_loss", "train loss"),
                         ("train_seconds", "train s")])
