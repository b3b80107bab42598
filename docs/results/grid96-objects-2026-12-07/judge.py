"""The judge of PLAN.md: G_d / G_s (DINO / DINO + SelfPatch, 96 px global crops = 6x6 grids,
1 500 steps) against M_d / M_s (64 px = 4x4, 2 750 steps; mid-jitter-objects-2026-12-07), same
seed, colour setting and teacher; equal compute. Probe, k-NN and J&F from spread.json
(builds 1-4, random weights scored in the same call)."""

import statistics
import sys
from pathlib import Path

here = Path(__file__).resolve().parent
sys.path.insert(0, str(here.parents[2] / "benchmarks"))
import paired_judge as pj  # noqa: E402

# the recorded runs apply only on the same build files (random weights score the same)
new, mj = pj.with_recorded(here, "spread.json", "mid-jitter-objects-2026-12-07",
                           metrics=("mIoU", "knn_top1", "J&F"))

d_label, GD = pj.finished_or_latest(new, "dino-g96-mj-tt02-s0")
s_label, GS = pj.finished_or_latest(new, "sp-g96-mj-tt02-s0")
finished = d_label.endswith("-last") and s_label.endswith("-last")
print("checkpoints:", d_label, s_label, "(the rules apply only to -last)")
MD, MS = mj["dino-mj-tt02-s0-last"], mj["sp-mj-tt02-s0-last"]
thresholds = {"mIoU": 1.0, "knn_top1": 3.0}
for metric in ("mIoU", "knn_top1"):
    print(f"--- {metric} (gain over random weights, builds 1-4)")
    for name, entry in (("M_d DINO, 64 px, 2 750 steps", MD), ("G_d DINO, 96 px, 1 500 steps", GD),
                        ("M_s SelfPatch, 64 px", MS), ("G_s SelfPatch, 96 px", GS)):
        print(pj.describe(name, pj.gains(entry, metric)))
    for name, a, b in (("G_d - M_d", GD, MD), ("G_s - M_s", GS, MS)):
        d = pj.difference(pj.gains(a, metric), pj.gains(b, metric))
        verdict = ""
        if metric == "mIoU" and finished:
            verdict = f" | PLAN.md rule: the 96 px grid {pj.paired_verdict(d)}"
        print(pj.describe(f"d = {name}", d), f"| d > 0 on {sum(x > 0 for x in d)}{verdict}")
    gap_64 = pj.difference(pj.gains(MS, metric), pj.gains(MD, metric))
    gap_96 = pj.difference(pj.gains(GS, metric), pj.gains(GD, metric))
    print(pj.describe("SelfPatch - DINO at 64 px", gap_64))
    print(pj.describe("SelfPatch - DINO at 96 px", gap_96))
    d = pj.difference(gap_96, gap_64)
    verdict = ""
    if finished:
        rule = pj.paired_verdict(d, threshold=thresholds[metric])
        verdict = (f" | PLAN.md rule (threshold {thresholds[metric]}): SelfPatch's deficit "
                   + {"helps": "shrinks", "hurts": "grows"}.get(rule, rule))
    print(pj.describe("d = change of the gap (96 px - 64 px)", d),
          f"| d > 0 on {sum(x > 0 for x in d)}{verdict}")

# J&F: above random only on the mean over builds 1-4 and on at least 3 of 4 builds
print("--- J&F, builds 1-4")
rnd = pj.values(new["random-vit_tiny-16"], "J&F")
print("random weights:", " ".join(f"{x:.2f}" for x in rnd), f"| mean {statistics.mean(rnd):.2f}")
above = {}
for label, entry in (("M_d (recorded)", MD), ("M_s (recorded)", MS), (d_label, GD),
                     (s_label, GS)):
    above[label], line = pj.control_line(label, entry)
    print(line)
print("--- the bar (each run on its own, builds 1-4)")
for label, entry in ((d_label, GD), (s_label, GS)):
    bar = above[label] and pj.meets_bar((entry,), {"mIoU": 5.0, "knn_top1": 10.0})
    print(f"{label}: all three parts of the bar (one seed): {bar and finished}")
