"""benchmarks/step_time.py: the patch-size option reaches the config, and the report's
ratios are the hand-computed ones."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import step_time  # noqa: E402


def test_patch_size_override_changes_only_the_patch_size():
    base = step_time.build_config("cpu-long", "preset", "dino", smoke=False)
    fine = step_time.build_config("cpu-long", "preset", "dino", smoke=False, patch_size=8)
    assert (base.model.patch_size, fine.model.patch_size) == (16, 8)
    assert (fine.data.global_size, fine.data.local_size) == (base.data.global_size,
                                                             base.data.local_size)


def test_crops_override_changes_only_the_crop_sizes_and_rejects_bad_text():
    base = step_time.build_config("cpu-long", "preset", "dino", smoke=False)
    wide = step_time.build_config("cpu-long", "preset", "dino", smoke=False, crops="96/48")
    assert (wide.data.global_size, wide.data.local_size) == (96, 48)
    assert wide.model.patch_size == base.model.patch_size
    assert (base.data.global_size, base.data.local_size) == (64, 32)
    for bad in ("96", "96/x", "96/0", "96/32/16"):
        with pytest.raises(SystemExit, match="--crops"):
            step_time.parse_crops(bad)


def _variant(arch: str, method: str, times: list[float], flops: int) -> step_time.Variant:
    return step_time.Variant("cpu-long", arch, method, "fp32", None, None, None, None, None,
                             batch=32, times=times, flops=flops)


def test_report_gives_patch_and_method_ratios_by_hand():
    """Medians: dino/16 2 s, sp/16 3 s, dino/8 7 s, sp/8 12 s -> sp/dino 1.5 at 16 and
    12/7 at 8; patch 8 / patch 16: 3.5 (dino) and 4.0 (sp); FLOPs 10, 20, 40, 100 -> FLOP
    ratios 4 and 5. A single patch size gives no patch table, fp32 alone no precision table."""
    variants = [_variant("vit_tiny/16", "dino", [2.0, 1.0, 9.0], 10),
                _variant("vit_tiny/16", "dino+selfpatch", [3.0], 20),
                _variant("vit_tiny/8", "dino", [7.0], 40),
                _variant("vit_tiny/8", "dino+selfpatch", [12.0, 12.0, 1.0], 100)]
    info = {"cpu_model": "test", "torch": "x", "torch_threads": 1, "date": "today"}
    lines = step_time.report(variants, {}, info)
    assert "| cpu-long | vit_tiny/16 | fp32 | 1.500 | 2.000 | 0.750 |" in lines
    assert f"| cpu-long | vit_tiny/8 | fp32 | {12 / 7:.3f} | 2.500 | {12 / 7 / 2.5:.3f} |" in lines
    assert "| cpu-long | vit_tiny/8 vs vit_tiny/16 | dino | fp32 | 3.500 | 4.000 |" in lines
    assert "| cpu-long | vit_tiny/8 vs vit_tiny/16 | dino+selfpatch | fp32 | 4.000 | 5.000 |" \
        in lines
    single = step_time.report(variants[:2], {}, info)
    assert not any("first grid" in line for line in single)
    assert not any("fp32 time" in line for line in lines)  # fp32 only: no precision table
