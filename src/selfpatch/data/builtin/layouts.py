"""Where each item goes on disk, and how it is encoded.

The built-in data set mirrors the public layouts of the data sets it stands in for, so the
evaluation code reads both through one path::

    <root>/
      manifest.json                      version, seed, sizes, source checksums, build time
      sources.json                       which Fashion-MNIST photos each item used
      pretrain/000000.jpg ...            flat folder of scenes (JPEG q95)
      seg/images/{training,validation}/fs_{train,val}_000000.jpg        ADE20K layout
      seg/annotations/{training,validation}/fs_{train,val}_000000.png   8-bit 'L': 0 = bg/ignore
      seg/instances/{training,validation}/fs_{train,val}_000000.png     extra: instance ids
      davis/JPEGImages/480p/<seq>/00000.jpg                              DAVIS 2017 layout
      davis/Annotations/480p/<seq>/00000.png   palette 'P' PNG, values = instance ids 0..K
      davis/ImageSets/2017/{train,val}.txt     val lists every sequence; train is empty
      knn/{train,val}/<NN_class>/000000.png    ImageFolder layout, one object per image
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from selfpatch.data.builtin.palette import flat_palette
from selfpatch.data.builtin.source import CLASS_NAMES

JPEG_QUALITY = 95
# zlib level 1: these small PNGs are written by the thousand; level 6 is ~2x slower for a
# few per cent smaller files. The bytes are still deterministic.
PNG_LEVEL = 1

PRETRAIN = "pretrain"
SEG = "seg"
DAVIS = "davis"
KNN = "knn"
#: ADE20K folder name and file-name prefix of each segmentation split.
SEG_SPLITS: dict[str, tuple[str, str]] = {
    "seg_training": ("training", "fs_train"),
    "seg_validation": ("validation", "fs_val"),
}
KNN_SPLITS: dict[str, str] = {"knn_train": "train", "knn_val": "val"}
#: The DAVIS folders are named after the 480p release; our frames keep their own size.
DAVIS_RES = "480p"


def knn_class_dir(label: int) -> str:
    """ImageFolder class folder for Fashion-MNIST class ``label`` (0..9), e.g. '00_t-shirt_top'.

    The two-digit prefix makes ImageFolder's alphabetical class index equal the label.
    """
    slug = re.sub(r"[^a-z0-9]+", "_", CLASS_NAMES[label].lower()).strip("_")
    return f"{label:02d}_{slug.replace('t_shirt', 't-shirt')}"


def pretrain_path(root: Path, index: int) -> Path:
    return root / PRETRAIN / f"{index:06d}.jpg"


def seg_paths(root: Path, split: str, index: int) -> tuple[Path, Path, Path]:
    """(image .jpg, annotation .png, instance .png) of item ``index`` of ``split``."""
    folder, prefix = SEG_SPLITS[split]
    stem = f"{prefix}_{index:06d}"
    return (
        root / SEG / "images" / folder / f"{stem}.jpg",
        root / SEG / "annotations" / folder / f"{stem}.png",
        root / SEG / "instances" / folder / f"{stem}.png",
    )


def davis_sequence(index: int) -> str:
    return f"fashion-{index:03d}"


def davis_paths(root: Path, sequence: str, frame: int) -> tuple[Path, Path]:
    """(frame .jpg, annotation .png) of ``frame`` in ``sequence``."""
    name = f"{frame:05d}"
    return (
        root / DAVIS / "JPEGImages" / DAVIS_RES / sequence / f"{name}.jpg",
        root / DAVIS / "Annotations" / DAVIS_RES / sequence / f"{name}.png",
    )


def knn_path(root: Path, split: str, label: int, index: int) -> Path:
    return root / KNN / KNN_SPLITS[split] / knn_class_dir(label) / f"{index:06d}.png"


def make_dirs(root: Path) -> None:
    """Create every fixed folder of the layout (sequence folders come per clip)."""
    (root / PRETRAIN).mkdir(parents=True, exist_ok=True)
    for folder, _ in SEG_SPLITS.values():
        for kind in ("images", "annotations", "instances"):
            (root / SEG / kind / folder).mkdir(parents=True, exist_ok=True)
    for sub in ("JPEGImages", "Annotations"):
        (root / DAVIS / sub / DAVIS_RES).mkdir(parents=True, exist_ok=True)
    (root / DAVIS / "ImageSets" / "2017").mkdir(parents=True, exist_ok=True)
    for split in KNN_SPLITS.values():
        for label in range(len(CLASS_NAMES)):
            (root / KNN / split / knn_class_dir(label)).mkdir(parents=True, exist_ok=True)


def save_jpeg(path: Path, rgb: np.ndarray) -> None:
    """uint8 (H, W, 3) -> JPEG q95, 4:4:4 (no chroma subsampling: the objects are small)."""
    Image.fromarray(rgb).save(path, "JPEG", quality=JPEG_QUALITY, subsampling=0)


def save_rgb_png(path: Path, rgb: np.ndarray) -> None:
    """uint8 (H, W, 3) -> RGB PNG."""
    Image.fromarray(rgb).save(path, "PNG", compress_level=PNG_LEVEL)


def save_label_png(path: Path, label: np.ndarray) -> None:
    """uint8 (H, W) -> 8-bit grey ('L') PNG, the ADE20K annotation format."""
    Image.fromarray(label).save(path, "PNG", compress_level=PNG_LEVEL)


def save_palette_png(path: Path, ids: np.ndarray) -> None:
    """uint8 (H, W) instance ids -> palette ('P') PNG with the DAVIS palette."""
    image = Image.frombytes("P", (ids.shape[1], ids.shape[0]), np.ascontiguousarray(ids).tobytes())
    image.putpalette(flat_palette())
    image.save(path, "PNG", compress_level=PNG_LEVEL)
