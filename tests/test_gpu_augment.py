"""``data.gpu_augment``: loader decodes + resizes, GpuMultiCrop makes the views on the device.

GpuMultiCrop runs on CPU tensors too, so the whole path is exercised here without a GPU.
"""

from __future__ import annotations

import math

import pytest
import torch

from selfpatch.data.transforms import GpuMultiCrop
from selfpatch.train import trainer
from selfpatch.train.factory import multicrop_config
from selfpatch.train.trainer import augment_seed, device_views, pretrain
from test_train import cfg_for, read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")


def test_two_steps_through_the_device_path(images, tmp_path, monkeypatch):
    calls = []
    real = trainer.device_views

    def spy(augment, images_, sizes, seed):
        calls.append((images_.dtype, tuple(images_.shape), seed))
        views = real(augment, images_, sizes, seed)
        calls.append([tuple(v.shape) for v in views])
        return views

    monkeypatch.setattr(trainer, "device_views", spy)
    run = pretrain(cfg_for(images, tmp_path / "r", "data.gpu_augment=true",
                           "optim.max_steps=2"))
    rows = read_metrics(run)
    assert len(rows) == 2 and all(math.isfinite(r["loss"]) for r in rows)
    # uint8 source images of 8/7 x the global size, then 2 global + 2 local float views
    assert calls[0][:2] == (torch.uint8, (8, 3, 37, 37))
    assert calls[1] == [(8, 3, 32, 32)] * 2 + [(8, 3, 16, 16)] * 2
    assert calls[0][2] != calls[2][2]  # a new seed each step


def test_device_views_are_seeded_and_leave_the_global_rng_alone(images, tmp_path):
    cfg = cfg_for(images, tmp_path / "r")
    augment = GpuMultiCrop(multicrop_config(cfg.data))
    batch = torch.randint(0, 256, (4, 3, 37, 37), dtype=torch.uint8)
    sizes = torch.tensor([[40, 40]] * 4)
    torch.manual_seed(0)
    expected_next = torch.rand(3)
    torch.manual_seed(0)
    a = device_views(augment, batch, sizes, augment_seed(0, 5, 0))
    assert torch.equal(torch.rand(3), expected_next)  # drop-path stream untouched
    b = device_views(augment, batch, sizes, augment_seed(0, 5, 0))
    c = device_views(augment, batch, sizes, augment_seed(0, 6, 0))
    d = device_views(augment, batch, sizes, augment_seed(0, 5, 1))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[0], d[0])


def test_gpu_augment_resume_is_exact(images, tmp_path):
    extra = ["data.gpu_augment=true", "optim.batch_size=4", "optim.epochs=1"]  # 4 steps
    full = pretrain(cfg_for(images, tmp_path / "full", *extra))
    pretrain(cfg_for(images, tmp_path / "part", *extra, "optim.max_steps=2"))
    part = pretrain(cfg_for(images, tmp_path / "part", *extra), resume=True)
    a = torch.load(full / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(part / "checkpoints" / "last.pt", weights_only=True)
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert [r["loss"] for r in read_metrics(full)] == [r["loss"] for r in read_metrics(part)]
