"""Rendering and writing the items of each split, in chunks that worker processes share.

Each item draws from its own generator, seeded by (seed, split stream, item index), so the
bytes written do not depend on the number of workers or the chunking.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from selfpatch.data.builtin import layouts
from selfpatch.data.builtin.looks import LOOKS
from selfpatch.data.builtin.render import to_uint8
from selfpatch.data.builtin.scenes import render_scene, render_single
from selfpatch.data.builtin.spec import BuiltinSpec
from selfpatch.data.builtin.videos import VideoLayout, sample_video


@dataclass(frozen=True)
class Split:
    """One output split: which generator stream, which Fashion-MNIST split, what it is."""

    name: str
    stream: int  # fixed per split forever: changing it changes every item
    objects: str  # "train" or "test": where its photos come from
    kind: str  # "pretrain" | "seg" | "davis" | "knn"


#: Pre-training and probe-training data use train photos; all evaluation data use test photos.
SPLITS: tuple[Split, ...] = (
    Split("pretrain", 1, "train", "pretrain"),
    Split("seg_training", 2, "train", "seg"),
    Split("seg_validation", 3, "test", "seg"),
    Split("davis", 4, "test", "davis"),
    Split("knn_train", 5, "train", "knn"),
    Split("knn_val", 6, "test", "knn"),
)
SPLIT_BY_NAME = {s.name: s for s in SPLITS}


def split_size(spec: BuiltinSpec, name: str) -> int:
    """Number of items (clips for ``davis``) of split ``name`` under ``spec``."""
    return {
        "pretrain": spec.n_pretrain,
        "seg_training": spec.n_seg_train,
        "seg_validation": spec.n_seg_val,
        "davis": spec.n_videos,
        "knn_train": spec.n_knn_train,
        "knn_val": spec.n_knn_val,
    }[name]


def item_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of item ``index`` of ``split``."""
    return np.random.default_rng([seed, SPLIT_BY_NAME[split].stream, index])


def split_rng(seed: int, split: str) -> np.random.Generator:
    """A generator for choices that concern a whole split (index 2**32 is no item's)."""
    return np.random.default_rng([seed, SPLIT_BY_NAME[split].stream, 2**32])


def balanced_indices(rng: np.random.Generator, labels: np.ndarray, n: int) -> np.ndarray:
    """``n`` photo indices cycling through the classes, distinct while the class lasts.

    Returns:
        int64 (n,); item i has class i % 10.
    """
    classes = np.unique(labels)
    pools = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    chosen = []
    for i in range(n):
        pool = pools[i % len(classes)]
        chosen.append(pool[(i // len(classes)) % len(pool)])
    return np.array(chosen, dtype=np.int64)


@dataclass
class Context:
    """What every worker needs; handed over once per worker process.

    Attributes:
        out: the build folder being written.
        photos, labels: per Fashion-MNIST split ("train"/"test"), uint8 (N, 28, 28) and (N,).
        knn_indices: per k-NN split, the photo index of each item, int64 (n,).
    """

    out: Path
    spec: BuiltinSpec
    photos: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    knn_indices: dict[str, np.ndarray]


_CONTEXT: Context | None = None


def init_worker(context: Context | None) -> None:
    """Pool initializer: keep the shared context in this process (None forgets it)."""
    global _CONTEXT
    _CONTEXT = context


def _scene(ctx: Context, split: str, index: int) -> list[int]:
    spec = ctx.spec
    objects = SPLIT_BY_NAME[split].objects
    rendered, placements = render_scene(
        item_rng(spec.seed, split, index),
        ctx.photos[objects],
        ctx.labels[objects],
        spec.scene_size,
        (spec.min_objects, spec.max_objects),
        (spec.min_scale, spec.max_scale),
        look=LOOKS[spec.version],
    )
    rgb = to_uint8(rendered.rgb)
    if split == "pretrain":
        layouts.save_jpeg(layouts.pretrain_path(ctx.out, index), rgb)
    else:
        image, annotation, instance = layouts.seg_paths(ctx.out, split, index)
        layouts.save_jpeg(image, rgb)
        layouts.save_label_png(annotation, rendered.semantic)
        layouts.save_label_png(instance, rendered.instance)
    return [p.index for p in placements]


def _video(ctx: Context, index: int) -> list[int]:
    spec = ctx.spec
    photos = ctx.photos["test"]
    layout = sample_video(
        item_rng(spec.seed, "davis", index),
        photos,
        ctx.labels["test"],
        size=spec.video_size,
        frames=spec.video_frames,
        n_objects=(spec.video_min_objects, spec.video_max_objects),
        scale=(spec.video_min_scale, spec.video_max_scale),
        look=LOOKS[spec.version],
    )
    write_video(ctx.out, layouts.davis_sequence(index), layout, photos)
    return [t.index for t in layout.tracks]


def write_video(out: Path, sequence: str, layout: VideoLayout, photos: np.ndarray) -> None:
    """Render every frame of ``layout`` into ``out``'s DAVIS layout as ``sequence``."""
    for frame in range(layout.frames):
        rendered = layout.render(photos, frame)
        jpg, png = layouts.davis_paths(out, sequence, frame)
        if frame == 0:
            jpg.parent.mkdir(parents=True, exist_ok=True)
            png.parent.mkdir(parents=True, exist_ok=True)
        layouts.save_jpeg(jpg, to_uint8(rendered.rgb))
        layouts.save_palette_png(png, rendered.instance)


def _knn(ctx: Context, split: str, index: int) -> list[int]:
    spec = ctx.spec
    objects = SPLIT_BY_NAME[split].objects
    photo = int(ctx.knn_indices[split][index])
    rendered = render_single(
        item_rng(spec.seed, split, index),
        ctx.photos[objects],
        ctx.labels[objects],
        photo,
        spec.knn_size,
        look=LOOKS[spec.version],
    )
    label = int(ctx.labels[objects][photo])
    layouts.save_rgb_png(layouts.knn_path(ctx.out, split, label, index), to_uint8(rendered.rgb))
    return [photo]


def run_chunk(task: tuple[str, int, int]) -> tuple[str, int, list[list[int]]]:
    """Render and write items ``start:stop`` of a split.

    Args:
        task: (split name, start, stop).
    Returns:
        (split name, start, per item the indices of the photos it used, back to front).
    """
    split, start, stop = task
    ctx = _CONTEXT
    assert ctx is not None, "init_worker must run first"
    kind = SPLIT_BY_NAME[split].kind
    records = []
    for index in range(start, stop):
        if kind in ("pretrain", "seg"):
            records.append(_scene(ctx, split, index))
        elif kind == "davis":
            records.append(_video(ctx, index))
        else:
            records.append(_knn(ctx, split, index))
    return split, start, records


def make_tasks(spec: BuiltinSpec) -> list[tuple[str, int, int]]:
    """Chunks of work, the slowest (clips) first so the pool stays busy to the end."""
    chunk = {"pretrain": 400, "seg": 100, "davis": 1, "knn": 400}
    tasks = []
    for split in sorted(SPLITS, key=lambda s: s.kind != "davis"):
        n, step = split_size(spec, split.name), chunk[split.kind]
        tasks += [(split.name, i, min(n, i + step)) for i in range(0, n, step)]
    return tasks
