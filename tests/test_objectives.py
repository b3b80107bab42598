"""MoCo-v3 and MoBY as image-level objectives (issue 12): losses by hand, heads, queues,
training end to end (with and without SelfPatch)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from selfpatch.config import load_config
from selfpatch.errors import SelfPatchError
from selfpatch.methods.losses import (
    moco_contrastive_loss,
    patch_contrastive_loss,
    queue_contrastive_loss,
)
from selfpatch.methods.moby import MoBYObjective
from selfpatch.methods.moco import MoCoV3Objective
from selfpatch.models.heads import ProjectionMLP
from selfpatch.train.factory import build_schedules, build_teacher_student
from selfpatch.train.optim import build_optimizer
from selfpatch.train.trainer import pretrain, train_step
from test_train import cfg_for, fixed_views, read_metrics

sys.path.insert(0, str(Path(__file__).parent))

SMALL = ["moco.hidden_dim=64", "moco.pred_hidden_dim=64", "moco.dim=32", "moby.hidden_dim=64",
         "moby.dim=32", "moby.queue_size=24", "data.n_local=0"]
CONTRASTIVE = ["mocov3", "mocov3+selfpatch", "moby", "moby+selfpatch",
               "moby+selfpatch negatives"]
# Training tests: CI runs three (each objective, SelfPatch, negatives); `-m slow` the rest.
TRAINED = ["mocov3", pytest.param("mocov3+selfpatch", marks=pytest.mark.slow),
           pytest.param("moby", marks=pytest.mark.slow), "moby+selfpatch",
           "moby+selfpatch negatives"]


def _tiny_cfg(*extra: str):
    """cpu-quick at 32 px with patch 8 and small heads, plus ``extra``."""
    return load_config("cpu-quick", ["model.patch_size=8", "data.global_size=32",
                                     "data.local_size=16", *SMALL, "dino.hidden_dim=16",
                                     "dino.bottleneck_dim=8", "selfpatch.out_dim=16", *extra])


def _method_args(name: str) -> list[str]:
    """``"moby+selfpatch negatives"`` -> the method plus the patch-negatives switch."""
    method, *variant = name.split()
    return [f"method={method}"] + (["selfpatch.negatives=true"] if variant else [])


def _ctr_by_hand(q: list[list[float]], k: list[list[float]], tau: float) -> float:
    """MoCo-v3's contrastive loss written out: cosine logits, softmax over keys, -log p(own)."""
    def unit(v):
        n = math.sqrt(sum(x * x for x in v))
        return [x / n for x in v]

    q, k = [unit(v) for v in q], [unit(v) for v in k]
    total = 0.0
    for i, qi in enumerate(q):
        logits = [sum(a * b for a, b in zip(qi, kj)) / tau for kj in k]
        log_norm = math.log(sum(math.exp(x) for x in logits))
        total += log_norm - logits[i]
    return total / len(q) * 2 * tau


def test_contrastive_loss_equals_hand_computation():
    torch.manual_seed(0)
    q, k = torch.randn(4, 3), torch.randn(4, 3)
    expected = _ctr_by_hand(q.tolist(), k.tolist(), 0.2)
    assert float(moco_contrastive_loss(q, k, 0.2)) == pytest.approx(expected, rel=1e-5)
    # Keys get no gradient; queries do.
    q.requires_grad_(True)
    k.requires_grad_(True)
    moco_contrastive_loss(q, k, 0.2).backward()
    assert q.grad is not None and k.grad is None


def test_two_views_give_the_symmetric_moco_v3_loss():
    torch.manual_seed(1)
    q1, q2, k1, k2 = (torch.randn(5, 4) for _ in range(4))
    objective = MoCoV3Objective(temperature=0.3)
    expected = (_ctr_by_hand(q1.tolist(), k2.tolist(), 0.3)
                + _ctr_by_hand(q2.tolist(), k1.tolist(), 0.3))
    assert float(objective([q1, q2], [k1, k2])) == pytest.approx(expected, rel=1e-5)
    # With a local view: pairs (k1: q2, q3), (k2: q1, q3), averaged, times 2.
    q3 = torch.randn(5, 4)
    pairs = [(q2, k1), (q3, k1), (q1, k2), (q3, k2)]
    expected = 2 * sum(_ctr_by_hand(q.tolist(), k.tolist(), 0.3) for q, k in pairs) / 4
    assert float(objective([q1, q2, q3], [k1, k2])) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="temperature"):
        MoCoV3Objective(temperature=0)


def _queue_ctr_by_hand(q, k, queue, tau):
    """MoBY's loss written out: positive logit first, then one per queue column."""
    total = 0.0
    for qi, ki in zip(q, k):
        logits = [sum(a * b for a, b in zip(qi, ki)) / tau]
        logits += [sum(qi[c] * queue[c][j] for c in range(len(qi))) / tau
                   for j in range(len(queue[0]))]
        total += math.log(sum(math.exp(x) for x in logits)) - logits[0]
    return total / len(q)


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


def test_queue_contrastive_loss_equals_hand_computation():
    torch.manual_seed(4)
    q, k = _unit_rows(torch.randn(3, 4)), _unit_rows(torch.randn(3, 4))
    queue = _unit_rows(torch.randn(5, 4)).T  # (C, Q)
    expected = _queue_ctr_by_hand(q.tolist(), k.tolist(), queue.tolist(), 0.2)
    assert float(queue_contrastive_loss(q, k, queue, 0.2)) == pytest.approx(expected, rel=1e-5)


def test_moby_loss_pairs_views_with_the_other_views_queue_and_enqueues_keys():
    torch.manual_seed(5)
    objective = MoBYObjective(dim=4, hidden_dim=8, queue_size=5, temperature=0.2)
    queues = objective.queues.clone()
    p1, p2, k1, k2 = (torch.randn(3, 4) for _ in range(4))
    # MoBY: ctr(pred_1, key_2, queue_2) + ctr(pred_2, key_1, queue_1), everything normalised.
    expected = (_queue_ctr_by_hand(_unit_rows(p1).tolist(), _unit_rows(k2).tolist(),
                                   queues[1].tolist(), 0.2)
                + _queue_ctr_by_hand(_unit_rows(p2).tolist(), _unit_rows(k1).tolist(),
                                     queues[0].tolist(), 0.2))
    assert float(objective([p1, p2], [k1, k2])) == pytest.approx(expected, rel=1e-5)
    # Enqueue: 3 keys at columns 0..2, then 3 more at 3, 4 and (wrapping) 0.
    objective.after_step([k1, k2])
    torch.testing.assert_close(objective.queues[0][:, :3], _unit_rows(k1).T)
    torch.testing.assert_close(objective.queues[1][:, :3], _unit_rows(k2).T)
    torch.testing.assert_close(objective.queues[0][:, 3:], queues[0][:, 3:])
    assert int(objective.queue_ptr) == 3
    objective.after_step([k2, k1])
    torch.testing.assert_close(objective.queues[0][:, [3, 4, 0]], _unit_rows(k2).T)
    torch.testing.assert_close(objective.queues[0][:, 1:3], _unit_rows(k1).T[:, 1:])
    assert int(objective.queue_ptr) == 1
    with pytest.raises(ValueError, match="queue_size"):
        MoBYObjective(queue_size=0)


def test_patch_contrastive_loss_equals_hand_computation():
    torch.manual_seed(6)
    g, b, n, k = 2, 3, 2, 4
    student, teacher = torch.randn(b, n, k), torch.randn(b, n, k)
    negatives = torch.randn(g, b, k)
    unit = lambda v: [x / math.sqrt(sum(y * y for y in v)) for x in v]  # noqa: E731
    dot = lambda u, v: sum(x * y for x, y in zip(unit(u), unit(v)))  # noqa: E731
    total = 0.0
    for img in range(b):
        for i in range(n):
            q = student[img, i].tolist()
            logits = [dot(q, teacher[img, i].tolist()) / 0.2]
            logits += [dot(q, negatives[a, j].tolist()) / 0.2
                       for a in range(g) for j in range(b) if j != img]  # other images only
            total += math.log(sum(math.exp(x) for x in logits)) - logits[0]
    expected = total / (b * n)
    got = float(patch_contrastive_loss(student, teacher, negatives, 0.2))
    assert got == pytest.approx(expected, rel=1e-5)


def test_patch_negatives_are_the_teachers_g_prime_of_other_images_y():
    torch.manual_seed(7)
    cfg = _tiny_cfg("method=moby+selfpatch", "selfpatch.negatives=true",
                    "selfpatch.local_crops=false")
    ts = build_teacher_student(cfg)
    ts.student.eval()
    views = [torch.randn(3, 3, 32, 32) for _ in range(2)]
    with torch.no_grad():
        _, stats = ts(views, 0.04)
        _, student_patch, _ = ts.student(views, [(0, 2)], n_patch_views=2)
        _, tokens, grid = ts.teacher.encode(views, 0, 2)
        targets = ts.selfpatch.teacher_logits(ts.teacher, tokens, grid, 2)
        reps = ts.teacher.aggregator(tokens, None).chunk(2)  # y = h(all patches), Eq. 4
        negatives = torch.stack([ts.teacher.patch_head(y) for y in reps])
    expected = sum(patch_contrastive_loss(s, t, negatives, 0.2)
                   for s, t in zip(student_patch, targets)) / 2
    torch.testing.assert_close(stats["patch_loss"], expected)
    with pytest.raises(SelfPatchError, match="negative_temperature"):
        load_config("cpu-quick", ["selfpatch.negative_temperature=0"])


def test_moco_mlp_layers_and_batch_statistics():
    projector = ProjectionMLP(6, 8, 4, num_layers=3, last_bn=True)
    kinds = [type(m).__name__ for m in projector.mlp]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear",
                     "BatchNorm1d"]
    assert all(m.bias is None for m in projector.mlp if isinstance(m, torch.nn.Linear))
    assert projector.mlp[-1].weight is None  # last BN without affine parameters
    predictor = ProjectionMLP(4, 8, 4, num_layers=2, last_bn=False)
    assert isinstance(predictor.mlp[-1], torch.nn.Linear)
    moby = ProjectionMLP(4, 8, 4, num_layers=2, bias=True)  # MoBY's MLP: biases, no last BN
    assert [type(m).__name__ for m in moby.mlp] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert all(m.bias is not None for m in moby.mlp if isinstance(m, torch.nn.Linear))
    x = torch.randn(10, 6)
    out = projector(x)
    # The last BN (no affine) leaves every output feature with batch mean 0 and variance 1,
    # in eval mode too (the teacher's).
    projector.eval()
    torch.testing.assert_close(projector(x), out)
    torch.testing.assert_close(out.mean(0), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.var(0, unbiased=False), torch.ones(4), atol=1e-3, rtol=0)


@pytest.mark.parametrize("method", CONTRASTIVE)
def test_predictor_runs_on_the_student_only(method):
    torch.manual_seed(2)
    cfg = _tiny_cfg(*_method_args(method))
    ts = build_teacher_student(cfg)
    ts.student.eval()
    views = [torch.randn(4, 3, 32, 32) for _ in range(2)]
    with torch.no_grad():
        student_out, _, _ = ts.student(views, [(0, 2)])
        cls, tokens, _ = ts.student.encode(views, 0, 2)
        rep = ts.student.image_representation(cls, tokens)
        expected = ts.student.predictor(ts.student.image_head(rep))
    torch.testing.assert_close(torch.cat(student_out), expected)
    # The teacher side of the loss is the projector alone: recompute the loss from it.
    with torch.no_grad():
        t_cls, t_tokens, _ = ts.teacher.encode(views, 0, 2)
        keys = list(ts.teacher.image_head(ts.teacher.image_representation(t_cls, t_tokens))
                    .chunk(2))
        image_loss = ts.objective(student_out, keys)
        _, stats = ts(views, 0.04)  # (MoBY: the queue moves only after the loss)
    torch.testing.assert_close(stats["image_loss"], image_loss)
    # EMA momentum follows the objective's own key (cosine to 1), not DINO's.
    section = cfg.moco if method.startswith("mocov3") else cfg.moby
    momentum = build_schedules(cfg, 10, 1).momentum
    assert momentum[0] == pytest.approx(section.momentum) and momentum[-1] > 0.999


@pytest.mark.parametrize("method", TRAINED)
def test_loss_decreases_on_a_repeated_batch(images, method):
    """train_step on the same small batch again and again: the objective is optimisable."""
    torch.manual_seed(3)
    cfg = cfg_for(images, Path("unused"), *_method_args(method), *SMALL, "model.drop_path=0")
    model = build_teacher_student(cfg)
    optimizer = build_optimizer(model.student, torch.device("cpu"))
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    views = [v[:8] for v in fixed_views(images, cfg)]
    losses = []
    for _ in range(30):
        loss, _ = train_step(model, views, optimizer, scaler, lr=1e-3, weight_decay=0.0,
                             momentum=0.9, teacher_temp=0.04, clip_grad=3.0,
                             freeze_last_layer=False)
        losses.append(float(loss.detach()))
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.2, losses


@pytest.mark.parametrize("method", TRAINED)
def test_resumes_exactly(images, tmp_path, method):
    """Killed mid-epoch and resumed == uninterrupted (MoBY's queues travel in the checkpoint)."""
    extra = [*_method_args(method), *SMALL, "optim.epochs=3"]
    full = pretrain(cfg_for(images, tmp_path / "full", *extra))
    pretrain(cfg_for(images, tmp_path / "part", *extra, "optim.max_steps=3"))  # mid-epoch
    part = pretrain(cfg_for(images, tmp_path / "part", *extra), resume=True)
    a = torch.load(full / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(part / "checkpoints" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 6  # 16 images / batch 8 x 3 epochs
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    losses = [r["loss"] for r in read_metrics(full)]
    assert losses == [r["loss"] for r in read_metrics(part)]
    assert all(math.isfinite(v) for v in losses)


@pytest.mark.parametrize("method", ["mocov3", "moby+selfpatch"])
def test_checkpoint_runs_through_eval_all(images, tmp_path, method):
    from test_eval_cli import FAST, run_cli
    from test_eval_data import make_davis, make_knn, make_seg

    run = pretrain(cfg_for(images, tmp_path / "run", "optim.epochs=1", f"method={method}",
                           *SMALL))
    root = tmp_path / "evaldata"
    make_davis(root / "DAVIS", num_seqs=1, num_frames=3)
    make_seg(root / "ADEChallengeData2016", num_train=2, num_val=1)
    make_knn(root / "imagenet", num_classes=2, per_class=3)
    out = tmp_path / "report"
    assert run_cli(["eval", "all", "--checkpoint", str(run), "--data-root", str(root),
                    "--num-classes", "3", "--out", str(out), *FAST]) == 0
    assert "n/a" not in (out / "report.md").read_text().split("| checkpoint |")[1].split("\n")[2]
