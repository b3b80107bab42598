"""The judge of PLAN.md: do features trained with dense labels beat random weights on the
built-in J&F? Probe, k-NN and J&F gains over random weights (builds 1-4) from spread.json;
J&F on the default clips as shipped and with one tint per clip from video-summary.json."""

import json
import statistics
import sys
from pathlib import Path

here = Path(__file__).resolve().parent
sys.path.insert(0, str(here.parents[2] / "benchmarks"))
import paired_judge as pj  # noqa: E402

# label in spread.json -> (name in PLAN.md, path given to video_design.py)
CHECKPOINTS = {
    "supervised-vit": ("S", "runs/controls/supervised-vit.safetensors"),
    "sup-seg": ("S+seg", "runs/dense/sup-seg.safetensors"),
    "seg-scratch": ("seg", "runs/dense/seg-scratch.safetensors"),
    "sup-det": ("S+det", "runs/dense/sup-det.safetensors"),
}
RANDOM = "random:vit_tiny:16"

spread = pj.by_label(here / "spread.json")
video_path = here / "video-summary.json"
video = json.loads(video_path.read_text()) if video_path.is_file() else {}

readings = []
for label, (name, path) in CHECKPOINTS.items():
    if label not in spread:
        print(f"{name}: not run (no '{label}' in spread.json)")
        continue
    entry = spread[label]
    print(f"--- {name} ({label})")
    for metric in ("mIoU", "knn_top1", "J&F"):
        print(pj.describe(f"  {metric} gain", pj.gains(entry, metric)))
    good = statistics.mean(pj.gains(entry, "mIoU")) >= 5.0
    above, line = pj.control_line(name, entry)
    print("  " + line)
    shared = None
    if path in video and RANDOM in video:
        shared = video[path]["shared-tint"] - video[RANDOM]["shared-tint"]
        v2 = video[path]["v2"] - video[RANDOM]["v2"]
        print(f"  build 0 clips, J&F - random: v2 {v2:+.2f}, shared-tint {shared:+.2f}")
    print(f"  known-good dense features (probe gain >= +5): {good}")
    readings.append((name, good, above, shared))

good = [r for r in readings if r[1]]
if not good:
    print("READING: no checkpoint qualifies as known-good dense features; no reading")
elif any(above and shared is not None and shared >= 1.0 for _, _, above, shared in good):
    print("READING: the built-in J&F can reward learned dense features beyond colour")
elif any(above for _, _, above, _ in good):
    print("READING: a known-good dense checkpoint beats random on J&F, not beyond colour")
else:
    print("READING: even features trained with dense labels do not beat random weights on "
          "the built-in clips (no positive control for the J&F part as built)")
