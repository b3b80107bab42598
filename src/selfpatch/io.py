"""File helpers shared by every layer: image suffixes, RGB decoding, atomic writes."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
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
        if image.mode.startswith(("I", "F")):
            image = _to_8bit(image)
        return image.convert("RGB")


def _to_8bit(image: Image.Image) -> Image.Image:
    """Single-channel 16/32-bit integer or float image -> 8-bit grey, *scaled* (PIL's own
    conversion clips, turning most of a 16-bit photo white). Integers are taken as 16-bit
    data when they fit (PNG's 16-bit greys arrive as mode I), else by their maximum; floats
    in [0, 1] are scaled by 255, other floats clipped to [0, 255]."""
    a = np.asarray(image)
    if image.mode.startswith("F"):
        a = a.astype(np.float64)
        a = a * 255.0 if a.size and np.nanmin(a) >= 0 and np.nanmax(a) <= 1 else a
    else:
        a = a.astype(np.float64)
        top = 65535.0 if a.size == 0 or a.max() <= 65535 else float(a.max())
        a = a * (255.0 / top)
    return Image.fromarray(np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8), "L")


def read_rgb(path: str | Path) -> Image.Image:
    """:func:`load_rgb`, with an unreadable file turned into a one-line error naming it."""
    try:
        return load_rgb(path)
    except (OSError, ValueError) as exc:
        raise SelfPatchError(f"cannot read image {path}: {exc}; replace or remove it") from exc


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then rename it over ``path``.

    The data is fsynced before the rename and the folder after it, so a crash or power loss
    leaves either the old file or the new one, whole. The result gets a normal file's
    permissions (0666 minus the umask; the temporary file is created 0600). A full disk or a
    folder without write permission is a one-line error naming the path.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise _write_error(path, exc) from None
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        raise _write_error(path, exc) from None
    except RuntimeError as exc:  # torch.save reports a failed write (e.g. ENOSPC) this way
        if "unexpected pos" in str(exc) or "file write failed" in str(exc):
            raise _write_error(path, OSError(errno.ENOSPC, str(exc).splitlines()[0])) from None
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def remove_stale_temporaries(folder: str | Path, name: str) -> list[Path]:
    """Delete ``.NAME.*`` temporaries that :func:`atomic_write` left behind when its process
    was killed mid-write (only one writer per file is assumed); returns what was removed."""
    removed = []
    for stale in Path(folder).glob(f".{name}.*"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
            removed.append(stale)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system can open a folder
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_error(path: Path, exc: OSError) -> SelfPatchError:
    if exc.errno == errno.ENOSPC:
        try:
            free = shutil.disk_usage(path.parent).free / 2**20
            space = f" ({free:.0f} MiB free there"
            if path.exists():  # the previous version is the best guess of what is needed
                space += f", about {path.stat().st_size / 2**20:.0f} MiB needed"
            space += ")"
        except OSError:
            space = ""
        return SelfPatchError(f"cannot write {path}: the disk is full{space}; free some space "
                              "or write elsewhere (run.output_dir / --out)")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return SelfPatchError(f"cannot write {path}: no permission to write in {path.parent}; "
                              "choose another folder (run.output_dir / --out)")
    return SelfPatchError(f"cannot write {path}: {exc.strerror or exc}; choose another folder "
                          "(run.output_dir / --out)")
