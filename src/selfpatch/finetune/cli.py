"""``selfpatch finetune seg|det``: command lines of :mod:`selfpatch.finetune.seg` / ``det``."""

from __future__ import annotations

import argparse
from pathlib import Path


def _seg(args: argparse.Namespace) -> int:
    import torch

    from selfpatch.evaluate.datasets import choose_data
    from selfpatch.finetune.seg import run_many, settings_from
    from selfpatch.runtime import resolve_device

    data = choose_data("seg", args.seg_root, args.data_root)
    num_classes = args.num_classes or data.num_classes
    if not num_classes:
        from selfpatch.errors import SelfPatchError

        raise SelfPatchError("--num-classes is needed for your own data (150 for ADE20K)")
    settings = settings_from(args.preset, image_size=args.image_size, iters=args.iters,
                             batch_size=args.batch_size, lr=args.lr, pyramid=args.pyramid,
                             seed=args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    md = run_many(args.checkpoint, data.root, num_classes, settings, out,
                  resolve_device(args.device), args.train_limit, args.val_limit,
                  save_models=args.save_models)
    print(md.read_text())
    print(f"report: {md}")
    return 0


def _coco_paths(args: argparse.Namespace) -> tuple[Path, Path, Path, Path]:
    """(train json, train images, val json, val images): --coco-root (COCO 2017 layout) or
    the built-in scenes (their COCO annotations are written on first use)."""
    if args.coco_root:
        root = Path(args.coco_root)
        return (root / "annotations" / "instances_train2017.json", root / "train2017",
                root / "annotations" / "instances_val2017.json", root / "val2017")
    from selfpatch.data.builtin.coco import ensure_coco_instances
    from selfpatch.evaluate.datasets import choose_data

    seg_root = choose_data("seg").root
    files = ensure_coco_instances(seg_root.parent)
    return (files["training"], seg_root / "images" / "training", files["validation"],
            seg_root / "images" / "validation")


def _det(args: argparse.Namespace) -> int:
    import torch

    from selfpatch.errors import SelfPatchError
    from selfpatch.finetune.det import CocoDetection, run_many, settings_from
    from selfpatch.runtime import resolve_device

    train_json, train_images, val_json, val_images = _coco_paths(args)
    if args.train_json:
        train_json = Path(args.train_json)
    if args.val_json:
        val_json = Path(args.val_json)
    train = CocoDetection(train_json, args.train_images or train_images)
    val = CocoDetection(val_json, args.val_images or val_images)
    if args.num_classes and args.num_classes != train.num_classes:
        raise SelfPatchError(f"--num-classes {args.num_classes} but {train_json} has "
                             f"{train.num_classes} categories; drop the option or fix it")
    sizes = tuple(args.min_size) if args.min_size else None
    settings = settings_from(args.preset, min_sizes=sizes, max_size=args.max_size,
                             test_size=args.test_size, iters=args.iters,
                             batch_size=args.batch_size, lr=args.lr, pyramid=args.pyramid,
                             seed=args.seed, val_limit=args.val_limit)
    if args.threads:
        torch.set_num_threads(args.threads)
    md = run_many(args.checkpoint, train, val, settings, Path(args.out),
                  resolve_device(args.device), save_models=args.save_models)
    print(md.read_text())
    print(f"report: {md}")
    return 0


def _common(p: argparse.ArgumentParser, presets: str, out: str) -> None:
    """Options both fine-tuning commands take."""
    p.add_argument("--checkpoint", action="append", required=True,
                   help="run dir, .pt, .safetensors or random:ARCH:PATCH; repeat to compare")
    p.add_argument("--preset", default="cpu", help=presets)
    p.add_argument("--iters", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--pyramid", default=None, choices=["simple", "multilevel"])
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default=out)
    p.add_argument("--no-save-models", dest="save_models", action="store_false",
                   help="do not keep the fine-tuned models (default: OUT/models/*.safetensors)")


def register(subparsers) -> None:
    """Add ``finetune`` with the sub-commands ``seg`` and ``det``."""
    ft = subparsers.add_parser("finetune", help="fine-tune a pre-trained backbone downstream")
    sub = ft.add_subparsers(dest="finetune_command", metavar="{seg,det}")
    sub.required = True
    p = sub.add_parser("seg", help="Semantic FPN segmentation, end to end (mIoU, aAcc, mAcc)",
                       description="Fine-tune each --checkpoint with the same schedule and seed "
                       "and write report.md / report.json. Data: --seg-root (ADE20K layout), "
                       "or ADEChallengeData2016 under --data-root, else the built-in scenes.")
    _common(p, "cpu (minutes) or paper (mmseg 40k)", "runs/finetune-seg")
    p.add_argument("--seg-root", default=None)
    p.add_argument("--data-root", default=None)
    p.add_argument("--num-classes", type=int, default=0,
                   help="classes without background (built-in: 10; ADE20K: 150)")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--train-limit", type=int, default=0, help="use the first N train images")
    p.add_argument("--val-limit", type=int, default=0, help="use the first N val images")
    p.set_defaults(func=_seg)

    p = sub.add_parser("det", help="Mask R-CNN detection + instance segmentation (COCO AP)",
                       description="Fine-tune each --checkpoint with torchvision's Mask R-CNN "
                       "on the ViT pyramid and score COCO box / mask AP (pycocotools). Data: "
                       "--coco-root (annotations/instances_{train,val}2017.json, train2017/, "
                       "val2017/), explicit --train-json/--val-json and image folders, or the "
                       "built-in scenes.")
    _common(p, "cpu (minutes) or paper (mmdet 1x)", "runs/finetune-det")
    p.add_argument("--coco-root", default=None)
    p.add_argument("--train-json", default=None)
    p.add_argument("--train-images", default=None)
    p.add_argument("--val-json", default=None)
    p.add_argument("--val-images", default=None)
    p.add_argument("--num-classes", type=int, default=0,
                   help="check against the annotation file's categories (80 for COCO)")
    p.add_argument("--min-size", type=int, nargs="+", default=None,
                   help="training short side(s); one drawn per image")
    p.add_argument("--max-size", type=int, default=None)
    p.add_argument("--test-size", type=int, default=None)
    p.add_argument("--val-limit", type=int, default=None,
                   help="score the first N validation images (cpu preset: 100; 0 = all)")
    p.set_defaults(func=_det)
