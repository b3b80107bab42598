"""COCO-style instance annotations for the built-in segmentation scenes (``instances_*.json``).

The scenes already carry an instance-id PNG and a semantic PNG per image; this turns them into
the COCO detection layout that torchvision / pycocotools / mmdet read, so instance-level
fine-tuning runs end to end on the built-in data and unchanged on real COCO. Written lazily
next to the build (``seg/coco/instances_{training,validation}.json``), deterministic, from the
files alone. Masks are stored as *uncompressed* RLE (``{"size": [h, w], "counts": [...]}``,
column-major runs starting with background), which pycocotools decodes as it decodes its own
compressed strings; writing it needs no compiled library.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from selfpatch.data.builtin.layouts import SEG, SEG_SPLITS
from selfpatch.data.builtin.source import CLASS_NAMES
from selfpatch.io import atomic_write

COCO_DIR = "coco"


def mask_to_rle(mask: np.ndarray) -> dict:
    """Binary ``(H, W)`` mask -> uncompressed COCO RLE: run lengths over the column-major
    (Fortran-order) pixels, alternating background/foreground, starting with background."""
    flat = np.asarray(mask, dtype=bool).flatten(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts  # COCO runs always start with background
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def mask_bbox(mask: np.ndarray) -> list[float]:
    """COCO ``[x, y, width, height]`` of the tight pixel box around a non-empty mask."""
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
            float(ys.max() - ys.min() + 1)]


def categories() -> list[dict]:
    """COCO categories: semantic labels 1..10 of the built-in data (0 is background)."""
    return [{"id": i + 1, "name": name, "supercategory": "fashion"}
            for i, name in enumerate(CLASS_NAMES)]


def coco_instances(seg_root: Path, folder: str) -> dict:
    """The COCO dict of one split folder (``training`` or ``validation``) of ``seg_root``.

    Each instance id > 0 of an image becomes one annotation whose category is the semantic
    label covering most of its pixels (the scenes label each object with its class, so this
    is exact); instances fully hidden by others (no pixels) are skipped.
    """
    images, annotations = [], []
    for image_id, path in enumerate(sorted((seg_root / "images" / folder).glob("*.jpg")), 1):
        stem = path.stem
        semantic = np.asarray(Image.open(seg_root / "annotations" / folder / f"{stem}.png"))
        instance = np.asarray(Image.open(seg_root / "instances" / folder / f"{stem}.png"))
        h, w = instance.shape
        images.append({"id": image_id, "file_name": path.name, "height": h, "width": w})
        for k in sorted(int(v) for v in np.unique(instance) if v > 0):
            mask = instance == k
            labels, votes = np.unique(semantic[mask], return_counts=True)
            category = int(labels[np.argmax(votes)])
            if category == 0:
                continue  # not an object of a known class
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                "segmentation": mask_to_rle(mask), "area": float(mask.sum()),
                "bbox": mask_bbox(mask), "iscrowd": 0})
    return {"info": {"description": f"built-in fashion scenes, {folder}, from the instance "
                     "and semantic PNGs"},
            "images": images, "annotations": annotations, "categories": categories()}


def ensure_coco_instances(data_root: str | Path) -> dict[str, Path]:
    """Write (once) and return ``{folder: instances json}`` for both segmentation splits.

    ``data_root`` is a built-in data folder (``ensure_builtin(...).root``); images are read
    from ``seg/images/<folder>/`` (the JSON's ``file_name`` is relative to it).
    """
    seg_root = Path(data_root) / SEG
    out = {}
    for folder, _ in SEG_SPLITS.values():
        path = seg_root / COCO_DIR / f"instances_{folder}.json"
        if not path.is_file():
            coco = coco_instances(seg_root, folder)
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda tmp, c=coco: Path(tmp).write_text(json.dumps(c)))
        out[folder] = path
    return out
