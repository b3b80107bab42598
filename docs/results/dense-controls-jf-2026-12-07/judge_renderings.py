"""The follow-up's judge (PLAN.md): per rendering, does a known-good dense checkpoint (probe
gain >= +5 over builds 1-4, rule 1) beat random weights' J&F by >= +1.0 on the build-0 clips?"""

import json
import statistics
import sys
from pathlib import Path

here = Path(__file__).resolve().parent
sys.path.insert(0, str(here.parents[2] / "benchmarks"))
import paired_judge as pj  # noqa: E402

PATHS = {"supervised-vit": "runs/controls/supervised-vit.safetensors",
         "sup-seg": "runs/dense/sup-seg.safetensors",
         "seg-scratch": "runs/dense/seg-scratch.safetensors",
         "sup-det": "runs/dense/sup-det.safetensors"}
RANDOM = "random:vit_tiny:16"

spread = pj.by_label(here / "spread.json")
good = [path for label, path in PATHS.items()
        if label in spread and statistics.mean(pj.gains(spread[label], "mIoU")) >= 5.0]
print("known-good dense checkpoints (rule 1):", good or "none")
video = json.loads((here / "video-summary-all.json").read_text())
any_control = False
for variant in video[RANDOM]:
    rows = {p: video[p][variant] for p in good if variant in video.get(p, {})}
    if not rows:
        print(f"{variant}: no known-good checkpoint scored")
        continue
    best = max(rows, key=rows.get)
    m = rows[best] - video[RANDOM][variant]
    verdict = ("has a J&F positive control" if m >= 1.0 else
               "has none" if m <= 0 else "unresolved")
    any_control |= m >= 1.0
    print(f"{variant}: random {video[RANDOM][variant]:.1f}, best {best} {rows[best]:.1f}, "
          f"m {m:+.2f} -> {verdict}")
print("READING: some rendering has a J&F positive control" if any_control else
      "READING: no rendering tried has a J&F positive control")
