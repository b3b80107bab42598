"""benchmarks/build_spread.py: gains are taken against the negative control of the same
build, and aggregated over builds as hand-computed."""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import build_spread  # noqa: E402


def _report(rows: dict[str, tuple[float, list[float] | None]]) -> dict:
    return {"checkpoints": [
        {"source": s, "label": s.replace(":", "-"), "metrics": {"mIoU": m, "note": "x"},
         "results": {"seg": {"per_class": [{"IoU": v} for v in c]}} if c else {}}
        for s, (m, c) in rows.items()]}


def test_gain_is_against_the_same_builds_negative_and_aggregates_by_hand():
    """Random 6, 7, 5 and a run 12, 10, 13 on builds 0, 1, 2: gains 6, 3, 8 -> mean 17/3,
    sample std sqrt(((1/3)^2 + (8/3)^2 + (7/3)^2) / 2) = sqrt(19/3). Values 12, 10, 13 ->
    mean 35/3. Per-class IoU of the run on builds 0 and 2 only ([2, 4] and [4, 8]) -> [3, 6].
    A non-numeric metric is ignored."""
    per_build = {
        0: build_spread.scores(_report({"random:v": (6.0, None), "run.pt": (12.0, [2.0, 4.0])})),
        1: build_spread.scores(_report({"random:v": (7.0, None), "run.pt": (10.0, None)})),
        2: build_spread.scores(_report({"random:v": (5.0, None), "run.pt": (13.0, [4.0, 8.0])})),
    }
    out = build_spread.summarise(per_build, "random:v")
    run = out["run.pt"]
    assert run["builds"] == [0, 1, 2]
    assert run["gain"]["mIoU"]["per_build"] == {0: 6.0, 1: 3.0, 2: 8.0}
    assert math.isclose(run["gain"]["mIoU"]["mean"], 17 / 3)
    assert math.isclose(run["gain"]["mIoU"]["std"], math.sqrt(19 / 3))
    assert math.isclose(run["value"]["mIoU"]["mean"], 35 / 3)
    assert run["per_class_iou_mean"] == [3.0, 6.0]
    assert "note" not in run["value"]
    assert out["random:v"]["gain"]["mIoU"]["per_build"] == {0: 0.0, 1: 0.0, 2: 0.0}


def test_a_build_without_the_negative_gives_no_gain_for_it():
    per_build = {
        0: build_spread.scores(_report({"random:v": (6.0, None), "run.pt": (12.0, None)})),
        1: build_spread.scores(_report({"run.pt": (10.0, None)})),
    }
    run = build_spread.summarise(per_build, "random:v")["run.pt"]
    assert run["value"]["mIoU"]["per_build"] == {0: 12.0, 1: 10.0}
    assert run["gain"]["mIoU"]["per_build"] == {0: 6.0}
    assert run["gain"]["mIoU"]["std"] == 0.0
    text = build_spread.markdown(build_spread.summarise(per_build, "random:v"), None, "random:v")
    assert "+6.00 ± 0.00 (+6.00, +6.00)" in text


def test_cross_folder_links_train_scenes_of_one_build_and_val_scenes_of_another(tmp_path):
    a, b = tmp_path / "build-a", tmp_path / "build-b"
    for build in (a, b):
        for kind in ("images", "annotations"):
            for split in ("training", "validation"):
                d = build / "seg" / kind / split
                d.mkdir(parents=True)
                (d / "x.png").write_text(f"{build.name} {kind} {split}")
        (build / "manifest.json").write_text(f'{{"from": "{build.name}"}}')
    folder = build_spread.cross_folder(tmp_path / "out", a, b)
    assert (folder / "manifest.json").read_text() == '{"from": "build-a"}'
    for kind in ("images", "annotations"):
        assert (folder / "seg" / kind / "training" / "x.png").read_text() == \
            f"build-a {kind} training"
        assert (folder / "seg" / kind / "validation" / "x.png").read_text() == \
            f"build-b {kind} validation"
    assert build_spread.cross_folder(tmp_path / "out", a, b) == folder  # idempotent


def test_dry_run_prints_the_commands_and_builds_nothing(tmp_path, capsys):
    build_spread.main(["--seeds", "3", "5", "--root", str(tmp_path), "--dry-run",
                       "--checkpoint", "random:vit_tiny:16"])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("+ ")]
    assert len(lines) == 2 and all("eval all" in line for line in lines)
    assert "fashion-scenes-v2-seed5" in lines[1]
    assert list(tmp_path.iterdir()) == []


def test_precision_is_passed_on_only_when_asked(tmp_path, capsys):
    # auto times bf16 against fp32 and can pick either on a loaded CPU; a sweep that must
    # match recorded scores needs the recorded precision, so --precision reaches eval all
    base = ["--seeds", "3", "--root", str(tmp_path), "--dry-run",
            "--checkpoint", "random:vit_tiny:16"]
    build_spread.main(base)
    build_spread.main([*base, "--precision", "bf16"])
    default, pinned = [line.split() for line in capsys.readouterr().out.splitlines()
                       if line.startswith("+ ")]
    assert "--precision" not in default
    assert pinned[pinned.index("--precision") + 1] == "bf16"
