"""The benchmark controls (benchmarks/controls.py) in their tiny CI form, and the pieces they
rest on checked against independent facts."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
sys.path.insert(0, str(Path(__file__).parent))

import controls  # noqa: E402

from test_builtin_data import _need_source  # noqa: E402


def test_supervised_training_learns_a_separable_task():
    """Two classes that differ only in brightness: the loop must reach (near) 100 %."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(256) % 2
    images = torch.randn(256, 3, 16, 16, generator=g) * 0.2 + (labels * 2.0 - 1.0).view(
        -1, 1, 1, 1)
    torch.manual_seed(0)
    model = controls.small_cnn(2)
    result = controls.train_supervised(model, (images, labels), (images[:64], labels[:64]),
                                       budget_s=60, max_epochs=3, lr=2e-3, batch_size=32,
                                       precision="fp32", log=None)
    assert result["epochs"] == 3 and result["val_top1"] >= 95.0


def test_supervised_training_keeps_to_its_budget_when_epochs_slow_down(monkeypatch):
    """Epoch 1 takes 2 s, later ones 4 s (a fake clock): sizing from epoch 1 alone would plan
    9 epochs = 34 s against a 20 s budget; re-sizing after every epoch must stop in budget."""
    clock = {"now": 0.0, "step": 0}

    def slow_augment(images, generator):
        clock["step"] += 1
        clock["now"] += 1.0 if clock["step"] <= 2 else 2.0  # 2 steps per epoch below
        return images

    monkeypatch.setattr(controls, "augment", slow_augment)
    monkeypatch.setattr(controls.time, "perf_counter", lambda: clock["now"])
    images, labels = torch.randn(128, 3, 8, 8), torch.arange(128) % 2
    result = controls.train_supervised(controls.small_cnn(2), (images, labels),
                                       (images[:8], labels[:8]), budget_s=20, max_epochs=30,
                                       lr=1e-3, batch_size=64, precision="fp32", log=None)
    # by hand: after epochs 1..5 the clock reads 2, 6, 10, 14, 18 s; a 6th (4 s) would pass 19
    assert result["epochs"] == 5 and result["log"][-1]["seconds"] == 18.0


def test_fixed_epochs_ignore_the_clock(monkeypatch):
    """``budget_s=None``: every epoch takes 100 s on a fake clock, yet all 4 epochs run, and
    the learning rate follows a cosine planned over all 8 steps (the plan never shrank)."""
    clock = {"now": 0.0}

    def slow_augment(images, generator):
        clock["now"] += 50.0  # 2 steps per epoch below
        return images

    monkeypatch.setattr(controls, "augment", slow_augment)
    monkeypatch.setattr(controls.time, "perf_counter", lambda: clock["now"])
    images, labels = torch.randn(128, 3, 8, 8), torch.arange(128) % 2
    model = controls.small_cnn(2)
    lrs = []
    step = torch.optim.AdamW.step

    def spy(self, *a, **k):
        lrs.append(self.param_groups[0]["lr"])
        return step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    result = controls.train_supervised(model, (images, labels), (images[:8], labels[:8]),
                                       budget_s=None, max_epochs=4, lr=1e-3, batch_size=64,
                                       precision="fp32", log=None)
    assert result["epochs"] == 4 and result["log"][-1]["seconds"] == 400.0
    # warm-up over epoch 1 (2 steps), then cosine over 8 steps: lr at step i is
    # 1e-3 * min(1, (i+1)/2) * 0.5 * (1 + cos(pi * i / 8)); the 8th step uses i = 7
    expected = [1e-3 * min(1.0, (i + 1) / 2) * 0.5 * (1 + math.cos(math.pi * i / 8))
                for i in range(8)]
    assert lrs == pytest.approx(expected)


def test_epochs_and_budget_exclude_each_other(tmp_path):
    with pytest.raises(SystemExit):
        controls.main(["--epochs", "3", "--budget", "60", "--out", str(tmp_path)])


def test_augment_keeps_content_and_labels():
    images = torch.arange(2 * 3 * 10 * 10, dtype=torch.float32).view(2, 3, 10, 10)
    out = controls.augment(images, torch.Generator().manual_seed(1))
    assert out.shape == images.shape
    for a, b in zip(images, out):  # a flip and a wrap-around shift only permute pixels
        assert torch.equal(a.flatten().sort().values, b.flatten().sort().values)


def test_pixel_tokens_are_the_patches():
    images = torch.randn(2, 3, 8, 8)
    tokens = controls.PixelTokens(4)(images)
    assert tokens.shape == (2, 4, 48)
    # token 1 = top-right patch, channel-major as F.unfold lays it out
    assert torch.equal(tokens[0, 1].view(3, 4, 4), images[0, :, :4, 4:])


def test_controls_smoke_writes_the_table(tmp_path, capsys):
    _need_source()
    assert controls.main(["--smoke", "--out", str(tmp_path)]) == 0
    out = json.loads((tmp_path / "controls.json").read_text())
    rows = out["rows"]
    assert list(rows) == ["supervised CNN", "supervised ViT", "random ViT", "raw pixels"]
    for name in ("supervised ViT", "random ViT", "raw pixels"):
        assert 0 <= rows[name]["knn_top1"] <= 100 and 0 <= rows[name]["mIoU"] <= 100
    assert (tmp_path / "supervised-vit.safetensors").is_file()
    assert "| supervised CNN |" in capsys.readouterr().out
    assert out["meta"]["version"] == 2


@pytest.mark.parametrize("bad", [["--budget", "-1"], ["--epochs", "0"]])
def test_controls_rejects_a_negative_budget(bad, tmp_path):
    with pytest.raises(SystemExit):
        controls.main([*bad, "--out", str(tmp_path)])
