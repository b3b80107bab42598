"""Controls of the built-in benchmark: can it tell good features from bad ones?

    python benchmarks/controls.py [--version 2] [--out runs/controls]   # ~10 min on 2 cores
    python benchmarks/controls.py --epochs 10   # a fixed number of epochs: same model on any CPU
    python benchmarks/controls.py --smoke                               # seconds (CI)

Before the built-in data can compare pre-training methods it must separate features known to
be good from features known to be bad. This prints (and writes ``controls.json``/``.md``):

- **positive**: a small CNN and a ViT (the CPU presets' ViT-Ti/16) trained *with labels* on
  the k-NN training images, each for a fixed CPU budget (issue 9: >= 50 % within 5 minutes)
  or, with ``--epochs``, a fixed number of epochs (a budget in seconds gives a slow CPU a
  weaker control: 4 epochs and 42.2 % on 2 cores of an AMD EPYC family 23, 10 epochs and
  58.4 % on family 25, 2026-12-05/06); their top-1 on the k-NN ``val``
  images (Fashion-MNIST test photos, never trained on). The ViT's backbone is exported like
  ``selfpatch export`` (``supervised-vit.safetensors``) so ``selfpatch eval all`` can score it.
- **raw pixels**: k-NN on the images' own pixels and the segmentation probe on each patch's
  own pixels (what appearance alone gives);
- **negative**: a random-weight ViT, k-NN and segmentation probe.

k-NN and the probe use the same code and geometry as ``selfpatch eval all`` on the built-in
data (images upscaled to the patch-8 grid). Training uses fp32 unless ``--precision`` says
otherwise (on many CPUs bf16 is slower; docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from selfpatch.data.builtin import BuiltinSpec, ensure_builtin
from selfpatch.data.builtin.build import data_paths
from selfpatch.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from selfpatch.evaluate.knn import evaluate_knn, list_image_folder
from selfpatch.evaluate.options import builtin_size
from selfpatch.evaluate.seg import ProbeSettings, evaluate_seg
from selfpatch.io import read_rgb
from selfpatch.models.backbone import ViTBackbone, make_backbone_spec
from selfpatch.models.export import write_backbone
from selfpatch.models.loading import load_backbone
from selfpatch.runtime import apply_threads, cpu_name, resolve_precision


def load_split(root: Path, split: str, size: int,
               classes: list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor, list]:
    """All images of ``root/split`` in memory: normalised float32 ``(M, 3, size, size)``,
    labels int64 ``(M,)``, class names. (5000 images of 64 px are 250 MB; decoding them once
    instead of every epoch is what lets a 2-core CPU train for many epochs in minutes.)"""
    paths, labels, classes = list_image_folder(root, split, classes)
    resize = v2.Compose([v2.ToImage(), v2.Resize((size, size), antialias=True),
                         v2.ToDtype(torch.float32, scale=True),
                         v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    images = torch.stack([resize(read_rgb(p)) for p in paths])
    return images, torch.tensor(labels), classes


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flip per image and a random shift of the batch by up to 1/10 of the
    side (wrapping), on ``(B, 3, H, W)``."""
    flip = torch.rand(len(images), generator=generator) < 0.5
    images = torch.where(flip.view(-1, 1, 1, 1), images.flip(3), images)
    reach = max(1, images.shape[-1] // 10)
    dy, dx = torch.randint(-reach, reach + 1, (2,), generator=generator).tolist()
    return torch.roll(images, (dy, dx), (2, 3))


def small_cnn(num_classes: int) -> torch.nn.Module:
    """Four conv-BN-ReLU blocks (32-64-128-256 channels, stride 2 from the second), global
    average pool, linear: ``(B, 3, H, W) -> (B, num_classes)``."""
    layers, c_in = [], 3
    for i, c_out in enumerate((32, 64, 128, 256)):
        layers += [torch.nn.Conv2d(c_in, c_out, 3, stride=1 if i == 0 else 2, padding=1,
                                   bias=False), torch.nn.BatchNorm2d(c_out), torch.nn.ReLU()]
        c_in = c_out
    return torch.nn.Sequential(*layers, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                               torch.nn.Linear(c_in, num_classes))


class MeanPooledClassifier(torch.nn.Module):
    """A :class:`ViTBackbone` (no [CLS]) + linear layer on the mean of its patch tokens."""

    def __init__(self, backbone: ViTBackbone, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = torch.nn.Linear(backbone.embed_dim, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images).mean(dim=1))


@torch.no_grad()
def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in percent of ``model`` on in-memory images."""
    model.eval()
    correct = sum(int((model(images[i:i + 256]).argmax(1) == labels[i:i + 256]).sum())
                  for i in range(0, len(images), 256))
    model.train()
    return 100.0 * correct / max(1, len(images))


def train_supervised(model: torch.nn.Module, train: tuple, val: tuple,
                     budget_s: float | None, max_epochs: int, lr: float, batch_size: int,
                     precision: str, seed: int = 0, log=print) -> dict:
    """Train ``model`` with labels on in-memory ``train`` = (images, labels) for a CPU budget,
    then score ``val``. AdamW, linear warm-up over the first epoch, then a cosine decay over
    as many epochs as the budget allows (re-sized after every epoch, at most ``max_epochs``).
    ``budget_s=None`` trains exactly ``max_epochs`` epochs whatever the clock says: the same
    model on every CPU. Returns ``{"val_top1", "train_top1", "epochs", "seconds", ...}``."""
    images, labels = train
    if len(images) < batch_size:
        raise ValueError(f"{len(images)} training images, fewer than one batch ({batch_size})")
    choice = resolve_precision(precision, "cpu")
    generator = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps_per_epoch = len(images) // batch_size
    state = {"total": max_epochs * steps_per_epoch}

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / steps_per_epoch)
        progress = min(1.0, step / max(1, state["total"]))
        return warm * 0.5 * (1.0 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    start, epoch, epochs, rows = time.perf_counter(), 0, max_epochs, []
    previous = slowest = 0.0  # elapsed seconds at the end of the last epoch; slowest epoch
    while epoch < epochs:
        order = torch.randperm(len(images), generator=generator)
        correct = seen = 0
        for i in range(steps_per_epoch):
            idx = order[i * batch_size:(i + 1) * batch_size]
            with choice.autocast("cpu"):
                logits = model(augment(images[idx], generator))
            loss = F.cross_entropy(logits.float(), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 3.0)
            opt.step()
            sched.step()
            correct += int((logits.argmax(1) == labels[idx]).sum())
            seen += len(idx)
        epoch += 1
        elapsed = time.perf_counter() - start
        # As many epochs as the budget allows, with 5 % to spare, re-sized after every epoch
        # from the slowest one so far: sizing once from the first epoch overran by 7 % when
        # later epochs ran slower (17 s, then ~20 s; AMD EPYC, 2026-12-03). Shrinking the
        # total only steepens the cosine; it never restarts it.
        slowest, previous = max(elapsed - previous, slowest), elapsed
        if budget_s is not None:
            fit = epoch + int((0.95 * budget_s - elapsed) / slowest)
            epochs = max(epoch, min(epochs if epoch > 1 else max_epochs, fit))
            state["total"] = epochs * steps_per_epoch
        rows.append({"epoch": epoch, "loss": round(loss.item(), 4),
                     "train_top1": round(100 * correct / max(1, seen), 2),
                     "seconds": round(elapsed, 1)})
        if log:
            log(json.dumps(rows[-1]))
    return {"val_top1": round(accuracy(model, *val), 2), "train_top1": rows[-1]["train_top1"],
            "epochs": epoch, "seconds": round(time.perf_counter() - start, 1),
            "precision": choice.name, "lr": lr, "batch_size": batch_size, "log": rows}


class PixelTokens(torch.nn.Module):
    """Raw-pixel "backbone": ``(B, 3, H, W) -> (B, N, 3 * p * p)``, each token the pixels of
    one non-overlapping ``p x p`` patch (what a ViT's patch embedding sees)."""

    def __init__(self, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size

    def grid_shape(self, height: int, width: int) -> tuple[int, int]:
        return height // self.patch_size, width // self.patch_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        return F.unfold(images, p, stride=p).transpose(1, 2)


def pixel_embed(images: torch.Tensor) -> torch.Tensor:
    """k-NN embedding of raw pixels: the image at 16x16, ``(B, 768)``, mean-centred."""
    small = F.interpolate(images, size=(16, 16), mode="area").flatten(1)
    return small - small.mean(dim=1, keepdim=True)


def probe_features(backbone: torch.nn.Module, data, patch: int, val_limit: int = 0,
                   train_limit: int = 0, embed=None) -> dict:
    """k-NN top-1 and segmentation-probe mIoU of ``backbone``, with ``selfpatch eval all``'s
    built-in geometry for ``patch``."""
    knn = evaluate_knn(backbone, data.knn_root, image_size=builtin_size("knn_size", patch),
                       embed=embed, log=None)
    seg = evaluate_seg(backbone, data.seg_root, data.num_classes,
                       ProbeSettings(image_size=builtin_size("scene_size", patch)),
                       train_limit=train_limit, val_limit=val_limit, log=None)
    return {"knn_top1": round(knn["top1"], 2), "mIoU": round(seg["mIoU"], 2),
            "aAcc": round(seg["aAcc"], 2)}


def run_controls(data, out: Path, arch: str = "vit_tiny", patch: int = 16, size: int = 64,
                 budget_s: float | None = 300.0, max_epochs: int = 30, precision: str = "fp32",
                 seed: int = 0, batch_size: int = 64, log=print) -> dict:
    """Every control on one build of the built-in data (see the module docstring)."""
    out.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict] = {}
    n_classes = data.num_classes
    train = load_split(data.knn_root, "train", size)
    val = load_split(data.knn_root, "val", size, train[2])[:2]

    torch.manual_seed(seed)
    cnn = small_cnn(n_classes)
    rows["supervised CNN"] = train_supervised(cnn, train[:2], val, budget_s, max_epochs, 2e-3,
                                              batch_size, precision, seed, log)
    torch.manual_seed(seed)
    spec = make_backbone_spec(arch, patch, img_size=size, class_token=False)
    vit = MeanPooledClassifier(ViTBackbone(spec), n_classes)
    rows["supervised ViT"] = train_supervised(vit, train[:2], val, budget_s, max_epochs, 5e-4,
                                              batch_size, precision, seed, log)
    export = write_backbone(vit.backbone.vit.state_dict(), spec,
                            out / "supervised-vit.safetensors",
                            {"selfpatch.source": "benchmarks/controls.py (labels used)"})
    rows["supervised ViT"]["export"] = str(export)

    supervised = load_backbone(str(export))
    rows["supervised ViT"].update(probe_features(supervised, data, patch))
    rows["random ViT"] = probe_features(load_backbone(f"random:{arch}:{patch}"), data, patch)
    rows["raw pixels"] = probe_features(PixelTokens(patch), data, patch, embed=pixel_embed)
    return rows


def table(rows: dict[str, dict]) -> str:
    """Markdown table of the controls."""
    lines = ["| control | val top-1 (supervised) | CPU time | k-NN top-1 | mIoU | aAcc |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        sup = f"{r['val_top1']:.1f}" if "val_top1" in r else "-"
        sec = f"{r['seconds']:.0f} s, {r['epochs']} ep" if "seconds" in r else "-"
        knn = f"{r['knn_top1']:.1f}" if "knn_top1" in r else "-"
        miou = f"{r['mIoU']:.1f}" if "mIoU" in r else "-"
        aacc = f"{r['aAcc']:.1f}" if "aAcc" in r else "-"
        lines.append(f"| {name} | {sup} | {sec} | {knn} | {miou} | {aacc} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--version", type=int, default=None, help="data version (default: latest)")
    parser.add_argument("--data", type=Path, default=None,
                        help="an existing build folder (default: build/reuse --version)")
    parser.add_argument("--out", type=Path, default=Path("runs/controls"))
    parser.add_argument("--arch", default="vit_tiny")
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--size", type=int, default=64, help="training side of the classifiers")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds of training per classifier (default 300 = 5 min)")
    parser.add_argument("--max-epochs", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=None,
                        help="train exactly this many epochs, no time budget: the same "
                             "positive control on every CPU (excludes --budget)")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--smoke", action="store_true",
                        help="tiny build and budgets: checks that every control runs (CI)")
    args = parser.parse_args(argv)
    if args.epochs is not None and args.budget is not None:
        parser.error("--epochs trains a fixed number of epochs; drop --budget (or --epochs)")
    if args.epochs is not None:
        if args.epochs < 1:
            parser.error("--epochs must be >= 1")
        args.max_epochs = args.epochs
    elif args.budget is None:
        args.budget = 300.0
    if (args.budget is not None and args.budget <= 0) or args.max_epochs < 1:
        parser.error("--budget must be > 0 and --max-epochs >= 1")
    threads, _ = apply_threads(args.threads)
    spec = BuiltinSpec() if args.version is None else BuiltinSpec.for_version(args.version)
    root = None
    if args.smoke:
        spec = BuiltinSpec.for_version(spec.version, n_pretrain=10, n_seg_train=20,
                                       n_seg_val=10, n_videos=1, video_frames=3,
                                       n_knn_train=60, n_knn_val=20)
        root = args.out / "data"
        args.budget = None if args.epochs is not None else 1.0
        args.max_epochs, args.batch_size = 1, 16
    data = (data_paths(args.data) if args.data is not None and not args.smoke
            else ensure_builtin(spec, root=root, progress=False))
    started = time.perf_counter()
    rows = run_controls(data, args.out, args.arch, args.patch, args.size, args.budget,
                        args.max_epochs, args.precision, args.seed, args.batch_size)
    md = table(rows)
    print(md)
    meta = {"data": str(data.root), "version": spec.version,
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "cpu": cpu_name() or platform.machine(), "threads": threads,
            "torch": torch.__version__, "seconds": round(time.perf_counter() - started, 1)}
    (args.out / "controls.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    (args.out / "controls.md").write_text(md + "\n")
    print(f"wrote {args.out / 'controls.json'} and controls.md ({meta['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
