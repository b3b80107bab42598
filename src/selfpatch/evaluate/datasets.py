"""Where the evaluation data lives: the built-in set or real data sets in their public layouts.

All protocols read the public on-disk layouts (DAVIS 2017, ADE20K, ImageFolder), so the
built-in data only has to tell us its three roots. A real data set is chosen per task with
``--davis-root`` / ``--seg-root`` / ``--knn-root``, or for all at once with ``--data-root``
pointing at a folder holding them under their usual names (:data:`DATA_ROOT_NAMES`) or at
one build folder of ``selfpatch data build`` (any seed or size: it is evaluated exactly as the
default build, with the built-in protocol settings).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from selfpatch.errors import SelfPatchError

#: Sub-folder names looked up under ``--data-root``, per task, first match wins.
DATA_ROOT_NAMES: dict[str, tuple[str, ...]] = {
    "davis": ("DAVIS", "davis", "DAVIS-2017", "davis2017"),
    "seg": ("ADEChallengeData2016", "ade20k", "ADE20K", "ade"),
    "knn": ("imagenet", "ImageNet", "knn"),
}

#: ADE20K's class count, the default of ``--num-classes`` for a real segmentation root.
ADE20K_NUM_CLASSES = 150


@dataclass
class DataChoice:
    """One task's data: its root, whether it is the built-in set, and its class count."""

    root: Path
    builtin: bool
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None


def builtin_data(version: int | None = None):
    """The built-in data (:class:`selfpatch.data.builtin.BuiltinData`) of ``version`` (default:
    the latest), generated on first use."""
    try:
        from selfpatch.data.builtin import BuiltinSpec, ensure_builtin
    except ImportError as exc:
        raise SelfPatchError(
            "the built-in data set (selfpatch.data.builtin) is not available; pass real data "
            f"with --davis-root / --seg-root / --knn-root ({exc})"
        ) from exc
    return ensure_builtin(BuiltinSpec() if version is None else BuiltinSpec.for_version(version))


def choose_data(task: str, explicit: str | Path | None = None,
                data_root: str | Path | None = None,
                builtin_version: int | None = None) -> DataChoice:
    """Pick the data for ``task`` (``davis``, ``seg`` or ``knn``).

    Precedence: the task's own ``--<task>-root``, then a sub-folder of ``--data-root``, then
    the built-in data.
    """
    if explicit:
        root = Path(explicit)
        if not root.is_dir():
            raise SelfPatchError(f"--{task}-root {root} is not a directory; check the path")
        return DataChoice(root=root, builtin=False)
    if data_root:
        base = Path(data_root)
        if not base.is_dir():
            raise SelfPatchError(f"--data-root {base} is not a directory; check the path")
        build = _builtin_build(base)
        if build is not None:
            choice = _builtin_choice(build, task)
            if not choice.root.is_dir():
                raise SelfPatchError(f"built-in data folder {choice.root} is missing; rebuild "
                                     "it with `selfpatch data build --force`")
            return choice
        for name in DATA_ROOT_NAMES[task]:
            if (base / name).is_dir():
                return DataChoice(root=base / name, builtin=False)
        raise SelfPatchError(
            f"--data-root {base} has none of {', '.join(DATA_ROOT_NAMES[task])} for {task}; "
            f"rename the folder or pass --{task}-root"
        )
    return _builtin_choice(builtin_data(builtin_version), task)


def _builtin_build(folder: Path):
    """The :class:`BuiltinData` of ``folder`` when it is a finished ``selfpatch data build``
    folder (its manifest names the built-in set), else None."""
    try:
        from selfpatch.data.builtin.build import NAME, data_paths, read_manifest
    except ImportError:
        return None
    manifest = read_manifest(folder)
    if manifest is None or manifest.get("name") != NAME:
        return None
    return data_paths(folder)


def _builtin_choice(data, task: str) -> DataChoice:
    """``task``'s root of a built-in build ``data``, flagged so the built-in protocol applies."""
    root = {"davis": data.davis_root, "seg": data.seg_root, "knn": data.knn_root}[task]
    names = tuple(getattr(data, "class_names", ()) or ()) or None
    return DataChoice(root=Path(root), builtin=True, num_classes=int(data.num_classes),
                      class_names=names)


def read_label_png(path: str | Path) -> np.ndarray:
    """An 8-bit label/palette PNG as an ``(H, W)`` integer array of its indices.

    Palette (``P``) images give their palette indices, grey (``L``) images their values; any
    other mode is an error because colours cannot be mapped back to labels reliably.
    """
    try:
        with Image.open(path) as img:
            if img.mode not in ("P", "L", "I", "I;16"):
                raise SelfPatchError(
                    f"label image {path} has mode {img.mode}; labels must be 8-bit palette "
                    "or grey-level PNGs holding class / object indices"
                )
            return np.asarray(img).astype(np.int64)
    except OSError as exc:
        raise SelfPatchError(f"cannot read label image {path}: {exc}; replace it") from exc


def image_size(path: str | Path) -> tuple[int, int]:
    """``(H, W)`` of an image file, read from its header only."""
    try:
        with Image.open(path) as img:
            return img.height, img.width
    except OSError as exc:
        raise SelfPatchError(f"cannot read image {path}: {exc}; replace it") from exc
