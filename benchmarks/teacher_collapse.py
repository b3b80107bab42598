"""How far a DINO checkpoint's image task has started: collapse statistics of its teacher.

For 96 k-NN training images (every 40th, 96 px) it prints, per checkpoint: the mean pairwise
cosine similarity of the image representations ([CLS] or h), the spread of the head's
outputs over the batch and over the prototypes, and the entropy of the centred, sharpened
teacher targets per sample and of their batch mean, both against ln K. Per-sample entropy
near ln K = uniform targets (the image task has not started). The first line is the
`cpu-long` DINO model at initialisation (seed 0), with the recipe that preset had when the
collapse was measured (no BatchNorm in the head, 96 px crops).

    python benchmarks/teacher_collapse.py RUN/checkpoints/last.pt [more checkpoints]
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
import torchvision.transforms.v2.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from selfpatch.checkpoint import load_training_checkpoint  # noqa: E402
from selfpatch.config import config_from_dict, load_config  # noqa: E402
from selfpatch.data.builtin import BuiltinSpec, ensure_builtin  # noqa: E402
from selfpatch.io import load_rgb  # noqa: E402
from selfpatch.train.factory import build_teacher_student  # noqa: E402

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def images() -> torch.Tensor:
    root = ensure_builtin(BuiltinSpec()).root / "knn" / "train"
    paths = sorted(root.rglob("*.png"))[::40][:96]
    return torch.stack([F.normalize(F.resize(F.to_dtype(F.to_image(load_rgb(p)), torch.float32,
                                                          scale=True), [96, 96]), MEAN, STD)
                        for p in paths])


@torch.no_grad()
def report(name: str, ts, x: torch.Tensor, temp: float = 0.04) -> None:
    t = ts.teacher
    cls, tokens, _ = t.encode([x], 0, 1)
    y = t.image_representation(cls, tokens)
    yn = torch.nn.functional.normalize(y, dim=1)
    cos = (yn @ yn.T)[~torch.eye(len(y), dtype=torch.bool)].mean()
    logits = t.image_head(y)
    if not hasattr(ts.objective, "loss"):  # not DINO: no centred targets to measure
        print(f"{name}: mean pairwise cos {cos:.3f}")
        return
    probs = torch.softmax((logits - ts.objective.loss.center) / temp, dim=1)
    per_sample = -(probs * probs.clamp_min(1e-12).log()).sum(1).mean()
    mean = probs.mean(0)
    of_mean = -(mean * mean.clamp_min(1e-12).log()).sum()
    ln_k = math.log(logits.shape[1])
    print(f"{name}: mean pairwise cos {cos:.3f}; logits std over batch "
          f"{logits.std(0).mean():.4f}, over prototypes {logits.std(1).mean():.4f}; teacher "
          f"entropy per sample {per_sample / ln_k:.3f}, of the batch mean {of_mean / ln_k:.3f} "
          f"(x ln K = {ln_k:.2f})")


def main(paths: list[str]) -> None:
    x = images()
    torch.manual_seed(0)
    report("initialisation", build_teacher_student(load_config("cpu-long", [
        "method=dino", "dino.head_bn=false", "data.global_size=96", "data.local_size=48"])), x)
    for path in paths:
        ckpt = load_training_checkpoint(path)
        ts = build_teacher_student(config_from_dict(ckpt["config"]))
        ts.load_state_dict(ckpt["model"])
        report(path, ts, x)


if __name__ == "__main__":
    main(sys.argv[1:])
