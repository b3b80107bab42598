"""``eval davis``: semi-supervised video object segmentation by label propagation.

The DINO protocol (Caron et al. 2021, ``eval_video_segmentation.py``), re-implemented:

1. every frame is resized (short side ``short_side``, long side floored to a multiple of 64,
   as DINO does; ``None`` keeps the native size floored to the patch size) and encoded by the
   frozen backbone; patch tokens after the final norm are L2-normalised;
2. the first annotation is resized (nearest) to the patch grid and one-hot encoded;
3. each later frame takes its labels from a context of the first frame plus the
   ``n_last_frames`` previous frames (their *soft* propagated labels): for every target patch,
   the ``topk`` most similar source patches among all context frames, restricted to a square
   window of ``size_mask_neighborhood`` patches, vote with weights ``exp(cos / temperature)``
   normalised to 1;
4. the soft labels are upsampled bilinearly by the patch size, min-max normalised per
   channel, arg-maxed, and resized (nearest) to the original frame size.

Predictions are written as DAVIS palette PNGs in the results layout ``<out>/<seq>/<frame>.png``
and scored with :mod:`selfpatch.evaluate.jf` (CSV files as the official toolkit writes them).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from selfpatch.errors import SelfPatchError
from selfpatch.evaluate.datasets import image_size, read_label_png
from selfpatch.evaluate.features import extract_patch_features, to_normalized_tensor
from selfpatch.evaluate.jf import VOID_LABEL, DavisScores, sequence_scores
from selfpatch.io import read_rgb

#: Resolution folder of the DAVIS 2017 release used by the protocol.
RESOLUTION = "480p"


@dataclass
class PropagationSettings:
    """Label-propagation hyper-parameters; defaults are DINO's published ones."""

    n_last_frames: int = 7
    size_mask_neighborhood: int = 12  # window radius in patches, DINO's name (0 = unrestricted)
    topk: int = 5
    temperature: float = 0.1
    short_side: int | None = None  # None: native frame size; 480 for real DAVIS

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DavisSequence:
    """One video: its name and the frame / annotation files in frame order."""

    name: str
    frames: list[Path]
    annotations: list[Path]


# ----------------------------------------------------------------------------- data


def list_davis_sequences(root: str | Path, split: str = "val",
                         sequences: list[str] | None = None) -> list[DavisSequence]:
    """Read ``ImageSets/2017/<split>.txt`` and check every listed sequence.

    Every sequence needs consecutive frames ``JPEGImages/480p/<seq>/00000.jpg, 00001.jpg ...``
    and one annotation ``Annotations/480p/<seq>/<frame>.png`` per frame (DAVIS 2017 ``val``
    is fully annotated; the metrics need every frame).

    Args:
        root: the DAVIS folder (holding ``JPEGImages``, ``Annotations``, ``ImageSets``).
        split: the ``ImageSets/2017`` list to use.
        sequences: optional subset of sequence names, in the order to evaluate.
    """
    root = Path(root)
    list_file = root / "ImageSets" / "2017" / f"{split}.txt"
    if not list_file.is_file():
        raise SelfPatchError(
            f"{list_file} does not exist; point --davis-root at a DAVIS 2017 folder "
            "(JPEGImages/, Annotations/, ImageSets/2017/) and pick an existing --split"
        )
    names = [line.strip() for line in list_file.read_text().splitlines() if line.strip()]
    if sequences:
        unknown = [s for s in sequences if s not in names]
        if unknown:
            raise SelfPatchError(f"sequence {unknown[0]!r} is not listed in {list_file}")
        names = list(sequences)
    if not names:
        raise SelfPatchError(f"{list_file} lists no sequences; add sequence names to it")
    return [_check_sequence(root, name) for name in names]


def _check_sequence(root: Path, name: str) -> DavisSequence:
    frame_dir = root / "JPEGImages" / RESOLUTION / name
    anno_dir = root / "Annotations" / RESOLUTION / name
    frames = sorted(frame_dir.glob("*.jpg"))
    if not frames:
        raise SelfPatchError(f"sequence {name}: no frames in {frame_dir}; "
                             "add its JPEG frames or remove it from the split list")
    annotations = sorted(anno_dir.glob("*.png"))
    frame_stems = [p.stem for p in frames]
    anno_stems = {p.stem for p in annotations}
    if all(s.isdigit() for s in frame_stems) and all(s.isdigit() for s in anno_stems):
        # Frames are numbered from 00000 without gaps; find the first one absent on either side.
        width = len(frame_stems[0])
        last = max(int(s) for s in set(frame_stems) | anno_stems)
        have = set(frame_stems)
        for i in range(last + 1):
            stem = f"{i:0{width}d}"
            if stem not in have:
                raise SelfPatchError(
                    f"sequence {name} is missing frame {stem}.jpg in {frame_dir}; "
                    "restore it (frames must be numbered consecutively from 00000)"
                )
    missing = [s for s in frame_stems if s not in anno_stems]
    if missing:
        raise SelfPatchError(
            f"sequence {name} has no annotation {missing[0]}.png in {anno_dir} for frame "
            f"{missing[0]}.jpg; every frame needs a ground-truth PNG for the metrics"
        )
    return DavisSequence(name, frames, [anno_dir / f"{s}.png" for s in frame_stems])


def read_annotations(seq: DavisSequence) -> np.ndarray:
    """All ground-truth masks of ``seq`` as ``(T, H, W)`` ids; checks sizes against the frames."""
    masks = []
    for frame, anno in zip(seq.frames, seq.annotations):
        mask = read_label_png(anno)
        size = image_size(frame)
        if mask.shape != size:
            raise SelfPatchError(
                f"frame {frame} is {size[0]}x{size[1]} but its annotation {anno} is "
                f"{mask.shape[0]}x{mask.shape[1]}; they must have the same size"
            )
        if masks and mask.shape != masks[0].shape:
            raise SelfPatchError(f"annotation {anno} is {mask.shape} but {seq.annotations[0]} "
                                 f"is {masks[0].shape}; all frames of a video share one size")
        masks.append(mask)
    return np.stack(masks)


def davis_palette() -> np.ndarray:
    """The DAVIS / PASCAL VOC colour map, ``(256, 3)`` uint8 (id bits spread over R, G, B)."""
    ids = np.arange(256)
    pal = np.zeros((256, 3), dtype=np.int64)
    for bit in range(8):  # 8 iterations over bit planes, vectorised over the 256 ids
        for channel in range(3):
            pal[:, channel] |= ((ids >> (3 * bit + channel)) & 1) << (7 - bit)
    return pal.astype(np.uint8)


def write_palette_png(path: str | Path, labels: np.ndarray) -> None:
    """Save ``(H, W)`` ids as an indexed PNG with the DAVIS palette."""
    img = Image.fromarray(labels.astype(np.uint8), mode="P")
    img.putpalette(davis_palette().reshape(-1).tolist())
    img.save(path)


# ----------------------------------------------------------------------------- geometry


def propagation_size(height: int, width: int, patch: int,
                     short_side: int | None) -> tuple[int, int]:
    """Frame size ``(H', W')`` fed to the backbone.

    ``short_side=None`` keeps the native size; otherwise the short side becomes
    ``short_side`` and the long side keeps the aspect ratio floored to a multiple of 64
    (DINO's ``read_frame``). Both are then floored to a multiple of ``patch``.
    """
    if short_side is None:
        th, tw = height, width
    elif height > width:
        tw = short_side
        th = int((short_side * height / width) // 64 * 64)
    else:
        th = short_side
        tw = int((short_side * width / height) // 64 * 64)
    th, tw = th - th % patch, tw - tw % patch
    if th < patch or tw < patch:
        raise SelfPatchError(f"frames of {height}x{width} give no patch of size {patch} at "
                             f"--short-side {short_side}; use a larger --short-side")
    return th, tw


def neighbourhood_mask(h: int, w: int, radius: int) -> torch.Tensor:
    """``(N, N)`` bool: source patch within ``radius`` rows *and* columns of the target."""
    ys = torch.arange(h).repeat_interleave(w)
    xs = torch.arange(w).repeat(h)
    if radius <= 0:
        return torch.ones(h * w, h * w, dtype=torch.bool)
    return ((ys[:, None] - ys[None, :]).abs() <= radius) & (
        (xs[:, None] - xs[None, :]).abs() <= radius)


# ----------------------------------------------------------------------------- propagation


def propagate_frame(target: torch.Tensor, sources: torch.Tensor, source_labels: torch.Tensor,
                    mask: torch.Tensor | None, topk: int, temperature: float,
                    chunk: int = 1024) -> torch.Tensor:
    """Soft labels of one frame from its context frames.

    Args:
        target: ``(N, D)`` L2-normalised target patch features.
        sources: ``(K, N, D)`` L2-normalised features of the K context frames.
        source_labels: ``(K, C, N)`` their (soft) labels.
        mask: ``(N, N)`` bool, True where source patch m may feed target patch n; None = all.
        topk: sources kept per target patch, over all K frames together.
        temperature: affinities are ``exp(cos / temperature)``.
        chunk: target patches processed at once (bounds memory to ``chunk * K * N``).

    Returns:
        ``(C, N)`` soft labels (each column sums to 1 when the sources' do).
    """
    k_frames, n_src, _ = sources.shape
    labels = source_labels.permute(0, 2, 1).reshape(k_frames * n_src, -1)  # (K*N, C)
    k = min(topk, k_frames * n_src)
    out = []
    for start in range(0, target.shape[0], chunk):
        t = target[start : start + chunk]
        sim = torch.einsum("nd,kmd->nkm", t, sources) / temperature  # (n, K, N)
        if mask is not None:
            sim = sim.masked_fill(~mask[start : start + chunk, None, :], float("-inf"))
        vals, idx = sim.reshape(t.shape[0], -1).topk(k, dim=1)
        # exp(v) / sum exp(v) over the kept sources == softmax; masked entries get weight 0.
        weights = torch.softmax(vals, dim=1)
        out.append(torch.einsum("nk,nkc->nc", weights, labels[idx]))
    return torch.cat(out).T


def propagate_labels(features: torch.Tensor, first_labels: torch.Tensor,
                     settings: PropagationSettings) -> torch.Tensor:
    """Propagate the first frame's labels through a video.

    Args:
        features: ``(T, h, w, D)`` patch features of all frames (normalised here).
        first_labels: ``(C, h, w)`` one-hot (or soft) labels of frame 0 at patch resolution.
        settings: window, top-k, temperature and context length.

    Returns:
        ``(T, C, h, w)`` soft labels; entry 0 is ``first_labels``.
    """
    t_frames, h, w, d = features.shape
    feats = F.normalize(features.reshape(t_frames, h * w, d).float(), dim=-1)
    mask = (neighbourhood_mask(h, w, settings.size_mask_neighborhood)
            if settings.size_mask_neighborhood > 0 else None)
    soft = [first_labels.reshape(first_labels.shape[0], h * w).float()]
    previous: list[int] = []
    for t in range(1, t_frames):
        context = [0] + previous
        context_labels = torch.stack([soft[i] for i in context])
        soft.append(propagate_frame(feats[t], feats[context], context_labels, mask,
                                    settings.topk, settings.temperature))
        previous.append(t)
        if len(previous) > settings.n_last_frames:
            previous.pop(0)
    return torch.stack(soft).reshape(t_frames, -1, h, w)


def labels_to_onehot(labels: np.ndarray, grid: tuple[int, int], num_labels: int) -> torch.Tensor:
    """``(H, W)`` ids -> ``(C, h, w)`` one-hot at patch resolution (nearest resize, like DINO)."""
    small = Image.fromarray(labels.astype(np.uint8)).resize((grid[1], grid[0]), Image.NEAREST)
    ids = torch.from_numpy(np.asarray(small).astype(np.int64))
    return F.one_hot(ids, num_labels).permute(2, 0, 1).float()


def soft_to_labels(soft: torch.Tensor, patch: int, out_size: tuple[int, int]) -> np.ndarray:
    """``(C, h, w)`` soft labels -> ``(H, W)`` uint8 ids at the original frame size.

    Upsampled bilinearly by ``patch``, each channel min-max normalised (DINO's ``norm_mask``;
    constant channels become 0 instead of DINO's 0/0), arg-maxed, then resized (nearest).
    """
    up = F.interpolate(soft[None], scale_factor=patch, mode="bilinear", align_corners=False)[0]
    lo = up.amin(dim=(1, 2), keepdim=True)
    hi = up.amax(dim=(1, 2), keepdim=True)
    normed = (up - lo) / (hi - lo).clamp_min(1e-12)
    up = torch.where(hi > 0, normed, up)
    # Channels last: argmax over a contiguous axis is ~10x faster than over dim 0 on CPU.
    ids = up.permute(1, 2, 0).contiguous().argmax(dim=-1).to(torch.uint8).numpy()
    img = Image.fromarray(ids).resize((out_size[1], out_size[0]), Image.NEAREST)
    return np.asarray(img)


def _frames(paths: list[Path], size: tuple[int, int]) -> Iterator[torch.Tensor]:
    for p in paths:
        yield to_normalized_tensor(read_rgb(p), size)


@torch.no_grad()
def propagate_sequence(backbone: torch.nn.Module, seq: DavisSequence,
                       settings: PropagationSettings, device: torch.device | str = "cpu",
                       batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Run the protocol on one video.

    Returns:
        ``(pred, gt)``: ``(T, H, W)`` uint8 predicted ids (frame 0 = its annotation) and the
        ``(T, H, W)`` ground truth (void 255 kept).
    """
    gt = read_annotations(seq)
    height, width = gt.shape[1:]
    first = np.where(gt[0] == VOID_LABEL, 0, gt[0])
    num_labels = int(first.max()) + 1
    if num_labels < 2:
        raise SelfPatchError(f"sequence {seq.name}: first annotation {seq.annotations[0]} "
                             "holds no object id; it must label the objects to track")
    size = propagation_size(height, width, backbone.patch_size, settings.short_side)
    feats = extract_patch_features(backbone, _frames(seq.frames, size), batch_size, device)
    grid = feats.shape[1:3]
    soft = propagate_labels(feats, labels_to_onehot(first, grid, num_labels), settings)
    pred = np.empty(gt.shape, dtype=np.uint8)
    pred[0] = first
    for t in range(1, len(seq.frames)):
        pred[t] = soft_to_labels(soft[t], backbone.patch_size, (height, width))
    return pred, gt


def evaluate_davis(backbone: torch.nn.Module, root: str | Path, out_dir: str | Path,
                   split: str = "val", settings: PropagationSettings | None = None,
                   device: torch.device | str = "cpu", batch_size: int = 32,
                   sequences: list[str] | None = None, log=print) -> dict:
    """Propagate, write the results folder and the official CSVs, and return the metrics.

    Args:
        backbone: frozen ViT backbone.
        root: DAVIS 2017 folder.
        out_dir: results folder: ``<out_dir>/<seq>/<frame>.png``, ``global_results-<split>.csv``
            and ``per-sequence_results-<split>.csv``.
        split: ``ImageSets/2017`` list.
        settings: protocol settings (DINO's defaults when None).
        device, batch_size: where and how many frames per forward pass.
        sequences: optional subset of the split.
        log: progress printer (``None`` silences it).

    Returns:
        ``{"global": {J&F-Mean, ...}, "per_object": [...], "settings": {...}, ...}``.
    """
    settings = settings or PropagationSettings()
    seqs = list_davis_sequences(root, split, sequences)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scores = DavisScores()
    start = time.perf_counter()
    n_frames = 0
    for seq in seqs:
        if len(seq.frames) < 3:
            raise SelfPatchError(f"sequence {seq.name} has {len(seq.frames)} frames; the "
                                 "metrics skip the first and last frame, so at least 3 are needed")
    for i, seq in enumerate(seqs):
        pred, gt = propagate_sequence(backbone, seq, settings, device, batch_size)
        seq_dir = out_dir / seq.name
        seq_dir.mkdir(exist_ok=True)
        for frame, labels in zip(seq.frames, pred):
            write_palette_png(seq_dir / f"{frame.stem}.png", labels)
        j, f = sequence_scores(gt, pred)
        scores.add_sequence(seq.name, j, f)
        n_frames += len(seq.frames)
        if log:
            log(f"davis [{i + 1}/{len(seqs)}] {seq.name}: J {j.mean():.3f} F {f.mean():.3f}")
    global_csv, seq_csv = scores.write_csv(out_dir, split)
    return {
        "global": scores.global_results(),
        "per_object": scores.per_object(),
        "settings": {**settings.to_dict(), "split": split, "root": str(root),
                     "bound_th": 0.008, "features": "last layer, final norm, L2-normalised"},
        "num_sequences": len(seqs),
        "num_frames": n_frames,
        "seconds": time.perf_counter() - start,
        "results_dir": str(out_dir),
        "csv": {"global": str(global_csv), "per_sequence": str(seq_csv)},
    }
