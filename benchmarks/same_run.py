"""Are two pre-training runs the same run? For refactors: same config and seed, old vs new code.

Compares every logged metric except timing (``img_per_s``, ``max_mem_gb``) line by line, and
the final checkpoints' model states tensor by tensor (``torch.equal``, i.e. bit-identical),
reading both through :func:`selfpatch.checkpoint.load_training_checkpoint` so that a run from
an older checkpoint format compares with its current key names. Exit status 1 if they differ.

    python benchmarks/same_run.py runs/before runs/after
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from selfpatch.checkpoint import load_training_checkpoint

TIMING = {"img_per_s", "max_mem_gb"}


def compare(a: Path, b: Path) -> list[str]:
    """Differences between run directories ``a`` and ``b`` (empty when identical)."""
    problems = []
    rows = [[json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
            for run in (a, b)]
    if len(rows[0]) != len(rows[1]):
        problems.append(f"{len(rows[0])} vs {len(rows[1])} metric lines")
    for ra, rb in zip(*rows):
        for key in sorted((ra.keys() | rb.keys()) - TIMING):
            if ra.get(key) != rb.get(key):
                problems.append(f"step {ra.get('step')}: {key} {ra.get(key)} vs {rb.get(key)}")
    sa, sb = (load_training_checkpoint(run)["model"] for run in (a, b))
    if sa.keys() != sb.keys():
        problems.append(f"state keys differ: {sorted(sa.keys() ^ sb.keys())[:5]}")
    problems += [f"tensor {k} differs" for k in sorted(sa.keys() & sb.keys())
                 if not torch.equal(sa[k], sb[k])]
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    args = parser.parse_args()
    problems = compare(args.run_a, args.run_b)
    n = len((args.run_a / "metrics.jsonl").read_text().splitlines())
    if problems:
        print(f"DIFFERENT ({len(problems)} differences):\n" + "\n".join(problems[:20]))
        sys.exit(1)
    print(f"identical: {n} metric lines (timing excluded) and every tensor of the final "
          "model state")


if __name__ == "__main__":
    main()
