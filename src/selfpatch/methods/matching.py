"""Positive matching: the k most cosine-similar neighbours of every patch (teacher, no grad)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfpatch.errors import SelfPatchError
from selfpatch.methods.neighbours import NeighbourTable


@torch.no_grad()
def match_positives(tokens: torch.Tensor, table: NeighbourTable, k: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick the top-k neighbours of each patch by cosine similarity.

    Cost is O(B * N * M * D) through a gather of the M candidates, except for the ``all``
    neighbourhood (M = N - 1), where one batched ``(N, N)`` matrix product is cheaper.

    Args:
        tokens: ``(B, N, D)`` patch tokens of one view, grid order matching ``table``.
        table: neighbourhood of the view's grid, ``index``/``valid`` of shape ``(N, M)``.
        k: number of positives, ``>= 1``; may exceed ``M`` (the ``all`` table of a grid
            with fewer than ``k + 1`` patches): the surplus slots are invalid.

    Returns:
        ``(positives, valid)``: ``(B, N, k)`` long flat patch indices and ``(B, N, k)`` bool.
        Where a patch has fewer than k real neighbours (borders in ``valid`` mode, tiny
        grids) the extra slots are marked invalid; they must be masked by the consumer.
    """
    b, n, _ = tokens.shape
    if table.index.shape[0] != n:
        raise SelfPatchError(
            f"neighbour table is for {table.index.shape[0]} patches, tokens have {n}")
    if k < 1:
        raise SelfPatchError(f"selfpatch.k={k} must be at least 1")
    if k > table.size:  # fewer candidates than k: take them all, pad with invalid slots
        surplus = k - table.size
        pad = torch.arange(n, device=tokens.device).view(1, n, 1).expand(b, n, surplus)
        if table.size == 0:
            return pad.clone(), torch.zeros(b, n, k, dtype=torch.bool, device=tokens.device)
        positives, valid = match_positives(tokens, table, table.size)
        return (torch.cat([positives, pad], dim=2),
                torch.cat([valid, torch.zeros_like(pad, dtype=torch.bool)], dim=2))
    unit = F.normalize(tokens.float(), dim=-1)
    if table.size == n - 1:  # "all": full similarity matrix, then pick the off-diagonal slots
        sim = torch.bmm(unit, unit.transpose(1, 2)).gather(
            2, table.index.unsqueeze(0).expand(b, -1, -1))
    else:
        cand = unit[:, table.index]  # (B, N, M, D)
        sim = torch.einsum("bnd,bnmd->bnm", unit, cand)
    sim = sim.masked_fill(~table.valid, float("-inf"))
    top_sim, slot = sim.topk(k, dim=-1)  # (B, N, k)
    positives = table.index.unsqueeze(0).expand(b, -1, -1).gather(2, slot)
    return positives, torch.isfinite(top_sim)


def gather_positives(tokens: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Gather positive tokens: ``(B, N, D)`` and ``(B, N, k)`` indices -> ``(B, N, k, D)``."""
    b, n, d = tokens.shape
    k = positives.shape[-1]
    flat = positives.reshape(b, n * k, 1).expand(-1, -1, d)
    return tokens.gather(1, flat).reshape(b, n, k, d)
