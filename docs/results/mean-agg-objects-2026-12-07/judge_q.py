"""The judge of PLAN.md's follow-up Q (DINO + the patch loss at the paper's teacher 0.04,
seed 0) against A (DINO at 0.04, seed 0; session 26), from spread-q.json and the recorded
spreads (same builds only if random weights score the same)."""

import sys
from pathlib import Path

here = Path(__file__).resolve().parent
sys.path.insert(0, str(here.parents[2] / "benchmarks"))
import paired_judge as pj  # noqa: E402

# the recorded runs apply only on the same build files (random weights score the same)
new, tt02 = pj.with_recorded(here, "spread-q.json", "tt02-objects-2026-12-06")
label = "sp-cls-mean-tt04-s0-last" if "sp-cls-mean-tt04-s0-last" in new else \
    "sp-cls-mean-tt04-s0-epoch0010"
print("Q checkpoint:", label, "(the rule applies only to -last)")
Q, A, B, P = new[label], tt02["base-s0-last"], tt02["tt02-s0-last"], \
    pj.by_label(here / "spread.json")["sp-cls-mean-tt02-s0-last"]
for metric in ("mIoU", "knn_top1"):
    print(f"--- {metric} (gain over random weights, builds 1-4)")
    for name, entry in (("A DINO 0.04 s0", A), ("B DINO 0.02 s0", B),
                        ("P DINO + patch loss 0.02 s0", P), ("Q DINO + patch loss 0.04 s0", Q)):
        print(pj.describe(name, pj.gains(entry, metric)))
    d = pj.difference(pj.gains(Q, metric), pj.gains(A, metric))
    print(pj.describe("d = Q - A (patch loss on DINO at 0.04)", d),
          f"| d > 0 on {sum(x > 0 for x in d)}")
if label.endswith("-last"):
    verdict = pj.paired_verdict(pj.difference(pj.gains(Q, "mIoU"), pj.gains(A, "mIoU")))
    print("patch loss on top of DINO at 0.04 (PLAN.md rule):",
          "the patch loss " + verdict if verdict != "no measurable effect"
          else "no measurable effect at this budget")
