"""The judge of PLAN.md: H / I (SelfPatch, k = 1, teacher 0.02, seeds 0 / 1) against C
(SelfPatch, k = 4, same teacher, seed 0; session 26) and against the bar, from this folder's
spread.json and the recorded ones (same builds only if random weights score the same)."""

import sys
from pathlib import Path

here = Path(__file__).resolve().parent
sys.path.insert(0, str(here.parents[2] / "benchmarks"))
import paired_judge as pj  # noqa: E402

# the recorded runs apply only on the same build files (random weights score the same)
new, tt02, ptemp = pj.with_recorded(here, "spread.json", "tt02-objects-2026-12-06",
                                    "patch-temp-2026-12-06")

H, H1 = new["sp-k1-tt02-s0-last"], new["sp-k1-tt02-s1-last"]  # runs H and I of PLAN.md
B, C, F = tt02["tt02-s0-last"], tt02["sp-tt02-s0-last"], ptemp["dino-tt002-s1-last"]
for metric in ("mIoU", "knn_top1"):
    print(f"--- {metric} (gain over random weights, builds 1-4)")
    for name, entry in (("B DINO 0.02 s0", B), ("F DINO 0.02 s1", F), ("C SP k=4 s0", C),
                        ("H SP k=1 s0", H), ("I SP k=1 s1", H1)):
        print(pj.describe(name, pj.gains(entry, metric)))
    d = pj.difference(pj.gains(H, metric), pj.gains(C, metric))
    print(pj.describe("d = H - C (k = 1 - k = 4, seed 0)", d),
          f"| d > 0 on {sum(x > 0 for x in d)}")
    print(pj.describe("|H - I| (seed spread)",
                   [abs(x) for x in pj.difference(pj.gains(H, metric), pj.gains(H1, metric))]))
    print(pj.describe("H - B (SelfPatch - DINO, seed 0)", pj.difference(pj.gains(H, metric),
                                                                  pj.gains(B, metric))))
    print(pj.describe("I - F (SelfPatch - DINO, seed 1)", pj.difference(pj.gains(H1, metric),
                                                                  pj.gains(F, metric))))

verdict = pj.paired_verdict(pj.difference(pj.gains(H, "mIoU"), pj.gains(C, "mIoU")))
print("k = 1 (PLAN.md rule):", "k = 1 " + verdict if verdict != "no measurable effect"
      else "no measurable effect at this budget")
print("SelfPatch k = 1 at 0.02 meets the probe and k-NN part of the bar at two seeds:",
      pj.meets_bar((H, H1), {"mIoU": 5.0, "knn_top1": 10.0}))
