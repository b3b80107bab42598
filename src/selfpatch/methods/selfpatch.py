"""SelfPatch targets: for every patch, its aggregated top-k neighbours (paper Eq. 5).

Usable on its own in any training loop::

    targets = SelfPatchTargets(neighbourhood="3x3", border="valid", k=4)
    with torch.no_grad():
        y = targets(teacher_tokens, grid, teacher_aggregator)   # (B, N, D)
    loss = patch_loss([student_patch_head(student_tokens)], [teacher_patch_head(y)], 0.04)
"""

from __future__ import annotations

import torch
from torch import nn

from selfpatch.errors import SelfPatchError
from selfpatch.methods.matching import gather_positives, match_positives
from selfpatch.methods.neighbours import BORDER_MODES, NEIGHBOURHOODS, neighbour_table


class SelfPatchTargets(nn.Module):
    """Neighbour matching + aggregation of the positives; holds no parameters.

    ``forward(tokens (B, N, D), grid (h, w), aggregator) -> (B, N, D)``: for patch i, the
    aggregator's summary of its k most similar neighbours (masked slots excluded). The
    ``aggregator`` (a module ``(S, L, D), (S, L) -> (S, D)``) is passed in so the same targets
    serve the teacher's module (the method) or any other.

    After a call, :attr:`last_valid_share` holds the share of real slots among the ``B*N*k``
    positives (a tensor, no host sync), useful to spot border effects.
    """

    def __init__(self, neighbourhood: str = "3x3", border: str = "valid", k: int = 4) -> None:
        super().__init__()
        if neighbourhood not in NEIGHBOURHOODS:
            raise SelfPatchError(
                f"selfpatch.neighbourhood={neighbourhood!r} is not one of {NEIGHBOURHOODS}")
        if border not in BORDER_MODES:
            raise SelfPatchError(f"selfpatch.border={border!r} is not one of {BORDER_MODES}")
        if k < 1:
            raise SelfPatchError(f"selfpatch.k={k} must be at least 1")
        self.neighbourhood, self.border, self.k = neighbourhood, border, k
        self.last_valid_share: torch.Tensor | None = None

    def check_grid(self, h: int, w: int) -> None:
        """Raise a clear error if k exceeds the neighbourhood of an ``h x w`` grid."""
        table = neighbour_table(h, w, self.neighbourhood, self.border)
        if self.k > table.size:
            raise SelfPatchError(
                f"selfpatch.k={self.k} is larger than the {self.neighbourhood} neighbourhood "
                f"({table.size} candidates on a {h}x{w} patch grid); lower selfpatch.k"
            )

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int],
                aggregator: nn.Module) -> torch.Tensor:
        b, n, d = tokens.shape
        self.check_grid(*grid)
        table = neighbour_table(grid[0], grid[1], self.neighbourhood, self.border, tokens.device)
        positives, valid = match_positives(tokens, table, self.k)  # (B, N, k) each
        gathered = gather_positives(tokens, positives)  # (B, N, k, D)
        self.last_valid_share = valid.float().mean()
        out = aggregator(gathered.reshape(b * n, self.k, d), valid.reshape(b * n, self.k))
        return out.reshape(b, n, d)
