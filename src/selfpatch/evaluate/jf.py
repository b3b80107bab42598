"""DAVIS 2017 metrics: region similarity J, boundary F-measure F, and their statistics.

Definitions follow the official davis2017-evaluation toolkit (re-implemented, vectorised):

- **J** is the IoU of one object's predicted and ground-truth masks; when both are empty the
  frame scores 1.
- **F** is the F-measure of boundary precision and recall. Boundaries are one pixel wide, taken
  like the toolkit's ``seg2bmap`` (a pixel is on the boundary when it differs from its right,
  lower or lower-right neighbour; the last row and column compare with one neighbour only). A
  boundary pixel counts as matched when the other mask's boundary lies within a disk of radius
  ``bound_pix = ceil(0.008 * image diagonal)``. Empty boundaries: no prediction and no GT -> 1;
  exactly one of them empty -> 0.
- In the semi-supervised task the first frame (given) and the last frame are not scored; the
  object count is the largest id in the first annotation; the value 255 is void (treated as
  background, as the toolkit does in this task).
- Per object: Mean, Recall (fraction of frames above 0.5) and Decay (mean of the first
  quarter of frames minus mean of the last quarter); the data set scores average the
  per-object values, and J&F is the mean of J-Mean and F-Mean.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: Boundary tolerance as a fraction of the image diagonal (official default).
BOUND_TH = 0.008
#: Label value marking void pixels in DAVIS annotations.
VOID_LABEL = 255
#: Columns of the official ``global_results-<split>.csv``.
GLOBAL_COLUMNS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")


def region_similarity(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """J (IoU) of boolean masks ``(..., H, W)`` -> ``(...)``; both empty scores 1."""
    gt, pred = gt.astype(bool), pred.astype(bool)
    inter = np.logical_and(gt, pred).sum(axis=(-2, -1))
    union = np.logical_or(gt, pred).sum(axis=(-2, -1))
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """One-pixel boundaries of boolean masks ``(..., H, W)`` (the toolkit's ``seg2bmap``).

    The boundary is offset half a pixel towards the origin: a pixel is marked when it differs
    from its east, south or south-east neighbour (outside the image counts as background for
    east/south, and the last row/column only look along the border).
    """
    m = mask.astype(bool)
    east = np.zeros_like(m)
    south = np.zeros_like(m)
    south_east = np.zeros_like(m)
    east[..., :, :-1] = m[..., :, 1:]
    south[..., :-1, :] = m[..., 1:, :]
    south_east[..., :-1, :-1] = m[..., 1:, 1:]
    b = (m ^ east) | (m ^ south) | (m ^ south_east)
    b[..., -1, :] = m[..., -1, :] ^ east[..., -1, :]
    b[..., :, -1] = m[..., :, -1] ^ south[..., :, -1]
    b[..., -1, -1] = False
    return b


def disk(radius: int) -> np.ndarray:
    """Boolean disk ``(2r+1, 2r+1)``: offsets with ``dx^2 + dy^2 <= r^2``."""
    offsets = np.arange(-radius, radius + 1)
    return offsets[None, :] ** 2 + offsets[:, None] ** 2 <= radius**2


def boundary_matches(src: np.ndarray, dst: np.ndarray, radius: int) -> np.ndarray:
    """How many ``True`` pixels of each ``src`` mask have a ``dst`` pixel within ``radius``.

    Equal to ``(src & dilate(dst, disk(radius))).sum()`` per mask, the toolkit's
    ``fg_boundary * cv2.dilate(gt_boundary, disk(bound_pix))``, without dilating whole frames:
    boundaries are thin, so each ``src`` pixel looks up the disk's offsets in a padded ``dst``,
    nearest offsets first, and stops at its first hit. Work is O(boundary pixels x offsets
    tried) instead of O(frame pixels x disk size).

    Args:
        src, dst: boolean masks ``(..., H, W)`` of the same shape.
        radius: disk radius in pixels (``dx^2 + dy^2 <= radius^2``); 0 = same pixel only.

    Returns:
        ``(...)`` int64 counts.
    """
    lead, (h, w) = src.shape[:-2], src.shape[-2:]
    r = max(int(radius), 0)
    src = src.reshape(-1, h, w)
    n_masks = src.shape[0]
    padded = np.zeros((n_masks, h + 2 * r, w + 2 * r), dtype=bool)  # outside = no boundary
    padded[:, r : r + h, r : r + w] = dst.reshape(-1, h, w)
    flat = padded.reshape(-1)
    # flatnonzero + divmod: several times faster than a 3-D np.nonzero on thin boundaries.
    my, x = np.divmod(np.flatnonzero(src), w)
    m, y = np.divmod(my, h)
    pw = w + 2 * r
    base = (m * (h + 2 * r) + y + r) * pw + x + r
    dy, dx = np.nonzero(disk(r))
    dy, dx = dy - r, dx - r
    order = np.argsort(dy * dy + dx * dx, kind="stable")
    unmatched = np.arange(base.size)
    for offset in (dy * pw + dx)[order]:
        if unmatched.size == 0:
            break
        unmatched = unmatched[~flat[base[unmatched] + offset]]
    matched = np.ones(base.size, dtype=bool)
    matched[unmatched] = False
    return np.bincount(m[matched], minlength=n_masks).reshape(lead)


def boundary_pixels(height: int, width: int, bound_th: float = BOUND_TH) -> int:
    """Tolerance radius in pixels: ``bound_th`` when >= 1, else that fraction of the diagonal."""
    if bound_th >= 1:
        return int(bound_th)
    return int(math.ceil(bound_th * math.hypot(height, width)))


def boundary_f_measure(gt: np.ndarray, pred: np.ndarray, bound_th: float = BOUND_TH) -> np.ndarray:
    """F of boolean masks ``(..., H, W)`` -> ``(...)`` with the toolkit's empty-mask rules.

    Frame by frame, on the smallest window that holds both masks plus a one-pixel margin:
    boundaries and matches only exist there, and a window of a 480p frame stays in the CPU's
    cache, which whole-video arrays do not (measured in docs/performance.md).
    """
    lead, (h, w) = gt.shape[:-2], gt.shape[-2:]
    radius = boundary_pixels(h, w, bound_th)
    gt = gt.reshape(-1, h, w).astype(bool, copy=False)
    pred = pred.reshape(-1, h, w).astype(bool, copy=False)
    scores = np.ones(gt.shape[0])  # both masks empty: both boundaries empty, F = 1
    for i, (g, p) in enumerate(zip(gt, pred)):
        rows = np.flatnonzero(g.any(axis=1) | p.any(axis=1))
        if rows.size == 0:
            continue
        cols = np.flatnonzero(g.any(axis=0) | p.any(axis=0))
        # One empty row/column above/left (boundaries sit half a pixel towards the origin)
        # and below/right (so the window's last row/column is not mistaken for the frame's).
        y0, y1 = max(rows[0] - 1, 0), min(rows[-1] + 2, h)
        x0, x1 = max(cols[0] - 1, 0), min(cols[-1] + 2, w)
        g_b = boundary_map(g[y0:y1, x0:x1])
        p_b = boundary_map(p[y0:y1, x0:x1])
        n_gt, n_pred = np.count_nonzero(g_b), np.count_nonzero(p_b)
        # The toolkit's special cases follow from the general formula: an empty prediction
        # has precision 1 and recall 0 (non-empty GT), an empty GT precision 0 and recall 1.
        precision = boundary_matches(p_b, g_b, radius) / n_pred if n_pred else 1.0
        recall = boundary_matches(g_b, p_b, radius) / n_gt if n_gt else 1.0
        denom = precision + recall
        scores[i] = 0.0 if denom == 0 else 2 * precision * recall / denom
    return scores.reshape(lead)


def statistics(per_frame: np.ndarray) -> tuple[float, float, float]:
    """``(mean, recall, decay)`` of one object's per-frame scores ``(T,)``.

    Recall is the fraction of frames above 0.5; decay splits the frames into 4 bins (the
    toolkit's rounding of ``linspace(1, T, 5)``) and subtracts the last bin's mean from the first.
    """
    values = np.asarray(per_frame, dtype=np.float64)
    mean = float(np.nanmean(values))
    recall = float(np.nanmean(values > 0.5))
    ids = (np.round(np.linspace(1, len(values), 5) + 1e-10) - 1).astype(np.int64)
    bins = [values[ids[i] : ids[i + 1] + 1] for i in range(4)]
    decay = float(np.nanmean(bins[0]) - np.nanmean(bins[3]))
    return mean, recall, decay


def sequence_scores(gt: np.ndarray, pred: np.ndarray,
                    bound_th: float = BOUND_TH) -> tuple[np.ndarray, np.ndarray]:
    """Per-object, per-frame J and F of one sequence.

    Args:
        gt: ``(T, H, W)`` ground-truth ids (0 background, 255 void) for all frames.
        pred: ``(T, H, W)`` predicted ids for the same frames (frame 0 is ignored).

    Returns:
        ``(J, F)``, each ``(O, T - 2)``: objects 1..O (O = largest id in ``gt[0]``), frames
        1..T-2. Predicted ids above O are ignored.
    """
    gt = np.where(gt == VOID_LABEL, 0, gt)
    num_objects = int(gt[0].max())
    gt_eval, pred_eval = gt[1:-1], pred[1:-1]
    j = np.zeros((num_objects, gt_eval.shape[0]))
    f = np.zeros_like(j)
    for k in range(num_objects):  # one object at a time bounds memory on 480p videos
        gt_k, pred_k = gt_eval == k + 1, pred_eval == k + 1
        j[k] = region_similarity(gt_k, pred_k)
        f[k] = boundary_f_measure(gt_k, pred_k, bound_th)
    return j, f


@dataclass
class DavisScores:
    """Accumulates per-object statistics across sequences, like the official evaluation."""

    objects: list[str] = field(default_factory=list)
    j: list[tuple[float, float, float]] = field(default_factory=list)
    f: list[tuple[float, float, float]] = field(default_factory=list)

    def add_sequence(self, name: str, j: np.ndarray, f: np.ndarray) -> None:
        """Add the ``(O, T')`` per-frame scores of sequence ``name`` (objects ``name_1``...)."""
        for k in range(j.shape[0]):
            self.objects.append(f"{name}_{k + 1}")
            self.j.append(statistics(j[k]))
            self.f.append(statistics(f[k]))

    def global_results(self) -> dict[str, float]:
        """The official global table: J&F-Mean, J-Mean/Recall/Decay, F-Mean/Recall/Decay."""
        if not self.objects:
            nan = float("nan")
            return dict.fromkeys(GLOBAL_COLUMNS, nan)
        jm, jr, jd = np.mean(np.asarray(self.j), axis=0)
        fm, fr, fd = np.mean(np.asarray(self.f), axis=0)
        values = [(jm + fm) / 2, jm, jr, jd, fm, fr, fd]
        return {k: float(v) for k, v in zip(GLOBAL_COLUMNS, values)}

    def per_object(self) -> list[dict[str, float | str]]:
        """Rows ``{"Sequence": "<seq>_<k>", "J-Mean": .., "F-Mean": ..}``."""
        return [{"Sequence": name, "J-Mean": j[0], "F-Mean": f[0]}
                for name, j, f in zip(self.objects, self.j, self.f)]

    def write_csv(self, out_dir: str | Path, split: str = "val") -> tuple[Path, Path]:
        """Write ``global_results-<split>.csv`` and ``per-sequence_results-<split>.csv``."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        global_path = out_dir / f"global_results-{split}.csv"
        seq_path = out_dir / f"per-sequence_results-{split}.csv"
        res = self.global_results()
        with global_path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(GLOBAL_COLUMNS)
            writer.writerow([f"{res[k]:.3f}" for k in GLOBAL_COLUMNS])
        with seq_path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["Sequence", "J-Mean", "F-Mean"])
            for row in self.per_object():
                writer.writerow([row["Sequence"], f"{row['J-Mean']:.3f}", f"{row['F-Mean']:.3f}"])
        return global_path, seq_path
