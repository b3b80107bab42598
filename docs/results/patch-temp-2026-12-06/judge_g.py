"""The follow-up G (SelfPatch, teacher 0.04 for both heads, seed 0) from the per-build
reports (evalG-seed*: random + G; eval-seed*: random + E + F), against E, C and A."""

import json
import sys
from pathlib import Path

here = Path(__file__).resolve().parent
sys.path.insert(0, str(here.parents[2] / "benchmarks"))
from paired_judge import BUILDS, by_label, describe, difference, gains  # noqa: E402


def metrics(path: Path) -> dict:
    return {c["label"]: c["metrics"] for c in json.loads(path.read_text())["checkpoints"]}


old = by_label(here.parent / "tt02-objects-2026-12-06" / "spread.json")
for m in ("mIoU", "knn_top1"):
    g, e = [], []
    for b in BUILDS:
        new, prev = metrics(here / f"evalG-seed{b}-report.json"), metrics(
            here / f"eval-seed{b}-report.json")
        assert new["random-vit_tiny-16"][m] == prev["random-vit_tiny-16"][m]  # same build
        g.append(new["sp-t004-s0-last"][m] - new["random-vit_tiny-16"][m])
        e.append(prev["sp-img002-patch004-s0-last"][m] - prev["random-vit_tiny-16"][m])
    c, a = gains(old["sp-tt02-s0-last"], m), gains(old["base-s0-last"], m)
    for name, x in (("G SP 0.04/0.04", g), ("E - G", difference(e, g)),
                    ("C - G", difference(c, g)),
                    ("G - A (SelfPatch - DINO at 0.04)", difference(g, a))):
        print(f"{m} {describe(name, x)}")
