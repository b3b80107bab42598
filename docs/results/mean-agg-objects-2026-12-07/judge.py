"""The judge of PLAN.md: K / L (SelfPatch, mean aggregation, teacher 0.02, seeds 0 / 1) against
C (SelfPatch, attention aggregation h, same teacher, seed 0; session 26), DINO (B / F) and the
bar, from this folder's spread.json and the recorded ones (same builds only if random weights
score the same)."""

import sys
from pathlib import Path

here = Path(__file__).resolve().parent
sys.path.insert(0, str(here.parents[2] / "benchmarks"))
import paired_judge as pj  # noqa: E402

new = pj.by_label(here / "spread.json")
tt02 = pj.by_label(here.parent / "tt02-objects-2026-12-06" / "spread.json")
ptemp = pj.by_label(here.parent / "patch-temp-2026-12-06" / "spread.json")
pj.check_same_builds(new, tt02)  # the recorded runs apply only on the same build files

K, L = new["sp-mean-tt02-s0-last"], new["sp-mean-tt02-s1-last"]  # runs K and L of PLAN.md
B, C, F = tt02["tt02-s0-last"], tt02["sp-tt02-s0-last"], ptemp["dino-tt002-s1-last"]
for metric in ("mIoU", "knn_top1"):
    print(f"--- {metric} (gain over random weights, builds 1-4)")
    for name, entry in (("B DINO 0.02 s0", B), ("F DINO 0.02 s1", F), ("C SP h s0", C),
                        ("K SP mean s0", K), ("L SP mean s1", L)):
        print(pj.describe(name, pj.gains(entry, metric)))
    d = pj.difference(pj.gains(K, metric), pj.gains(C, metric))
    print(pj.describe("d = K - C (mean - h, seed 0)", d), f"| d > 0 on {sum(x > 0 for x in d)}")
    print(pj.describe("L - C (mean s1 - h s0)", pj.difference(pj.gains(L, metric),
                                                             pj.gains(C, metric))))
    print(pj.describe("|K - L| (seed spread)",
                      [abs(x) for x in pj.difference(pj.gains(K, metric), pj.gains(L, metric))]))
    print(pj.describe("K - B (SelfPatch - DINO, seed 0)", pj.difference(pj.gains(K, metric),
                                                                        pj.gains(B, metric))))
    print(pj.describe("L - F (SelfPatch - DINO, seed 1)", pj.difference(pj.gains(L, metric),
                                                                        pj.gains(F, metric))))

verdict = pj.paired_verdict(pj.difference(pj.gains(K, "mIoU"), pj.gains(C, "mIoU")))
print("mean aggregation (PLAN.md rule):", "mean aggregation " + verdict
      if verdict != "no measurable effect" else "no measurable effect at this budget")
print("SelfPatch with aggregation=mean at 0.02 meets the probe and k-NN part of the bar at two "
      "seeds:", pj.meets_bar((K, L), {"mIoU": 5.0, "knn_top1": 10.0}))
