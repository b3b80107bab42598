"""Building the built-in data set once into a cache folder, atomically, and reusing it.

A build is written into a hidden temporary folder next to its final place and renamed into
place only after ``manifest.json`` (written last) is complete, so an interrupted build never
leaves a folder that looks finished. A cached build is reused when its manifest has the same
version and sizes; otherwise it is rebuilt and replaced.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from selfpatch.data.builtin import layouts
from selfpatch.data.builtin.generate import (
    SPLITS,
    Context,
    balanced_indices,
    init_worker,
    make_tasks,
    run_chunk,
    split_rng,
    split_size,
)
from selfpatch.data.builtin.source import CLASS_NAMES, find_fashion_mnist
from selfpatch.data.builtin.spec import NAME, BuiltinData, BuiltinSpec
from selfpatch.errors import SelfPatchError

MANIFEST = "manifest.json"
SOURCES = "sources.json"
#: Below this many items the pool's start-up costs more than it saves.
MIN_ITEMS_FOR_POOL = 400

LABEL_CONVENTIONS = {
    "seg": "ADE20K layout; annotation value 0 = background (ADE20K: 'other'/ignore), "
    "1..10 = Fashion-MNIST class + 1; the probe ignores 0 (reduce_zero_label style)",
    "seg_instances": "extra to ADE20K: instance id per pixel, 0 = background, k = k-th object "
    "drawn (later objects occlude earlier ones)",
    "davis": "DAVIS 2017 layout; palette PNG, value = instance id 0..K, 0 = background; "
    "every frame annotated; frames are video_size x video_size despite the '480p' folder",
    "knn": "ImageFolder; folder NN_name holds class NN (sorted index = Fashion-MNIST class)",
    "objects": "pretrain, seg training and knn train use Fashion-MNIST train photos; "
    "seg validation, davis and knn val use test photos (see sources.json)",
}


def default_root() -> Path:
    """Cache root: ``$SELFPATCH_DATA`` or ``~/.cache/selfpatch/data``."""
    env = os.environ.get("SELFPATCH_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "selfpatch" / "data"


def data_paths(folder: Path) -> BuiltinData:
    """The :class:`BuiltinData` of a build folder (does not check it exists)."""
    return BuiltinData(
        root=folder,
        pretrain_dir=folder / layouts.PRETRAIN,
        seg_root=folder / layouts.SEG,
        davis_root=folder / layouts.DAVIS,
        knn_root=folder / layouts.KNN,
        num_classes=len(CLASS_NAMES),
        class_names=CLASS_NAMES,
    )


def read_manifest(folder: str | Path) -> dict | None:
    """The manifest of a build folder, or None when absent or unreadable."""
    try:
        return json.loads((Path(folder) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def is_current(folder: Path, spec: BuiltinSpec) -> bool:
    """Whether ``folder`` holds a finished build of this version and these sizes."""
    manifest = read_manifest(folder)
    if manifest is None or manifest.get("name") != NAME:
        return False
    recorded = manifest.get("spec")
    if manifest.get("version") != spec.version or not isinstance(recorded, dict):
        return False
    # v1 manifests predate the spec's version field; the manifest's own version fills it.
    if {"version": manifest.get("version"), **recorded} != spec.to_dict():
        return False
    paths = data_paths(folder)
    return all(
        p.is_dir() for p in (paths.pretrain_dir, paths.seg_root, paths.davis_root, paths.knn_root)
    )


def _clean_abandoned(root: Path, name: str) -> None:
    """Remove temporary folders of builds that died (killed mid-build).

    A folder is abandoned when the process named in it is gone from this machine, or when it
    is a day old (a cache shared between machines cannot check the process).
    """
    for path in root.glob(f".{name}.*-*"):
        try:
            pid = int(path.name.rsplit(".", 1)[-1].split("-")[1])
            stale = time.time() - path.stat().st_mtime > 86400
        except (ValueError, IndexError, OSError):
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            stale = True
        except OSError:
            pass
        if stale:
            shutil.rmtree(path, ignore_errors=True)


def _write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")


def _generate(
    out: Path, spec: BuiltinSpec, source: str | Path | None, progress: bool, workers: int
) -> dict:
    """Write every split into ``out``; return the manifest (written by the caller)."""
    started = time.perf_counter()
    fm = find_fashion_mnist(source)
    layouts.make_dirs(out)
    knn_indices = {
        name: balanced_indices(
            split_rng(spec.seed, name),
            fm.train_labels if name == "knn_train" else fm.test_labels,
            split_size(spec, name),
        )
        for name in ("knn_train", "knn_val")
    }
    context = Context(
        out=out,
        spec=spec,
        photos={"train": fm.train_images, "test": fm.test_images},
        labels={"train": fm.train_labels, "test": fm.test_labels},
        knn_indices=knn_indices,
    )
    tasks = make_tasks(spec)
    total = sum(stop - start for _, start, stop in tasks)
    records: dict[str, dict[int, list[list[int]]]] = {s.name: {} for s in SPLITS}
    bar = _progress_bar(total, progress)
    if workers <= 1 or total < MIN_ITEMS_FOR_POOL:
        init_worker(context)
        results = map(run_chunk, tasks)
        pool, workers = None, 1
    else:
        pool = _pool_context().Pool(workers, init_worker, (context,))
        results = pool.imap_unordered(run_chunk, tasks)
    try:
        for split, start, items in results:
            records[split][start] = items
            bar.update(len(items))
    finally:
        bar.close()
        if pool is not None:
            # All results are in on success; on an error or Ctrl-C, stop the other chunks.
            pool.terminate()
            pool.join()
        init_worker(None)  # drop the references to the photos in this process

    sequences = [layouts.davis_sequence(i) for i in range(spec.n_videos)]
    val_txt = out / layouts.DAVIS / "ImageSets" / "2017" / "val.txt"
    val_txt.write_text("".join(f"{s}\n" for s in sequences))
    (val_txt.parent / "train.txt").write_text("")

    sources = {
        split.name: {
            "objects_from": split.objects,
            "items": [
                item for start in sorted(records[split.name]) for item in records[split.name][start]
            ],
        }
        for split in SPLITS
    }
    _write_json(out / SOURCES, sources)
    return {
        "name": NAME,
        "version": spec.version,
        "seed": spec.seed,
        "spec": spec.to_dict(),
        "counts": {
            "pretrain": spec.n_pretrain,
            "seg_training": spec.n_seg_train,
            "seg_validation": spec.n_seg_val,
            "davis_sequences": spec.n_videos,
            "davis_frames": spec.n_videos * spec.video_frames,
            "knn_train": spec.n_knn_train,
            "knn_val": spec.n_knn_val,
        },
        "num_classes": len(CLASS_NAMES),
        "class_names": list(CLASS_NAMES),
        "knn_class_dirs": [layouts.knn_class_dir(c) for c in range(len(CLASS_NAMES))],
        "labels": LABEL_CONVENTIONS,
        "source": {
            "name": "Fashion-MNIST (Zalando Research, MIT licence)",
            "content_sha256": fm.sha256,
        },
        # Everything that may differ between two builds of the same bytes lives here.
        "build": {
            "seconds": round(time.perf_counter() - started, 2),
            "workers": workers,
            "source_dir": fm.origin,
            "numpy": np.__version__,
            "python": sys.version.split()[0],
        },
    }


def _pool_context():
    """Start workers from a clean server process, not by forking this one: the caller may be a
    training script whose torch/OpenMP threads make ``fork`` prone to deadlocks. The photos are
    sent to each worker once (~55 MB, a fraction of a second)."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


class _Silent:
    """Stand-in for a progress bar."""

    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, enabled: bool):
    """A tqdm bar on stderr, or a no-op stand-in when disabled or tqdm is missing."""
    try:
        from tqdm import tqdm
    except ImportError:
        enabled = False
    if enabled:
        return tqdm(total=total, desc="fashion-scenes", unit="item", file=sys.stderr)
    return _Silent()


def ensure_builtin(
    spec: BuiltinSpec | None = None,
    root: str | Path | None = None,
    source: str | Path | None = None,
    progress: bool = True,
    *,
    workers: int | None = None,
    force: bool = False,
) -> BuiltinData:
    """Build the data set if missing or stale, else reuse it; return its paths.

    Args:
        spec: sizes and seed (default :class:`BuiltinSpec`).
        root: cache root holding one folder per build (default :func:`default_root`); the
            build goes to ``root / spec.dir_name()``.
        source: folder with the Fashion-MNIST files (default: system copy, then download).
            Only read when a build is needed.
        progress: show a progress bar on stderr while building.
        workers: processes to render with (default: all CPUs, at most 8). They are started
            by a fork server, so a script calling this at import time needs the usual
            ``if __name__ == "__main__":`` guard; builds under 400 items use no workers.
        force: rebuild even when a current build exists.

    Raises:
        SelfPatchError: bad spec, Fashion-MNIST missing or corrupt, cache not writable.
    """
    spec = spec if spec is not None else BuiltinSpec()
    spec.validate()
    root = Path(root).expanduser() if root is not None else default_root()
    name = spec.dir_name()
    final = root / name
    if not force and is_current(final, spec):
        return data_paths(final)
    try:
        root.mkdir(parents=True, exist_ok=True)
        _clean_abandoned(root, name)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.building-{os.getpid()}-", dir=root))
        tmp.chmod(0o755)  # mkdtemp makes it private; the finished cache should be readable
    except OSError as exc:
        raise SelfPatchError(
            f"cannot write the data cache {root}: {exc}; set SELFPATCH_DATA "
            f"or pass --root to a writable folder"
        ) from exc
    if workers is None:
        workers = min(os.cpu_count() or 1, 8)
    old = None
    try:
        manifest = _generate(tmp, spec, source, progress, workers)
        _write_json(tmp / MANIFEST, manifest)  # last: its presence marks a finished build
        if final.exists():
            old = root / f".{name}.old-{os.getpid()}-{time.time_ns()}"
            os.rename(final, old)
        try:
            os.rename(tmp, final)
        except OSError:
            # Another process finished the same build first; use theirs.
            if not is_current(final, spec):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return data_paths(final)
