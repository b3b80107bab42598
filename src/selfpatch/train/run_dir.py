"""The self-describing run directory: config, environment, metrics, checkpoints, pictures.

Layout::

    runs/<name>/
      config.yaml         resolved configuration (re-runnable: selfpatch pretrain --config it)
      environment.json    versions, device, git commit, command line, world size
      metrics.jsonl       one JSON object per logged step (loss, lr, wd, momentum, img/s, ...)
      checkpoints/last.pt latest training state (atomic), export with `selfpatch export`
      tensorboard/        optional
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from selfpatch.errors import SelfPatchError
from selfpatch.io import atomic_write


def git_commit() -> str:
    """Commit of the source tree, or '' outside a git checkout."""
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def environment(device: torch.device, world_size: int = 1) -> dict[str, Any]:
    """Versions, hardware and invocation, for environment.json."""
    import timm
    import torchvision

    import selfpatch

    info: dict[str, Any] = {
        "selfpatch": selfpatch.__version__, "git_commit": git_commit(),
        "python": sys.version.split()[0], "torch": torch.__version__,
        "torchvision": torchvision.__version__, "timm": timm.__version__,
        "platform": platform.platform(), "processor": platform.processor(),
        "cpu_threads": torch.get_num_threads(), "device": str(device),
        "world_size": world_size, "argv": sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def write_yaml(path: Path, data: dict[str, Any]) -> None:
    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        return v

    path.write_text(yaml.safe_dump(plain(data), sort_keys=False))


class MetricsLogger:
    """Appends metric dicts to ``metrics.jsonl`` (and TensorBoard when enabled)."""

    def __init__(self, run_dir: Path, tensorboard: bool = False) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:  # tensorboard is optional
                raise SelfPatchError(
                    "run.tensorboard=true needs the tensorboard package: "
                    f"pip install tensorboard ({exc})"
                ) from exc
            self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def keep_until(self, step: int) -> int:
        """Drop the lines logged after ``step`` (a resumed run logs those steps again);
        returns how many were dropped."""
        if not self.path.exists():
            return 0
        lines = self.path.read_text().splitlines()
        kept = []
        for line in lines:
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
            except json.JSONDecodeError:  # a line torn by a kill mid-write
                continue
        if len(kept) != len(lines):
            atomic_write(self.path, lambda tmp: Path(tmp).write_text(
                "".join(line + "\n" for line in kept)))
        return len(lines) - len(kept)

    def log(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for k, v in record.items():
                if isinstance(v, int | float) and k != "step":
                    self.writer.add_scalar(k, v, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
