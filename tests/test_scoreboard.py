"""benchmarks/scoreboard.py: gains are paired per report and summarised as hand-worked, the
bar parts follow issue 9's rules, mismatched builds and typos are refused, and every recorded
run it lists resolves in docs/results/."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import scoreboard as sb  # noqa: E402


def _report(folder: Path, name: str, **scores: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    checkpoints = [{"label": label, "metrics": metrics} for label, metrics in scores.items()]
    (folder / name).write_text(json.dumps({"checkpoints": checkpoints}))


def _random(miou: float, knn: float, jf: float | None = None) -> dict:
    return {"mIoU": miou, "knn_top1": knn, **({"J&F": jf} if jf is not None else {})}


RANDOM = {"1": (6.0, 13.0, 60.0), "2": (7.0, 14.0, 61.0), "3": (6.5, 15.0, 62.0),
          "4": (8.0, 16.0, 63.0)}


def _check(tmp_path: Path) -> list[dict]:
    # run "a" gains mIoU +5, +6, +4, +5 (mean 5.0), k-NN +10 on every build, and J&F +1, +2,
    # -1, +1 (mean +0.75, 3 of 4 positive); run "b" is scored on builds 1-2 only for J&F
    a = {"1": (5, 10, 1), "2": (6, 10, 2), "3": (4, 10, -1), "4": (5, 10, 1)}
    for b, (m, k, j) in RANDOM.items():
        _report(tmp_path / "check", f"eval-seed{b}-report.json",
                **{sb.NEGATIVE: _random(m, k, j),
                   "a-last": _random(m + a[b][0], k + a[b][1], j + a[b][2]),
                   "b-last": _random(m + 1, k + 2)})
    for b in ("1", "2"):
        m, k, j = RANDOM[b]
        _report(tmp_path / "check", f"jf-seed{b}-report.json",
                **{sb.NEGATIVE: {"J&F": j}, "b-last": {"J&F": j - 3.0}})
    # build 0 is not a held-out build: ignored even though it would change the means
    _report(tmp_path / "check", "eval-seed0-report.json",
            **{sb.NEGATIVE: _random(0, 0, 0), "a-last": _random(99, 99, 99)})
    runs = (sb.Run("r", "DINO", 0, "check", "a-last"), sb.Run("r", "SelfPatch", 0, "check",
                                                               "b-last"),
            sb.Run("r", "DINO", 1, "pending", "c-last"))
    return sb.scoreboard(tmp_path, runs, positive=None)


def test_gains_summaries_and_bar_parts_are_the_hand_worked_ones(tmp_path):
    a, b, pending = _check(tmp_path)
    assert a["gains"]["mIoU"] == pytest.approx({"1": 5, "2": 6, "3": 4, "4": 5})
    assert a["summary"]["mIoU"]["mean"] == pytest.approx(5.0)
    assert a["summary"]["mIoU"]["sd"] == pytest.approx((2 / 3) ** 0.5)  # sample SD of 5,6,4,5
    assert a["summary"]["J&F"]["mean"] == pytest.approx(0.75)
    assert a["bar"] == {"mIoU": True, "knn_top1": True, "J&F": True}  # +5 and +10 count
    assert b["gains"]["J&F"] == pytest.approx({"1": -3.0, "2": -3.0})
    assert b["bar"] == {"mIoU": False, "knn_top1": False, "J&F": None}  # J&F not on 4 builds
    assert pending["missing"] is True
    table = sb.markdown([a, b, pending])
    assert "| +5.00 ± 0.82 | +10.00 ± 0.00 | +0.75 ± 1.26 | ✓ ✓ ✓ |" in table
    assert "-3.00 ± 0.00 (builds 1, 2 only) | ✗ ✗ ? |" in table
    assert "not recorded yet (pending/c-last)" in table


def test_j_and_f_needs_three_positive_builds(tmp_path):
    for b, (m, k, j) in RANDOM.items():
        gain = {"1": 5.0, "2": 5.0, "3": -1.0, "4": -1.0}[b]  # mean +2, only 2 positive
        _report(tmp_path / "c", f"eval-seed{b}-report.json",
                **{sb.NEGATIVE: _random(m, k, j), "x": _random(m, k, j + gain)})
    (row,) = sb.scoreboard(tmp_path, (sb.Run("r", "DINO", 0, "c", "x"),), positive=None)
    assert row["bar"]["J&F"] is False


def test_random_weights_scoring_differently_means_other_builds(tmp_path):
    _report(tmp_path / "one", "eval-seed1-report.json",
            **{sb.NEGATIVE: _random(6.0, 13.0), "x": _random(7.0, 14.0)})
    _report(tmp_path / "two", "eval-seed1-report.json",
            **{sb.NEGATIVE: _random(6.0, 13.5), "y": _random(7.0, 14.0)})
    runs = (sb.Run("r", "DINO", 0, "one", "x"), sb.Run("r", "DINO", 0, "two", "y"))
    with pytest.raises(ValueError, match="knn_top1 .* build 1 .* not the same build files"):
        sb.scoreboard(tmp_path, runs, positive=None)


def test_a_label_missing_from_a_folder_with_reports_is_an_error(tmp_path):
    _report(tmp_path / "one", "eval-seed1-report.json",
            **{sb.NEGATIVE: _random(6.0, 13.0), "x": _random(7.0, 14.0)})
    with pytest.raises(KeyError, match="'x-typo' is in no report"):
        sb.scoreboard(tmp_path, (sb.Run("r", "DINO", 0, "one", "x-typo"),), positive=None)
    assert sb.main(["--results", str(tmp_path / "nowhere")]) == 0  # nothing recorded: no rows


def test_every_recorded_run_resolves_and_the_control_is_paired_by_hand():
    rows = sb.scoreboard()
    assert len(rows) == len(sb.RUNS) + 1
    control = rows[-1]
    assert control["method"] == "supervised" and not control.get("missing")
    # independent computation: the supervised report minus random weights of the same build
    folder = sb.RESULTS / sb.POSITIVE.folder
    sup = json.loads((folder / "supervised-eval-seed3-report.json").read_text())
    rnd = json.loads((folder / "eval-seed3-report.json").read_text())
    pick = {c["label"]: c["metrics"] for c in sup["checkpoints"] + rnd["checkpoints"]}
    expected = pick["supervised-vit"]["mIoU"] - pick[sb.NEGATIVE]["mIoU"]
    assert control["gains"]["mIoU"]["3"] == pytest.approx(expected)
    assert control["bar"]["mIoU"] is True  # the positive control clears the probe bar


def test_the_table_in_docs_results_is_the_one_the_script_prints():
    # docs/results.md quotes the table; a run added to RUNS (or a report changed) without
    # updating the docs would make the quoted numbers stale
    text = (sb.RESULTS.parent / "results.md").read_text()
    assert sb.markdown(sb.scoreboard()) in text
    assert sb.clip_markdown(sb.clip_board()) in text


def _clips(folder: Path, build: str, **scores: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"video-s{build}.json").write_text(json.dumps(scores))


def _jf(v2: float, flicker: float, shared: float) -> dict:
    return {"v2": v2, "flicker": flicker, "shared-flicker": shared}


def test_clip_gains_are_paired_per_build_and_rendering(tmp_path):
    # random weights 60+b / 30+b / 20; "t" gains +2 on v2 everywhere, on flicker +5 on builds
    # 1-3 and -1 on build 4 (mean +3.5, 3 of 4 positive), on shared-flicker -1 everywhere
    for b in sb.BUILDS:
        r = _jf(60 + int(b), 30 + int(b), 20)
        flick = 5.0 if b != "4" else -1.0
        _clips(tmp_path / "c", b, **{sb.CLIP_NEGATIVE: r,
                                     "t.pt": _jf(r["v2"] + 2, r["flicker"] + flick, 19)})
    runs = (sb.ClipRun("t", "c", "video-s{build}.json", "t.pt"),
            sb.ClipRun("later", "pending", "video-s{build}.json", "u.pt"))
    board = sb.clip_board(tmp_path, runs)
    t, later = board["rows"]
    assert board["negative"]["v2"] == {"1": 61, "2": 62, "3": 63, "4": 64}
    assert t["gains"]["flicker"] == pytest.approx({"1": 5, "2": 5, "3": 5, "4": -1})
    assert t["summary"]["flicker"]["mean"] == pytest.approx(3.5)
    assert t["above"] == {"v2": True, "flicker": True, "shared-flicker": False}
    assert later["missing"] is True
    table = sb.clip_markdown(board)
    assert "| random weights (negative control; its J&F) | 62.5 | 32.5 | 20.0 |" in table
    assert "| t | +2.00 ± 0.00 ✓ | +3.50 ± 3.00 ✓ | -1.00 ± 0.00 |" in table


def test_clip_summaries_on_other_clips_or_with_a_typo_are_refused(tmp_path):
    for folder, shift in (("one", 0.0), ("two", 0.5)):
        for b in sb.BUILDS:
            _clips(tmp_path / folder, b, **{sb.CLIP_NEGATIVE: _jf(60 + shift, 30, 20),
                                            "x": _jf(61, 31, 21)})
    runs = [sb.ClipRun("a", f, "video-s{build}.json", "x") for f in ("one", "two")]
    with pytest.raises(ValueError, match="build 1 v2 .* not the same clips"):
        sb.clip_board(tmp_path, runs)
    with pytest.raises(KeyError, match="'y' is not in"):
        sb.clip_board(tmp_path, [sb.ClipRun("a", "one", "video-s{build}.json", "y")])
