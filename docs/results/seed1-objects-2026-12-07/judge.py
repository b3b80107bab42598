"""The judge of PLAN.md: C1 (the paper's DINO + SelfPatch, teacher 0.02, seed 1) and P1 (DINO +
the patch loss, `image_representation=cls`, mean targets, seed 1) against F (DINO, teacher
0.02, seed 1; recorded), with the seed-0 verdicts recorded in mean-agg-objects-2026-12-07
(C − B, P − B); seg / k-NN from spread.json, J&F from jf-seedN-report.json."""

import json
import statistics
import sys
from pathlib import Path

here = Path(__file__).resolve().parent
sys.path.insert(0, str(here.parents[2] / "benchmarks"))
import paired_judge as pj  # noqa: E402

# the recorded runs apply only on the same build files (random weights score the same)
new, tt02, ptemp = pj.with_recorded(here, "spread.json", "tt02-objects-2026-12-06",
                                    "patch-temp-2026-12-06")
agg = pj.by_label(here.parent / "mean-agg-objects-2026-12-07" / "spread.json")


def pick(stem: str) -> tuple[str, dict]:
    """The finished checkpoint, or (labelled, rules off) the latest snapshot scored."""
    labels = sorted(x for x in new if x.startswith(stem + "-"))
    label = stem + "-last" if stem + "-last" in new else labels[-1]
    return label, new[label]


(c1_label, C1), (p1_label, P1) = pick("sp-tt02-s1"), pick("sp-cls-mean-tt02-s1")
print("checkpoints:", c1_label, p1_label, "(the rules apply only to -last)")
B, C, F = tt02["tt02-s0-last"], tt02["sp-tt02-s0-last"], ptemp["dino-tt002-s1-last"]
P = agg["sp-cls-mean-tt02-s0-last"]
for metric in ("mIoU", "knn_top1"):
    print(f"--- {metric} (gain over random weights, builds 1-4)")
    for name, entry in (("B DINO s0", B), ("F DINO s1", F), ("C SelfPatch s0", C),
                        ("C1 SelfPatch s1", C1), ("P DINO + patch loss s0", P),
                        ("P1 DINO + patch loss s1", P1)):
        print(pj.describe(name, pj.gains(entry, metric)))
    for name, a, b in (("C - B (s0)", C, B), ("C1 - F (s1)", C1, F),
                       ("P - B (s0)", P, B), ("P1 - F (s1)", P1, F), ("P1 - C1 (s1)", P1, C1)):
        d = pj.difference(pj.gains(a, metric), pj.gains(b, metric))
        print(pj.describe(f"d = {name}", d), f"| d > 0 on {sum(x > 0 for x in d)}")


def verdict(a: dict, b: dict) -> str:
    return pj.paired_verdict(pj.difference(pj.gains(a, "mIoU"), pj.gains(b, "mIoU")))


def two_seeds(v0: str, v1: str, what: str) -> str:
    if v0 == v1 == "hurts":
        return f"{what} hurts at two seeds"
    if v0 == v1 == "helps":
        return f"{what} helps at two seeds"
    return f"not the same at two seeds (seed 0: {v0}; seed 1: {v1})"


if c1_label.endswith("-last") and p1_label.endswith("-last"):
    print("SelfPatch vs DINO (PLAN.md rule):", two_seeds(verdict(C, B), verdict(C1, F),
                                                         "the paper's SelfPatch (vs DINO)"))
    print("patch loss on DINO (PLAN.md rule):", two_seeds(verdict(P, B), verdict(P1, F),
                                                          "the patch loss"))
for name, entry in (("C1", C1), ("P1", P1)):
    print(f"{name} reaches +5.0 mIoU and +10 k-NN over builds 1-4:",
          pj.meets_bar((entry,), {"mIoU": 5.0, "knn_top1": 10.0}))

# J&F: above random only on the mean over builds 1-4 and on at least 3 of 4 builds
jf: dict[str, dict[str, float]] = {}
for b in pj.BUILDS:
    path = here / f"jf-seed{b}-report.json"
    if not path.exists():
        print(f"J&F: {path.name} missing; J&F not judged")
        break
    for entry in json.loads(path.read_text())["checkpoints"]:
        jf.setdefault(entry["label"], {})[b] = entry["metrics"]["J&F"]
else:
    rnd = [jf["random-vit_tiny-16"][b] for b in pj.BUILDS]
    print("--- J&F, builds 1-4")
    print("random weights:", " ".join(f"{x:.2f}" for x in rnd),
          f"| mean {statistics.mean(rnd):.2f}")
    for label in (c1_label, p1_label):
        xs = [jf[label][b] for b in pj.BUILDS]
        d = pj.difference(xs, rnd)
        above = statistics.mean(d) > 0 and sum(x > 0 for x in d) >= 3
        print(f"{label}:", " ".join(f"{x:.2f}" for x in xs), "|", pj.describe("minus random", d),
              "| above random weights (PLAN.md rule):", above)
