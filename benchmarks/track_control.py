"""A positive control made for J&F: a ViT trained *with tracking labels* (issue 9).

    python benchmarks/track_control.py --variant v2 --steps 300 --threads 1 \\
        --out runs/track/v2.safetensors

Every positive control the built-in J&F has had (a classifier, the classifier fine-tuned with
Semantic FPN or Mask R-CNN) scores far below random weights on the built-in clips
(docs/results.md), so it has never been shown that *any* learned ViT features beat random
weights there. This script trains the features for the protocol itself: ViT-Ti/16 from random
weights, on clips drawn exactly as the built-in ones (``video_design.py``'s renderings) but
from Fashion-MNIST *train* photos and their own generator stream, with the protocol's own
read-out made differentiable. For a target frame ``t`` and context frames (frame 0 and one
of the ``t - 7 .. t - 1``), each target patch's label is predicted as the softmax(cos /
0.1)-weighted vote of the context patches' labels (the protocol's affinities, without its
top-5 cut), and the loss is the cross-entropy against the target's own patch labels (the
annotation taken to the patch grid as the protocol takes frame 0's). What it reaches on the
held-out clips says how far learned ViT-Ti/16 features *can* get above random weights on a
rendering; not a self-supervised method (it uses the masks).

Writes an export ``load_backbone`` / ``selfpatch eval`` / ``video_design.py`` accept, and
``<out>.json`` with the command, CPU, steps, time and logged losses.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from video_design import VARIANTS, draw_clip

from selfpatch.data.builtin.source import find_fashion_mnist
from selfpatch.data.builtin.spec import BuiltinSpec
from selfpatch.evaluate.features import to_normalized_tensor
from selfpatch.models.backbone import ViTBackbone, make_backbone_spec
from selfpatch.models.export import write_backbone
from selfpatch.runtime import apply_threads, cpu_name

#: Generator stream of the training clips: the built-in splits use 1..6 (generate.SPLITS),
#: so these clips share no generator with any built-in item; their photos are train photos.
TRAIN_STREAM = 101
#: Added to the clip index before a rendering's own per-clip draws (tints, flicker), so a
#: training clip's frame changes differ from every evaluation clip's (indices < 10 000).
RENDER_OFFSET = 1_000_000


def propagated_log_probs(target: torch.Tensor, context: torch.Tensor,
                         context_labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Log-probabilities of each target patch's label, voted by the context patches.

    Args:
        target: ``(B, N, D)`` target-frame patch features (any scale: L2-normalised here).
        context: ``(B, M, D)`` context patch features (all context frames, concatenated).
        context_labels: ``(B, M)`` integer labels of the context patches.
        temperature: affinities are ``exp(cos / temperature)`` (the protocol's 0.1).

    Returns:
        ``(B, N, C)`` log of the vote ``sum_m softmax_m(cos / T) * onehot(label_m)``, with
        ``C = context_labels.max() + 1``.
    """
    if target.ndim != 3 or context.ndim != 3 or context_labels.shape != context.shape[:2]:
        raise ValueError(f"expected (B, N, D), (B, M, D), (B, M); got {tuple(target.shape)}, "
                         f"{tuple(context.shape)}, {tuple(context_labels.shape)}")
    sim = torch.einsum("bnd,bmd->bnm", F.normalize(target, dim=-1),
                       F.normalize(context, dim=-1)) / temperature
    weights = sim.softmax(dim=-1)
    onehot = F.one_hot(context_labels, int(context_labels.max()) + 1).to(weights.dtype)
    return torch.bmm(weights, onehot).clamp_min(1e-8).log()


def render_clips(variant: str, n_clips: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(n, T, S, S, 3)`` uint8 frames and ``(n, T, S, S)`` uint8 instance ids of clips drawn
    as the built-in ones (v2 sizes) under ``variant``, from train photos (``TRAIN_STREAM``)."""
    spec = BuiltinSpec(seed=seed)
    fm = find_fashion_mnist(None)
    change, _ = VARIANTS[variant]
    frames, masks = [], []
    for index in range(n_clips):
        layout = change(draw_clip(spec, np.random.default_rng([seed, TRAIN_STREAM, index]),
                                  fm.train_images, fm.train_labels), RENDER_OFFSET + index)
        clip = [layout.render(fm.train_images, t) for t in range(layout.frames)]
        frames.append(np.stack([(r.rgb * 255).round().clip(0, 255).astype(np.uint8)
                                for r in clip]))
        masks.append(np.stack([r.instance for r in clip]).astype(np.uint8))
    return np.stack(frames), np.stack(masks)


def grid_labels(mask: np.ndarray, grid: int) -> torch.Tensor:
    """``(S, S)`` ids -> ``(grid * grid,)`` ids by nearest resize (the protocol's frame-0 rule)."""
    small = Image.fromarray(mask).resize((grid, grid), Image.NEAREST)
    return torch.from_numpy(np.asarray(small).astype(np.int64)).reshape(-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="v2")
    parser.add_argument("--out", type=Path, required=True, help="the .safetensors to write")
    parser.add_argument("--clips", type=int, default=300, help="training clips to draw")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=8, help="clips per step")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--size", type=int, default=256,
                        help="frame side fed to the ViT (the protocol's: 128 px upscaled)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    apply_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    start = time.perf_counter()
    frames, masks = render_clips(args.variant, args.clips, args.seed)
    render_s = time.perf_counter() - start
    n_frames = frames.shape[1]
    spec = make_backbone_spec("vit_tiny", patch_size=16)  # the presets' ViT-Ti/16
    torch.manual_seed(args.seed)
    backbone = ViTBackbone(spec).train()
    grid = args.size // backbone.patch_size
    opt = torch.optim.AdamW(backbone.parameters(), lr=args.lr, weight_decay=0.04)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps,
                                                pct_start=0.1)
    log: list[dict] = []
    start = time.perf_counter()
    for step in range(args.steps):
        clips = rng.choice(len(frames), size=args.batch, replace=False)
        targets = rng.integers(1, n_frames, size=args.batch)
        recent = np.maximum(targets - rng.integers(1, 8, size=args.batch), 0)
        images, labels = [], []
        for c, t, r in zip(clips, targets, recent):
            for f in (t, 0, r):  # target, frame 0, a recent frame: the protocol's context
                images.append(to_normalized_tensor(Image.fromarray(frames[c, f]),
                                                   (args.size, args.size)))
                labels.append(grid_labels(masks[c, f], grid))
        tokens = backbone(torch.stack(images)).reshape(args.batch, 3, grid * grid, -1)
        lab = torch.stack(labels).reshape(args.batch, 3, grid * grid)
        logp = propagated_log_probs(tokens[:, 0], tokens[:, 1:].flatten(1, 2),
                                    lab[:, 1:].flatten(1, 2))
        # a label above every context label cannot be voted for: leave such patches out
        keep = lab[:, 0] < logp.shape[-1]
        loss = F.nll_loss(logp[keep], lab[:, 0][keep])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(backbone.parameters(), 3.0)
        opt.step()
        sched.step()
        log.append({"step": step, "loss": round(loss.item(), 5)})
        if step % 25 == 0 or step == args.steps - 1:
            print(f"step {step:4d} loss {loss.item():.4f} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    train_s = time.perf_counter() - start
    out = write_backbone(backbone.vit.state_dict(), spec, args.out, {
        "selfpatch.source": f"benchmarks/track_control.py --variant {args.variant} "
                            "(tracking labels used)"})
    record = {"command": " ".join(sys.argv), "cpu": cpu_name(), "variant": args.variant,
              "steps": args.steps, "batch": args.batch, "clips": args.clips, "lr": args.lr,
              "size": args.size, "seed": args.seed, "threads": torch.get_num_threads(),
              "render_s": round(render_s, 1), "train_s": round(train_s, 1), "log": log}
    Path(f"{out}.json").write_text(json.dumps(record, indent=1))
    print(f"wrote {out} ({train_s:.0f} s training, {render_s:.0f} s rendering)")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
