"""The judge of PLAN.md: E (SelfPatch, image teacher 0.02, patch teacher 0.04) against C
(SelfPatch, 0.02 for both; session 26), and F (DINO 0.02, seed 1) against the bar, from this
folder's spread.json and session 26's (same builds: random weights score the same there)."""

import json
import statistics
from pathlib import Path

here = Path(__file__).parent
builds = ("1", "2", "3", "4")


def by_label(path: Path) -> dict:
    return {s["label"]: s for s in json.loads(path.read_text())["summary"].values()}


new = by_label(here / "spread.json")
old = by_label(here.parent / "tt02-objects-2026-12-06" / "spread.json")
for metric in ("mIoU", "knn_top1"):
    r_new = [new["random-vit_tiny-16"]["value"][metric]["per_build"][k] for k in builds]
    r_old = [old["random-vit_tiny-16"]["value"][metric]["per_build"][k] for k in builds]
    print(f"random {metric}: here {r_new} | session 26 {r_old}")


def gains(entry: dict, metric: str) -> list[float]:
    return [entry["gain"][metric]["per_build"][k] for k in builds]


def show(name: str, g: list[float]) -> str:
    return (f"{name}: {' '.join(f'{x:+.2f}' for x in g)} | mean {statistics.mean(g):+.2f} "
            f"± {statistics.stdev(g):.2f}")


E, F = new["sp-img002-patch004-s0-last"], new["dino-tt002-s1-last"]
B, C = old["tt02-s0-last"], old["sp-tt02-s0-last"]
for metric in ("mIoU", "knn_top1"):
    print(f"--- {metric} (gain over random weights, builds 1-4)")
    for name, entry in (("B DINO 0.02 s0", B), ("F DINO 0.02 s1", F),
                        ("C SP 0.02/0.02 s0", C), ("E SP 0.02/0.04 s0", E)):
        print(show(name, gains(entry, metric)))
    d = [e - c for e, c in zip(gains(E, metric), gains(C, metric))]
    print(show("d = E - C", d), f"| d > 0 on {sum(x > 0 for x in d)} of 4")
    print(show("E - B (SelfPatch - DINO, seed 0)", [e - b for e, b in
                                                     zip(gains(E, metric), gains(B, metric))]))
    print(show("|F - B| (DINO seed spread)", [abs(f - b) for f, b in
                                               zip(gains(F, metric), gains(B, metric))]))

d = [e - c for e, c in zip(gains(E, "mIoU"), gains(C, "mIoU"))]
mean_d = statistics.mean(d)
if mean_d >= 1.0 and sum(x > 0 for x in d) >= 3:
    verdict = "its own patch temperature helps"
elif mean_d <= -1.0:
    verdict = "its own patch temperature hurts"
else:
    verdict = "no measurable effect at this budget"
print("patch temperature (PLAN.md rule):", verdict)
both = all(statistics.mean(gains(x, "mIoU")) >= 5.0 and statistics.mean(gains(x, "knn_top1"))
           >= 10.0 for x in (B, F))
print("DINO at 0.02 meets the probe part of the bar at two seeds:", both)
