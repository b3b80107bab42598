"""Read `build_spread.py`'s spread.json files and apply a planned paired rule.

The planned checks under docs/results/ each freeze a rule in PLAN.md before their runs end
("helps if the mean paired difference over builds is >= +1.0 and positive on at least 3 of 4
builds; hurts if <= -1.0") and a judge.py that applies it; this module is what those judges
share, so each judge states only its runs and its rule. Standard library only, so a judge
runs without the package installed.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path

BUILDS = ("1", "2", "3", "4")


def by_label(path: Path | str) -> dict[str, dict]:
    """The summary entries of a spread.json, keyed by checkpoint label (e.g. ``base-s0-last``).

    Raises:
        FileNotFoundError / KeyError: not a file written by ``build_spread.py``.
    """
    summary = json.loads(Path(path).read_text())["summary"]
    return {entry["label"]: entry for entry in summary.values()}


def gains(entry: dict, metric: str, builds: Sequence[str] = BUILDS) -> list[float]:
    """Per-build gain of one checkpoint over the negative control, in ``builds`` order.

    Raises:
        KeyError: ``metric`` was not scored, or a build is missing for this checkpoint.
    """
    return [entry["gain"][metric]["per_build"][b] for b in builds]


def values(entry: dict, metric: str, builds: Sequence[str] = BUILDS) -> list[float]:
    """Per-build raw score of one checkpoint (no control subtracted), in ``builds`` order."""
    return [entry["value"][metric]["per_build"][b] for b in builds]


def difference(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """Paired per-build difference ``a - b``; both lists must cover the same builds."""
    if len(a) != len(b):
        raise ValueError(f"paired difference of {len(a)} and {len(b)} builds")
    return [x - y for x, y in zip(a, b)]


def describe(name: str, xs: Sequence[float]) -> str:
    """One line: the per-build values, their mean and sample standard deviation."""
    spread = f" ± {statistics.stdev(xs):.2f}" if len(xs) > 1 else ""
    return f"{name}: {' '.join(f'{x:+.2f}' for x in xs)} | mean {statistics.mean(xs):+.2f}{spread}"


def paired_verdict(d: Sequence[float], threshold: float = 1.0, min_positive: int = 3) -> str:
    """The planned rule on a paired difference ``d`` (one value per build).

    Returns ``"helps"`` if mean(d) >= ``threshold`` and d > 0 on at least ``min_positive``
    builds, ``"hurts"`` if mean(d) <= -``threshold``, otherwise ``"no measurable effect"``.
    """
    if not d:
        raise ValueError("paired_verdict needs at least one build")
    mean = statistics.mean(d)
    if mean >= threshold and sum(x > 0 for x in d) >= min_positive:
        return "helps"
    if mean <= -threshold:
        return "hurts"
    return "no measurable effect"


def finished_or_latest(spread: dict[str, dict], stem: str) -> tuple[str, dict]:
    """The checkpoint ``<stem>-last`` of a spread (by label), or, when the run was scored
    before it finished, its latest snapshot (zero-padded labels sort by epoch:
    ``<stem>-epoch0010``).

    Planned rules apply only to ``-last``; a judge labels any other pick as such.

    Raises:
        KeyError: no checkpoint of that run was scored.
    """
    if f"{stem}-last" in spread:
        return f"{stem}-last", spread[f"{stem}-last"]
    labels = sorted(x for x in spread if x.startswith(stem + "-"))
    if not labels:
        raise KeyError(f"no checkpoint of run {stem!r} in the spread ({sorted(spread)})")
    return labels[-1], spread[labels[-1]]


def above_control(gain: Sequence[float], min_positive: int = 3) -> bool:
    """The planned J&F rule: a checkpoint is above the negative control only if its per-build
    ``gain`` over it is positive on the mean *and* on at least ``min_positive`` builds."""
    if not gain:
        raise ValueError("above_control needs at least one build")
    return statistics.mean(gain) > 0 and sum(x > 0 for x in gain) >= min_positive


def control_line(label: str, entry: dict, metric: str = "J&F") -> tuple[bool, str]:
    """The planned J&F rule for one checkpoint and its judge line: whether it is
    :func:`above_control`, and ``"<label>: <score per build> | minus random: ... | above
    random weights (PLAN.md rule): <bool>"``."""
    gain = gains(entry, metric)
    above = above_control(gain)
    scores = " ".join(f"{x:.2f}" for x in values(entry, metric))
    return above, (f"{label}: {scores} | {describe('minus random', gain)} | above random "
                   f"weights (PLAN.md rule): {above}")


def check_same_builds(a: dict[str, dict], b: dict[str, dict],
                      negative: str = "random-vit_tiny-16",
                      metrics: Sequence[str] = ("mIoU", "knn_top1"), tol: float = 0.02,
                      builds: Sequence[str] = BUILDS) -> None:
    """Recorded gains from another spread.json apply only on the same build files: the
    negative control must score the same there (within ``tol``) on every build.

    Raises:
        ValueError: naming the metric and both per-build scores when they differ.
    """
    for metric in metrics:
        x, y = values(a[negative], metric, builds), values(b[negative], metric, builds)
        if max(abs(d) for d in difference(x, y)) >= tol:
            raise ValueError(f"{negative} {metric} differs between the two spreads ({x} vs "
                             f"{y}): not the same builds, the recorded gains do not apply")


def meets_bar(entries: Sequence[dict], bars: dict[str, float],
              builds: Sequence[str] = BUILDS) -> bool:
    """Whether every checkpoint's mean gain over ``builds`` reaches every ``metric: bar``
    (issue 9's +5 mIoU / +10 k-NN, each seed on its own)."""
    return all(statistics.mean(gains(e, m, builds)) >= bar
               for e in entries for m, bar in bars.items())


def with_recorded(folder: Path | str, spread: str, *recorded: str, **same_builds
                  ) -> list[dict[str, dict]]:
    """A check's own spread (``folder/spread``) and the recorded ones it compares against
    (``folder.parent/<name>/spread.json`` for each ``name`` in ``recorded``), each by label;
    raises (:func:`check_same_builds`, whose keywords ``same_builds`` passes on) unless the
    negative control scores the same in every recorded spread as in the check's own."""
    folder = Path(folder)
    spreads = [by_label(folder / spread)]
    for name in recorded:
        spreads.append(by_label(folder.parent / name / "spread.json"))
        check_same_builds(spreads[0], spreads[-1], **same_builds)
    return spreads
