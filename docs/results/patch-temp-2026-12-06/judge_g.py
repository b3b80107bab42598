"""The follow-up G (SelfPatch, teacher 0.04 for both heads, seed 0) from the per-build
reports (evalG-seed*: random + G; eval-seed*: random + E + F), against E, C and A."""

import json
import statistics
from pathlib import Path

here = Path(__file__).parent
builds = (1, 2, 3, 4)


def metrics(path: Path) -> dict:
    return {c["label"]: c["metrics"] for c in json.loads(path.read_text())["checkpoints"]}


old = {s["label"]: s for s in json.loads(
    (here.parent / "tt02-objects-2026-12-06" / "spread.json").read_text())["summary"].values()}
for m in ("mIoU", "knn_top1"):
    g, e = [], []
    for b in builds:
        new, prev = metrics(here / f"evalG-seed{b}-report.json"), metrics(
            here / f"eval-seed{b}-report.json")
        assert new["random-vit_tiny-16"][m] == prev["random-vit_tiny-16"][m]  # same build
        g.append(new["sp-t004-s0-last"][m] - new["random-vit_tiny-16"][m])
        e.append(prev["sp-img002-patch004-s0-last"][m] - prev["random-vit_tiny-16"][m])
    c = [old["sp-tt02-s0-last"]["gain"][m]["per_build"][str(b)] for b in builds]
    a = [old["base-s0-last"]["gain"][m]["per_build"][str(b)] for b in builds]
    for name, x in (("G SP 0.04/0.04", g), ("E - G", [p - q for p, q in zip(e, g)]),
                    ("C - G", [p - q for p, q in zip(c, g)]),
                    ("G - A (SelfPatch - DINO at 0.04)", [p - q for p, q in zip(g, a)])):
        print(f"{m} {name}: {' '.join(f'{v:+.2f}' for v in x)} | mean "
              f"{statistics.mean(x):+.2f} ± {statistics.stdev(x):.2f}")
