"""Finding, reading and verifying the Fashion-MNIST object source.

The built-in data set draws its objects from Fashion-MNIST (Xiao, Rasul & Vollgraf 2017,
Zalando Research, MIT licence): 70000 real 28x28 grey-level photos of clothing articles in
10 classes. The four IDX files are looked up, in order, in:

1. the directory the user gives (``source=``; the ``.gz`` files or the unzipped IDX files);
2. the system copy installed by the Debian package ``dataset-fashion-mnist``
   (:data:`SYSTEM_DIRS`);
3. a torchvision download, only where the internet is reachable.

Every file is checked (gzip CRC, IDX magic number, counts, 28x28, labels 0..9, and the sha256
of its decompressed content against the official release) and a failure names the bad file.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from selfpatch.errors import SelfPatchError

#: Official class names, in label order (label ``c`` is class ``CLASS_NAMES[c]``).
CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

#: Directories searched when no ``source`` is given (patched in tests to disable the lookup).
SYSTEM_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets/fashion-mnist"),)

#: The four files, keyed by role: (base name, IDX magic, expected item count).
FILES: dict[str, tuple[str, int, int]] = {
    "train_images": ("train-images-idx3-ubyte", 2051, 60000),
    "train_labels": ("train-labels-idx1-ubyte", 2049, 60000),
    "test_images": ("t10k-images-idx3-ubyte", 2051, 10000),
    "test_labels": ("t10k-labels-idx1-ubyte", 2049, 10000),
}

#: sha256 of the *decompressed* IDX bytes of the official release. Checked on the content,
#: not on the ``.gz`` file, because distributions re-compress the archives.
CONTENT_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}

HOW_TO_GET = (
    "install it with `apt-get install dataset-fashion-mnist` or point "
    "`selfpatch data build --source DIR` at a directory holding the four "
    "Fashion-MNIST IDX files (train-images-idx3-ubyte.gz, ...)"
)


@dataclass(frozen=True)
class FashionMNIST:
    """The whole of Fashion-MNIST in memory, plus where it came from.

    Attributes:
        train_images: uint8 (60000, 28, 28), white object on black (0 = empty).
        train_labels: uint8 (60000,), class index 0..9.
        test_images: uint8 (10000, 28, 28).
        test_labels: uint8 (10000,).
        origin: the directory the files were read from.
        sha256: file base name -> sha256 of its decompressed IDX content.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    origin: str
    sha256: dict[str, str] = field(default_factory=dict)


def _find_file(directory: Path, base: str) -> Path | None:
    """The file for ``base`` in ``directory``: ``base.gz``, ``base`` or torchvision's name."""
    for name in (f"{base}.gz", base, base.replace("-idx", ".idx")):
        path = directory / name
        if path.is_file():
            return path
    return None


def _read_bytes(path: Path) -> bytes:
    """Raw IDX bytes of ``path``, decompressing ``.gz`` (the gzip CRC catches corruption)."""
    try:
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise SelfPatchError(
            f"Fashion-MNIST file {path} is corrupt or unreadable ({exc}); re-install it "
            f"(`apt-get install --reinstall dataset-fashion-mnist`) or replace the file"
        ) from exc
    return data


def _parse_idx(path: Path, data: bytes, magic: int, count: int) -> np.ndarray:
    """Check an IDX header and return its payload as uint8 (count,) or (count, 28, 28)."""
    bad = f"Fashion-MNIST file {path} is corrupt"
    fix = "re-install or re-download it"
    if len(data) < 8:
        raise SelfPatchError(f"{bad}: only {len(data)} bytes; {fix}")
    got_magic = int.from_bytes(data[0:4], "big")
    if got_magic != magic:
        raise SelfPatchError(f"{bad}: IDX magic number {got_magic}, expected {magic}; {fix}")
    got_count = int.from_bytes(data[4:8], "big")
    if got_count != count:
        raise SelfPatchError(f"{bad}: holds {got_count} items, expected {count}; {fix}")
    if magic == 2051:
        if len(data) < 16:
            raise SelfPatchError(f"{bad}: truncated header; {fix}")
        rows, cols = int.from_bytes(data[8:12], "big"), int.from_bytes(data[12:16], "big")
        if (rows, cols) != (28, 28):
            raise SelfPatchError(f"{bad}: images are {rows}x{cols}, expected 28x28; {fix}")
        offset, shape = 16, (count, 28, 28)
    else:
        offset, shape = 8, (count,)
    expected_len = offset + int(np.prod(shape))
    if len(data) != expected_len:
        raise SelfPatchError(f"{bad}: {len(data)} bytes, expected {expected_len}; {fix}")
    array = np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)
    if magic == 2049 and int(array.max()) > 9:
        raise SelfPatchError(f"{bad}: label {int(array.max())} outside 0..9; {fix}")
    return array


#: The last verified read, keyed by the files' paths, sizes and modification times: tests and
#: notebooks build many small data sets in one process, and decompressing costs ~0.5 s.
_LAST_READ: tuple[tuple, FashionMNIST] | None = None


def _stat_key(directory: Path) -> tuple | None:
    key = []
    for base, _, _ in FILES.values():
        path = _find_file(directory, base)
        if path is None:
            return None
        st = path.stat()
        key.append((str(path.resolve()), st.st_size, st.st_mtime_ns))
    return tuple(key)


def read_fashion_mnist_dir(directory: str | Path) -> FashionMNIST:
    """Read and verify the four Fashion-MNIST files in ``directory``.

    Raises:
        SelfPatchError: a file is missing (names the directory and how to get the data) or
            corrupt (names the file).
    """
    global _LAST_READ
    directory = Path(directory).expanduser()
    key = _stat_key(directory)
    if key is not None and _LAST_READ is not None and _LAST_READ[0] == key:
        return _LAST_READ[1]
    arrays: dict[str, np.ndarray] = {}
    digests: dict[str, str] = {}
    for role, (base, magic, count) in FILES.items():
        path = _find_file(directory, base)
        if path is None:
            raise SelfPatchError(
                f"Fashion-MNIST not found: {directory} has no {base}.gz (or {base}); {HOW_TO_GET}"
            )
        data = _read_bytes(path)
        arrays[role] = _parse_idx(path, data, magic, count)
        digest = hashlib.sha256(data).hexdigest()
        if digest != CONTENT_SHA256[base]:
            raise SelfPatchError(
                f"Fashion-MNIST file {path} is corrupt: content sha256 {digest[:16]}... differs "
                f"from the official release ({CONTENT_SHA256[base][:16]}...); re-install it"
            )
        digests[base] = digest
    result = FashionMNIST(
        train_images=arrays["train_images"],
        train_labels=arrays["train_labels"],
        test_images=arrays["test_images"],
        test_labels=arrays["test_labels"],
        origin=str(directory),
        sha256=digests,
    )
    if key is not None:
        _LAST_READ = (key, result)
    return result


def _has_any_file(directory: Path) -> bool:
    return any(_find_file(directory, base) is not None for base, _, _ in FILES.values())


def default_download_dir() -> Path:
    """Where a torchvision download goes: ``$SELFPATCH_DATA/downloads`` or the user cache."""
    root = os.environ.get("SELFPATCH_DATA") or Path.home() / ".cache" / "selfpatch" / "data"
    return Path(root).expanduser() / "downloads"


def _download(target: Path) -> Path | None:
    """Try a torchvision download into ``target``; the raw-file directory, or None on failure.

    Any failure (no torchvision, no network, a proxy refusing) means "not available here":
    the caller then reports how to get the data instead.
    """
    try:
        from torchvision.datasets import FashionMNIST as TorchvisionFashionMNIST

        TorchvisionFashionMNIST(str(target), train=True, download=True)
        TorchvisionFashionMNIST(str(target), train=False, download=True)
    except Exception:  # noqa: BLE001 - any download failure just means "not reachable"
        return None
    raw = target / "FashionMNIST" / "raw"
    return raw if raw.is_dir() else None


def find_fashion_mnist(
    source: str | Path | None = None,
    *,
    search_system: bool = True,
    download: bool = True,
) -> FashionMNIST:
    """Locate, read and verify Fashion-MNIST (see the module docstring for the search order).

    Args:
        source: a directory with the four IDX files (``.gz`` or unzipped). When given, it is
            the only place looked at, so a typo is reported rather than silently ignored.
        search_system: look in :data:`SYSTEM_DIRS` (the Debian package's location).
        download: as a last resort, let torchvision download it (needs the internet).

    Raises:
        SelfPatchError: one line saying which file is bad, or how to get the data.
    """
    if source is not None:
        return read_fashion_mnist_dir(source)
    if search_system:
        for directory in SYSTEM_DIRS:
            if directory.is_dir() and _has_any_file(directory):
                return read_fashion_mnist_dir(directory)
    if download:
        raw = _download(default_download_dir())
        if raw is not None:
            return read_fashion_mnist_dir(raw)
    raise SelfPatchError(f"Fashion-MNIST not found on this machine; {HOW_TO_GET}")


def load_fashion_mnist(
    source: str | Path | None = None,
    *,
    search_system: bool = True,
    download: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fashion-MNIST as arrays: (train images uint8 (60000, 28, 28), train labels uint8
    (60000,), test images uint8 (10000, 28, 28), test labels uint8 (10000,)).

    Arguments as :func:`find_fashion_mnist`.
    """
    fm = find_fashion_mnist(source, search_system=search_system, download=download)
    return fm.train_images, fm.train_labels, fm.test_images, fm.test_labels
