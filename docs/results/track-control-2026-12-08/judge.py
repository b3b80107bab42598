"""The judge of PLAN.md: per tracking-trained control, J&F minus random weights' J&F over the
held-out builds 1-4 on each rendering, and the planned readings."""

import json
import statistics
import sys
from pathlib import Path

here = Path(__file__).resolve().parent
sys.path.insert(0, str(here.parents[2] / "benchmarks"))
from paired_judge import above_control, describe  # noqa: E402

RANDOM, NONE, CEILING = "random:vit_tiny:16", "first-mask", "grid-oracle"
RENDERINGS = ("v2", "shared-tint", "flicker", "shared-flicker")
RECORDED_RANDOM_V2 = (63.76, 62.26, 64.39, 61.53)  # build-spread J&F of random weights
builds = [json.loads((here / f"video-s{n}.json").read_text()) for n in (1, 2, 3, 4)]

for n, (summary, recorded) in enumerate(zip(builds, RECORDED_RANDOM_V2), start=1):
    if abs(summary[RANDOM]["v2"] - recorded) > 0.05:
        sys.exit(f"build {n}: random weights score {summary[RANDOM]['v2']:.2f} on v2, recorded "
                 f"{recorded}: not the same clips, the check stops (PLAN.md)")
print("clips: random weights' v2 J&F equals the recorded build spread on builds 1-4")


def per_build(source: str, rendering: str) -> list[float]:
    return [b[source][rendering] for b in builds]


def gain(source: str, rendering: str) -> list[float]:
    return [b[source][rendering] - b[RANDOM][rendering] for b in builds]


print("\nreferences, mean J&F over builds 1-4:")
for source in (RANDOM, NONE, CEILING):
    print(f"  {source}: " + ", ".join(
        f"{r} {statistics.mean(per_build(source, r)):.1f}" for r in RENDERINGS))

controls = {r: f"runs/track/track-{r}.safetensors" for r in RENDERINGS}
for rendering, source in controls.items():
    if source not in builds[0]:
        print(f"\nT_{rendering}: not run (PLAN.md rule 5)")
        continue
    print(f"\nT_{rendering} ({source}):")
    for r in RENDERINGS:
        g = gain(source, r)
        ceiling = statistics.mean(per_build(CEILING, r)) - statistics.mean(per_build(RANDOM, r))
        window = statistics.mean(g) / ceiling if ceiling > 0 else float("nan")
        own = " (own rendering)" if r == rendering else ""
        print(f"  {describe(r + ' minus random', g)}{own}; J&F "
              f"{statistics.mean(per_build(source, r)):.1f}; window fraction {window:.2f}")
    g = gain(source, rendering)
    beats = above_control(g) and statistics.mean(g) >= 2.0
    print(f"  rule 1 (beats random weights on {rendering}): {beats}")
    if rendering == "v2":
        if beats and statistics.mean(g) >= 5:
            reading = ("the clips as shipped can reward learned features: J&F has a positive "
                       "control")
        elif beats:
            reading = "learned features can beat random weights on v2, but the window is narrow"
        else:
            reading = ("even features trained for the protocol do not beat random weights on "
                       "the clips as shipped")
    else:
        above_none = (statistics.mean(per_build(source, rendering))
                      - statistics.mean(per_build(NONE, rendering)))
        wide = beats and statistics.mean(g) >= 5 and above_none >= 5
        reading = (f"{rendering} has a wide window for learned features (candidate)" if wide
                   else f"{rendering} is not a candidate")
        reading += f" (above first-mask by {above_none:+.1f})"
    print(f"  READING: {reading}")
