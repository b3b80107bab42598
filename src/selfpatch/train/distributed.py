"""torch.distributed set-up: launched by torchrun (env RANK/WORLD_SIZE) or single process."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from selfpatch import runtime


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits. ``world_size == 1`` means no process group."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


# How long a collective may wait for the other ranks before raising instead of hanging (a
# rank that died without torchrun noticing, a wedged file system). Generous because rank 0
# alone builds the built-in data set while the others wait at a barrier.
TIMEOUT_ENV = "SELFPATCH_DIST_TIMEOUT_MIN"


def init_distributed(device_pref: str = "auto") -> DistInfo:
    """Start a process group when launched by torchrun with more than one process.

    NCCL when the run uses CUDA, gloo on CPU. A single process needs no group. Collectives
    time out after ``$SELFPATCH_DIST_TIMEOUT_MIN`` minutes (default 30).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_pref != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        minutes = float(os.environ.get(TIMEOUT_ENV, "30"))
        dist.init_process_group(backend="nccl" if use_cuda else "gloo",
                                timeout=timedelta(minutes=minutes))
        # Every rank finishes joining before any can leave: a rank that fails right after
        # start-up (e.g. an existing run without --resume) and tears its group down would
        # otherwise break a slower peer still connecting (gloo: "connectFullMesh failed ...
        # Connection closed by peer", seen in CI on a loaded 2-core machine).
        dist.barrier(device_ids=[local_rank] if use_cuda else None)
    return DistInfo(rank, local_rank, world)


def barrier(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()


@torch.no_grad()
def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Copy every parameter and buffer of ``module`` from rank ``src`` to all ranks.

    DDP syncs only the module it wraps (the student); the EMA teacher and the loss centres
    must start equal on every rank too, or the ranks' targets differ from the first step.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    for t in [*module.parameters(), *module.buffers()]:
        dist.broadcast(t.data, src)


def mean_over_ranks(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Average 0-dim tensors over ranks in one all-reduce (identity without a group).

    Every rank must call it with the same keys in the same order.
    """
    if not (dist.is_available() and dist.is_initialized()) or not values:
        return values
    stacked = torch.stack([v.detach().float().reshape(()) for v in values.values()])
    dist.all_reduce(stacked)
    stacked /= dist.get_world_size()
    return dict(zip(values, stacked.unbind(0), strict=True))


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def resolve_device(pref: str, info: DistInfo) -> torch.device:
    """``auto`` -> the local GPU if there is one, else CPU; ``cuda`` -> this rank's GPU."""
    return runtime.resolve_device(pref, info.local_rank, key="run.device")
