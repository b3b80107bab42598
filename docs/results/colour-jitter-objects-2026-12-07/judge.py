"""The judge of PLAN.md: D_cj / S_cj (DINO / DINO + SelfPatch with DINO's own colour jitter,
teacher 0.02, seed 0) against B / C (the same with the presets' strong jitter; recorded in
tt02-objects-2026-12-06). Probe and k-NN from spread.json (builds 1-4), J&F from the same
spread (random weights scored in the same call)."""

import statistics
import sys
from pathlib import Path

here = Path(__file__).resolve().parent
sys.path.insert(0, str(here.parents[2] / "benchmarks"))
import paired_judge as pj  # noqa: E402

# the recorded runs apply only on the same build files (random weights score the same)
new, tt02 = pj.with_recorded(here, "spread.json", "tt02-objects-2026-12-06")


d_label, D = pj.finished_or_latest(new, "dino-cj-tt02-s0")
s_label, S = pj.finished_or_latest(new, "sp-cj-tt02-s0")
finished = d_label.endswith("-last") and s_label.endswith("-last")
print("checkpoints:", d_label, s_label, "(the rules apply only to -last)")
B, C = tt02["tt02-s0-last"], tt02["sp-tt02-s0-last"]
for metric in ("mIoU", "knn_top1"):
    print(f"--- {metric} (gain over random weights, builds 1-4)")
    for name, entry in (("B DINO, strong jitter", B), ("D_cj DINO, DINO's jitter", D),
                        ("C SelfPatch, strong jitter", C), ("S_cj SelfPatch, DINO's jitter", S)):
        print(pj.describe(name, pj.gains(entry, metric)))
    for name, a, b in (("D_cj - B", D, B), ("S_cj - C", S, C), ("S_cj - D_cj", S, D)):
        d = pj.difference(pj.gains(a, metric), pj.gains(b, metric))
        print(pj.describe(f"d = {name}", d), f"| d > 0 on {sum(x > 0 for x in d)}")
    if metric == "mIoU" and finished:
        for name, a, b in (("DINO: D_cj vs B", D, B), ("SelfPatch: S_cj vs C", S, C)):
            v = pj.paired_verdict(pj.difference(pj.gains(a, "mIoU"), pj.gains(b, "mIoU")))
            print(f"{name} (PLAN.md rule): DINO's jitter {v}")

# J&F: above random only on the mean over builds 1-4 and on at least 3 of 4 builds
print("--- J&F, builds 1-4")
rnd = pj.values(new["random-vit_tiny-16"], "J&F")
print("random weights:", " ".join(f"{x:.2f}" for x in rnd), f"| mean {statistics.mean(rnd):.2f}")
above = {}
for label, entry in ((d_label, D), (s_label, S)):
    above[label], line = pj.control_line(label, entry)
    print(line)
for label, entry in ((d_label, D), (s_label, S)):
    probe_knn = pj.meets_bar((entry,), {"mIoU": 5.0, "knn_top1": 10.0})
    print(f"{label}: +5.0 mIoU and +10 k-NN over builds 1-4: {probe_knn}; all three parts "
          f"of the bar (one seed): {probe_knn and above[label] and finished}")
