"""Learning curves: evaluate every kept snapshot of one or more runs next to random weights.

    python benchmarks/learning_curve.py runs/long/selfpatch-s0 runs/long/dino-s0 \
        --out runs/long/curve [--eval-args "--tasks davis,seg,knn"]

A run trained with ``run.keep_every=N`` keeps ``checkpoints/epochNNNN.pt`` every N epochs
(the ``cpu-long`` preset keeps one every 2 epochs). All snapshots of all runs, plus a
random-weight backbone of the same architecture (step 0), are evaluated by one
``selfpatch eval all`` call, so every row uses identical protocols and data. Writes
``curve.md`` / ``curve.json`` in ``--out`` (metric per run and step) next to the full report.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

METRICS = ("J&F", "J", "F", "mIoU", "aAcc", "mAcc", "knn_top1", "knn_top5")


def snapshots(run: Path) -> list[tuple[Path, dict]]:
    """``(path, facts)`` for every kept snapshot of ``run`` and its ``last.pt``, by step.

    ``last.pt`` is left out when a kept snapshot has the same step (same weights).
    """
    import torch

    found = []
    for path in sorted((run / "checkpoints").glob("epoch*.pt")) + [run / "checkpoints" /
                                                                    "last.pt"]:
        if not path.is_file():
            continue
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        cfg = ckpt["config"]
        facts = {"step": int(ckpt["step"]), "epoch": int(ckpt["epoch"]) + 1,
                 "method": cfg["method"], "arch": cfg["model"]["arch"],
                 "patch": cfg["model"]["patch_size"],
                 "images_seen": int(ckpt["step"]) * cfg["optim"]["batch_size"] *
                 int(ckpt.get("world_size", 1))}
        if any(f["step"] == facts["step"] for _, f in found):
            continue
        found.append((path, facts))
    if not found:
        raise SystemExit(f"{run}: no checkpoints/epoch*.pt or last.pt; train it first")
    return sorted(found, key=lambda item: item[1]["step"])


def render(rows: list[dict]) -> str:
    lines = ["| run | method | epoch | step | images seen | " + " | ".join(METRICS) + " |",
             "|---" * (5 + len(METRICS)) + "|"]
    for r in rows:
        cells = [f"{r['metrics'][k]:.1f}" if k in r["metrics"] else "–" for k in METRICS]
        lines.append(f"| {r['run']} | {r['method']} | {r['epoch']} | {r['step']} | "
                     f"{r['images_seen']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories")
    parser.add_argument("--out", type=Path, default=Path("runs/curve"))
    parser.add_argument("--eval-args", default="", help="extra `selfpatch eval all` arguments")
    parser.add_argument("--no-random", action="store_true", help="skip the random baseline")
    args = parser.parse_args(argv)

    sources: dict[str, dict] = {}
    for run in args.runs:
        for path, facts in snapshots(run):
            sources[str(path)] = {"run": run.name, **facts}
    first = next(iter(sources.values()))
    if not args.no_random:
        sources[f"random:{first['arch']}:{first['patch']}"] = {
            "run": "random weights", "method": "none", "step": 0, "epoch": 0, "images_seen": 0}

    eval_out = args.out / "eval"
    cmd = [sys.executable, "-m", "selfpatch", "eval", "all", "--out", str(eval_out),
           *args.eval_args.split()]
    for source in sources:
        cmd += ["--checkpoint", source]
    subprocess.run(cmd, check=True)

    report = json.loads((eval_out / "report.json").read_text())
    by_source = {e["source"]: e for e in report["checkpoints"]}
    rows = []
    for source, facts in sources.items():
        entry = by_source[source]
        rows.append({**facts, "source": source, "metrics": entry["metrics"],
                     "eval_seconds": entry.get("seconds")})
    (args.out / "curve.json").write_text(json.dumps(rows, indent=2))
    text = render(rows)
    (args.out / "curve.md").write_text(text)
    print(text)
    print(f"curve: {args.out / 'curve.md'}   full report: {eval_out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
