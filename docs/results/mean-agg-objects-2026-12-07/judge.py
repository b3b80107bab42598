"""The judge of PLAN.md: K (SelfPatch, mean aggregation, teacher 0.02, seed 0) against C
(SelfPatch, attention aggregation h, same teacher, seed 0; session 26), and P (K with the image
loss on the backbone's [CLS]: DINO plus the patch loss) against B (DINO, same teacher and seed),
from this folder's spread.json and the recorded ones (same builds only if random weights score
the same). L (seed 1 of K) was replaced by P before any result (PLAN.md)."""

import sys
from pathlib import Path

here = Path(__file__).resolve().parent
sys.path.insert(0, str(here.parents[2] / "benchmarks"))
import paired_judge as pj  # noqa: E402

# the recorded runs apply only on the same build files (random weights score the same)
new, tt02, ptemp = pj.with_recorded(here, "spread.json", "tt02-objects-2026-12-06",
                                    "patch-temp-2026-12-06")

K, P = new["sp-mean-tt02-s0-last"], new["sp-cls-mean-tt02-s0-last"]  # runs K and P of PLAN.md
B, C, F = tt02["tt02-s0-last"], tt02["sp-tt02-s0-last"], ptemp["dino-tt002-s1-last"]
for metric in ("mIoU", "knn_top1"):
    print(f"--- {metric} (gain over random weights, builds 1-4)")
    for name, entry in (("B DINO 0.02 s0", B), ("F DINO 0.02 s1", F), ("C SP h s0", C),
                        ("K SP mean s0", K), ("P DINO + patch loss (mean) s0", P)):
        print(pj.describe(name, pj.gains(entry, metric)))
    d = pj.difference(pj.gains(K, metric), pj.gains(C, metric))
    print(pj.describe("d = K - C (mean - h, seed 0)", d), f"| d > 0 on {sum(x > 0 for x in d)}")
    d = pj.difference(pj.gains(P, metric), pj.gains(B, metric))
    print(pj.describe("d = P - B (patch loss on DINO, seed 0)", d),
          f"| d > 0 on {sum(x > 0 for x in d)}")
    print(pj.describe("K - B (SelfPatch mean - DINO, seed 0)",
                      pj.difference(pj.gains(K, metric), pj.gains(B, metric))))
    print(pj.describe("P - C (P - SelfPatch as in the paper, seed 0)",
                      pj.difference(pj.gains(P, metric), pj.gains(C, metric))))


def reading(verdict: str, what: str) -> str:
    return f"{what} {verdict}" if verdict != "no measurable effect" else \
        "no measurable effect at this budget"


print("mean aggregation (PLAN.md rule):", reading(
    pj.paired_verdict(pj.difference(pj.gains(K, "mIoU"), pj.gains(C, "mIoU"))),
    "mean aggregation"))
print("patch loss on top of DINO (PLAN.md rule):", reading(
    pj.paired_verdict(pj.difference(pj.gains(P, "mIoU"), pj.gains(B, "mIoU"))),
    "the patch loss"))
for name, entry in (("K", K), ("P", P)):
    print(f"{name} reaches +5.0 mIoU and +10 k-NN over builds 1-4 (one seed of the two the bar "
          "needs):", pj.meets_bar((entry,), {"mIoU": 5.0, "knn_top1": 10.0}))
