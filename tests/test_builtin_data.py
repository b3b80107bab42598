"""Tests of the built-in data set (fashion-scenes): determinism, exact labels, splits,
on-disk layouts, the source checks and the cache. Tiny sizes keep the file to a few seconds.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from selfpatch.data.builtin import (
    BuiltinSpec,
    ensure_builtin,
    load_fashion_mnist,
    read_manifest,
    write_preview,
)
from selfpatch.data.builtin import build as build_module
from selfpatch.data.builtin import source as source_module
from selfpatch.data.builtin.generate import SPLITS, item_rng
from selfpatch.data.builtin.looks import LOOKS
from selfpatch.data.builtin.render import ALPHA_RAMP, LABEL_ALPHA, SHADE_FLOOR, Placement, composite
from selfpatch.data.builtin.scenes import render_scene
from selfpatch.data.builtin.videos import MIN_VISIBLE_PIXELS
from selfpatch.errors import SelfPatchError

SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
TINY = dict(
    n_pretrain=20,
    n_seg_train=6,
    n_seg_val=6,
    n_videos=2,
    video_frames=5,
    n_knn_train=20,
    n_knn_val=10,
)


def _need_source() -> None:
    if not (SYSTEM_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")


@pytest.fixture(scope="module")
def fm():
    _need_source()
    return load_fashion_mnist()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    _need_source()
    root = tmp_path_factory.mktemp("cache")
    return ensure_builtin(BuiltinSpec(**TINY), root=root, progress=False)


def _tree_bytes(folder: Path) -> dict[str, bytes]:
    """Every file's bytes by relative path; the manifest without its build-time details."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            if path.name == "manifest.json":
                manifest = json.loads(data)
                manifest.pop("build")
                data = json.dumps(manifest, sort_keys=True).encode()
            out[str(path.relative_to(folder))] = data
    return out


# --- generation ---------------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_bytes(tiny, tmp_path, monkeypatch):
    # The fixture rendered in this process; render this one in a pool of two workers.
    monkeypatch.setattr(build_module, "MIN_ITEMS_FOR_POOL", 0)
    again = ensure_builtin(BuiltinSpec(**TINY), root=tmp_path / "a", progress=False, workers=2)
    assert read_manifest(again.root)["build"]["workers"] == 2
    first, second = _tree_bytes(tiny.root), _tree_bytes(again.root)
    assert first.keys() == second.keys()
    assert [k for k in first if first[k] != second[k]] == []

    other = ensure_builtin(BuiltinSpec(seed=1, **TINY), root=tmp_path / "b", progress=False)
    assert other.root.name != tiny.root.name
    third = _tree_bytes(other.root)
    for name in ("pretrain/000000.jpg", "seg/annotations/validation/fs_val_000000.png"):
        assert first[name] != third[name]

    # Items are independent of the split sizes: more pre-training scenes, same evaluation data.
    more = ensure_builtin(
        BuiltinSpec(**{**TINY, "n_pretrain": 25}), root=tmp_path / "c", progress=False
    )
    fourth = _tree_bytes(more.root)
    assert len(fourth) == len(first) + 5
    assert all(fourth[k] == v for k, v in first.items() if not k.endswith(".json"))


def _alpha_independent(photo: np.ndarray, p: Placement, size: int) -> np.ndarray:
    """The object's alpha on the canvas, recomputed here with plain numpy bilinear sampling
    (pixel-centre convention, clamp-to-edge inside the photo, 0 outside it).

    Returns float (size, size); NaN on the photo's very edge, where rounding decides.
    """
    lo, hi = ALPHA_RAMP
    alpha = np.clip((photo.astype(np.float64) - lo) / (hi - lo), 0, 1)
    centres = np.arange(size) + 0.5
    u = (centres - p.cx) / p.scale + 14  # continuous photo coordinates, 0..28
    v = (centres - p.cy) / p.scale + 14
    vv, uu = np.meshgrid(v, u, indexing="ij")
    inside = (uu >= 0) & (uu < 28) & (vv >= 0) & (vv < 28)
    edge = (np.minimum(np.abs(uu), np.abs(uu - 28)) < 1e-6) | (
        np.minimum(np.abs(vv), np.abs(vv - 28)) < 1e-6
    )
    ui, vi = np.clip(uu - 0.5, 0, 27), np.clip(vv - 0.5, 0, 27)  # index coordinates
    u0, v0 = np.minimum(ui.astype(int), 26), np.minimum(vi.astype(int), 26)
    fu, fv = ui - u0, vi - v0
    value = (
        alpha[v0, u0] * (1 - fu) * (1 - fv)
        + alpha[v0, u0 + 1] * fu * (1 - fv)
        + alpha[v0 + 1, u0] * (1 - fu) * fv
        + alpha[v0 + 1, u0 + 1] * fu * fv
    )
    return np.where(edge, np.nan, np.where(inside, value, 0.0))


@pytest.mark.parametrize("index", range(6))
def test_labels_are_exactly_the_drawn_pixels(fm, index):
    photos, labels = fm[2], fm[3]
    rendered, placements = render_scene(
        item_rng(123, "seg_validation", index), photos, labels, 96, keep_alphas=True
    )
    alphas = rendered.alphas
    # The render's own alphas agree with an independent recomputation from the photo.
    mine = np.stack([_alpha_independent(photos[p.index], p, 96) for p in placements])
    known = ~np.isnan(mine)
    assert np.abs(mine[known] - alphas[known]).max() < 1e-3

    # Painter's order over the independent alphas gives the instance map, pixel for pixel
    # (away from the threshold, where float rounding may tip either way).
    expected = np.zeros((96, 96), np.uint8)
    for k in range(len(placements)):
        expected[np.nan_to_num(mine[k]) >= LABEL_ALPHA] = k + 1
    clear = known.all(0) & (np.abs(mine - LABEL_ALPHA) > 1e-3).all(0)
    assert clear.mean() > 0.98
    assert np.array_equal(expected[clear], rendered.instance[clear])

    # With the render's alphas: object k covers >= half of each pixel labelled k, no later
    # object does, and background pixels are covered by no object.
    for k in range(1, len(placements) + 1):
        mask = rendered.instance == k
        assert (alphas[k - 1][mask] >= LABEL_ALPHA).all()
        assert (alphas[k:, mask] < LABEL_ALPHA).all()
    assert (alphas[:, rendered.instance == 0] < LABEL_ALPHA).all()
    lut = np.array([0] + [p.label + 1 for p in placements])
    assert np.array_equal(rendered.semantic, lut[rendered.instance])

    # Where an object is opaque and nothing lies on top, the pixel is its tint times a shade
    # in [SHADE_FLOOR, 1]: the colour comes from that object and nothing else.
    for k, p in enumerate(placements):
        solid = (alphas[k] > 0.999) & (alphas[k + 1 :] == 0).all(0)
        tint = np.asarray(p.tint, np.float32)
        pixels = rendered.rgb[solid]
        shade = pixels @ tint / (tint @ tint)
        assert np.abs(pixels - shade[:, None] * tint).max(initial=0) < 2e-3
        assert ((shade > SHADE_FLOOR - 2e-3) & (shade < 1 + 2e-3)).all()


def test_later_objects_occlude_earlier_ones(fm):
    photos, labels = fm[0], fm[1]
    trouser = int(np.flatnonzero(labels == 1)[0])  # a tall solid object
    coat = int(np.flatnonzero(labels == 4)[0])
    background = np.full((64, 64, 3), 0.5, np.float32)
    a = Placement(trouser, 1, 2.0, 30.0, 32.0, (1.0, 0.0, 0.0))
    b = Placement(coat, 4, 2.0, 36.0, 32.0, (0.0, 0.0, 1.0))
    ab = composite(background, [a, b], photos, keep_alphas=True)
    ba = composite(background, [b, a], photos, keep_alphas=True)
    overlap = (ab.alphas >= LABEL_ALPHA).all(0)
    assert overlap.sum() > 100
    assert (ab.instance[overlap] == 2).all() and (ab.semantic[overlap] == 5).all()
    assert (ba.instance[overlap] == 2).all() and (ba.semantic[overlap] == 2).all()
    # Where both are opaque, the top object's colour is what shows.
    opaque = (ab.alphas > 0.99).all(0)
    assert opaque.sum() > 50
    assert (ab.rgb[opaque][:, 2] > ab.rgb[opaque][:, 0]).all()
    assert (ba.rgb[opaque][:, 0] > ba.rgb[opaque][:, 2]).all()


def test_files_on_disk_are_the_rendered_scenes(tiny, fm):
    spec = BuiltinSpec()
    sources = json.loads((tiny.root / "sources.json").read_text())
    for index in range(TINY["n_seg_val"]):
        rendered, placements = render_scene(
            item_rng(spec.seed, "seg_validation", index), fm[2], fm[3], 96,
            (spec.min_objects, spec.max_objects), (spec.min_scale, spec.max_scale),
            look=LOOKS[spec.version],
        )
        stem = f"fs_val_{index:06d}.png"
        ann = np.asarray(Image.open(tiny.seg_root / "annotations" / "validation" / stem))
        inst = np.asarray(Image.open(tiny.seg_root / "instances" / "validation" / stem))
        assert np.array_equal(ann, rendered.semantic)
        assert np.array_equal(inst, rendered.instance)
        assert sources["seg_validation"]["items"][index] == [p.index for p in placements]


def test_train_and_evaluation_share_no_object(tiny, fm):
    sources = json.loads((tiny.root / "sources.json").read_text())
    assert {s.name for s in SPLITS} == set(sources)
    train_side = {"pretrain", "seg_training", "knn_train"}
    photos = {"train": fm[0], "test": fm[2]}
    used: dict[str, set[bytes]] = {"train": set(), "test": set()}
    for name, entry in sources.items():
        side = "train" if name in train_side else "test"
        assert entry["objects_from"] == side, name
        limit = len(photos[side])
        for item in entry["items"]:
            assert item and all(0 <= i < limit for i in item)
            used[side].update(hashlib.sha1(photos[side][i].tobytes()).digest() for i in item)
    assert used["train"] and used["test"]
    assert used["train"].isdisjoint(used["test"])


# --- layouts --------------------------------------------------------------------------------


def test_davis_layout(tiny):
    davis = tiny.davis_root
    sequences = (davis / "ImageSets" / "2017" / "val.txt").read_text().split()
    assert len(sequences) == TINY["n_videos"]
    assert (davis / "ImageSets" / "2017" / "train.txt").is_file()
    assert sorted(p.name for p in (davis / "JPEGImages" / "480p").iterdir()) == sorted(sequences)
    for seq in sequences:
        frames = sorted((davis / "JPEGImages" / "480p" / seq).glob("*.jpg"))
        masks = sorted((davis / "Annotations" / "480p" / seq).glob("*.png"))
        assert len(frames) == len(masks) == TINY["video_frames"]
        assert (
            [f.stem for f in frames]
            == [m.stem for m in masks]
            == [f"{i:05d}" for i in range(TINY["video_frames"])]
        )
        first = Image.open(masks[0])
        assert first.mode == "P"
        assert first.getpalette()[:9] == [0, 0, 0, 128, 0, 0, 0, 128, 0]  # DAVIS palette
        ids0 = np.asarray(first)
        n_obj = int(ids0.max())
        assert 2 <= n_obj <= 4
        for k in range(1, n_obj + 1):
            assert (ids0 == k).sum() >= MIN_VISIBLE_PIXELS  # every object visible in frame 0
        for frame, mask in zip(frames, masks):
            image, ids = Image.open(frame), Image.open(mask)
            assert image.mode == "RGB" and ids.mode == "P" and image.size == ids.size
            assert int(np.asarray(ids).max()) <= n_obj
        assert not np.array_equal(np.asarray(Image.open(masks[-1])), ids0)  # things move


def test_ade20k_layout(tiny):
    for folder, prefix, count in (
        ("training", "fs_train", TINY["n_seg_train"]),
        ("validation", "fs_val", TINY["n_seg_val"]),
    ):
        images = sorted((tiny.seg_root / "images" / folder).glob("*.jpg"))
        assert len(images) == count and all(p.stem.startswith(prefix) for p in images)
        seen = set()
        for path in images:
            ann = Image.open(tiny.seg_root / "annotations" / folder / f"{path.stem}.png")
            assert ann.mode == "L" and ann.size == Image.open(path).size
            values = np.unique(np.asarray(ann))
            assert values.min() >= 0 and values.max() <= tiny.num_classes
            seen.update(values.tolist())
        assert 0 in seen and len(seen) > 2


def test_imagefolder_layout(tiny):
    datasets = pytest.importorskip("torchvision.datasets")
    train = datasets.ImageFolder(str(tiny.knn_root / "train"))
    val = datasets.ImageFolder(str(tiny.knn_root / "val"))
    assert len(train) == TINY["n_knn_train"] and len(val) == TINY["n_knn_val"]
    assert train.classes == val.classes and len(train.classes) == tiny.num_classes
    # The folder order is the Fashion-MNIST label order.
    assert [c.split("_", 1)[0] for c in train.classes] == [f"{i:02d}" for i in range(10)]
    image, target = val[3]
    assert image.size == (64, 64) and target == 3


def test_pretrain_folder_and_manifest(tiny):
    files = sorted(tiny.pretrain_dir.iterdir())
    assert len(files) == TINY["n_pretrain"] and all(f.suffix == ".jpg" for f in files)
    assert Image.open(files[0]).size == (96, 96)
    manifest = read_manifest(tiny.root)
    assert manifest["version"] >= 1 and manifest["seed"] == 0
    assert manifest["counts"]["davis_frames"] == TINY["n_videos"] * TINY["video_frames"]
    assert len(manifest["source"]["content_sha256"]) == 4
    assert manifest["build"]["seconds"] >= 0
    assert tuple(manifest["class_names"]) == tiny.class_names


def test_preview(tiny, tmp_path):
    out = write_preview(tiny, tmp_path / "p.png", n=4)
    image = Image.open(out)
    assert image.mode == "RGB" and image.width > 4 * 128


# --- cache ----------------------------------------------------------------------------------


def test_cache_is_reused_and_rebuilt_when_stale(tmp_path, monkeypatch):
    _need_source()
    spec = BuiltinSpec(**TINY)
    data = ensure_builtin(spec, root=tmp_path, progress=False)
    stamp = (data.root / "manifest.json").stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("rebuilt a current cache")

    monkeypatch.setattr(build_module, "_generate", fail)
    assert ensure_builtin(spec, root=tmp_path, progress=False) == data
    monkeypatch.undo()

    manifest = read_manifest(data.root)
    manifest["version"] = 0  # as if written by an older generator
    (data.root / "manifest.json").write_text(json.dumps(manifest))
    ensure_builtin(spec, root=tmp_path, progress=False)
    assert read_manifest(data.root)["version"] >= 1
    assert (data.root / "manifest.json").stat().st_mtime_ns != stamp
    assert [p.name for p in tmp_path.iterdir()] == [data.root.name]  # no temp folders left


def test_interrupted_build_leaves_nothing(tmp_path, monkeypatch):
    _need_source()
    from selfpatch.data.builtin import generate

    real = generate.run_chunk
    calls = []

    def dies_midway(task):
        calls.append(task)
        if len(calls) > 3:
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(build_module, "run_chunk", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        ensure_builtin(BuiltinSpec(**TINY), root=tmp_path, progress=False, workers=1)
    assert list(tmp_path.iterdir()) == []


# --- source ---------------------------------------------------------------------------------


def test_missing_source_says_how_to_get_it(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SelfPatchError) as err:
        load_fashion_mnist(empty)
    message = str(err.value)
    assert "\n" not in message and str(empty) in message
    assert "apt-get install dataset-fashion-mnist" in message and "--source" in message

    monkeypatch.setattr(source_module, "SYSTEM_DIRS", (empty,))
    monkeypatch.setattr(source_module, "_download", lambda target: None)
    root = tmp_path / "cache"
    with pytest.raises(SelfPatchError, match="apt-get install dataset-fashion-mnist"):
        ensure_builtin(BuiltinSpec(**TINY), root=root, progress=False)
    assert not any(root.iterdir())  # nothing that looks like a data set
    with pytest.raises(SelfPatchError, match="not found"):
        load_fashion_mnist(search_system=False, download=False)


@pytest.fixture
def source_copy(tmp_path):
    _need_source()
    folder = tmp_path / "fm"
    shutil.copytree(SYSTEM_DIR, folder)
    return folder


def test_source_copy_and_unzipped_files_are_accepted(source_copy):
    labels = source_copy / "t10k-labels-idx1-ubyte.gz"
    (source_copy / "t10k-labels-idx1-ubyte").write_bytes(gzip.decompress(labels.read_bytes()))
    labels.unlink()
    arrays = load_fashion_mnist(source_copy)
    assert [a.shape for a in arrays] == [(60000, 28, 28), (60000,), (10000, 28, 28), (10000,)]
    assert all(a.dtype == np.uint8 for a in arrays)


@pytest.mark.parametrize(
    "damage, expect",
    [
        ("truncate", "corrupt"),
        ("magic", "magic number"),
        ("count", "items"),
        ("flip", "sha256"),
    ],
)
def test_corrupt_source_names_the_file(source_copy, damage, expect):
    name = "t10k-labels-idx1-ubyte"
    gz = source_copy / f"{name}.gz"
    raw = bytearray(gzip.decompress(gz.read_bytes()))
    gz.unlink()
    bad = source_copy / name
    if damage == "truncate":
        bad = gz
        bad.write_bytes(gzip.compress(bytes(raw))[:-100])
    else:
        if damage == "magic":
            raw[2] ^= 0xFF
        elif damage == "count":
            raw[4:8] = (9999).to_bytes(4, "big")
        else:
            raw[-1] = (raw[-1] + 1) % 10  # still a valid label, but not the real one
        bad.write_bytes(bytes(raw))
    with pytest.raises(SelfPatchError, match=expect) as err:
        load_fashion_mnist(source_copy)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)


# --- CLI ------------------------------------------------------------------------------------


def test_cli_build_and_show(tmp_path, capsys):
    _need_source()
    from selfpatch.data.cli import register

    parser = argparse.ArgumentParser(prog="selfpatch")
    register(parser.add_subparsers(dest="command", required=True))
    sizes = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    args = parser.parse_args(["data", "build", "--root", str(tmp_path), "--quiet", *sizes])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "davis:" in out and str(tmp_path) in out
    png = tmp_path / "show.png"
    args = parser.parse_args(
        ["data", "show", "--root", str(tmp_path), "--out", str(png), "--quiet", *sizes]
    )
    assert args.func(args) == 0
    assert capsys.readouterr().out.strip() == str(png) and png.is_file()


def test_data_root_accepts_a_build_folder_with_the_builtin_protocol(tiny, tmp_path):
    """`eval --data-root <build folder>` (e.g. one built with another --seed) must evaluate
    that build exactly like the default one: built-in flag, its class count and names."""
    from selfpatch.evaluate.datasets import choose_data

    for task, root in (("davis", tiny.davis_root), ("seg", tiny.seg_root),
                       ("knn", tiny.knn_root)):
        choice = choose_data(task, None, tiny.root)
        assert choice.builtin and choice.root == root
        assert choice.num_classes == 10 and len(choice.class_names) == 10
    # A folder that only looks similar (manifest of another data set) is not taken for one.
    (tmp_path / "knn").mkdir()
    (tmp_path / "manifest.json").write_text(json.dumps({"name": "something-else"}))
    choice = choose_data("knn", None, tmp_path)
    assert not choice.builtin and choice.root == tmp_path / "knn"
    # A build folder with a task folder removed is one clear error, not a silent fallback.
    broken = tmp_path / "broken"
    shutil.copytree(tiny.root, broken, ignore=shutil.ignore_patterns("davis"))
    with pytest.raises(SelfPatchError, match=r"davis is missing.*--force"):
        choose_data("davis", None, broken)
