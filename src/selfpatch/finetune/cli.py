"""``selfpatch finetune seg``: command line of :mod:`selfpatch.finetune.seg`."""

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
                  resolve_device(args.device), args.train_limit, args.val_limit)
    print(md.read_text())
    print(f"report: {md}")
    return 0


def register(subparsers) -> None:
    """Add ``finetune`` with the sub-command ``seg``."""
    ft = subparsers.add_parser("finetune", help="fine-tune a pre-trained backbone downstream")
    sub = ft.add_subparsers(dest="finetune_command", metavar="{seg}")
    sub.required = True
    p = sub.add_parser("seg", help="Semantic FPN segmentation, end to end (mIoU, aAcc, mAcc)",
                       description="Fine-tune each --checkpoint with the same schedule and seed "
                       "and write report.md / report.json. Data: --seg-root (ADE20K layout), "
                       "or ADEChallengeData2016 under --data-root, else the built-in scenes.")
    p.add_argument("--checkpoint", action="append", required=True,
                   help="run dir, .pt, .safetensors or random:ARCH:PATCH; repeat to compare")
    p.add_argument("--seg-root", default=None)
    p.add_argument("--data-root", default=None)
    p.add_argument("--num-classes", type=int, default=0,
                   help="classes without background (built-in: 10; ADE20K: 150)")
    p.add_argument("--preset", default="cpu", help="cpu (minutes) or paper (mmseg 40k)")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--iters", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--pyramid", default=None, choices=["simple", "multilevel"])
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--train-limit", type=int, default=0, help="use the first N train images")
    p.add_argument("--val-limit", type=int, default=0, help="use the first N val images")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default="runs/finetune-seg")
    p.set_defaults(func=_seg)
