"""The differentiable read-out that benchmarks/track_control.py trains its J&F control with."""

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from track_control import propagated_log_probs  # noqa: E402


def test_vote_matches_a_hand_loop():
    torch.manual_seed(0)
    target, context = torch.randn(2, 3, 4), torch.randn(2, 5, 4)
    labels = torch.tensor([[0, 1, 1, 2, 0], [2, 2, 0, 1, 1]])
    got = propagated_log_probs(target, context, labels, temperature=0.5).exp()
    for b in range(2):
        for n in range(3):
            t = target[b, n] / target[b, n].norm()
            w = [math.exp(float(t @ (c / c.norm())) / 0.5) for c in context[b]]
            for label in range(3):
                want = sum(x for x, lab in zip(w, labels[b]) if lab == label) / sum(w)
                assert got[b, n, label].item() == pytest.approx(want, rel=1e-5)


def test_matching_features_recover_their_labels_and_get_a_low_loss():
    # each context patch is one axis; a target patch equal to a context patch must take its
    # label at a sharp temperature, and scrambled targets must not
    context = torch.eye(4)[None]
    labels = torch.tensor([[0, 1, 2, 1]])
    order = torch.tensor([2, 0, 3])
    exact = propagated_log_probs(context[:, order], context, labels, temperature=0.05)
    assert exact.argmax(-1).tolist() == [labels[0, order].tolist()]
    wrong = propagated_log_probs(context[:, [0, 1, 0]], context, labels, temperature=0.05)
    nll = lambda lp: -lp[0, torch.arange(3), labels[0, order]].mean()  # noqa: E731
    assert nll(exact) < 0.01 < nll(wrong)


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="expected"):
        propagated_log_probs(torch.zeros(1, 3, 4), torch.zeros(1, 5, 4), torch.zeros(1, 4).long())
