"""Stopping a run cleanly on SIGTERM (what SLURM and Kubernetes send before a kill) or Ctrl-C.

Inside :func:`graceful_stop`, the first SIGTERM/SIGINT only sets a flag; the loop finishes the
step under way, checks :func:`requested` (all ranks agree: one rank's signal stops them all),
saves a checkpoint and raises :class:`Stopped`, whose message gives the command that resumes
the run. A second signal acts as usual (immediate stop), for a user who does not want to wait.
"""

from __future__ import annotations

import contextlib
import shlex
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist

from selfpatch.errors import SelfPatchError

_received: list[int] = []
COMMAND_LINE: list[str] = []  # the CLI's arguments (set by `selfpatch pretrain`)


class Stopped(SelfPatchError):
    """The run stopped on a signal after saving; ``exit_code`` is 128 + the signal number."""

    def __init__(self, signal_name: str, step: int, checkpoint: Path) -> None:
        self.exit_code = 128 + int(getattr(signal, signal_name, signal.SIGTERM))
        super().__init__(f"stopped by {signal_name} after step {step}; checkpoint saved to "
                         f"{checkpoint}. Continue with: {resume_command()}")


def resume_command(argv: list[str] | None = None) -> str:
    """The command line with ``--resume`` (once), as the user would type it."""
    args = list(argv if argv is not None else COMMAND_LINE or sys.argv[1:])
    if "--resume" not in args:
        args.append("--resume")
    return shlex.join(["selfpatch", *args])


def _handler(signum: int, _frame) -> None:
    _received.append(signum)
    # The next one of the same kind behaves as without us (Ctrl-C twice = stop now).
    signal.signal(signum, signal.SIG_DFL if signum != signal.SIGINT else signal.default_int_handler)


@contextlib.contextmanager
def graceful_stop() -> Iterator[None]:
    """Catch SIGTERM/SIGINT for the duration (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.clear()
    previous = {s: signal.signal(s, _handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _received.clear()


def requested(info, device: torch.device) -> str | None:
    """The name of the signal that asked this run (any rank) to stop, or ``None``.

    Distributed: one small all-reduce per step so that every rank stops after the same step
    (a rank that stopped alone would leave the others waiting in the next collective).
    """
    signum = _received[0] if _received else 0
    if getattr(info, "enabled", False) and dist.is_available() and dist.is_initialized():
        flag = torch.tensor([signum], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        signum = int(flag.item())
    return signal.Signals(signum).name if signum else None
