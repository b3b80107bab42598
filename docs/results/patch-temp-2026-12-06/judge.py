"""The judge of PLAN.md: E (SelfPatch, image teacher 0.02, patch teacher 0.04) against C
(SelfPatch, 0.02 for both; session 26), and F (DINO 0.02, seed 1) against the bar, from this
folder's spread.json and session 26's (same builds: random weights score the same there)."""

import sys
from pathlib import Path

here = Path(__file__).resolve().parent
sys.path.insert(0, str(here.parents[2] / "benchmarks"))
from paired_judge import (  # noqa: E402
    BUILDS,
    by_label,
    describe,
    difference,
    gains,
    meets_bar,
    paired_verdict,
    values,
)

new = by_label(here / "spread.json")
old = by_label(here.parent / "tt02-objects-2026-12-06" / "spread.json")
for metric in ("mIoU", "knn_top1"):
    r_new = values(new["random-vit_tiny-16"], metric)
    r_old = values(old["random-vit_tiny-16"], metric)
    print(f"random {metric}: here {r_new} | session 26 {r_old}")

E, F = new["sp-img002-patch004-s0-last"], new["dino-tt002-s1-last"]
B, C = old["tt02-s0-last"], old["sp-tt02-s0-last"]
for metric in ("mIoU", "knn_top1"):
    print(f"--- {metric} (gain over random weights, builds 1-4)")
    for name, entry in (("B DINO 0.02 s0", B), ("F DINO 0.02 s1", F),
                        ("C SP 0.02/0.02 s0", C), ("E SP 0.02/0.04 s0", E)):
        print(describe(name, gains(entry, metric)))
    d = difference(gains(E, metric), gains(C, metric))
    print(describe("d = E - C", d), f"| d > 0 on {sum(x > 0 for x in d)} of {len(BUILDS)}")
    print(describe("E - B (SelfPatch - DINO, seed 0)", difference(gains(E, metric),
                                                                  gains(B, metric))))
    print(describe("|F - B| (DINO seed spread)", [abs(x) for x in difference(gains(F, metric),
                                                                            gains(B, metric))]))

verdict = paired_verdict(difference(gains(E, "mIoU"), gains(C, "mIoU")))
print("patch temperature (PLAN.md rule):", {
    "helps": "its own patch temperature helps", "hurts": "its own patch temperature hurts"}.get(
        verdict, "no measurable effect at this budget"))
print("DINO at 0.02 meets the probe part of the bar at two seeds:",
      meets_bar((B, F), {"mIoU": 5.0, "knn_top1": 10.0}))
