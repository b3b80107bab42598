"""File helpers shared by every layer: image suffixes, RGB decoding, atomic writes."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from selfpatch.errors import SelfPatchError

# Every suffix PIL decodes that an image folder may hold (training folders, k-NN, seg, DAVIS).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")


def is_image_file(path: str | Path) -> bool:
    """Whether ``path``'s suffix is one of :data:`IMAGE_SUFFIXES` (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def load_rgb(path: str | Path) -> Image.Image:
    """Decode ``path`` fully into an RGB image; raise whatever PIL raises if it cannot.

    Palette images with a transparent colour go through RGBA first, as PIL asks, so that the
    conversion neither warns nor picks the wrong colours. Alpha is dropped (not composited):
    the pixels under it are what the photo holds.
    """
    with Image.open(path) as image:
        image.load()  # decode now, inside the caller's error handling, not lazily later
        if image.mode == "P" and "transparency" in image.info:
            image = image.convert("RGBA")
        return image.convert("RGB")


def read_rgb(path: str | Path) -> Image.Image:
    """:func:`load_rgb`, with an unreadable file turned into a one-line error naming it."""
    try:
        return load_rgb(path)
    except (OSError, ValueError) as exc:
        raise SelfPatchError(f"cannot read image {path}: {exc}; replace or remove it") from exc


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then rename it over ``path``.

    A crash mid-write leaves the previous file intact (the rename is atomic on POSIX).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
