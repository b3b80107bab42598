"""The judge of PLAN.md: M_d seed 1 (DINO, half-way colour jitter, teacher 0.02) against the
planned rules, beside M_d seed 0 (mid-jitter-objects-2026-12-07). Probe, k-NN and J&F from
spread.json (builds 1-4, random weights scored in the same call)."""

import sys
from pathlib import Path

here = Path(__file__).resolve().parent
sys.path.insert(0, str(here.parents[2] / "benchmarks"))
import paired_judge as pj  # noqa: E402

# the recorded run applies only on the same build files (random weights score the same)
new, mj = pj.with_recorded(here, "spread.json", "mid-jitter-objects-2026-12-07",
                           metrics=("mIoU", "knn_top1", "J&F"))
label, M1 = pj.finished_or_latest(new, "dino-mj-tt02-s1")
finished = label.endswith("-last")
M0 = mj["dino-mj-tt02-s0-last"]
print("checkpoint:", label, "(the rules apply only to -last)")
for metric in ("mIoU", "knn_top1", "J&F"):
    print(f"--- {metric} (gain over random weights, builds 1-4)")
    print(pj.describe("M_d seed 0 (recorded)", pj.gains(M0, metric)))
    print(pj.describe("M_d seed 1", pj.gains(M1, metric)))
    print(pj.describe("seed 1 - seed 0 (no rule)",
                      pj.difference(pj.gains(M1, metric), pj.gains(M0, metric))))
above, line = pj.control_line(label, M1)
print(line)
knn = pj.meets_bar((M1,), {"knn_top1": 10.0})
print(f"--- repeats (J&F above random and >= +10 k-NN): {above and knn and finished}")
bar = above and pj.meets_bar((M1,), {"mIoU": 5.0, "knn_top1": 10.0})
print(f"--- all three parts of the bar (this seed): {bar and finished}")
