"""Mean gain over random weights on builds 1-4 (the judge of PLAN.md), from spread.json."""

import json
import statistics
from pathlib import Path

spread = json.loads((Path(__file__).parent / "spread.json").read_text())
for summary in spread["summary"].values():
    gains = summary.get("gain") or {}
    cells = [summary["label"]]
    for metric in ("mIoU", "knn_top1"):
        if metric not in gains:
            continue
        per_build = {int(k): v for k, v in gains[metric]["per_build"].items()}
        held = [per_build[k] for k in (1, 2, 3, 4)]
        cells.append(f"{metric}: builds 1-4 {statistics.mean(held):+.2f} ± "
                     f"{statistics.stdev(held):.2f} (min {min(held):+.2f})")
    print(" | ".join(cells))
