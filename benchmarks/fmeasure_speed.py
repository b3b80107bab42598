"""Speed and agreement of the DAVIS boundary F-measure: ours vs the official toolkit's method.

The official davis2017-evaluation toolkit scores each frame with ``seg2bmap`` boundaries and
``cv2.dilate`` by ``skimage.morphology.disk(bound_pix)``. This script times that method
(rebuilt here from its definition, per frame, one thread) next to
``selfpatch.evaluate.jf.boundary_f_measure`` (all frames at once) on synthetic 480p sequences
of the size of DAVIS's ``blackswan`` (50 frames of 480 x 854, one object), and checks that the
two agree exactly. Needs ``opencv-python-headless`` and ``scikit-image`` (``pip install
-e .[dev]``). Usage, from the repository root::

    python benchmarks/fmeasure_speed.py --repeats 5 \\
        --out docs/results/cpu-2026-11-28/fmeasure_speed.json
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
from results_io import write_result  # benchmarks/ is on sys.path when run as a script

from selfpatch.evaluate.jf import BOUND_TH, boundary_f_measure, boundary_map
from selfpatch.runtime import cpu_name


def moving_blob(frames: int, height: int, width: int, seed: int, jitter: float,
                shift: tuple[float, float] = (0.0, 0.0), size: float = 1.0) -> np.ndarray:
    """``(T, H, W)`` bool: an ellipse with a wavy outline drifting across the frame.

    ``jitter`` perturbs the outline per frame (a prediction's ragged boundary); ``shift``
    offsets the centre in pixels (a prediction's misplacement); ``size`` scales the ellipse
    (1: about 10 % of the frame, 2.6: about 60 %, reaching the frame's edges).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    out = np.zeros((frames, height, width), dtype=bool)
    for t in range(frames):
        cy = height * (0.45 + 0.1 * math.sin(t / 9)) + shift[0]
        cx = width * (0.3 + 0.4 * t / max(frames - 1, 1)) + shift[1]
        angle = np.arctan2(yy - cy, xx - cx)
        wobble = 1 + 0.08 * np.sin(5 * angle + t / 4) + jitter * np.sin(
            rng.integers(7, 23) * angle + rng.uniform(0, 6.3))
        radius = np.hypot((yy - cy) / (0.22 * size * height), (xx - cx) / (0.16 * size * width))
        out[t] = radius <= wobble
    return out


def official_f(gt: np.ndarray, pred: np.ndarray, bound_th: float = BOUND_TH) -> np.ndarray:
    """The toolkit's ``f_measure`` frame by frame: seg2bmap, cv2.dilate with skimage's disk."""
    import cv2
    from skimage.morphology import disk

    scores = np.zeros(gt.shape[0])
    for i, (g, p) in enumerate(zip(gt, pred)):
        bound_pix = bound_th if bound_th >= 1 else np.ceil(bound_th * np.linalg.norm(g.shape))
        p_b, g_b = boundary_map(p), boundary_map(g)
        kernel = disk(bound_pix).astype(np.uint8)
        p_dil = cv2.dilate(p_b.astype(np.uint8), kernel)
        g_dil = cv2.dilate(g_b.astype(np.uint8), kernel)
        n_p, n_g = p_b.sum(), g_b.sum()
        if n_p == 0 and n_g > 0:
            precision, recall = 1.0, 0.0
        elif n_p > 0 and n_g == 0:
            precision, recall = 0.0, 1.0
        elif n_p == 0 and n_g == 0:
            precision, recall = 1.0, 1.0
        else:
            precision = np.sum(p_b * g_dil) / n_p
            recall = np.sum(g_b * p_dil) / n_g
        scores[i] = 0.0 if precision + recall == 0 else \
            2 * precision * recall / (precision + recall)
    return scores


def best_of(fn, repeats: int) -> tuple[float, np.ndarray]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=854)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import cv2
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    t, h, w = args.frames, args.height, args.width
    gt = moving_blob(t, h, w, seed=0, jitter=0.0)
    big = moving_blob(t, h, w, seed=0, jitter=0.0, size=2.6)
    cases = {
        "good prediction (ragged, 3 px off)": (gt, moving_blob(t, h, w, 1, 0.02, (3.0, -2.0))),
        "poor prediction (40 px off)": (gt, moving_blob(t, h, w, 2, 0.05, (40.0, 25.0))),
        "empty prediction": (gt, np.zeros_like(gt)),
        "large object, ragged, 6 px off": (big, moving_blob(t, h, w, 3, 0.03, (6.0, 4.0), 2.6)),
    }
    rows = []
    for name, (gt, pred) in cases.items():
        t_off, ref = best_of(lambda g=gt, p=pred: official_f(g, p), args.repeats)
        t_our, ours = best_of(lambda g=gt, p=pred: boundary_f_measure(g, p), args.repeats)
        diff = float(np.abs(ref - ours).max())
        rows.append({"case": name, "official_s": round(t_off, 4), "ours_s": round(t_our, 4),
                     "speedup": round(t_off / t_our, 2), "mean_F": round(float(ours.mean()), 6),
                     "max_abs_diff": diff})
        print(f"{name:38s} official {t_off:7.3f} s  ours {t_our:7.3f} s  "
              f"({t_off / t_our:5.1f}x)  mean F {ours.mean():.4f}  max |diff| {diff:.1e}")
    result = {"frames": t, "height": h, "width": w, "threads": 1, "repeats": args.repeats,
              "cpu": cpu_name(), "numpy": np.__version__, "opencv": cv2.__version__,
              "rows": rows}
    write_result(args.out, result)


if __name__ == "__main__":
    main()
