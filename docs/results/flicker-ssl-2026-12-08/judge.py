"""This check's judge (PLAN.md): are the retrains the recorded runs, and does each strong-jitter
teacher-0.02 checkpoint beat random weights on `flicker` clips over builds 1-4?"""

import json
import statistics
import sys
from pathlib import Path

here = Path(__file__).resolve().parent
results = here.parent
sys.path.insert(0, str(results.parents[1] / "benchmarks"))
from paired_judge import above_control, describe  # noqa: E402

RANDOM = "random:vit_tiny:16"
B = "runs/track/dino-tt02-s0/checkpoints/last.pt"
# label: (checkpoint, this retrain's log, the recorded log, recorded build-1 J&F source)
RUNS = {
    "F (DINO, seed 1)": ("runs/flick/dino-tt02-s1/checkpoints/last.pt",
                         "dino-tt02-s1-metrics.jsonl",
                         "patch-temp-2026-12-06/dino-tt002-s1-metrics.jsonl",
                         "runs/pt/dino-tt002-s1/checkpoints/last.pt"),
    "C' (SelfPatch, seed 0)": ("runs/flick/sp-tt02-s0/checkpoints/last.pt",
                               "sp-tt02-s0-metrics.jsonl",
                               "tt02-objects-2026-12-06/selfpatch-t002-seed0-metrics.jsonl",
                               "runs/tt/sp-tt02-s0/checkpoints/last.pt"),
}
recorded_jf = {c["source"]: c["metrics"]["J&F"] for c in json.loads(
    (results / "patch-temp-2026-12-06/jf-seed1-report.json").read_text())["checkpoints"]}
builds = [json.loads((here / f"video-s{n}.json").read_text()) for n in (1, 2, 3, 4)]
recorded_random = [json.loads((results / f"track-control-2026-12-08/video-ssl-s{n}.json")
                              .read_text())[RANDOM] for n in (1, 2, 3, 4)]


def losses(path: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def flicker_rule(label: str, source: str) -> bool:
    for rendering in ("v2", "flicker", "shared-flicker"):
        g = [b[source][rendering] - b[RANDOM][rendering] for b in builds]
        js = " ".join(f"{b[source][rendering]:.1f}" for b in builds)
        print(f"  {describe(rendering + ' minus random', g)}; J&F {js}")
    g = [b[source]["flicker"] - b[RANDOM]["flicker"] for b in builds]
    beats = above_control(g) and statistics.mean(g) >= 2.0
    print(f"  bar's J&F rule alone on flicker: {above_control(g)}; "
          f"rule 2 (and mean >= +2.0): {beats}")
    return beats


# the clips must be the ones random weights were scored on before
worst = max(abs(b[RANDOM][r] - rec[r]) for b, rec in zip(builds, recorded_random) for r in rec)
print(f"random weights against their recorded J&F: max |difference| {worst:.3f}")
if worst > 0.05:
    sys.exit("the clips differ from the recorded ones: check stopped (PLAN.md)")

print("B (DINO, seed 0; recorded run, reused from track-control-2026-12-08):")
beats = {"B": flicker_rule("B", B)}
same = {}
for label, (source, log, recorded, old_source) in RUNS.items():
    if source not in builds[0] or not (here / log).exists():
        print(f"{label}: not run")
        continue
    mine, theirs = losses(here / log), losses(results / recorded)
    common = sorted(mine.keys() & theirs.keys())
    diff = max(abs(mine[s] - theirs[s]) for s in common)
    same[label] = diff <= 1e-4 and len(common) == len(theirs)
    print(f"{label}: {len(common)} of {len(theirs)} recorded logged steps in common, max |loss "
          f"difference| {diff:.2e}: "
          + ("the recorded run" if same[label] else "another sample of the recipe"))
    beats[label] = flicker_rule(label, source)
    print(f"  v2 build 1: {builds[0][source]['v2']:.2f} here, {recorded_jf[old_source]:.2f} "
          "recorded (descriptive)")

f, c = list(RUNS)
if f in beats:
    if beats["B"] and beats[f] and same[f]:
        print("READING (DINO): on flicker clips DINO (strong jitter, teacher 0.02) clears all "
              "three parts of the bar at two seeds")
    elif beats["B"] and beats[f]:
        print("READING (DINO): both seeds beat random weights on flicker, but F is not the "
              "recorded run, so its probe and k-NN are not measured here")
    else:
        print("READING (DINO): the flicker result does not repeat at both seeds; flicker clips "
              "are not a route for the bar with this recipe")
if c in beats:
    print("READING (SelfPatch): C' " + ("beats" if beats[c] else "does not beat")
          + " random weights on flicker (SelfPatch misses the probe part either way)")
