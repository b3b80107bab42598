"""``eval attention``: pictures of what the patch tokens encode.

Three figures, all drawn with PIL:

- ``attention.png`` (paper Fig. 1): for each query patch, the top ``fraction`` (10%) of patches
  by its last-layer self-attention row, averaged over heads (for a backbone with a [CLS] or
  other prefix token, the patch-to-patch block is used). Rows = images, first column = the
  image, then one panel per query (query patch boxed in red, selected patches bright).
  Default queries: the patch nearest the centre of each of the (up to 3) largest labelled
  regions when an annotation exists, else fixed points of the image.
- ``pca.png``: the first 3 principal components of the patch tokens (one PCA over all shown
  images, so colours are comparable), min-max normalised to RGB.
- ``propagation.png``: one video's frames, the propagated masks of ``eval davis`` and the
  ground truth, as DAVIS-palette overlays.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from selfpatch.errors import SelfPatchError
from selfpatch.evaluate.datasets import read_label_png
from selfpatch.evaluate.davis import (
    DavisSequence,
    PropagationSettings,
    davis_palette,
    propagate_sequence,
    read_annotations,
)
from selfpatch.evaluate.features import extract_patch_features, to_normalized_tensor
from selfpatch.io import read_rgb

#: Query points (row, column) as fractions of the image, used when there is no annotation.
DEFAULT_QUERY_FRACTIONS = ((0.5, 0.5), (0.3, 0.3), (0.7, 0.7))
#: Panels are upscaled (nearest) to at least this many pixels on their short side.
MIN_PANEL = 160
#: Larger images (real data sets) are shrunk to this long side first: the attention map of
#: the whole image is materialised, ``heads x N x N``.
MAX_SIDE = 448


# ----------------------------------------------------------------------------- computations


def top_attention_mask(attn: torch.Tensor, query: int, num_prefix: int,
                       fraction: float = 0.1) -> torch.Tensor:
    """Patches most attended by one query patch.

    Args:
        attn: ``(heads, T, T)`` softmax attention of the last block, prefix tokens first.
        query: query patch index in ``0..N-1`` (row-major).
        num_prefix: number of prefix tokens ([CLS], registers) before the patches.
        fraction: share of the N patches to keep (at least one).

    Returns:
        ``(N,)`` bool, True for the ``ceil(fraction * N)`` largest head-averaged weights.
    """
    row = attn[:, num_prefix + query, num_prefix:].mean(dim=0)  # (N,)
    keep = max(1, math.ceil(fraction * row.numel()))
    mask = torch.zeros_like(row, dtype=torch.bool)
    mask[row.topk(keep).indices] = True
    return mask


def pca_rgb(features: torch.Tensor) -> torch.Tensor:
    """``(M, h, w, D)`` tokens -> ``(M, h, w, 3)`` colours in [0, 1] from a joint 3-component PCA.

    Component signs are fixed (largest loading positive) so colours are reproducible.
    """
    m, h, w, d = features.shape
    x = features.reshape(-1, d).double()
    x = x - x.mean(0)
    _, vecs = torch.linalg.eigh(x.T @ x)  # ascending eigenvalues
    comps = vecs[:, -3:].flip(1) if d >= 3 else vecs
    signs = torch.sign(comps[comps.abs().argmax(0), torch.arange(comps.shape[1])])
    proj = x @ (comps * signs)
    if proj.shape[1] < 3:
        proj = torch.cat([proj, proj.new_zeros(proj.shape[0], 3 - proj.shape[1])], 1)
    lo, hi = proj.amin(0), proj.amax(0)
    rgb = (proj - lo) / (hi - lo).clamp_min(1e-12)
    return rgb.reshape(m, h, w, 3).float()


def default_queries(label: np.ndarray | None, patch: int, grid: tuple[int, int],
                    max_queries: int = 3) -> list[tuple[int, int]]:
    """Query patches ``(row, col)``: centres of the largest labelled regions, else fixed points.

    For each label value (0 and 255 excluded), largest area first, the labelled pixel nearest
    the region's centroid is taken, so the query lies on the object even when it is not convex.
    """
    queries: list[tuple[int, int]] = []
    if label is not None:
        values, counts = np.unique(label[(label != 0) & (label != 255)], return_counts=True)
        for v in values[np.argsort(-counts, kind="stable")][:max_queries]:
            ys, xs = np.nonzero(label == v)
            i = np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)
            q = (min(int(ys[i]) // patch, grid[0] - 1), min(int(xs[i]) // patch, grid[1] - 1))
            if q not in queries:
                queries.append(q)
    if not queries:
        # Fixed points; on tiny grids several can fall on one patch, keep it once.
        queries = list(dict.fromkeys(fraction_queries(DEFAULT_QUERY_FRACTIONS[:max_queries],
                                                      grid)))
    return queries


def fraction_queries(points, grid: tuple[int, int]) -> list[tuple[int, int]]:
    """``(row, col)`` fractions in [0, 1] -> patch coordinates on ``grid``."""
    return [(min(int(r * grid[0]), grid[0] - 1), min(int(c * grid[1]), grid[1] - 1))
            for r, c in points]


def parse_queries(text: str) -> list[tuple[float, float]]:
    """``"0.5,0.5;0.2,0.8"`` -> ``[(0.5, 0.5), (0.2, 0.8)]`` (row, column fractions)."""
    points = []
    for part in text.split(";"):
        try:
            r, c = (float(v) for v in part.split(","))
        except ValueError as exc:
            raise SelfPatchError(f"--queries {text!r}: {part!r} is not 'row,col'; use "
                                 "fractions of the image such as 0.5,0.5;0.2,0.8") from exc
        if not (0 <= r <= 1 and 0 <= c <= 1):
            raise SelfPatchError(f"--queries {text!r}: {part!r} is outside [0, 1]")
        points.append((r, c))
    return points


# ----------------------------------------------------------------------------- drawing


def _scale(size: tuple[int, int]) -> int:
    return max(1, math.ceil(MIN_PANEL / max(1, min(size))))


def _upscale(img: Image.Image, factor: int) -> Image.Image:
    return img.resize((img.width * factor, img.height * factor), Image.NEAREST)


def _grid_to_image(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(h, w, ...)`` patch values -> ``(H, W, ...)`` by repeating each patch (nearest)."""
    h, w = values.shape[:2]
    return values.repeat(size[0] // h, axis=0).repeat(size[1] // w, axis=1)


def attention_panel(image: np.ndarray, mask: np.ndarray, query: tuple[int, int],
                    patch: int) -> Image.Image:
    """``(H, W, 3)`` uint8 image with non-selected patches darkened and the query boxed."""
    keep = _grid_to_image(mask.astype(np.float32), image.shape[:2])[..., None]
    tint = np.array([255, 220, 0], dtype=np.float32)
    out = image * (0.25 + 0.75 * keep) * (1 - 0.35 * keep) + tint * 0.35 * keep
    panel = _upscale(Image.fromarray(out.clip(0, 255).astype(np.uint8)), _scale(image.shape[:2]))
    f = panel.width // image.shape[1]
    r, c = query
    ImageDraw.Draw(panel).rectangle(
        [c * patch * f, r * patch * f, (c + 1) * patch * f - 1, (r + 1) * patch * f - 1],
        outline=(255, 0, 0), width=max(1, f))
    return panel


def overlay_labels(image: np.ndarray, labels: np.ndarray, alpha: float = 0.55) -> Image.Image:
    """Blend DAVIS-palette colours of ``(H, W)`` ids (0 left as is) over ``(H, W, 3)`` pixels."""
    colours = davis_palette()[labels.astype(np.int64) % 256].astype(np.float32)
    fg = (labels > 0)[..., None]
    out = np.where(fg, (1 - alpha) * image + alpha * colours, image)
    return Image.fromarray(out.clip(0, 255).astype(np.uint8))


def compose(rows: list[list[Image.Image]], titles: list[str] | None = None,
            pad: int = 4) -> Image.Image:
    """Paste panels in a grid (white gaps); ``titles`` label the columns."""
    cell_w = max(p.width for row in rows for p in row)
    cell_h = max(p.height for row in rows for p in row)
    top = 14 if titles else 0
    ncols = max(len(r) for r in rows)
    canvas = Image.new("RGB", (ncols * (cell_w + pad) + pad, top + len(rows) * (cell_h + pad)
                               + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for j, title in enumerate(titles or []):
        draw.text((pad + j * (cell_w + pad), 2), title, fill=(0, 0, 0))
    for i, row in enumerate(rows):
        for j, panel in enumerate(row):
            canvas.paste(panel, (pad + j * (cell_w + pad), top + pad + i * (cell_h + pad)))
    return canvas


# ----------------------------------------------------------------------------- figures


@torch.no_grad()
def attention_figure(backbone, images: list[Image.Image], labels: list[np.ndarray | None],
                     queries: list[tuple[float, float]] | None = None, fraction: float = 0.1,
                     device: torch.device | str = "cpu") -> Image.Image:
    """Paper Fig. 1 style grid: each image and its queries' top-attended patches."""
    rows = []
    for img, label in zip(images, labels):
        x = to_normalized_tensor(img)[None].to(device)
        grid = backbone.grid_shape(img.height, img.width)
        attn = backbone.last_self_attention(x)[0].float().cpu()
        qs = (fraction_queries(queries, grid) if queries
              else default_queries(label, backbone.patch_size, grid))
        pixels = np.asarray(img, dtype=np.float32)
        row = [_upscale(img, _scale((img.height, img.width)))]
        for q in qs:
            mask = top_attention_mask(attn, q[0] * grid[1] + q[1], backbone.num_prefix_tokens,
                                      fraction).reshape(grid).numpy()
            row.append(attention_panel(pixels, mask, q, backbone.patch_size))
        rows.append(row)
    ncols = max(len(r) for r in rows)
    titles = ["image"] + [f"query {i + 1}: top {fraction:.0%}" for i in range(ncols - 1)]
    return compose(rows, titles)


def pca_figure(backbone, images: list[Image.Image], device: torch.device | str = "cpu",
               batch_size: int = 32) -> Image.Image:
    """Rows of (image, PCA-of-tokens as RGB); one PCA over all images."""
    feats = extract_patch_features(backbone, [to_normalized_tensor(i) for i in images],
                                   batch_size, device)
    rgb = (pca_rgb(feats).numpy() * 255).astype(np.uint8)
    rows = []
    for img, colours in zip(images, rgb):
        f = _scale((img.height, img.width))
        pca_img = Image.fromarray(_grid_to_image(colours, (img.height, img.width)))
        rows.append([_upscale(img, f), _upscale(pca_img, f)])
    return compose(rows, ["image", "PCA of patch tokens (RGB)"])


def propagation_figure(seq: DavisSequence, pred: np.ndarray, gt: np.ndarray,
                       num_frames: int = 6) -> Image.Image:
    """Rows: frames, propagated masks, ground truth, at ``num_frames`` evenly spaced frames."""
    idx = np.unique(np.linspace(0, len(seq.frames) - 1, num_frames).round().astype(int))
    frames = [np.asarray(read_rgb(seq.frames[i]), dtype=np.float32) for i in idx]
    f = _scale(frames[0].shape[:2])
    rows = [
        [_upscale(Image.fromarray(fr.astype(np.uint8)), f) for fr in frames],
        [_upscale(overlay_labels(fr, pred[i]), f) for fr, i in zip(frames, idx)],
        [_upscale(overlay_labels(fr, np.where(gt[i] == 255, 0, gt[i])), f)
         for fr, i in zip(frames, idx)],
    ]
    canvas = compose(rows, [f"frame {i}" for i in idx])
    draw = ImageDraw.Draw(canvas)
    for r, name in enumerate(["", "propagated", "ground truth"]):
        if name:
            draw.text((8, 14 + 4 + r * (rows[0][0].height + 4) + 2), name, fill=(255, 255, 255))
    return canvas


def read_predictions(results_dir: str | Path, seq: DavisSequence) -> np.ndarray | None:
    """``(T, H, W)`` predictions of ``seq`` from a results folder, or None if incomplete."""
    folder = Path(results_dir) / seq.name
    paths = [folder / f"{p.stem}.png" for p in seq.frames]
    if not all(p.is_file() for p in paths):
        return None
    return np.stack([read_label_png(p) for p in paths])


def sample_images(seg_root: str | Path, num_images: int, patch: int,
                  split: str = "val") -> tuple[list[Image.Image], list[np.ndarray | None]]:
    """First ``num_images`` images of an ADE20K-layout split with their annotations.

    Images are shrunk to a long side of at most :data:`MAX_SIDE` and cropped to a multiple of
    the patch size; an annotation of another size than its image is dropped (default queries
    then fall back to fixed points).
    """
    from selfpatch.evaluate.seg import list_seg_pairs

    images, labels = [], []
    for img_path, anno_path in list_seg_pairs(seg_root, split, num_images):
        img = read_rgb(img_path)
        label = Image.fromarray(read_label_png(anno_path).astype(np.uint8))
        same = label.size == img.size
        scale = min(1.0, MAX_SIDE / max(img.size))
        if scale < 1:
            size = (round(img.width * scale), round(img.height * scale))
            img, label = img.resize(size, Image.BILINEAR), label.resize(size, Image.NEAREST)
        h, w = img.height - img.height % patch, img.width - img.width % patch
        if h < patch or w < patch:
            raise SelfPatchError(f"image {img_path} is smaller than one {patch}px patch")
        images.append(img.crop((0, 0, w, h)))
        labels.append(np.asarray(label.crop((0, 0, w, h))) if same else None)
    return images, labels


def evaluate_attention(backbone, out_dir: str | Path, seg_root: str | Path | None = None,
                       davis_root: str | Path | None = None, split: str = "val",
                       sequence: str | None = None, results_dir: str | Path | None = None,
                       num_images: int = 4, queries: list[tuple[float, float]] | None = None,
                       fraction: float = 0.1, settings: PropagationSettings | None = None,
                       device: torch.device | str = "cpu", batch_size: int = 32,
                       log=print) -> dict:
    """Write the figures into ``out_dir`` and return ``{"pictures": {name: path}, ...}``.

    Args:
        seg_root: ADE20K-layout folder whose ``val`` images are drawn (figures a and b).
        davis_root: DAVIS folder for figure (c); ``sequence`` picks the video (first of
            ``split`` by default) and ``results_dir`` holds ``eval davis`` predictions to show
            (propagation runs on that one video when they are missing).
    """
    from selfpatch.evaluate.davis import list_davis_sequences

    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pictures: dict[str, str] = {}
    if seg_root is not None:
        images, labels = sample_images(seg_root, num_images, backbone.patch_size)
        if getattr(backbone, "has_global_attention", True):
            path = out_dir / "attention.png"
            attention_figure(backbone, images, labels, queries, fraction, device).save(path)
            pictures["attention"] = str(path)
        elif log:
            log("attention: no attention picture (the backbone has no global self-attention)")
        path = out_dir / "pca.png"
        pca_figure(backbone, images, device, batch_size).save(path)
        pictures["pca"] = str(path)
    if davis_root is not None:
        seqs = list_davis_sequences(davis_root, split, [sequence] if sequence else None)
        seq = seqs[0]
        pred = read_predictions(results_dir, seq) if results_dir else None
        if pred is None:
            pred, gt = propagate_sequence(backbone, seq, settings or PropagationSettings(),
                                          device, batch_size)
        else:
            gt = read_annotations(seq)
        path = out_dir / "propagation.png"
        propagation_figure(seq, pred, gt).save(path)
        pictures["propagation"] = str(path)
    if log:
        for name, p in pictures.items():
            log(f"attention: wrote {name} picture {p}")
    return {"pictures": pictures,
            "seconds": time.perf_counter() - start,
            "settings": {"fraction": fraction, "num_images": num_images,
                         "queries": [list(q) for q in queries] if queries else "default",
                         "attention": "last block, mean over heads, patch-to-patch block"}}
