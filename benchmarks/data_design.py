"""How the built-in data's v2 rendering was chosen: candidate renderings against the controls.

    python benchmarks/data_design.py looks --out runs/data-design [--budget 300]
    python benchmarks/data_design.py scenes --backbone runs/controls/supervised-vit.safetensors

``looks``: each candidate :class:`~selfpatch.data.builtin.looks.Look` (colour ranges) is
built (evaluation splits only) into ``OUT/<look>/`` and measured: how often an object is
darker than its background in the k-NN ``val`` images (v1: about half, i.e. the sign of the
figure/ground contrast is a coin flip), the median contrast, and the controls of
``benchmarks/controls.py`` (supervised CNN and ViT top-1; k-NN and probe mIoU of the
supervised ViT, random weights and raw pixels). About 13 minutes per look on 2 cores.

``scenes``: the k-NN images do not depend on the scene sizes, so one supervised ViT (from
``controls.py``) serves every scene variant: the segmentation probe of it and of random
weights on each variant's scenes. A good variant separates the two widely. ``--source
LABEL=CHECKPOINT`` (repeatable) adds a pre-trained run to every row, which is what decides
whether a variant would widen the *self-supervised* gap too; each row also records the mean
number of objects per validation scene, and ``scenes.partial.json`` is rewritten after every
row so a long study can be read while it runs::

    python benchmarks/data_design.py scenes --out runs/design --candidates \
        "1-3 objects, 1.4-2.8x (v2)" "1-2 objects, 1.8-3.0x" \
        --source DINO=runs/repro/cpu-long-v2/dino-seed0/checkpoints/last.pt

Results and the choice: docs/data.md ("Why v2 and how it was chosen").
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from controls import run_controls, table  # benchmarks/ is on sys.path when run as a script

from selfpatch.data.builtin import BuiltinSpec, ensure_builtin
from selfpatch.data.builtin.generate import balanced_indices, item_rng, split_rng
from selfpatch.data.builtin.looks import LOOKS, Look
from selfpatch.data.builtin.scenes import render_single
from selfpatch.data.builtin.source import find_fashion_mnist
from selfpatch.runtime import apply_threads, cpu_name

#: Candidate looks (v1 and v2 are the shipped ones).
LOOK_CANDIDATES: dict[str, Look] = {
    "v1": LOOKS[1],
    "dim0.6": Look(background_gain=0.6),
    "dim0.4 (v2)": LOOKS[2],
}
#: Candidate scene sizes (objects per scene, object scale); v2 keeps the last.
SCENE_CANDIDATES: dict[str, dict] = {
    "v1 sizes: 1-5 objects, 0.7-2.5x": {"max_objects": 5, "min_scale": 0.7, "max_scale": 2.5},
    "1-4 objects, 1.2-2.8x": {"max_objects": 4, "min_scale": 1.2, "max_scale": 2.8},
    "1-3 objects, 1.4-2.8x (v2)": {"max_objects": 3, "min_scale": 1.4, "max_scale": 2.8},
    # Fewer/larger or more crowded objects (2026-12-03 study with self-supervised sources).
    "1-3 objects, 2.0-3.2x": {"max_objects": 3, "min_scale": 2.0, "max_scale": 3.2},
    "1-2 objects, 1.8-3.0x": {"max_objects": 2, "min_scale": 1.8, "max_scale": 3.0},
    "2-3 objects, 1.4-2.8x": {"min_objects": 2, "max_objects": 3, "min_scale": 1.4,
                              "max_scale": 2.8},
}

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def contrast_stats(look: Look, n: int = 1000, seed: int = 0, size: int = 64) -> dict:
    """Object-minus-background mean luminance over ``n`` k-NN ``val`` items (test photos)."""
    fm = find_fashion_mnist(None)
    indices = balanced_indices(split_rng(seed, "knn_val"), fm.test_labels, n)
    diffs = []
    for i, photo in enumerate(indices):
        r = render_single(item_rng(seed, "knn_val", i), fm.test_images, fm.test_labels,
                          int(photo), size, look=look)
        luma = r.rgb @ LUMA
        obj = r.instance > 0
        diffs.append(float(luma[obj].mean() - luma[~obj].mean()))
    d = np.array(diffs)
    return {"object_darker_pct": round(100 * float((d < 0).mean()), 1),
            "median_contrast": round(float(np.median(d)), 3)}


def _build(name: str, look: Look, out: Path, version: int, **sizes):
    LOOKS[version] = look  # a private version number: its own cache folder name
    spec = BuiltinSpec(version=version, n_pretrain=0, n_videos=1, video_frames=2, **sizes)
    # workers=1: the candidate look is registered in this process only.
    return ensure_builtin(spec, root=out / name.split()[0], progress=False, workers=1)


def looks(args) -> dict:
    results = {}
    for i, name in enumerate(args.candidates or LOOK_CANDIDATES):
        look = LOOK_CANDIDATES[name]
        data = _build(name, look, args.out, 100 + i)
        row = {"look": vars(look), **contrast_stats(look)}
        row["controls"] = run_controls(data, args.out / name.split()[0], budget_s=args.budget,
                                       log=None)
        results[name] = row
        print(f"## {name}: object darker in {row['object_darker_pct']} % "
              f"(median contrast {row['median_contrast']})\n{table(row['controls'])}",
              flush=True)
    return results


def scenes(args) -> dict:
    from selfpatch.evaluate.options import builtin_size
    from selfpatch.evaluate.seg import ProbeSettings, evaluate_seg
    from selfpatch.models.loading import load_backbone

    sources = {"supervised ViT": str(args.backbone), "random ViT": "random:vit_tiny:16"}
    for extra in args.source:
        label, _, path = extra.partition("=")
        if not path:
            raise SystemExit(f"--source {extra!r}: expected LABEL=CHECKPOINT")
        sources[label] = path
    results = {}
    print("| scenes | " + " | ".join(f"{k} mIoU" for k in sources) + " |")
    print("|---|" + "---:|" * len(sources))
    for i, name in enumerate(args.candidates or SCENE_CANDIDATES):
        data = _build(name, LOOKS[2], args.out / "scenes", 200 + i, n_knn_train=20,
                      n_knn_val=10, **SCENE_CANDIDATES[name])
        row = {"objects_per_scene": _objects_per_scene(data.seg_root)}
        for label, source in sources.items():
            backbone = load_backbone(source)
            size = builtin_size("scene_size", backbone.patch_size)
            seg = evaluate_seg(backbone, data.seg_root, data.num_classes,
                               ProbeSettings(image_size=size), log=None)
            row[label] = {"mIoU": round(seg["mIoU"], 2), "aAcc": round(seg["aAcc"], 2)}
        results[name] = row
        print(f"| {name} | " + " | ".join(f"{row[k]['mIoU']:.1f}" for k in sources) + " |",
              flush=True)
        (args.out / "scenes.partial.json").write_text(json.dumps(results, indent=1))
    return results


def _objects_per_scene(seg_root: Path) -> float:
    """Mean number of objects visible in the validation scenes (instance ids present)."""
    from PIL import Image

    paths = sorted((Path(seg_root) / "instances" / "validation").glob("*.png"))
    counts = [len(np.setdiff1d(np.unique(np.asarray(Image.open(p))), [0])) for p in paths]
    return round(float(np.mean(counts)), 2) if counts else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=("looks", "scenes"))
    parser.add_argument("--out", type=Path, default=Path("runs/data-design"))
    parser.add_argument("--candidates", nargs="*", default=None)
    parser.add_argument("--budget", type=float, default=300.0,
                        help="looks: seconds of supervised training per classifier")
    parser.add_argument("--backbone", type=Path, default=Path("runs/controls/"
                                                              "supervised-vit.safetensors"),
                        help="scenes: the supervised ViT exported by controls.py")
    parser.add_argument("--source", action="append", default=[], metavar="LABEL=CHECKPOINT",
                        help="scenes: another backbone to probe on every variant (repeatable)")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    known = LOOK_CANDIDATES if args.what == "looks" else SCENE_CANDIDATES
    unknown = [c for c in args.candidates or () if c not in known]
    if unknown:
        parser.error(f"unknown {args.what} candidate(s) {unknown}; choose from {list(known)}")
    apply_threads(args.threads)
    torch.manual_seed(0)
    results = looks(args) if args.what == "looks" else scenes(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.what}.json").write_text(json.dumps(
        {"cpu": cpu_name(), "budget_s": args.budget, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
