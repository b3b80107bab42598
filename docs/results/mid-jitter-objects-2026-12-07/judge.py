"""The judge of PLAN.md: M_d / M_s (DINO / DINO + SelfPatch with the strong jitter on half of
the views and grey 0.2, teacher 0.02, seed 0) against the two recorded endpoints: B / C (strong
jitter, tt02-objects-2026-12-06) and D_cj / S_cj (DINO's jitter, colour-jitter-objects-2026-12-07).
Probe, k-NN and J&F from spread.json (builds 1-4, random weights scored in the same call)."""

import statistics
import sys
from pathlib import Path

here = Path(__file__).resolve().parent
sys.path.insert(0, str(here.parents[2] / "benchmarks"))
import paired_judge as pj  # noqa: E402

# the recorded runs apply only on the same build files (random weights score the same)
new, tt02, cj = pj.with_recorded(here, "spread.json", "tt02-objects-2026-12-06",
                                 "colour-jitter-objects-2026-12-07",
                                 metrics=("mIoU", "knn_top1"))
# J&F of random weights must agree with the DINO's-jitter check too (both scored it, bf16)
pj.check_same_builds(new, cj, metrics=("J&F",))


d_label, MD = pj.finished_or_latest(new, "dino-mj-tt02-s0")
s_label, MS = pj.finished_or_latest(new, "sp-mj-tt02-s0")
finished = d_label.endswith("-last") and s_label.endswith("-last")
print("checkpoints:", d_label, s_label, "(the rules apply only to -last)")
B, C = tt02["tt02-s0-last"], tt02["sp-tt02-s0-last"]
D_cj, S_cj = cj["dino-cj-tt02-s0-last"], cj["sp-cj-tt02-s0-last"]
pairs = (("M_d vs B (strong jitter)", MD, B), ("M_d vs D_cj (DINO's jitter)", MD, D_cj),
         ("M_s vs C (strong jitter)", MS, C), ("M_s vs S_cj (DINO's jitter)", MS, S_cj))
for metric in ("mIoU", "knn_top1"):
    print(f"--- {metric} (gain over random weights, builds 1-4)")
    for name, entry in (("B DINO, strong jitter", B), ("M_d DINO, half-way jitter", MD),
                        ("D_cj DINO, DINO's jitter", D_cj), ("C SelfPatch, strong jitter", C),
                        ("M_s SelfPatch, half-way jitter", MS),
                        ("S_cj SelfPatch, DINO's jitter", S_cj)):
        print(pj.describe(name, pj.gains(entry, metric)))
    for name, a, b in pairs + (("M_s - M_d (no rule)", MS, MD),):
        d = pj.difference(pj.gains(a, metric), pj.gains(b, metric))
        verdict = ""
        if metric == "mIoU" and finished and "no rule" not in name:
            verdict = f" | PLAN.md rule: the half-way jitter {pj.paired_verdict(d)}"
        print(pj.describe(f"d = {name}", d), f"| d > 0 on {sum(x > 0 for x in d)}{verdict}")

# J&F: above random only on the mean over builds 1-4 and on at least 3 of 4 builds
print("--- J&F, builds 1-4")
rnd = pj.values(new["random-vit_tiny-16"], "J&F")
print("random weights:", " ".join(f"{x:.2f}" for x in rnd), f"| mean {statistics.mean(rnd):.2f}")
for name, entry in (("D_cj (recorded)", D_cj), ("S_cj (recorded)", S_cj)):
    print(pj.describe(f"{name} minus random", pj.gains(entry, "J&F")))
above = {}
for label, entry in ((d_label, MD), (s_label, MS)):
    above[label], line = pj.control_line(label, entry)
    print(line)
print("--- the question and the bar (each run on its own, builds 1-4)")
for label, entry in ((d_label, MD), (s_label, MS)):
    middle = above[label] and pj.meets_bar((entry,), {"mIoU": 2.5, "knn_top1": 5.0})
    bar = above[label] and pj.meets_bar((entry,), {"mIoU": 5.0, "knn_top1": 10.0})
    print(f"{label}: a middle exists (J&F above random, >= +2.5 mIoU, >= +5 k-NN): "
          f"{middle and finished}; all three parts of the bar (one seed): {bar and finished}")
