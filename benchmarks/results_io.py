"""Writing a benchmark's result file: one helper for every script in ``benchmarks/``."""

from __future__ import annotations

import json
from pathlib import Path


def write_result(path: Path | None, result: object) -> None:
    """Write ``result`` as indented JSON to ``path`` (parents created) and say where; None
    writes nothing."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")
