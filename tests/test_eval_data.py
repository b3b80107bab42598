"""Tiny data sets in the public layouts (DAVIS 2017, ADE20K, ImageFolder) for the eval tests.

The generators are imported by the other ``test_eval_*`` modules; the tests here check the
bad-input errors of the data readers. Everything is generated into pytest's ``tmp_path`` so the
tests do not depend on the built-in data generator.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from selfpatch.errors import SelfPatchError
from selfpatch.evaluate.davis import davis_palette, list_davis_sequences, read_annotations
from selfpatch.evaluate.seg import list_seg_pairs, read_label

COLOURS = np.array([[30, 30, 30], [220, 40, 40], [40, 200, 60], [50, 80, 230], [230, 220, 40]])


def _noise(rng, size):
    return rng.integers(0, 40, size=(size, size, 3))


def make_davis(root: Path, num_seqs: int = 2, num_frames: int = 5, size: int = 32,
               seed: int = 0) -> Path:
    """DAVIS layout with ``num_seqs`` videos of two moving squares (ids 1 and 2)."""
    rng = np.random.default_rng(seed)
    names = [f"seq{i}" for i in range(num_seqs)]
    for name in names:
        fdir = root / "JPEGImages" / "480p" / name
        adir = root / "Annotations" / "480p" / name
        fdir.mkdir(parents=True)
        adir.mkdir(parents=True)
        for t in range(num_frames):
            img = _noise(rng, size)
            lab = np.zeros((size, size), np.uint8)
            for obj, (y, x) in enumerate([(4, 4 + t), (size // 2, size // 2 - t)], start=1):
                lab[y : y + size // 4, x : x + size // 4] = obj
                img[lab == obj] = COLOURS[obj]
            Image.fromarray(img.astype(np.uint8)).save(fdir / f"{t:05d}.jpg", quality=95)
            pal = Image.fromarray(lab, mode="P")
            pal.putpalette(davis_palette().reshape(-1).tolist())
            pal.save(adir / f"{t:05d}.png")
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("\n".join(names) + "\n")
    return root


def make_seg(root: Path, num_train: int = 6, num_val: int = 3, size: int = 32,
             num_classes: int = 3, seed: int = 0) -> Path:
    """ADE20K layout: rectangles of classes 1..C on background 0, grey-level label PNGs."""
    rng = np.random.default_rng(seed)
    for split, count in (("training", num_train), ("validation", num_val)):
        idir, adir = root / "images" / split, root / "annotations" / split
        idir.mkdir(parents=True)
        adir.mkdir(parents=True)
        for i in range(count):
            img = _noise(rng, size)
            lab = np.zeros((size, size), np.uint8)
            for c in range(1, num_classes + 1):
                y, x = rng.integers(0, size - size // 3, 2)
                lab[y : y + size // 3, x : x + size // 3] = c
            for c in range(1, num_classes + 1):
                img[lab == c] = COLOURS[c]
            Image.fromarray(img.astype(np.uint8)).save(idir / f"img_{i:04d}.jpg", quality=95)
            Image.fromarray(lab, mode="L").save(adir / f"img_{i:04d}.png")
    return root


def make_knn(root: Path, num_classes: int = 2, per_class: int = 4, size: int = 32,
             seed: int = 0) -> Path:
    """ImageFolder ``train/`` and ``val/``: one flat colour (plus noise) per class."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", per_class), ("val", max(1, per_class // 2))):
        for c in range(num_classes):
            d = root / split / f"class_{c}"
            d.mkdir(parents=True)
            for i in range(count):
                img = np.clip(COLOURS[c + 1] + _noise(rng, size) - 20, 0, 255)
                Image.fromarray(img.astype(np.uint8)).save(d / f"{i}.png")
    return root


# ----------------------------------------------------------------------------- bad input


def test_generated_davis_reads_back(tmp_path):
    seqs = list_davis_sequences(make_davis(tmp_path), "val")
    assert [s.name for s in seqs] == ["seq0", "seq1"]
    gt = read_annotations(seqs[0])
    assert gt.shape == (5, 32, 32) and set(np.unique(gt)) == {0, 1, 2}


def test_davis_missing_frame_names_sequence_and_frame(tmp_path):
    root = make_davis(tmp_path)
    (root / "JPEGImages" / "480p" / "seq1" / "00002.jpg").unlink()
    with pytest.raises(SelfPatchError, match=r"seq1.*00002\.jpg"):
        list_davis_sequences(root)


def test_davis_missing_last_frame_is_found_from_annotations(tmp_path):
    root = make_davis(tmp_path)
    (root / "JPEGImages" / "480p" / "seq0" / "00004.jpg").unlink()
    with pytest.raises(SelfPatchError, match=r"seq0.*00004\.jpg"):
        list_davis_sequences(root)


def test_davis_missing_annotation_names_sequence_and_frame(tmp_path):
    root = make_davis(tmp_path)
    (root / "Annotations" / "480p" / "seq0" / "00003.png").unlink()
    with pytest.raises(SelfPatchError, match=r"seq0.*00003\.png.*00003\.jpg"):
        list_davis_sequences(root)


def test_davis_missing_split_file(tmp_path):
    with pytest.raises(SelfPatchError, match=r"ImageSets/2017/val\.txt"):
        list_davis_sequences(tmp_path)


def test_davis_size_mismatch_names_both_files(tmp_path):
    root = make_davis(tmp_path)
    anno = root / "Annotations" / "480p" / "seq0" / "00001.png"
    Image.fromarray(np.zeros((16, 32), np.uint8), mode="L").save(anno)
    seq = list_davis_sequences(root, sequences=["seq0"])[0]
    with pytest.raises(SelfPatchError, match=r"00001\.jpg.*00001\.png"):
        read_annotations(seq)


def test_seg_label_out_of_range_names_file_and_value(tmp_path):
    path = tmp_path / "bad.png"
    lab = np.zeros((8, 8), np.uint8)
    lab[2, 3] = 7
    Image.fromarray(lab, mode="L").save(path)
    with pytest.raises(SelfPatchError, match=r"bad\.png.*value 7"):
        read_label(path, num_classes=3, reduce_zero_label=True)
    # 255 is always "ignore", and 3 is valid with reduce_zero_label (classes 1..3).
    lab[2, 3], lab[0, 0] = 255, 3
    Image.fromarray(lab, mode="L").save(path)
    out = read_label(path, num_classes=3, reduce_zero_label=True)
    assert out[2, 3] == 255 and out[0, 0] == 2 and out[1, 1] == 255
    with pytest.raises(SelfPatchError, match=r"value 3"):
        read_label(path, num_classes=3, reduce_zero_label=False)


def test_seg_missing_annotation_and_layout(tmp_path):
    root = make_seg(tmp_path / "ade")
    (root / "annotations" / "validation" / "img_0001.png").unlink()
    with pytest.raises(SelfPatchError, match=r"img_0001\.jpg.*img_0001\.png"):
        list_seg_pairs(root, "val")
    with pytest.raises(SelfPatchError, match=r"images/training"):
        list_seg_pairs(tmp_path / "nowhere", "train")
