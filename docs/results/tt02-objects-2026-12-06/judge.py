"""The judge of PLAN.md: paired difference d = gain(B) - gain(A) over builds 1-4, from
spread.json."""

import statistics
import sys
from pathlib import Path

here = Path(__file__).resolve().parent
sys.path.insert(0, str(here.parents[2] / "benchmarks"))
from paired_judge import by_label, difference, gains, paired_verdict  # noqa: E402

labels = by_label(here / "spread.json")
a = labels["base-s0-last"]  # A: teacher 0.04
b = labels["tt02-s0-last"]  # B: teacher 0.02
for metric in ("mIoU", "knn_top1"):
    ga, gb = gains(a, metric), gains(b, metric)
    d = difference(gb, ga)
    print(f"{metric}: gain A {statistics.mean(ga):+.2f} ± {statistics.stdev(ga):.2f} | "
          f"gain B {statistics.mean(gb):+.2f} ± {statistics.stdev(gb):.2f} | "
          f"d per build {' '.join(f'{x:+.2f}' for x in d)} | mean d {statistics.mean(d):+.2f} | "
          f"d > 0 on {sum(x > 0 for x in d)} of 4")
verdict = paired_verdict(difference(gains(b, "mIoU"), gains(a, "mIoU")))
print("verdict (PLAN.md rule):", {"helps": "the sharper teacher helps",
                                  "hurts": "the sharper teacher hurts"}.get(
                                      verdict, "no measurable effect at this budget"))
c = labels.get("sp-tt02-s0-last")  # C: the SelfPatch follow-up, judged against the bar only
if c:
    for metric in ("mIoU", "knn_top1"):
        gc = gains(c, metric)
        print(f"C {metric}: builds 1-4 {' '.join(f'{x:+.2f}' for x in gc)} | "
              f"mean {statistics.mean(gc):+.2f} ± {statistics.stdev(gc):.2f}")
