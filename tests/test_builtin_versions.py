"""Data versions of the built-in set: v2 by default, v1 still buildable and unchanged in its
geometry, the v2 figure/ground contrast that motivated it, and the version plumbing (cache
names, old manifests, CLI, config)."""

from __future__ import annotations

import argparse
import hashlib
import json

import numpy as np
import pytest

from selfpatch.config import load_config
from selfpatch.data.builtin import VERSION, BuiltinSpec, ensure_builtin, read_manifest
from selfpatch.data.builtin import build as build_module
from selfpatch.data.builtin.background import smooth_background
from selfpatch.data.builtin.generate import balanced_indices, item_rng, split_rng
from selfpatch.data.builtin.looks import LOOKS
from selfpatch.data.builtin.scenes import render_scene, render_single
from selfpatch.errors import SelfPatchError
from test_builtin_data import TINY, _need_source

LUMA = np.array([0.299, 0.587, 0.114], np.float32)


@pytest.fixture(scope="module")
def fm():
    _need_source()
    from selfpatch.data.builtin import load_fashion_mnist

    return load_fashion_mnist()


def test_default_is_v2_and_v1_keeps_its_name():
    assert VERSION == 2 and BuiltinSpec().version == 2
    assert BuiltinSpec().dir_name() == "fashion-scenes-v2-seed0"
    assert BuiltinSpec.for_version(1).dir_name() == "fashion-scenes-v1-seed0"
    assert BuiltinSpec.for_version(1, seed=3).dir_name() == "fashion-scenes-v1-seed3"
    # Non-default sizes get a hash of the sizes alone (as before versions were a field, so
    # small v1 caches keep their names).
    b = BuiltinSpec.for_version(1, n_pretrain=5)
    sizes = {k: v for k, v in b.to_dict().items() if k not in ("seed", "version")}
    digest = hashlib.sha256(json.dumps(sizes, sort_keys=True).encode()).hexdigest()[:8]
    assert b.dir_name() == f"fashion-scenes-v1-seed0-{digest}"
    assert BuiltinSpec(n_pretrain=5).dir_name().startswith("fashion-scenes-v2-seed0-")
    with pytest.raises(SelfPatchError, match="version = 9 is unknown"):
        BuiltinSpec.for_version(9)
    with pytest.raises(SelfPatchError, match="version = 0 is unknown"):
        BuiltinSpec(version=0).validate()


def test_versions_share_geometry_and_differ_only_in_brightness(fm):
    """Same seed: same objects, places, tints and labels; the v2 background is the v1 field
    times the gain, pixel for pixel (v1 stays what it was)."""
    photos, labels = fm[2], fm[3]
    for index in range(5):
        r1, p1 = render_scene(item_rng(0, "seg_validation", index), photos, labels, 96,
                              look=LOOKS[1])
        r2, p2 = render_scene(item_rng(0, "seg_validation", index), photos, labels, 96,
                              look=LOOKS[2])
        assert p1 == p2
        assert np.array_equal(r1.semantic, r2.semantic)
        assert np.array_equal(r1.instance, r2.instance)
        background = r1.instance == 0
        # Background pixels far from any object (alpha exactly 0) scale exactly.
        ratio = r2.rgb[background] / np.maximum(r1.rgb[background], 1e-6)
        far = r1.rgb[background] > 0.05
        assert np.median(ratio[far]) == pytest.approx(LOOKS[2].background_gain, abs=1e-4)
    b1 = smooth_background(np.random.default_rng(5), 32, 32)
    b2 = smooth_background(np.random.default_rng(5), 32, 32, gain=0.4)
    np.testing.assert_allclose(b2, 0.4 * b1, rtol=1e-6)


def _contrast(look, photos, labels, n=200):
    idx = balanced_indices(split_rng(0, "knn_val"), labels, n)
    diffs = []
    for i, photo in enumerate(idx):
        r = render_single(item_rng(0, "knn_val", i), photos, labels, int(photo), 64, look=look)
        luma = r.rgb @ LUMA
        obj = r.instance > 0
        diffs.append(luma[obj].mean() - luma[~obj].mean())
    return np.array(diffs)


def test_v2_objects_stand_out_v1_was_a_coin_flip(fm):
    """The measured reason for v2 (docs/data.md): in v1 an object is darker than its
    background about half the time; in v2 almost never."""
    v1 = _contrast(LOOKS[1], fm[2], fm[3])
    v2 = _contrast(LOOKS[2], fm[2], fm[3])
    assert 0.35 < (v1 < 0).mean() < 0.65
    assert (v2 < 0).mean() < 0.10
    assert np.median(v2) > 0.15


def test_old_v1_manifest_without_version_field_is_reused(tmp_path, monkeypatch):
    _need_source()
    spec = BuiltinSpec.for_version(1, **TINY)
    data = ensure_builtin(spec, root=tmp_path, progress=False)
    assert data.root.name.startswith("fashion-scenes-v1-seed0-")
    manifest = read_manifest(data.root)
    assert manifest["version"] == 1 and manifest["spec"]["version"] == 1
    del manifest["spec"]["version"]  # as written before versions were a spec field
    (data.root / "manifest.json").write_text(json.dumps(manifest))

    def fail(*args, **kwargs):
        raise AssertionError("rebuilt a current v1 cache")

    monkeypatch.setattr(build_module, "_generate", fail)
    assert ensure_builtin(spec, root=tmp_path, progress=False) == data
    # ... but it is not taken for v2 with the same sizes.
    assert not build_module.is_current(data.root, BuiltinSpec(**TINY))


def test_cli_version_option(tmp_path, capsys):
    _need_source()
    from selfpatch.data.cli import parse_version, register

    assert parse_version("v1") == 1 and parse_version("2") == 2
    with pytest.raises(SelfPatchError, match="choose one of v1, v2"):
        parse_version("v3")
    parser = argparse.ArgumentParser(prog="selfpatch")
    register(parser.add_subparsers(dest="command", required=True))
    sizes = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    args = parser.parse_args(["data", "build", "--version", "v1", "--root", str(tmp_path),
                              "--quiet", *sizes])
    assert args.func(args) == 0
    assert "fashion-scenes-v1-seed0-" in capsys.readouterr().out
    assert read_manifest(next(tmp_path.glob("fashion-scenes-v1-*")))["version"] == 1


def test_config_builtin_version_is_checked():
    assert load_config(None, []).data.builtin_version == 2
    assert load_config(None, ["data.builtin_version=1"]).data.builtin_version == 1
    with pytest.raises(SelfPatchError, match="data.builtin_version"):
        load_config(None, ["data.builtin_version=3"])


def test_eval_builtin_version_picks_the_build(monkeypatch):
    import selfpatch.data.builtin as builtin
    from selfpatch.evaluate.options import EvalOptions

    seen = []

    def fake(spec=None, **kwargs):
        seen.append(spec.version)
        return build_module.data_paths(build_module.default_root() / spec.dir_name())

    monkeypatch.setattr(builtin, "ensure_builtin", fake)
    assert EvalOptions().data("knn").root.parent.name == "fashion-scenes-v2-seed0"
    assert EvalOptions(builtin_version=1).data("seg").root.parent.name == (
        "fashion-scenes-v1-seed0")
    assert seen == [2, 1]
    with pytest.raises(SelfPatchError, match="--builtin-version"):
        EvalOptions(builtin_version=3).validate()
