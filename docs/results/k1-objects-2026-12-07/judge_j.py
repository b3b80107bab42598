"""The judge of PLAN.md's follow-up J (DINO + SelfPatch with the patch loss off, teacher 0.02,
seed 0) against C (same with the patch loss on) and B (DINO), from spread-j.json."""

import statistics
import sys
from pathlib import Path

here = Path(__file__).resolve().parent
sys.path.insert(0, str(here.parents[2] / "benchmarks"))
import paired_judge as pj  # noqa: E402

# the recorded runs apply only on the same build files (random weights score the same)
new, tt02 = pj.with_recorded(here, "spread-j.json", "tt02-objects-2026-12-06")

J, B, C = new["sp-l0-tt02-s0-last"], tt02["tt02-s0-last"], tt02["sp-tt02-s0-last"]
for metric in ("mIoU", "knn_top1"):
    print(f"--- {metric} (gain over random weights, builds 1-4)")
    for name, entry in (("B DINO 0.02 s0", B), ("C SP 0.02 s0", C), ("J SP, loss_weight 0", J)):
        print(pj.describe(name, pj.gains(entry, metric)))
    print(pj.describe("J - C (patch loss off - on)",
                      pj.difference(pj.gains(J, metric), pj.gains(C, metric))))
    print(pj.describe("J - B (aggregation pooling - [CLS])", pj.difference(pj.gains(J, metric),
                                                                    pj.gains(B, metric))))

j_c = pj.difference(pj.gains(J, "mIoU"), pj.gains(C, "mIoU"))
j_b = statistics.mean(pj.difference(pj.gains(J, "mIoU"), pj.gains(B, "mIoU")))
if pj.paired_verdict(j_c) == "helps":
    reading = "the patch loss costs the probe here"
elif statistics.mean(j_c) < 1.0 and not abs(j_b) < 1.0:
    reading = "J stays near C: the aggregation pooling costs the probe here"
else:
    reading = "reported as measured, no reading"
print("follow-up J (PLAN.md rule, one seed):", reading)
