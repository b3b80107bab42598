"""The second follow-up's judge (PLAN.md): per checkpoint, J&F minus random weights' J&F on
`flicker` and `shared-flicker` (build-0 clips), and whether `shared-flicker` is a candidate."""

import json
from pathlib import Path

here = Path(__file__).resolve().parent
RANDOM = "random:vit_tiny:16"
DENSE = "runs/dense/seg-scratch.safetensors"
video = json.loads((here / "video-summary-flicker.json").read_text())


def verdict(m: float) -> str:
    return "beats random" if m >= 1.0 else "does not" if m <= 0 else "unresolved"


beats = {}
for source, scores in video.items():
    if source == RANDOM:
        continue
    cells = []
    for variant in ("v2", "shared-tint", "flicker", "shared-flicker"):
        m = scores[variant] - video[RANDOM][variant]
        cells.append(f"{variant} {scores[variant]:.1f} ({m:+.2f})")
        if variant in ("flicker", "shared-flicker"):
            beats[source, variant] = m >= 1.0
    print(f"{source}: " + ", ".join(cells))
    for variant in ("flicker", "shared-flicker"):
        m = scores[variant] - video[RANDOM][variant]
        print(f"  {variant}: {verdict(m)}")
ssl = [s for s in video if s not in (RANDOM, DENSE)]
candidate = beats.get((DENSE, "shared-flicker"), False) and any(
    beats[s, "shared-flicker"] for s in ssl)
print("READING: shared-flicker is a candidate for the clips of a next data version"
      if candidate else "READING: shared-flicker is not a candidate")
