"""The judge of PLAN.md: H / I (SelfPatch, k = 1, teacher 0.02, seeds 0 / 1) against C
(SelfPatch, k = 4, same teacher, seed 0; session 26) and against the bar, from this folder's
spread.json and the recorded ones (same builds only if random weights score the same)."""

import sys
from pathlib import Path

here = Path(__file__).resolve().parent
sys.path.insert(0, str(here.parents[2] / "benchmarks"))
from paired_judge import (  # noqa: E402
    by_label,
    describe,
    difference,
    gains,
    meets_bar,
    paired_verdict,
    values,
)

new = by_label(here / "spread.json")
tt02 = by_label(here.parent / "tt02-objects-2026-12-06" / "spread.json")
ptemp = by_label(here.parent / "patch-temp-2026-12-06" / "spread.json")
for metric in ("mIoU", "knn_top1"):  # the recorded runs apply only on the same build files
    now = values(new["random-vit_tiny-16"], metric)
    then = values(tt02["random-vit_tiny-16"], metric)
    assert max(abs(x) for x in difference(now, then)) < 0.02, (metric, now, then)

H, H1 = new["sp-k1-tt02-s0-last"], new["sp-k1-tt02-s1-last"]  # runs H and I of PLAN.md
B, C, F = tt02["tt02-s0-last"], tt02["sp-tt02-s0-last"], ptemp["dino-tt002-s1-last"]
for metric in ("mIoU", "knn_top1"):
    print(f"--- {metric} (gain over random weights, builds 1-4)")
    for name, entry in (("B DINO 0.02 s0", B), ("F DINO 0.02 s1", F), ("C SP k=4 s0", C),
                        ("H SP k=1 s0", H), ("I SP k=1 s1", H1)):
        print(describe(name, gains(entry, metric)))
    d = difference(gains(H, metric), gains(C, metric))
    print(describe("d = H - C (k = 1 - k = 4, seed 0)", d), f"| d > 0 on {sum(x > 0 for x in d)}")
    print(describe("|H - I| (seed spread)",
                   [abs(x) for x in difference(gains(H, metric), gains(H1, metric))]))
    print(describe("H - B (SelfPatch - DINO, seed 0)", difference(gains(H, metric),
                                                                  gains(B, metric))))
    print(describe("I - F (SelfPatch - DINO, seed 1)", difference(gains(H1, metric),
                                                                  gains(F, metric))))

verdict = paired_verdict(difference(gains(H, "mIoU"), gains(C, "mIoU")))
print("k = 1 (PLAN.md rule):", "k = 1 " + verdict if verdict != "no measurable effect"
      else "no measurable effect at this budget")
print("SelfPatch k = 1 at 0.02 meets the probe and k-NN part of the bar at two seeds:",
      meets_bar((H, H1), {"mIoU": 5.0, "knn_top1": 10.0}))
