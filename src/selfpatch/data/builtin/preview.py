"""A picture of a build: scenes with their semantic labels, a clip with its instance masks.

It reads the files back from disk through their public layouts, so the picture also shows
that what was written is what the evaluation code will read.
"""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from selfpatch.data.builtin.palette import davis_palette
from selfpatch.data.builtin.spec import BuiltinData
from selfpatch.errors import SelfPatchError

TILE = 128
GAP = 4
HEADER = 16


def class_colours(n: int = 10) -> np.ndarray:
    """Distinct colours for labels 1..n (row 0 = background, black), uint8 (n + 1, 3)."""
    colours = [(0.0, 0.0, 0.0)]
    for i in range(n):
        # Alternate brightness so neighbouring hues stay apart.
        colours.append(colorsys.hsv_to_rgb(i / n, 0.85, 1.0 if i % 2 == 0 else 0.7))
    return (np.array(colours) * 255).round().astype(np.uint8)


def overlay(image: np.ndarray, label: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Tint labelled pixels with their colour and draw region borders in white.

    Args:
        image: uint8 (H, W, 3).
        label: integer (H, W), 0 = unlabelled (left as is).
        colours: uint8 (L, 3), indexed by label.
    Returns:
        uint8 (H, W, 3).
    """
    out = image.astype(np.float32)
    mask = label > 0
    out[mask] = 0.4 * out[mask] + 0.6 * colours[label[mask]].astype(np.float32)
    edge = np.zeros_like(mask)
    edge[:-1] |= label[:-1] != label[1:]
    edge[1:] |= label[:-1] != label[1:]
    edge[:, :-1] |= label[:, :-1] != label[:, 1:]
    edge[:, 1:] |= label[:, :-1] != label[:, 1:]
    out[edge] = 255.0
    return out.round().astype(np.uint8)


def _tile(array: np.ndarray, resample: Image.Resampling) -> Image.Image:
    return Image.fromarray(array).resize((TILE, TILE), resample)


def _read(path: Path) -> np.ndarray:
    try:
        return np.asarray(Image.open(path))
    except OSError as exc:
        raise SelfPatchError(
            f"cannot read {path} ({exc}); rebuild with `selfpatch data build --force`"
        ) from exc


def _busiest_sequence(davis_root: Path, sequences: list[str], look_at: int = 10) -> str:
    """Of the first ``look_at`` clips, the one with the most objects (shows occlusions)."""

    def objects(seq: str) -> int:
        return int(_read(davis_root / "Annotations" / "480p" / seq / "00000.png").max())

    return max(sequences[:look_at], key=objects)


def write_preview(
    data: BuiltinData, out_png: str | Path, n: int = 8, sequence: str | None = None
) -> Path:
    """Write a PNG grid: ``n`` segmentation validation scenes, the same with semantic labels,
    ``n`` frames of a clip, the same with instance masks, and a class legend.

    Args:
        sequence: the clip to show (default: the busiest of the first ten).
    Returns:
        the path written.
    """
    out_png = Path(out_png)
    colours = class_colours(data.num_classes)
    images = sorted((data.seg_root / "images" / "validation").glob("*.jpg"))[:n]
    if not images:
        raise SelfPatchError(f"no segmentation scenes under {data.seg_root}; build the data first")
    rows: list[tuple[str, list[Image.Image]]] = [
        ("scenes (test objects)", []),
        ("semantic labels", []),
    ]
    for path in images:
        image = _read(path)
        label = _read(data.seg_root / "annotations" / "validation" / f"{path.stem}.png")
        rows[0][1].append(_tile(image, Image.Resampling.BILINEAR))
        rows[1][1].append(_tile(overlay(image, label, colours), Image.Resampling.NEAREST))

    val = (data.davis_root / "ImageSets" / "2017" / "val.txt").read_text().split()
    if val:
        seq = sequence if sequence is not None else _busiest_sequence(data.davis_root, val)
        frames = sorted((data.davis_root / "JPEGImages" / "480p" / seq).glob("*.jpg"))
        picks = np.unique(np.linspace(0, len(frames) - 1, min(n, len(frames))).round().astype(int))
        video_row, mask_row = [], []
        # The DAVIS colours are dark (128 levels); doubled they read better on a picture.
        palette = np.clip(davis_palette().astype(np.int64) * 2, 0, 255).astype(np.uint8)
        for i in picks:
            frame = _read(frames[i])
            ids = _read(data.davis_root / "Annotations" / "480p" / seq / f"{frames[i].stem}.png")
            video_row.append(_tile(frame, Image.Resampling.BILINEAR))
            mask_row.append(_tile(overlay(frame, ids, palette), Image.Resampling.NEAREST))
        rows += [
            (f"video {seq}, frames {', '.join(str(int(i)) for i in picks)}", video_row),
            ("instance masks (DAVIS palette)", mask_row),
        ]

    font = ImageFont.load_default()
    columns = max(len(tiles) for _, tiles in rows)
    width = GAP + columns * (TILE + GAP)
    legend_rows = 2
    height = GAP + len(rows) * (HEADER + TILE + GAP) + legend_rows * HEADER + GAP
    canvas = Image.new("RGB", (width, height), (32, 32, 32))
    draw = ImageDraw.Draw(canvas)
    y = GAP
    for title, tiles in rows:
        draw.text((GAP, y + 2), title, fill=(230, 230, 230), font=font)
        y += HEADER
        for c, tile in enumerate(tiles):
            canvas.paste(tile, (GAP + c * (TILE + GAP), y))
        y += TILE + GAP
    per_row = (data.num_classes + legend_rows - 1) // legend_rows
    slot = (width - GAP) // per_row
    for k, name in enumerate(data.class_names, start=1):
        x = GAP + ((k - 1) % per_row) * slot
        yy = y + ((k - 1) // per_row) * HEADER
        draw.rectangle((x, yy + 3, x + 10, yy + 13), fill=tuple(int(v) for v in colours[k]))
        draw.text((x + 14, yy + 2), f"{k} {name}", fill=(230, 230, 230), font=font)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out_png)
    return out_png
