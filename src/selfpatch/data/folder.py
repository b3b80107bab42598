"""A data set over any folder of images, robust to unreadable files.

Layout: every image file below ``root``, at any depth, is one sample; an ImageFolder layout
(``root/<class>/<file>``) therefore works too, with the class names ignored (pre-training
needs no labels). Files are sorted by their path relative to ``root`` so that index ``i``
means the same file on every machine and in every worker process.

Unreadable files never stop training. A sample is the pair ``(x, ok)``:

- ``x`` is ``transform(image)`` (the RGB ``PIL.Image`` itself when ``transform`` is None);
- ``ok`` is ``True`` when file ``i`` itself decoded, ``False`` when it did not and ``x`` was made
  from the next readable file instead (``i+1``, ``i+2``, ... wrapping around), so batches keep
  their size and the choice is the same in every process.

Why a flag in the sample: DataLoader workers are separate processes, so whatever they record in
their copy of the data set is lost to the training loop; the flag travels with the batch and
the loop can sum it. The paths of bad files are known up front from :meth:`scan`, and in the
process that decoded them from :attr:`ImageFolderDataset.bad_files`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from selfpatch.errors import SelfPatchError
from selfpatch.io import IMAGE_SUFFIXES, load_rgb

# How many bad paths a one-line report names before it says "...".
_REPORT_FIRST = 3


def list_image_files(root: Path) -> list[Path]:
    """All image files below ``root`` (recursive, extension match case-insensitive), sorted.

    Hidden files and folders (name starting with ``.``) are skipped: they are tool debris such
    as macOS ``._photo.jpg`` resource forks or ``.ipynb_checkpoints`` copies, never data, and
    would otherwise be reported as unreadable images. Symbolic links to folders are followed
    (data sets are often assembled from links) but each real folder is visited once, so a link
    cycle cannot loop.
    """
    found: list[tuple[str, Path]] = []
    seen_dirs: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen_dirs:
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith(".") or not name.lower().endswith(IMAGE_SUFFIXES):
                continue
            path = Path(dirpath) / name
            found.append((path.relative_to(root).as_posix(), path))
    found.sort(key=lambda item: item[0])
    return [path for _, path in found]


def _reason(error: BaseException) -> str:
    """One short line for an exception (PIL messages can span lines)."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text[:120]


@dataclass
class ScanReport:
    """What :meth:`ImageFolderDataset.scan` found.

    ``n_files`` counts the image files found; ``bad`` lists ``(path, reason)`` for each file
    that could not be read (they have been dropped from the data set).
    """

    root: Path
    n_files: int
    bad: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def n_ok(self) -> int:
        return self.n_files - len(self.bad)

    @property
    def bad_paths(self) -> list[Path]:
        return [path for path, _ in self.bad]

    def summary(self) -> str:
        """One line for the log: ``N unreadable files skipped: first ones ...``; '' if none."""
        return describe_bad_files(self.bad_paths, self.root, self.bad)


def describe_bad_files(
    paths: list[Path], root: Path | None = None, reasons: list[tuple[Path, str]] | None = None
) -> str:
    """``'N unreadable files skipped: first ones a.jpg (why), ...'``; '' for an empty list."""
    if not paths:
        return ""
    noun = "file" if len(paths) == 1 else "files"
    return f"{len(paths)} unreadable {noun} skipped: first ones {_first_ones(paths, root, reasons)}"


def _first_ones(
    paths: list[Path], root: Path | None, reasons: list[tuple[Path, str]] | None
) -> str:
    """The first few paths (relative to ``root``), each with its reason when known."""
    why = dict(reasons or [])
    shown = []
    for path in paths[:_REPORT_FIRST]:
        name = path.relative_to(root).as_posix() if root is not None else str(path)
        shown.append(f"{name} ({why[path]})" if path in why else name)
    return ", ".join(shown) + (", ..." if len(paths) > _REPORT_FIRST else "")


class ImageFolderDataset:
    """Images below ``root`` as samples ``(transform(image), ok)``; see the module docstring.

    Args:
        root: folder to search recursively for ``IMAGE_SUFFIXES`` files.
        transform: callable applied to the RGB ``PIL.Image`` (e.g. ``MultiCropTransform``,
            which returns a list of ``(3, S, S)`` tensors). ``None`` returns the image.

    Attributes:
        files: the sorted list of image paths (``scan`` removes unreadable ones).
        bad_files: paths found unreadable *in this process* (by ``scan`` or ``__getitem__``).
    """

    def __init__(self, root: str | Path, transform: Callable[[Image.Image], Any] | None = None):
        self.root = Path(root).expanduser()
        if not self.root.exists():
            raise SelfPatchError(
                f"image folder {self.root} does not exist: pass the path of a folder of images"
            )
        if not self.root.is_dir():
            raise SelfPatchError(
                f"{self.root} is a file, not a folder: pass the folder that holds the images"
            )
        self.transform = transform
        self.files = list_image_files(self.root)
        if not self.files:
            raise SelfPatchError(
                f"no image files found under {self.root} (looked for "
                f"{', '.join(IMAGE_SUFFIXES)}, any case, in all subfolders): "
                "point to a folder that contains images"
            )
        self.bad_files: list[Path] = []
        self._bad_index: set[int] = set()  # indices known unreadable in this process

    def __len__(self) -> int:
        return len(self.files)

    def scan(self, verify: bool = True, full_decode: bool = False) -> ScanReport:
        """Check every file up front, drop the unreadable ones, and report them.

        Opening a file parses its header (catches garbage and unknown formats). ``verify``
        adds ``Image.verify`` (PNG checksums, truncation of most formats; cheap). JPEG
        ``verify`` checks little, so a truncated JPEG can pass; ``full_decode`` decodes every
        file (thorough, but as slow as one epoch of loading: use it for small sets). Files
        that pass here and still fail later are handled by ``__getitem__``.

        Raises:
            SelfPatchError: if no file is readable.
        """
        bad: list[tuple[Path, str]] = []
        good: list[Path] = []
        for path in self.files:
            try:
                with warnings.catch_warnings():
                    # A broken file's warnings are reported through ``bad``, not the console.
                    warnings.simplefilter("ignore")
                    if full_decode:
                        load_rgb(path)
                    else:
                        with Image.open(path) as image:
                            if verify:
                                image.verify()
            except Exception as error:  # noqa: BLE001 - any decode failure means "skip it"
                bad.append((path, _reason(error)))
            else:
                good.append(path)
        report = ScanReport(root=self.root, n_files=len(self.files), bad=bad)
        if not good:
            raise self._none_readable(len(self.files), [path for path, _ in bad], bad)
        self.files = good
        self._bad_index.clear()  # indices changed with the file list
        known = set(self.bad_files)
        self.bad_files.extend(path for path, _ in bad if path not in known)
        return report

    def __getitem__(self, index: int) -> tuple[Any, bool]:
        """Sample ``index`` as ``(x, ok)``; unreadable files are replaced by the next readable."""
        n = len(self.files)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        index %= n
        for step in range(n):
            candidate = (index + step) % n
            if candidate in self._bad_index:
                continue
            path = self.files[candidate]
            try:
                image = load_rgb(path)
            except Exception:  # noqa: BLE001 - a corrupt file must not kill the DataLoader
                self._bad_index.add(candidate)
                self.bad_files.append(path)
                continue
            x = self.transform(image) if self.transform is not None else image
            return x, step == 0
        raise self._none_readable(n, self.bad_files, None)

    def _none_readable(
        self, n: int, paths: list[Path], reasons: list[tuple[Path, str]] | None
    ) -> SelfPatchError:
        return SelfPatchError(
            f"none of the {n} image files under {self.root} could be read (first ones "
            f"{_first_ones(paths, self.root, reasons)}): check the files, or point to a folder "
            "of valid images"
        )
