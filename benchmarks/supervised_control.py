"""Positive control for the evaluation suite: a ViT trained *with labels*, then evaluated.

    python benchmarks/supervised_control.py --out runs/control [--epochs 4]
    selfpatch eval all --checkpoint runs/control/supervised.safetensors \
        --checkpoint random:vit_tiny:16 --out runs/control/eval

Self-supervised runs that fit on a laptop CPU may not (yet) give features with object
semantics, and then the segmentation probe and k-NN sit at chance for both them and random
weights. That alone does not show the probes *can* see semantics. This script trains the same
architecture as the CPU presets (ViT-Ti/16, no [CLS]) to classify the built-in k-NN *training*
images (single garments, 10 classes; mean-pooled patch tokens -> linear layer, cross-entropy)
and exports the backbone like ``selfpatch export``. The evaluation sets (k-NN ``val``
objects, segmentation scenes, videos) are built from Fashion-MNIST's test photos, which this
training never sees. A probe that works must score this backbone far above random weights.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from selfpatch.data.builtin import ensure_builtin
from selfpatch.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from selfpatch.evaluate.features import read_rgb
from selfpatch.evaluate.knn import list_image_folder
from selfpatch.models.backbone import ViTBackbone, make_backbone_spec
from selfpatch.models.export import write_backbone


class Labelled(Dataset):
    def __init__(self, paths: list[Path], labels: list[int], size: int) -> None:
        self.paths, self.labels = paths, labels
        # Random scale so objects appear at the sizes the evaluations show them at (k-NN
        # images and scenes are fed at 2x; objects there span ~3-9 patches).
        self.transform = v2.Compose([
            v2.RandomResizedCrop(size, scale=(0.3, 1.0), antialias=True),
            v2.RandomHorizontalFlip(), v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(read_rgb(self.paths[i])), self.labels[i]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/control"))
    parser.add_argument("--arch", default="vit_tiny")
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--size", type=int, default=128, help="training crop side")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    paths, labels, classes = list_image_folder(ensure_builtin().knn_root, "train")
    loader = DataLoader(Labelled(paths, labels, args.size), batch_size=args.batch_size,
                        shuffle=True, num_workers=2, drop_last=True, persistent_workers=True)
    spec = make_backbone_spec(args.arch, args.patch, img_size=args.size, class_token=False)
    backbone = ViTBackbone(spec, drop_path_rate=0.1)
    head = torch.nn.Linear(backbone.embed_dim, len(classes))
    params = list(backbone.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.05)
    steps = args.epochs * len(loader)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=steps, pct_start=0.1)
    start, log = time.perf_counter(), []
    for epoch in range(args.epochs):
        correct = seen = 0
        for images, target in loader:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = head(backbone(images).mean(dim=1))
            loss = torch.nn.functional.cross_entropy(logits.float(), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 3.0)
            opt.step()
            sched.step()
            correct += int((logits.argmax(1) == target).sum())
            seen += len(target)
        log.append({"epoch": epoch + 1, "loss": round(loss.item(), 4),
                    "train_acc": round(100 * correct / seen, 2),
                    "seconds": round(time.perf_counter() - start, 1)})
        print(json.dumps(log[-1]), flush=True)

    out = write_backbone(backbone.vit.state_dict(), spec, args.out / "supervised.safetensors",
                         {"selfpatch.source": "benchmarks/supervised_control.py (labels used)"})
    (args.out / "training.json").write_text(json.dumps(
        {"args": {k: str(v) for k, v in vars(args).items()}, "images": len(paths),
         "classes": classes, "log": log, "torch": torch.__version__}, indent=2))
    print(f"wrote {out}; evaluate it with: selfpatch eval all --checkpoint {out} "
          f"--checkpoint random:{args.arch}:{args.patch} --out {args.out / 'eval'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
