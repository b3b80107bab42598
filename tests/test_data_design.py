"""benchmarks/data_design.py: its input checks and the object count it reports per scene
variant (the studies themselves are benchmarks, run by hand)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import data_design  # noqa: E402


def test_objects_per_scene_counts_visible_instance_ids(tmp_path):
    folder = tmp_path / "instances" / "validation"
    folder.mkdir(parents=True)
    # three hand-made instance maps: ids {1, 2}, {} (background only) and {3, 4, 7}
    for i, ids in enumerate(([1, 2], [], [3, 4, 7])):
        mask = np.zeros((8, 8), dtype=np.uint8)
        for j, object_id in enumerate(ids):
            mask[j, :] = object_id
        Image.fromarray(mask).save(folder / f"{i}.png")
    assert data_design._objects_per_scene(tmp_path) == pytest.approx((2 + 0 + 3) / 3, abs=0.01)


def test_objects_per_scene_of_an_empty_folder_is_zero(tmp_path):
    assert data_design._objects_per_scene(tmp_path) == 0.0


def test_unknown_candidate_is_a_one_line_error_listing_the_valid_ones(capsys):
    with pytest.raises(SystemExit):
        data_design.main(["scenes", "--candidates", "1-9 objects"])
    err = capsys.readouterr().err
    assert "unknown scenes candidate" in err and "1-3 objects, 1.4-2.8x (v2)" in err


def test_source_without_a_label_is_rejected_before_any_build(tmp_path):
    with pytest.raises(SystemExit, match="expected LABEL=CHECKPOINT"):
        data_design.main(["scenes", "--out", str(tmp_path), "--source", "runs/x/last.pt"])
    assert not any(tmp_path.iterdir())  # nothing was built
