"""The second follow-up's judge (PLAN.md): does `T_v2` at seed 1 also beat random weights on
v2 over builds 1-4 by rule 1?"""

import json
import statistics
import sys
from pathlib import Path

here = Path(__file__).resolve().parent
sys.path.insert(0, str(here.parents[2] / "benchmarks"))
from paired_judge import above_control, describe  # noqa: E402

RANDOM = "random:vit_tiny:16"
SEEDS = {0: "runs/track/track-v2.safetensors", 1: "runs/track/track-v2-s1.safetensors"}
builds = [json.loads((here / f"video-s{n}.json").read_text()) for n in (1, 2, 3, 4)]
seed1 = [json.loads((here / f"video-v2-s1-build{n}.json").read_text()) for n in (1, 2, 3, 4)]
for b, extra in zip(builds, seed1):
    if abs(b[RANDOM]["v2"] - extra[RANDOM]["v2"]) > 1e-9:
        sys.exit("random weights differ between the two scorings: not the same clips")
    b.update(extra)
held = []
for seed, source in SEEDS.items():
    g = [b[source]["v2"] - b[RANDOM]["v2"] for b in builds]
    beats = above_control(g) and statistics.mean(g) >= 2.0
    held.append(beats)
    print(f"T_v2 seed {seed}: {describe('v2 minus random', g)}; rule 1: {beats}")
print("READING: " + ("the positive control holds at two seeds" if all(held) else
                     "the positive control rests on one seed"))
