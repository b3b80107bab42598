"""benchmarks/paired_judge.py: the planned paired rule on hand-worked differences, and
reading back what build_spread.py writes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import build_spread  # noqa: E402
import paired_judge  # noqa: E402


def _report(rows: dict[str, float]) -> dict:
    """An `eval all` report.json with one mIoU per checkpoint source."""
    return {"checkpoints": [{"source": s, "label": s.replace(":", "-"),
                             "metrics": {"mIoU": m}, "results": {}} for s, m in rows.items()]}


@pytest.mark.parametrize("d, verdict", [
    ([2.0, 2.0, -1.0, 1.0], "helps"),                  # mean 1.0, 3 of 4 positive
    ([3.0, 3.0, -1.0, -1.0], "no measurable effect"),  # mean 1.0 but only 2 positive
    ([1.5, 1.2, -0.1, 1.0], "no measurable effect"),   # 3 positive but mean 0.9
    ([-1.0, -2.0, 0.5, -1.5], "hurts"),                # mean -1.0
    ([-0.9, -0.9, -0.9, -0.9], "no measurable effect"),
])
def test_paired_verdict_follows_the_planned_rule(d, verdict):
    assert paired_judge.paired_verdict(d) == verdict


def test_paired_verdict_and_difference_reject_bad_input():
    with pytest.raises(ValueError):
        paired_judge.paired_verdict([])
    with pytest.raises(ValueError):
        paired_judge.difference([1.0, 2.0], [1.0])


def test_reads_back_build_spread_output_as_hand_computed(tmp_path):
    """Random 6, 7 and two runs 12, 10 and 9, 8 on builds 0, 1: gains 6, 3 and 3, 1, so
    the paired difference is 3, 2 (mean 2.5). Bars: the first run's mean gain 4.5 >= 4 but
    the second's is 2 < 4."""
    per_build = {
        0: build_spread.scores(_report({"random:v": 6.0, "a.pt": 12.0, "b.pt": 9.0})),
        1: build_spread.scores(_report({"random:v": 7.0, "a.pt": 10.0, "b.pt": 8.0})),
    }
    path = tmp_path / "spread.json"
    path.write_text(json.dumps({"summary": build_spread.summarise(per_build, "random:v")}))
    runs = paired_judge.by_label(path)
    assert set(runs) == {"random-v", "a.pt", "b.pt"}
    builds = ("0", "1")
    a, b = paired_judge.gains(runs["a.pt"], "mIoU", builds), paired_judge.gains(
        runs["b.pt"], "mIoU", builds)
    assert (a, b) == ([6.0, 3.0], [3.0, 1.0])
    assert paired_judge.values(runs["random-v"], "mIoU", builds) == [6.0, 7.0]
    assert paired_judge.difference(a, b) == [3.0, 2.0]
    assert paired_judge.describe("d", [3.0, 2.0]) == "d: +3.00 +2.00 | mean +2.50 ± 0.71"
    bar = {"mIoU": 4.0}
    assert paired_judge.meets_bar([runs["a.pt"]], bar, builds)
    assert not paired_judge.meets_bar([runs["a.pt"], runs["b.pt"]], bar, builds)


def test_check_same_builds_rejects_a_different_negative_control(tmp_path):
    """Recorded gains apply only where random weights score the same: 6.0 vs 6.01 passes
    (tolerance 0.02), 6.0 vs 6.5 is refused with the metric named."""
    def spread(random_score: float) -> dict:
        per_build = {0: build_spread.scores(_report({"random:v": random_score, "a.pt": 9.0}))}
        path = tmp_path / f"spread-{random_score}.json"
        path.write_text(json.dumps({"summary": build_spread.summarise(per_build, "random:v")}))
        return paired_judge.by_label(path)

    kw = {"negative": "random-v", "metrics": ("mIoU",), "builds": ("0",)}
    paired_judge.check_same_builds(spread(6.0), spread(6.01), **kw, tol=0.02)
    with pytest.raises(ValueError, match="mIoU"):
        paired_judge.check_same_builds(spread(6.0), spread(6.5), **kw, tol=0.02)


def test_with_recorded_reads_the_sibling_folders_and_checks_each(tmp_path):
    """A check's spread and two recorded sibling ones, by label; one whose random weights
    scored otherwise is refused, naming the metric."""
    def write(folder: str, random_score: float, run: str) -> None:
        per_build = {0: build_spread.scores(_report({"random:v": random_score, run: 9.0}))}
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "spread.json").write_text(
            json.dumps({"summary": build_spread.summarise(per_build, "random:v")}))

    write("new", 6.0, "n.pt")
    write("old1", 6.0, "o1.pt")
    write("old2", 6.01, "o2.pt")
    write("other", 6.5, "x.pt")
    kw = {"negative": "random-v", "metrics": ("mIoU",), "builds": ("0",)}
    new, old1, old2 = paired_judge.with_recorded(tmp_path / "new", "spread.json", "old1",
                                                 "old2", **kw)
    assert "n.pt" in new and "o1.pt" in old1 and "o2.pt" in old2
    assert paired_judge.gains(old2["o2.pt"], "mIoU", ("0",)) == [pytest.approx(2.99)]
    with pytest.raises(ValueError, match="mIoU"):
        paired_judge.with_recorded(tmp_path / "new", "spread.json", "old1", "other", **kw)


def test_finished_or_latest_prefers_last_then_the_latest_snapshot():
    """`-last` wins whenever scored; otherwise the highest zero-padded epoch of that run, never
    another run's checkpoint that shares the prefix only as a different stem."""
    spread = {"a-s0-epoch0002": {"n": 2}, "a-s0-epoch0010": {"n": 10}, "a-s0-last": {"n": 0},
              "b-s0-epoch0004": {"n": 4}, "b-s0-epoch0006": {"n": 6}, "b-s01-last": {"n": 99}}
    assert paired_judge.finished_or_latest(spread, "a-s0") == ("a-s0-last", {"n": 0})
    assert paired_judge.finished_or_latest(spread, "b-s0") == ("b-s0-epoch0006", {"n": 6})
    with pytest.raises(KeyError, match="c-s0"):
        paired_judge.finished_or_latest(spread, "c-s0")


@pytest.mark.parametrize("gain, above", [
    ([0.2, 0.3, 0.1, -0.1], True),     # mean +0.125, 3 of 4 positive
    ([3.0, 3.0, -0.5, -0.5], False),   # mean +1.25 but only 2 positive
    ([0.1, 0.1, 0.1, -0.4], False),    # 3 positive but mean -0.025
    ([0.0, 0.0, 0.0, 0.0], False),     # equal to the control is not above it
])
def test_above_control_needs_the_mean_and_three_builds(gain, above):
    assert paired_judge.above_control(gain) is above
    with pytest.raises(ValueError):
        paired_judge.above_control([])


def test_control_line_states_scores_gains_and_the_rule():
    """J&F 65, 64, 63, 62 against random 64, 64, 64, 64: gains +1, 0, -1, -2 -> mean -0.5,
    sample std sqrt(5/3) = 1.29, not above the control."""
    builds = paired_judge.BUILDS
    scores, gain = [65.0, 64.0, 63.0, 62.0], [1.0, 0.0, -1.0, -2.0]
    entry = {"value": {"J&F": {"per_build": dict(zip(builds, scores))}},
             "gain": {"J&F": {"per_build": dict(zip(builds, gain))}}}
    above, line = paired_judge.control_line("run-last", entry)
    assert above is False
    assert line == ("run-last: 65.00 64.00 63.00 62.00 | minus random: +1.00 +0.00 -1.00 -2.00"
                    " | mean -0.50 ± 1.29 | above random weights (PLAN.md rule): False")
