"""Neighbourhood tables: which patches of an ``h x w`` grid are candidate positives of each patch.

A table is two ``(N, M)`` tensors over the ``N = h * w`` patches in row-major order: ``index``
holds the flat index of each candidate and ``valid`` says whether the slot is real. Slots that
fall outside the grid (border mode ``valid``) point at the patch itself and are masked out, so
gathers never go out of range and masked slots can never win a top-k.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from selfpatch.errors import SelfPatchError

NEIGHBOURHOODS = ("3x3", "5x5", "all")
BORDER_MODES = ("valid", "wrap")
#: Half-width of the window neighbourhoods (``all`` has none).
WINDOW_RADIUS = {"3x3": 1, "5x5": 2}


def window_candidates(neighbourhood: str) -> int | None:
    """Most candidates a neighbourhood can offer any patch (8 for 3x3, 24 for 5x5); None for
    ``all``, whose count is the grid's."""
    radius = WINDOW_RADIUS.get(neighbourhood)
    return None if radius is None else (2 * radius + 1) ** 2 - 1


@dataclass(frozen=True)
class NeighbourTable:
    """Candidate positives of every patch.

    Attributes:
        index: ``(N, M)`` long, flat patch index of each candidate.
        valid: ``(N, M)`` bool, False for slots outside the grid (``valid`` border mode).
        grid: ``(h, w)``.
    """

    index: torch.Tensor
    valid: torch.Tensor
    grid: tuple[int, int]

    @property
    def size(self) -> int:
        """``M``, the number of candidate slots per patch."""
        return int(self.index.shape[1])

    def min_valid(self) -> int:
        """Fewest real candidates any patch has (corner patches in ``valid`` mode)."""
        return int(self.valid.sum(dim=1).min())


def _offsets(radius: int) -> list[tuple[int, int]]:
    return [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)
            if (dy, dx) != (0, 0)]


def build_neighbour_table(h: int, w: int, neighbourhood: str = "3x3",
                          border: str = "valid") -> NeighbourTable:
    """Build the table for an ``h x w`` grid (CPU tensors).

    Args:
        neighbourhood: ``3x3`` (8 candidates), ``5x5`` (24) or ``all`` (every other patch,
            ``N - 1``).
        border: ``valid`` masks candidates outside the grid; ``wrap`` takes them modulo the
            grid size on both axes (a torus), as the reference implementation's tables do
            (on grids smaller than the window, self and repeated candidates are masked).
    """
    if neighbourhood not in NEIGHBOURHOODS:
        raise SelfPatchError(
            f"selfpatch.neighbourhood={neighbourhood!r} is not one of {NEIGHBOURHOODS}")
    if border not in BORDER_MODES:
        raise SelfPatchError(f"selfpatch.border={border!r} is not one of {BORDER_MODES}")
    if h < 1 or w < 1:
        raise SelfPatchError(f"patch grid {h}x{w} is empty; use larger crops")
    n = h * w
    flat = torch.arange(n)
    if neighbourhood == "all":
        # Every other patch: row i lists 0..N-1 without i; all slots are real.
        index = torch.stack([torch.cat([flat[:i], flat[i + 1:]]) for i in range(n)]) if n > 1 \
            else torch.zeros(1, 0, dtype=torch.long)
        return NeighbourTable(index, torch.ones_like(index, dtype=torch.bool), (h, w))
    radius = WINDOW_RADIUS[neighbourhood]
    offs = torch.tensor(_offsets(radius))  # (M, 2)
    rows = (flat // w)[:, None] + offs[None, :, 0]  # (N, M)
    cols = (flat % w)[:, None] + offs[None, :, 1]
    if border == "wrap":
        rows, cols = rows % h, cols % w
        index = rows * w + cols
        # On grids narrower than the window the torus folds onto itself: a patch would list
        # itself or the same neighbour twice. Mask those (never happens on 14x14 or 6x6).
        m = index.shape[1]
        earlier = torch.ones(m, m, dtype=torch.bool).tril(-1)
        repeated = ((index[:, :, None] == index[:, None, :]) & earlier).any(dim=2)
        valid = (index != flat[:, None]) & ~repeated
    else:
        valid = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    index = torch.where(valid, rows * w + cols, flat[:, None].expand_as(rows))
    return NeighbourTable(index.long(), valid, (h, w))


@lru_cache(maxsize=64)
def _cached(h: int, w: int, neighbourhood: str, border: str, device: str) -> NeighbourTable:
    t = build_neighbour_table(h, w, neighbourhood, border)
    return NeighbourTable(t.index.to(device), t.valid.to(device), t.grid)


def neighbour_table(h: int, w: int, neighbourhood: str = "3x3", border: str = "valid",
                    device: torch.device | str = "cpu") -> NeighbourTable:
    """Cached :func:`build_neighbour_table` on ``device`` (one table per grid shape and mode)."""
    return _cached(int(h), int(w), neighbourhood, border, str(torch.device(device)))
