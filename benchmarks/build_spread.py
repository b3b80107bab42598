"""How much do built-in benchmark scores move between two builds of the same design?

    python benchmarks/build_spread.py --seeds 0 1 2 3 4 --root runs/spread \\
        --checkpoint random:vit_tiny:16 --checkpoint runs/controls/supervised-vit.safetensors \\
        --checkpoint runs/<run>/checkpoints/last.pt [--probe-seeds 1 2] [--threads 2]

A built-in build is one random draw of layouts, backgrounds, photos and videos (data seed).
A score measured on one build carries that draw's luck; before a threshold such as "+5 mIoU
over random weights" can be judged on one build, the spread between builds must be known.
This script builds the data once per seed (``selfpatch data build``'s code, ``--root``), runs
``selfpatch eval all --data-root <build>`` on every checkpoint (``--reuse``: an interrupted
sweep continues), optionally repeats the segmentation probe on the first build with other
probe seeds (``--seg-seed``: the share of the spread that is the probe's own training noise),
and writes ``spread.json`` / ``spread.md``: per build, per checkpoint, and mean ± sample std
over builds of each score and of its gain over the negative control scored on the *same*
build (the first ``random:`` checkpoint unless ``--negative`` names another).
``--n-seg-train`` / ``--n-seg-val`` build every seed with more (or fewer) probe scenes: does
a larger probe set make one build's gain steadier?

About 2 minutes per checkpoint and build on 2 cores of an AMD EPYC family 25 (all three
tasks), 30 s for a probe; on family 23 (Zen 1) about 4 minutes for seg + k-NN, 90 s a probe.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reproduce  # noqa: E402  (also puts this checkout's src/ on the path)
from results_io import write_result  # noqa: E402

from selfpatch.data.builtin import BuiltinSpec, ensure_builtin  # noqa: E402

SHOWN = ("J&F", "mIoU", "knn_top1")


def scores(report: dict) -> dict[str, dict]:
    """source -> ``{"label", "metrics": {name: value}, "per_class_iou": [..] | None}`` from
    one ``eval all`` report."""
    out = {}
    for entry in report["checkpoints"]:
        seg = entry.get("results", {}).get("seg")
        out[entry["source"]] = {
            "label": entry["label"],
            "metrics": {k: v for k, v in entry["metrics"].items() if isinstance(v, (int, float))},
            "per_class_iou": [c["IoU"] for c in seg["per_class"]] if seg else None,
        }
    return out


def cross_folder(root: Path, train_build: Path, val_build: Path) -> Path:
    """A build folder whose probe trains on ``train_build``'s scenes and is scored on
    ``val_build``'s: the manifest of ``train_build`` and symlinks to the two ``seg`` splits
    (``eval --tasks seg --data-root`` reads nothing else)."""
    folder = root / f"cross-{train_build.name}-{val_build.name}"
    for kind in ("images", "annotations"):
        (folder / "seg" / kind).mkdir(parents=True, exist_ok=True)
        for split, build in (("training", train_build), ("validation", val_build)):
            link = folder / "seg" / kind / split
            if not link.is_symlink():
                link.symlink_to((build / "seg" / kind / split).resolve())
    manifest = folder / "manifest.json"
    if not manifest.exists():
        manifest.write_bytes((train_build / "manifest.json").read_bytes())
    return folder


def summarise(per_build: dict[int, dict[str, dict]], negative: str) -> dict:
    """Mean ± sample std over builds of every metric and of its gain over ``negative``.

    Args:
        per_build: data seed -> :func:`scores` of that build's report.
        negative: the source whose score on the same build each gain is measured from.

    Returns ``{source: {"label", "builds": [seeds], "value": {metric: {"per_build": {seed:
    x}, "mean", "std"}}, "gain": {metric: {...same...}}, "per_class_iou_mean": [..]}}``; a
    metric enters only for builds where both the source and ``negative`` have it.
    """
    sources: list[str] = []
    for build in per_build.values():
        sources += [s for s in build if s not in sources]
    out = {}
    for source in sources:
        seeds = [seed for seed, build in per_build.items() if source in build]
        names = sorted({m for seed in seeds for m in per_build[seed][source]["metrics"]})
        value, gain = {}, {}
        for name in names:
            vals = {seed: per_build[seed][source]["metrics"][name] for seed in seeds
                    if name in per_build[seed][source]["metrics"]}
            diffs = {seed: v - per_build[seed][negative]["metrics"][name]
                     for seed, v in vals.items()
                     if negative in per_build[seed]
                     and name in per_build[seed][negative]["metrics"]}
            for target, series in ((value, vals), (gain, diffs)):
                mean, std = reproduce.mean_std(list(series.values()))
                target[name] = {"per_build": series, "mean": mean, "std": std}
        classes = [per_build[seed][source]["per_class_iou"] for seed in seeds
                   if per_build[seed][source]["per_class_iou"]]
        out[source] = {
            "label": per_build[seeds[0]][source]["label"], "builds": seeds,
            "value": value, "gain": gain,
            "per_class_iou_mean": ([sum(c) / len(classes) for c in zip(*classes)]
                                   if classes else None),
        }
    return out


def markdown(summary: dict, probe: dict | None, negative: str, cross: dict | None = None) -> str:
    """The tables of ``spread.md``."""
    lines = ["| checkpoint | builds | " + " | ".join(
        f"{m} mean ± std | gain {m} mean ± std (min, max)" for m in SHOWN) + " |",
        "|---|---|" + "---:|---:|" * len(SHOWN)]
    for source, s in summary.items():
        cells = []
        for m in SHOWN:
            v, g = s["value"].get(m), s["gain"].get(m)
            if v is None:
                cells += ["–", "–"]
                continue
            cells.append(f"{v['mean']:.2f} ± {v['std']:.2f}")
            vals = list(g["per_build"].values()) if g else []
            cells.append("–" if source == negative or not vals else
                         f"{g['mean']:+.2f} ± {g['std']:.2f} ({min(vals):+.2f}, {max(vals):+.2f})")
        builds = ",".join(map(str, s["builds"]))
        lines.append(f"| {s['label']} | {builds} | " + " | ".join(cells) + " |")
    lines += ["", "Per build (" + ", ".join(SHOWN) + "):", "",
              "| checkpoint | " + " | ".join(
                  f"seed {seed}" for seed in next(iter(summary.values()))["builds"]) + " |",
              "|---|" + "---:|" * len(next(iter(summary.values()))["builds"])]
    for s in summary.values():
        cells = [" / ".join(f"{s['value'][m]['per_build'].get(seed, float('nan')):.2f}"
                            for m in SHOWN if m in s["value"]) for seed in s["builds"]]
        lines.append(f"| {s['label']} | " + " | ".join(cells) + " |")
    if probe:
        lines += ["", "Probe seeds on one build (mIoU; only the probe's initialisation and "
                  "batch order change):", "", "| checkpoint | per probe seed | mean ± std |",
                  "|---|---|---:|"]
        for s in probe.values():
            per = s["value"]["mIoU"]["per_build"]
            mean, std = s["value"]["mIoU"]["mean"], s["value"]["mIoU"]["std"]
            lines.append(f"| {s['label']} | " + ", ".join(f"{k}: {v:.3f}" for k, v in per.items())
                         + f" | {mean:.3f} ± {std:.3f} |")
    if cross:
        lines += ["", "Which draw moves the probe: gain in mIoU over random weights, mean ± std "
                  "(min, max), with the probe's training scenes fixed (first build) and its "
                  "validation scenes from each build, and the other way round:", "",
                  "| checkpoint | val scenes vary | train scenes vary | both vary (builds) |",
                  "|---|---:|---:|---:|"]
        for source, s in summary.items():
            if source == negative:
                continue
            cells = []
            for part in (cross["val"], cross["train"], summary):
                g = part[source]["gain"]["mIoU"]
                vals = list(g["per_build"].values())
                cells.append(f"{g['mean']:+.2f} ± {g['std']:.2f} ({min(vals):+.2f}, "
                             f"{max(vals):+.2f})")
            lines.append(f"| {s['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--root", type=Path, default=Path("runs/spread"),
                        help="builds and evaluations go here")
    parser.add_argument("--checkpoint", action="append", required=True,
                        help="as for `selfpatch eval all`; repeat")
    parser.add_argument("--negative", default=None,
                        help="source the gains are measured from (default: the first random:)")
    parser.add_argument("--probe-seeds", type=int, nargs="*", default=[],
                        help="extra --seg-seed values, probe only, on the first data seed")
    parser.add_argument("--cross", action="store_true",
                        help="also train the probe on the first build and score it on each other "
                             "build's val scenes, and the reverse (which draw moves it)")
    parser.add_argument("--tasks", default="davis,seg,knn")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default=None,
                        help="eval all --precision (default: its own auto, which times bf16 "
                             "against fp32 on CPUs and so can pick either on a loaded machine)")
    parser.add_argument("--source", default=None, help="Fashion-MNIST folder (data build --source)")
    parser.add_argument("--n-seg-train", type=int, default=BuiltinSpec.n_seg_train,
                        help="probe training scenes per build")
    parser.add_argument("--n-seg-val", type=int, default=BuiltinSpec.n_seg_val,
                        help="probe validation scenes per build")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = parser.parse_args(argv)
    negative = args.negative or next((c for c in args.checkpoint if c.startswith("random:")), None)
    if negative is None or negative not in args.checkpoint:
        parser.error("--negative must be one of the --checkpoint sources (or pass a random: one)")

    def evaluate(build: Path, out: Path, extra: list[str]) -> dict:
        cmd = reproduce.selfpatch_cmd("eval", "all", "--data-root", str(build), "--out", str(out),
                                      "--reuse", "--threads", str(args.threads), *extra)
        if args.precision:
            cmd += ["--precision", args.precision]
        for c in args.checkpoint:
            cmd += ["--checkpoint", c]
        print("+", " ".join(cmd), flush=True)
        if args.dry_run:
            return {"checkpoints": []}
        subprocess.run(cmd, check=True)
        return json.loads((out / "report.json").read_text())

    per_build, probe_runs, builds = {}, {}, {}
    for seed in args.seeds:
        spec = BuiltinSpec(seed=seed, n_seg_train=args.n_seg_train, n_seg_val=args.n_seg_val)
        if args.dry_run:  # name the build, do not render it (minutes per build)
            build = builds[seed] = args.root / spec.dir_name()
        else:
            build = builds[seed] = ensure_builtin(spec, root=args.root, source=args.source,
                                                  progress=False).root
        per_build[seed] = scores(evaluate(build, args.root / f"eval-seed{seed}",
                                          ["--tasks", args.tasks]))
        if seed == args.seeds[0] and args.probe_seeds:
            probe_runs[0] = {s: v for s, v in per_build[seed].items()}
            for p in args.probe_seeds:
                probe_runs[p] = scores(evaluate(build, args.root / f"eval-seed{seed}-probe{p}",
                                                ["--tasks", "seg", "--seg-seed", str(p)]))
    cross = None
    if args.cross:
        first = args.seeds[0]
        by_val, by_train = {first: per_build[first]}, {first: per_build[first]}
        for seed in args.seeds[1:]:
            for target, train, val in ((by_val, first, seed), (by_train, seed, first)):
                folder = cross_folder(args.root, builds[train], builds[val])
                target[seed] = scores(evaluate(folder, args.root / f"eval-{folder.name}",
                                               ["--tasks", "seg"]))
        if not args.dry_run:
            cross = {"val": summarise(by_val, negative), "train": summarise(by_train, negative)}
    if args.dry_run:
        return
    summary = summarise(per_build, negative)
    probe = summarise(probe_runs, negative) if probe_runs else None
    result = {"seeds": args.seeds, "negative": negative, "tasks": args.tasks,
              "n_seg_train": args.n_seg_train, "n_seg_val": args.n_seg_val,
              "probe_seeds": [0, *args.probe_seeds] if probe_runs else [],
              "summary": summary, "probe": probe, "cross": cross}
    write_result(args.root / "spread.json", result)
    text = markdown(summary, probe, negative, cross)
    (args.root / "spread.md").write_text(text)
    print(text)
    print(f"wrote {args.root / 'spread.md'}")


if __name__ == "__main__":
    main()
