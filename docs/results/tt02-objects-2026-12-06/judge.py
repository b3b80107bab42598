"""The judge of PLAN.md: paired difference d = gain(B) - gain(A) over builds 1-4, from spread.json."""

import json
import statistics
from pathlib import Path

spread = json.loads((Path(__file__).parent / "spread.json").read_text())
summary = spread["summary"]
labels = {s["label"]: s for s in summary.values()}
a = labels["base-s0-last"]  # A: teacher 0.04
b = labels["tt02-s0-last"]  # B: teacher 0.02
builds = ("1", "2", "3", "4")
for metric in ("mIoU", "knn_top1"):
    ga = [a["gain"][metric]["per_build"][k] for k in builds]
    gb = [b["gain"][metric]["per_build"][k] for k in builds]
    d = [y - x for x, y in zip(ga, gb)]
    print(f"{metric}: gain A {statistics.mean(ga):+.2f} ± {statistics.stdev(ga):.2f} | "
          f"gain B {statistics.mean(gb):+.2f} ± {statistics.stdev(gb):.2f} | "
          f"d per build {' '.join(f'{x:+.2f}' for x in d)} | mean d {statistics.mean(d):+.2f} | "
          f"d > 0 on {sum(x > 0 for x in d)} of 4")
d = [b["gain"]["mIoU"]["per_build"][k] - a["gain"]["mIoU"]["per_build"][k] for k in builds]
mean_d = statistics.mean(d)
if mean_d >= 1.0 and sum(x > 0 for x in d) >= 3:
    verdict = "the sharper teacher helps"
elif mean_d <= -1.0:
    verdict = "the sharper teacher hurts"
else:
    verdict = "no measurable effect at this budget"
print("verdict (PLAN.md rule):", verdict)
c = labels.get("sp-tt02-s0-last")  # C: the SelfPatch follow-up, judged against the bar only
if c:
    for metric in ("mIoU", "knn_top1"):
        gc = [c["gain"][metric]["per_build"][k] for k in builds]
        print(f"C {metric}: builds 1-4 {' '.join(f'{x:+.2f}' for x in gc)} | "
              f"mean {statistics.mean(gc):+.2f} ± {statistics.stdev(gc):.2f}")
