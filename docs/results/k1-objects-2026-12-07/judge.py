"""The judge of PLAN.md: H / I (SelfPatch, k = 1, teacher 0.02, seeds 0 / 1) against C
(SelfPatch, k = 4, same teacher, seed 0; session 26) and against the bar, from this folder's
spread.json and the recorded ones (same builds only if random weights score the same)."""

import json
import statistics
from pathlib import Path

here = Path(__file__).parent
builds = ("1", "2", "3", "4")


def by_label(path: Path) -> dict:
    return {s["label"]: s for s in json.loads(path.read_text())["summary"].values()}


new = by_label(here / "spread.json")
tt02 = by_label(here.parent / "tt02-objects-2026-12-06" / "spread.json")
ptemp = by_label(here.parent / "patch-temp-2026-12-06" / "spread.json")
for metric in ("mIoU", "knn_top1"):
    now = [new["random-vit_tiny-16"]["value"][metric]["per_build"][k] for k in builds]
    then = [tt02["random-vit_tiny-16"]["value"][metric]["per_build"][k] for k in builds]
    assert max(abs(a - b) for a, b in zip(now, then)) < 0.02, (metric, now, then)


def gains(entry: dict, metric: str) -> list[float]:
    return [entry["gain"][metric]["per_build"][k] for k in builds]


def show(name: str, g: list[float]) -> str:
    return (f"{name}: {' '.join(f'{x:+.2f}' for x in g)} | mean {statistics.mean(g):+.2f} "
            f"± {statistics.stdev(g):.2f}")


H, H1 = new["sp-k1-tt02-s0-last"], new["sp-k1-tt02-s1-last"]  # runs H and I
B, C, F = tt02["tt02-s0-last"], tt02["sp-tt02-s0-last"], ptemp["dino-tt002-s1-last"]
for metric in ("mIoU", "knn_top1"):
    print(f"--- {metric} (gain over random weights, builds 1-4)")
    for name, entry in (("B DINO 0.02 s0", B), ("F DINO 0.02 s1", F), ("C SP k=4 s0", C),
                        ("H SP k=1 s0", H), ("I SP k=1 s1", H1)):
        print(show(name, gains(entry, metric)))
    d = [h - c for h, c in zip(gains(H, metric), gains(C, metric))]
    print(show("d = H - C (k = 1 - k = 4, seed 0)", d), f"| d > 0 on {sum(x > 0 for x in d)} of 4")
    print(show("|H - I| (seed spread)", [abs(h - i) for h, i in
                                          zip(gains(H, metric), gains(H1, metric))]))
    print(show("H - B (SelfPatch - DINO, seed 0)", [h - b for h, b in
                                                     zip(gains(H, metric), gains(B, metric))]))
    print(show("I - F (SelfPatch - DINO, seed 1)", [i - f for i, f in
                                                     zip(gains(H1, metric), gains(F, metric))]))

d = [h - c for h, c in zip(gains(H, "mIoU"), gains(C, "mIoU"))]
if statistics.mean(d) >= 1.0 and sum(x > 0 for x in d) >= 3:
    verdict = "k = 1 helps"
elif statistics.mean(d) <= -1.0:
    verdict = "k = 1 hurts"
else:
    verdict = "no measurable effect at this budget"
print("k = 1 (PLAN.md rule):", verdict)
meets = all(statistics.mean(gains(x, "mIoU")) >= 5.0 and statistics.mean(gains(x, "knn_top1"))
            >= 10.0 for x in (H, H1))
print("SelfPatch k = 1 at 0.02 meets the probe and k-NN part of the bar at two seeds:", meets)
