"""Independent checks of the SelfPatch method: neighbours, matching, aggregation, heads, losses,
and the teacher/student wiring.

Every expected value is computed here from scratch (plain loops, explicit formulas, copies of
parameters), never by calling the function under test a second time.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from selfpatch.config import Config
from selfpatch.errors import SelfPatchError
from selfpatch.methods.losses import DINOLoss, PatchDistillationLoss, sharpened_cross_entropy
from selfpatch.methods.matching import gather_positives, match_positives
from selfpatch.methods.neighbours import build_neighbour_table, neighbour_table
from selfpatch.methods.selfpatch import SelfPatchTargets
from selfpatch.methods.teacher_student import TeacherStudent
from selfpatch.models.aggregation import ClassAttentionAggregator, MeanAggregator
from selfpatch.models.backbone import ViTBackbone, make_backbone_spec
from selfpatch.models.heads import DINOHead
from selfpatch.train.factory import build_teacher_student

RADIUS = {"3x3": 1, "5x5": 2}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tensors here are tiny: one intra-op thread avoids spin-waiting on a busy 2-core box
    (10x less CPU time). Restored afterwards so other test modules are unaffected."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------- helpers
def brute_neighbours(h: int, w: int, kind: str, border: str) -> list[list[int]]:
    """Real neighbours of every patch (row-major), by nested loops; a multiset per patch."""
    out: list[list[int]] = []
    for r in range(h):
        for c in range(w):
            if kind == "all":
                out.append([j for j in range(h * w) if j != r * w + c])
                continue
            rad = RADIUS[kind]
            nb = []
            for dy in range(-rad, rad + 1):
                for dx in range(-rad, rad + 1):
                    if dy == 0 and dx == 0:
                        continue
                    rr, cc = r + dy, c + dx
                    if border == "wrap":
                        j = (rr % h) * w + cc % w
                        # a torus smaller than the window folds onto itself: keep each
                        # neighbour once and never the patch itself
                        if j != r * w + c and j not in nb:
                            nb.append(j)
                    elif 0 <= rr < h and 0 <= cc < w:
                        nb.append(rr * w + cc)
            out.append(nb)
    return out


def brute_top_k(tokens: torch.Tensor, h: int, w: int, kind: str, border: str, k: int
                ) -> list[list[list[int]]]:
    """``[b][i]`` -> the (up to) k real neighbours of i most cosine-similar to i.

    Similarities come from a full float64 ``N x N`` matrix of unit vectors; the ranking is a
    plain Python sort over the loop-built neighbour lists.
    """
    nbs = brute_neighbours(h, w, kind, border)
    x = tokens.detach().double()
    unit = x / x.norm(dim=-1, keepdim=True)
    sims = (unit @ unit.transpose(1, 2)).tolist()
    out = []
    for b in range(len(sims)):
        per_patch = []
        for i, cand in enumerate(nbs):
            ranked = sorted(set(cand), key=lambda j, b=b, i=i: -sims[b][i][j])
            per_patch.append(ranked[:k])
        out.append(per_patch)
    return out


def hand_softmax(row: list[float]) -> list[float]:
    m = max(row)
    e = [math.exp(x - m) for x in row]
    s = sum(e)
    return [x / s for x in e]


def hand_log_softmax(row: list[float]) -> list[float]:
    m = max(row)
    lse = m + math.log(sum(math.exp(x - m) for x in row))
    return [x - lse for x in row]


def hand_ce(student_row: list[float], teacher_row: list[float], center: list[float],
            t_temp: float, s_temp: float) -> float:
    """D(s, t) = -sum_k softmax((t - c) / tt)_k log softmax(s / ts)_k, by explicit formulas."""
    p = hand_softmax([(t - c) / t_temp for t, c in zip(teacher_row, center, strict=True)])
    logq = hand_log_softmax([s / s_temp for s in student_row])
    return -sum(a * b for a, b in zip(p, logq, strict=True))


def tensor_ce(student: torch.Tensor, teacher: torch.Tensor, center: torch.Tensor,
              t_temp: float, s_temp: float) -> torch.Tensor:
    """Explicit softmax / log-sum-exp formula, per row ``(..., K) -> (...)``."""
    t = (teacher.double() - center.double()) / t_temp
    t = t - t.max(dim=-1, keepdim=True).values
    p = t.exp() / t.exp().sum(dim=-1, keepdim=True)
    s = student.double() / s_temp
    s = s - s.max(dim=-1, keepdim=True).values
    logq = s - s.exp().sum(dim=-1, keepdim=True).log()
    return -(p * logq).sum(dim=-1)


def tiny_cfg(method: str = "dino+selfpatch", **selfpatch) -> Config:
    cfg = Config()
    cfg.method = method
    cfg.model.arch = "vit_tiny"
    cfg.model.patch_size = 8
    cfg.data.global_size = 32
    cfg.data.local_size = 16
    cfg.data.n_local = 2
    cfg.dino.out_dim = 64
    cfg.dino.hidden_dim = 32
    cfg.dino.bottleneck_dim = 16
    cfg.selfpatch.out_dim = 32
    for key, value in selfpatch.items():
        setattr(cfg.selfpatch, key, value)
    return cfg


def tiny_views(batch: int = 2, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return ([torch.randn(batch, 3, 32, 32, generator=g) for _ in range(2)]
            + [torch.randn(batch, 3, 16, 16, generator=g) for _ in range(2)])


def small_backbone(method: str, drop_path: float, class_token: bool | None = None
                   ) -> ViTBackbone:
    """vit_tiny at patch 8 cut to 2 blocks of width 48 (speed); [CLS] only for plain DINO
    unless ``class_token`` says otherwise."""
    class_token = method == "dino" if class_token is None else class_token
    spec = make_backbone_spec("vit_tiny", 8, 32, class_token=class_token)
    spec.timm_kwargs.update(depth=2, embed_dim=48, num_heads=3)
    return ViTBackbone(spec, drop_path_rate=drop_path)


def make_ts_cfg(method: str = "dino+selfpatch", seed: int = 0, drop_path: float = 0.1,
                center_views: str = "global", **selfpatch) -> tuple[TeacherStudent, Config]:
    """The model and the config it was built from (by the trainer's factory)."""
    cfg = tiny_cfg(method, **selfpatch)
    cfg.model.drop_path = drop_path
    cfg.dino.center_views = center_views
    torch.manual_seed(seed)
    cls = method == "dino" or cfg.selfpatch.image_representation == "cls"
    return build_teacher_student(cfg, backbone=small_backbone(method, drop_path, cls)), cfg


def make_ts(method: str = "dino+selfpatch", seed: int = 0, drop_path: float = 0.1,
            **selfpatch) -> TeacherStudent:
    return make_ts_cfg(method, seed, drop_path, **selfpatch)[0]


# ----------------------------------------------------------------------------- neighbours
GRIDS = [(5, 7), (3, 4), (1, 6), (7, 5), (2, 2), (1, 1)]


@pytest.mark.parametrize("h,w", GRIDS)
@pytest.mark.parametrize("kind", ["3x3", "5x5"])
@pytest.mark.parametrize("border", ["valid", "wrap"])
def test_local_neighbourhood_matches_brute_force(h, w, kind, border):
    """Real slots equal the loop construction (as multisets); invalid slots only at borders."""
    table = build_neighbour_table(h, w, kind, border)
    rad = RADIUS[kind]
    m = (2 * rad + 1) ** 2 - 1
    n = h * w
    assert table.grid == (h, w)
    assert tuple(table.index.shape) == (n, m) and tuple(table.valid.shape) == (n, m)
    assert table.index.dtype == torch.long and table.valid.dtype == torch.bool
    assert table.size == m
    # Every slot, real or not, must be a legal gather index.
    assert int(table.index.min()) >= 0 and int(table.index.max()) < n
    expected = brute_neighbours(h, w, kind, border)
    for i in range(n):
        got = table.index[i][table.valid[i]].tolist()
        assert sorted(got) == sorted(expected[i]), (i, got, expected[i])
        r, c = divmod(i, w)
        n_invalid = int((~table.valid[i]).sum())
        if border == "wrap":
            assert n_invalid == m - len(expected[i])
            if h > 2 * rad and w > 2 * rad:  # big enough torus: every slot real
                assert n_invalid == 0
        else:
            at_border = r < rad or r >= h - rad or c < rad or c >= w - rad
            assert (n_invalid > 0) == at_border, (i, n_invalid)
            assert n_invalid == m - len(expected[i])
            # Documented: padded slots point at the patch itself.
            assert set(table.index[i][~table.valid[i]].tolist()) <= {i}
    assert table.min_valid() == min(len(e) for e in expected)


@pytest.mark.parametrize("h,w", GRIDS)
@pytest.mark.parametrize("border", ["valid", "wrap"])
def test_all_neighbourhood_is_every_other_patch(h, w, border):
    table = build_neighbour_table(h, w, "all", border)
    n = h * w
    assert tuple(table.index.shape) == (n, n - 1)
    assert bool(table.valid.all())
    for i in range(n):
        row = table.index[i].tolist()
        assert len(row) == n - 1 and sorted(row) == [j for j in range(n) if j != i]


def test_wrap_reference_example_14x14():
    """SPEC §1.2: the reference's corner patch 0 of a 14x14 grid wraps to 13, 182 and 195."""
    table = build_neighbour_table(14, 14, "3x3", "wrap")
    assert set(table.index[0].tolist()) == {1, 13, 14, 15, 27, 182, 183, 195}
    valid = build_neighbour_table(14, 14, "3x3", "valid")
    assert set(valid.index[0][valid.valid[0]].tolist()) == {1, 14, 15}
    # Interior patch: the 8 surrounding ones in both modes.
    i = 5 * 14 + 6
    ring = {i - 15, i - 14, i - 13, i - 1, i + 1, i + 13, i + 14, i + 15}
    assert set(table.index[i].tolist()) == ring
    assert set(valid.index[i][valid.valid[i]].tolist()) == ring


def test_cached_table_equals_built_and_bad_arguments_raise():
    a = neighbour_table(4, 6, "5x5", "valid")
    b = build_neighbour_table(4, 6, "5x5", "valid")
    assert torch.equal(a.index, b.index) and torch.equal(a.valid, b.valid) and a.grid == b.grid
    assert neighbour_table(4, 6, "5x5", "valid") is a
    for args in [(4, 4, "7x7", "valid"), (4, 4, "3x3", "reflect"), (0, 4, "3x3", "valid")]:
        with pytest.raises(SelfPatchError):
            build_neighbour_table(*args)


# ----------------------------------------------------------------------------- matching
def _matching_cases():
    for kind in ("3x3", "5x5", "all"):
        for border in ("valid", "wrap"):
            if kind == "all" and border == "wrap":
                continue
            for k in (1, 2, 4, 8):
                yield kind, border, k


@pytest.mark.parametrize("kind,border,k", list(_matching_cases()))
def test_match_positives_equals_brute_force(kind, border, k):
    """Top-k real neighbours by cosine similarity; surplus slots (k > real neighbours) invalid."""
    h, w, b, d = 5, 6, 2, 16
    g = torch.Generator().manual_seed(sum(map(ord, kind + border)) * 10 + k)
    tokens = torch.randn(b, h * w, d, generator=g)
    table = build_neighbour_table(h, w, kind, border)
    positives, valid = match_positives(tokens, table, k)
    assert tuple(positives.shape) == (b, h * w, k) and tuple(valid.shape) == (b, h * w, k)
    assert positives.dtype == torch.long and valid.dtype == torch.bool
    assert int(positives.min()) >= 0 and int(positives.max()) < h * w
    expected = brute_top_k(tokens, h, w, kind, border, k)
    n_short = 0
    for bi in range(b):
        for i in range(h * w):
            got = positives[bi, i][valid[bi, i]].tolist()
            assert len(got) == len(expected[bi][i])
            assert set(got) == set(expected[bi][i]), (bi, i, got, expected[bi][i])
            n_short += len(expected[bi][i]) < k
    if border == "valid" and kind == "3x3" and k >= 4:
        assert n_short > 0  # corners (3 real neighbours) really were exercised
        assert not bool(valid.all())


@pytest.mark.parametrize("h,w,kind,border", [
    (3, 3, "3x3", "valid"), (3, 3, "3x3", "wrap"), (5, 5, "5x5", "valid"), (2, 2, "3x3", "valid"),
    (1, 6, "3x3", "valid"), (2, 7, "5x5", "valid"), (1, 2, "all", "valid")])
def test_match_positives_small_grids(h, w, kind, border):
    """Grids where the table width equals N - 1 (the dense-matrix path) or is mostly padding."""
    b = 2
    tokens = torch.randn(b, h * w, 8, generator=torch.Generator().manual_seed(h * 10 + w))
    table = build_neighbour_table(h, w, kind, border)
    for k in sorted({k for k in (1, 2, 4, table.size) if k <= table.size}):
        positives, valid = match_positives(tokens, table, k)
        expected = brute_top_k(tokens, h, w, kind, border, k)
        for bi in range(b):
            for i in range(h * w):
                got = positives[bi, i][valid[bi, i]].tolist()
                assert sorted(got) == sorted(expected[bi][i]), (k, bi, i)


def test_match_positives_ignores_scale_and_needs_no_grad():
    """Cosine (not dot-product) similarity; outputs carry no autograd history."""
    h, w = 4, 4
    tokens = torch.randn(1, h * w, 8, requires_grad=True)
    table = build_neighbour_table(h, w, "3x3", "valid")
    scale = torch.rand(1, h * w, 1) * 100 + 0.01
    p1, v1 = match_positives(tokens, table, 4)
    p2, v2 = match_positives(tokens.detach() * scale, table, 4)
    assert not p1.requires_grad and not v1.requires_grad
    assert p1.grad_fn is None and v1.grad_fn is None
    assert torch.equal(v1, v2)
    for i in range(h * w):
        assert set(p1[0, i][v1[0, i]].tolist()) == set(p2[0, i][v2[0, i]].tolist())


@pytest.mark.parametrize("kind", ["3x3", "all"])
def test_match_positives_rejects_k_below_one(kind):
    table = build_neighbour_table(3, 4, kind, "valid")
    with pytest.raises(SelfPatchError, match="at least 1"):
        match_positives(torch.randn(1, 12, 4), table, 0)


@pytest.mark.parametrize("h,w,kind,k", [(3, 4, "3x3", 9), (3, 4, "all", 12), (2, 2, "all", 4),
                                        (1, 2, "all", 3), (1, 1, "all", 2)])
def test_match_positives_pads_when_k_exceeds_the_candidates(h, w, kind, k):
    """More positives asked for than the table has slots (the ``all`` table of a tiny grid):
    every real neighbour is returned once, the surplus slots are invalid."""
    b, n = 2, h * w
    tokens = torch.randn(b, n, 8, generator=torch.Generator().manual_seed(k * 100 + n))
    positives, valid = match_positives(tokens, build_neighbour_table(h, w, kind, "valid"), k)
    assert tuple(positives.shape) == (b, n, k) and tuple(valid.shape) == (b, n, k)
    assert int(positives.min()) >= 0 and int(positives.max()) < n
    expected = brute_top_k(tokens, h, w, kind, "valid", k)
    for bi in range(b):
        for i in range(n):
            got = positives[bi, i][valid[bi, i]].tolist()
            assert sorted(got) == sorted(expected[bi][i])
            assert int(valid[bi, i].sum()) == len(expected[bi][i]) < k


def test_match_positives_rejects_wrong_grid():
    table = build_neighbour_table(3, 4, "3x3", "valid")
    with pytest.raises(SelfPatchError):
        match_positives(torch.randn(1, 16, 4), table, 2)


def test_gather_positives_equals_loops():
    b, n, k, d = 2, 7, 3, 5
    tokens = torch.randn(b, n, d)
    positives = torch.randint(0, n, (b, n, k))
    got = gather_positives(tokens, positives)
    assert tuple(got.shape) == (b, n, k, d)
    for bi in range(b):
        for i in range(n):
            for j in range(k):
                assert torch.equal(got[bi, i, j], tokens[bi, int(positives[bi, i, j])])


def test_selfpatch_targets_with_mean_aggregator_equal_brute_force():
    """Target of patch i = mean of its (up to) k most similar real neighbours."""
    h, w, b, d, k = 3, 5, 2, 6, 4
    tokens = torch.randn(b, h * w, d, generator=torch.Generator().manual_seed(3))
    targets = SelfPatchTargets("3x3", "valid", k)
    got = targets(tokens, (h, w), MeanAggregator())
    assert tuple(got.shape) == (b, h * w, d)
    expected = brute_top_k(tokens, h, w, "3x3", "valid", k)
    n_real = 0
    for bi in range(b):
        for i in range(h * w):
            idx = expected[bi][i]
            n_real += len(idx)
            want = sum(tokens[bi, j] for j in idx) / len(idx)
            torch.testing.assert_close(got[bi, i], want, rtol=1e-5, atol=1e-6)
    assert targets.last_valid_share is not None
    assert float(targets.last_valid_share) == pytest.approx(n_real / (b * h * w * k))
    with pytest.raises(SelfPatchError, match="larger than the 3x3"):
        SelfPatchTargets("3x3", "valid", 9)
    with pytest.raises(SelfPatchError, match="larger than the 5x5"):
        SelfPatchTargets("5x5", "valid", 25)


def test_all_neighbourhood_on_a_grid_smaller_than_k():
    """`all` with k = 4 on a 2x2 grid (cpu-long's 32 px local crops): the target is the mean of
    the 3 other patches, as 3x3 gives there, instead of an error."""
    tokens = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(5))
    for kind in ("all", "3x3", "5x5"):
        got = SelfPatchTargets(kind, "valid", 4)(tokens, (2, 2), MeanAggregator())
        for bi in range(3):
            for i in range(4):
                want = sum(tokens[bi, j] for j in range(4) if j != i) / 3
                torch.testing.assert_close(got[bi, i], want, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- aggregation
def _random_mask(s: int, length: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(s, length, generator=g) > 0.4
    mask[0, 0], mask[0, 1] = True, False  # row 0: at least one of each
    mask[1] = False  # row 1: every slot masked (only the [CLS] query is visible)
    mask[2] = True
    return mask


def test_class_attention_ignores_masked_slots():
    """Masked slots get zero weight: huge values there change nothing, nor get any gradient."""
    torch.manual_seed(0)
    agg = ClassAttentionAggregator(16, 4, depth=2).eval()
    s, length = 5, 6
    tokens = torch.randn(s, length, 16)
    mask = _random_mask(s, length)
    out = agg(tokens, mask)
    assert tuple(out.shape) == (s, 16)
    junk = tokens.clone()
    junk[~mask] = torch.randn(int((~mask).sum()), 16) * 1e6
    torch.testing.assert_close(agg(junk, mask), out, rtol=0, atol=1e-6)

    # Any unmasked slot does matter (slot 0 of row 0 is unmasked).
    r, c = 0, 0
    changed = tokens.clone()
    changed[r, c] += torch.randn(16)
    with torch.no_grad():
        diff = (agg(changed, mask) - out).abs()
    assert float(diff[r].max()) > 1e-4
    assert float(torch.cat([diff[:r], diff[r + 1:]]).max()) == 0.0  # rows are independent

    x = tokens.clone().requires_grad_(True)
    agg(x, mask).sum().backward()
    assert float(x.grad[~mask].abs().max()) == 0.0
    assert float(x.grad[mask].abs().sum()) > 0


def test_class_attention_mask_none_equals_all_true():
    torch.manual_seed(1)
    agg = ClassAttentionAggregator(12, 3, depth=2).eval()
    tokens = torch.randn(4, 7, 12)
    torch.testing.assert_close(agg(tokens, None), agg(tokens, torch.ones(4, 7, dtype=torch.bool)),
                               rtol=0, atol=1e-6)


def test_mean_aggregator_equals_hand_masked_mean():
    tokens = torch.randn(4, 5, 3)
    mask = _random_mask(4, 5, seed=2)
    got = MeanAggregator()(tokens, mask)
    for si in range(4):
        idx = [j for j in range(5) if mask[si, j]]
        want = sum(tokens[si, j] for j in idx) / len(idx) if idx else torch.zeros(3)
        torch.testing.assert_close(got[si], want, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(MeanAggregator()(tokens), tokens.sum(1) / 5)


def _layer_norm(v: torch.Tensor, ln: torch.nn.LayerNorm) -> torch.Tensor:
    mu = v.mean(dim=-1, keepdim=True)
    var = ((v - mu) ** 2).mean(dim=-1, keepdim=True)
    return (v - mu) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias


def _gelu(v: torch.Tensor) -> torch.Tensor:
    return v.apply_(lambda x: 0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0))))


def _hand_class_attention(agg: ClassAttentionAggregator, x: torch.Tensor,
                          keep: list[bool]) -> torch.Tensor:
    """One sequence ``(L, D)`` through a depth-1 class-attention module, written out."""
    blk = agg.blocks[0]
    att = blk.attn
    d = x.shape[-1]
    heads = att.num_heads
    dh = d // heads
    cls = agg.cls_token[0, 0].detach().clone()
    u = _layer_norm(torch.cat([cls[None], x]), blk.norm1)  # (1 + L, D)
    q = u[0] @ att.q.weight.T + att.q.bias  # (D,)
    kv = u @ att.kv.weight.T + att.kv.bias  # (1 + L, 2D): keys then values
    k, v = kv[:, :d], kv[:, d:]
    visible = [0] + [1 + j for j, ok in enumerate(keep) if ok]
    out = torch.zeros(d, dtype=x.dtype)
    for hd in range(heads):
        sl = slice(hd * dh, (hd + 1) * dh)
        scores = [float(q[sl] @ k[t, sl]) / math.sqrt(dh) for t in visible]
        weights = hand_softmax(scores)
        out[sl] = sum(wt * v[t, sl] for wt, t in zip(weights, visible, strict=True))
    cls = cls + out @ att.proj.weight.T + att.proj.bias
    hidden = _gelu(_layer_norm(cls, blk.norm2) @ blk.mlp.fc1.weight.T + blk.mlp.fc1.bias)
    cls = cls + hidden @ blk.mlp.fc2.weight.T + blk.mlp.fc2.bias
    return _layer_norm(cls, agg.norm)


def test_class_attention_equals_hand_computation():
    """Depth 1, width 4, 2 heads, random weights everywhere (LayerNorms included)."""
    torch.manual_seed(4)
    agg = ClassAttentionAggregator(4, 2, depth=1).double().eval()
    with torch.no_grad():
        for p in agg.parameters():
            p.copy_(torch.randn_like(p) * 0.7)
    tokens = torch.randn(3, 5, 4, dtype=torch.float64)
    mask = torch.tensor([[True, False, True, True, False],
                         [True, True, True, True, True],
                         [False, False, False, False, False]])
    with torch.no_grad():
        got = agg(tokens, mask)
        got_none = agg(tokens[1:2], None)
        for si in range(3):
            want = _hand_class_attention(agg, tokens[si], mask[si].tolist())
            torch.testing.assert_close(got[si], want, rtol=1e-9, atol=1e-9)
        want = _hand_class_attention(agg, tokens[1], [True] * 5)
        torch.testing.assert_close(got_none[0], want, rtol=1e-9, atol=1e-9)


# ----------------------------------------------------------------------------- DINO head
@pytest.mark.parametrize("norm_last_layer", [True, False])
def test_dino_head_shape_and_weight_norm(norm_last_layer):
    torch.manual_seed(5)
    head = DINOHead(12, 7, hidden_dim=10, bottleneck_dim=5, nlayers=3,
                    norm_last_layer=norm_last_layer)
    linears = [m for m in head.mlp if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(12, 10), (10, 10), (10, 5)]
    x = torch.randn(2, 3, 12)
    out = head(x)
    assert tuple(out.shape) == (2, 3, 7)

    magnitude = head.last_layer.parametrizations.weight.original0
    assert torch.equal(magnitude, torch.ones_like(magnitude))
    assert magnitude.requires_grad is (not norm_last_layer)
    weight = head.last_layer.weight
    torch.testing.assert_close(weight.norm(dim=1), torch.ones(7))
    # Output = cosine between the normalised bottleneck and each (unit) prototype.
    z = head.mlp(x)
    z = z / z.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(out, z @ weight.T, rtol=1e-5, atol=1e-6)
    assert float(out.detach().abs().max()) <= 1.0 + 1e-5
    assert head.last_layer.bias is None

    if norm_last_layer:
        opt = torch.optim.SGD([p for p in head.parameters() if p.requires_grad], lr=10.0)
        (head(x) * torch.randn(2, 3, 7)).sum().backward()
        assert magnitude.grad is None
        opt.step()
        assert torch.equal(magnitude, torch.ones_like(magnitude))
        torch.testing.assert_close(head.last_layer.weight.norm(dim=1), torch.ones(7))


def test_dino_head_batch_norm_uses_batch_statistics_in_both_modes():
    torch.manual_seed(6)
    head = DINOHead(12, 7, hidden_dim=10, bottleneck_dim=5, use_bn=True)
    x = torch.randn(6, 12)
    # A shift shared by the whole batch passes the first Linear as a shared shift, which the
    # batch statistics remove: the output must not change (without BN it does).
    shift = 3.0 * torch.randn(1, 12)
    torch.testing.assert_close(head(x + shift), head(x), rtol=1e-4, atol=1e-5)
    plain = DINOHead(12, 7, hidden_dim=10, bottleneck_dim=5)
    assert not torch.allclose(plain(x + shift), plain(x), atol=1e-3)
    # eval mode (the teacher's) normalises with the batch too, as DINO's train-mode teacher.
    train_out = head(x)
    head.eval()
    torch.testing.assert_close(head(x), train_out)
    # Leading dimensions are flattened: every token of a (B, N, D) input is one BN sample.
    tokens = torch.randn(2, 3, 12)
    torch.testing.assert_close(head(tokens), head(tokens.reshape(6, 12)).reshape(2, 3, 7))


def test_teacher_entropy_is_normalised_entropy_of_centred_sharpened_targets():
    loss = DINOLoss(out_dim=2)
    loss.center.copy_(torch.tensor([[0.5, 0.0]]))
    # Row 1: centred logits equal -> uniform -> 1. Row 2: centred (0, ln 3 * 0.1) at temp 0.1
    # -> probabilities (1/4, 3/4), entropy -(1/4 ln 1/4 + 3/4 ln 3/4).
    logits = torch.tensor([[0.5, 0.0], [0.5, math.log(3) * 0.1]])
    h2 = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    expected = (1.0 + h2 / math.log(2)) / 2
    assert abs(float(loss.teacher_entropy(logits, 0.1)) - expected) < 1e-6


# ----------------------------------------------------------------------------- losses
def test_dino_loss_equals_hand_computation():
    """2 teacher globals, 3 student views (2 global + 1 local), B=2, K=3, non-zero centre."""
    g = torch.Generator().manual_seed(6)
    student = [torch.randn(2, 3, generator=g) for _ in range(3)]
    teacher = [torch.randn(2, 3, generator=g) for _ in range(2)]
    center = [0.3, -0.2, 0.5]
    loss_fn = DINOLoss(3, student_temp=0.1, center_momentum=0.9)
    loss_fn.center.copy_(torch.tensor([center]))
    got = loss_fn(student, teacher, teacher_temp=0.04)

    pair_losses = []
    for a in range(2):
        for b in range(3):
            if b == a:
                continue
            per_image = [hand_ce(student[b][i].tolist(), teacher[a][i].tolist(), center,
                                 0.04, 0.1) for i in range(2)]
            pair_losses.append(sum(per_image) / 2)
    assert len(pair_losses) == 4
    assert float(got) == pytest.approx(sum(pair_losses) / 4, rel=1e-5)


def test_dino_loss_gradient_flows_to_student_only():
    student = [torch.randn(2, 3, requires_grad=True) for _ in range(3)]
    teacher = [torch.randn(2, 3, requires_grad=True) for _ in range(2)]
    DINOLoss(3)(student, teacher, 0.04).backward()
    assert all(s.grad is not None and float(s.grad.abs().sum()) > 0 for s in student)
    assert all(t.grad is None for t in teacher)


def test_patch_loss_equals_hand_computation():
    """Views with N=4 and N=1: mean over views of the mean over batch and patches."""
    g = torch.Generator().manual_seed(7)
    shapes = [(2, 4, 3), (2, 1, 3)]
    student = [torch.randn(*s, generator=g) for s in shapes]
    teacher = [torch.randn(*s, generator=g) for s in shapes]
    center = [-0.1, 0.4, 0.2]
    loss_fn = PatchDistillationLoss(3, student_temp=0.1, center_momentum=0.9)
    loss_fn.center.copy_(torch.tensor([center]))
    got = loss_fn(student, teacher, teacher_temp=0.04)

    view_means = []
    for s, t in zip(student, teacher, strict=True):
        terms = [hand_ce(s[b, i].tolist(), t[b, i].tolist(), center, 0.04, 0.1)
                 for b in range(s.shape[0]) for i in range(s.shape[1])]
        view_means.append(sum(terms) / len(terms))
    assert float(got) == pytest.approx(sum(view_means) / 2, rel=1e-5)
    # Not the pooled mean over all 10 rows (which would weigh the N=4 view 4x).
    per_row = [hand_ce(s[b, i].tolist(), t[b, i].tolist(), center, 0.04, 0.1)
               for s, t in zip(student, teacher, strict=True)
               for b in range(2) for i in range(s.shape[1])]
    assert float(got) != pytest.approx(sum(per_row) / len(per_row), rel=1e-5)


def test_sharpened_cross_entropy_rows():
    s = torch.randn(4, 5)
    p = torch.softmax(torch.randn(4, 5), dim=-1)
    got = sharpened_cross_entropy(s, p, 0.1)
    for r in range(4):
        want = -sum(a * b for a, b in zip(p[r].tolist(), hand_log_softmax((s[r] / 0.1).tolist()),
                                          strict=True))
        assert float(got[r]) == pytest.approx(want, rel=1e-5)


def test_image_center_update_is_ema_of_mean_over_rows():
    g = torch.Generator().manual_seed(8)
    loss_fn = DINOLoss(4, center_momentum=0.9)
    c0 = torch.randn(1, 4, generator=g)
    loss_fn.center.copy_(c0)
    t1, t2 = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    loss_fn.update_center([t1, t2])
    rows = t1.tolist() + t2.tolist()
    mean = [sum(r[j] for r in rows) / len(rows) for j in range(4)]
    want = [0.9 * c + 0.1 * m for c, m in zip(c0[0].tolist(), mean, strict=True)]
    assert loss_fn.center[0].tolist() == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_patch_center_update_pools_all_rows_of_all_views():
    g = torch.Generator().manual_seed(9)
    loss_fn = PatchDistillationLoss(3, center_momentum=0.9)
    c0 = torch.randn(1, 3, generator=g)
    loss_fn.center.copy_(c0)
    t1, t2 = torch.randn(2, 4, 3, generator=g), torch.randn(2, 1, 3, generator=g)
    loss_fn.update_center([t1, t2])
    rows = [t1[b, i].tolist() for b in range(2) for i in range(4)]
    rows += [t2[b, 0].tolist() for b in range(2)]
    assert len(rows) == 10
    mean = [sum(r[j] for r in rows) / 10 for j in range(3)]
    want = [0.9 * c + 0.1 * m for c, m in zip(c0[0].tolist(), mean, strict=True)]
    assert loss_fn.center[0].tolist() == pytest.approx(want, rel=1e-5, abs=1e-6)


# ----------------------------------------------------------------------------- teacher/student
@pytest.mark.parametrize("method", ["dino", "dino+selfpatch"])
def test_teacher_gets_no_gradient_student_does(method):
    ts = make_ts(method)
    ts.train()
    loss, stats = ts(tiny_views(), teacher_temp=0.04)
    assert loss.requires_grad and not stats["loss"].requires_grad
    loss.backward()
    for name, p in ts.teacher.named_parameters():
        assert not p.requires_grad, name
        assert p.grad is None, name
    backbone = dict(ts.student.backbone.named_parameters())
    grads = {n: p.grad for n, p in backbone.items() if p.requires_grad}
    assert grads and all(g is not None for g in grads.values()), [
        n for n, g in grads.items() if g is None]
    assert float(backbone["vit.patch_embed.proj.weight"].grad.abs().sum()) > 0
    assert float(sum(g.abs().sum() for g in grads.values())) > 0
    if method == "dino+selfpatch":
        for module in (ts.student.aggregator, ts.student.patch_head):
            assert any(p.grad is not None and float(p.grad.abs().sum()) > 0
                       for p in module.parameters())


def test_update_teacher_is_ema_of_every_parameter():
    ts = make_ts("dino+selfpatch")
    g = torch.Generator().manual_seed(10)
    with torch.no_grad():  # make student and teacher differ everywhere
        for p in ts.student.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    names = [n for n, _ in ts.teacher.named_parameters()]
    assert names == [n for n, _ in ts.student.named_parameters()]
    t_before = {n: p.detach().clone() for n, p in ts.teacher.named_parameters()}
    s_before = {n: p.detach().clone() for n, p in ts.student.named_parameters()}
    assert any(not torch.equal(t_before[n], s_before[n]) for n in names)
    m = 0.7
    ts.update_teacher(m)
    for n, p in ts.teacher.named_parameters():
        torch.testing.assert_close(p, m * t_before[n] + (1 - m) * s_before[n], rtol=1e-6,
                                   atol=1e-7, msg=n)
    for n, p in ts.student.named_parameters():
        assert torch.equal(p, s_before[n]), n  # the student is untouched
    # Parts named by the spec are all EMA-tracked (backbone, aggregator, both heads).
    prefixes = {n.split(".")[0] for n in names}
    assert prefixes == {"backbone", "image_head", "aggregator", "patch_head"}


def test_teacher_stays_in_eval_mode():
    ts = make_ts("dino+selfpatch")
    ts.train()
    assert ts.training and ts.student.training
    assert all(m.training for m in ts.student.modules())
    assert not any(m.training for m in ts.teacher.modules())
    ts.eval()
    assert not any(m.training for m in ts.modules())
    ts.train(True)
    assert not any(m.training for m in ts.teacher.modules())


def test_drop_path_acts_on_student_only():
    """After ``.train()`` the student is stochastic (drop-path 0.5), the teacher is not."""
    ts = make_ts("dino+selfpatch", drop_path=0.5).train()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        t1, t2 = ts.teacher.backbone(x), ts.teacher.backbone(x)
        torch.manual_seed(1)
        s1 = ts.student.backbone(x)
        torch.manual_seed(2)
        s2 = ts.student.backbone(x)
    assert torch.equal(t1, t2)
    assert not torch.allclose(s1, s2)


@pytest.mark.parametrize("method", ["dino", "dino+selfpatch"])
def test_last_layer_parameters_are_exactly_the_heads_last_layers(method):
    ts = make_ts(method)
    got = ts.last_layer_parameters()
    heads = [ts.student.image_head]
    if method == "dino+selfpatch":
        heads.append(ts.student.patch_head)
    want = [p for h in heads for p in h.last_layer.parameters()]
    assert len(got) == len(want) == 2 * len(heads)  # weight-norm magnitude + direction
    assert {id(p) for p in got} == {id(p) for p in want}
    teacher_ids = {id(p) for p in ts.teacher.parameters()}
    assert not teacher_ids & {id(p) for p in got}


@pytest.mark.parametrize("method", ["dino", "dino+selfpatch"])
def test_default_backbone_has_cls_token_only_for_dino(method):
    """Built from the config alone: DINO keeps timm's [CLS]; SelfPatch drops it (h makes y)."""
    torch.manual_seed(0)
    ts = build_teacher_student(tiny_cfg(method))
    vit = ts.student.backbone.vit
    assert (vit.cls_token is not None) is (method == "dino")
    assert ts.student.backbone.grid_shape(32, 16) == (4, 2)
    with torch.no_grad():
        cls, tokens = ts.teacher.backbone.forward_tokens(torch.randn(1, 3, 32, 16))
    assert tuple(tokens.shape) == (1, 8, 192)
    assert (cls is not None) is (method == "dino")
    if method == "dino":
        assert ts.student.aggregator is None and ts.student.patch_head is None
    else:
        assert isinstance(ts.student.aggregator, ClassAttentionAggregator)
        agg = ts.student.aggregator
        assert len(agg.blocks) == 2
        for blk in agg.blocks:  # width D, heads as the backbone, MLP ratio 4
            assert blk.attn.num_heads == vit.blocks[0].attn.num_heads == 3
            assert blk.mlp.fc1.in_features == 192 and blk.mlp.fc1.out_features == 4 * 192
        assert ts.student.patch_head is not None


def test_image_representation_cls_keeps_h_for_patches_only():
    """``selfpatch.image_representation=cls``: built from the config alone, the backbone keeps
    its [CLS] token and the image representation is that token, not the mean of the patches;
    the [CLS] token gets gradient. An attention h is refused (nothing would train it)."""
    torch.manual_seed(0)
    cfg = tiny_cfg("dino+selfpatch", image_representation="cls", aggregation="mean")
    ts = build_teacher_student(cfg)
    assert ts.student.backbone.vit.cls_token is not None
    assert isinstance(ts.student.aggregator, MeanAggregator)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        cls, tokens = ts.student.backbone.forward_tokens(x)
        rep = ts.student.image_representation(cls, tokens)
        assert torch.equal(rep, cls)
        assert not torch.allclose(rep, tokens.mean(dim=1))
    ts.train()
    loss, stats = ts(tiny_views(), teacher_temp=0.04)
    assert "patch_loss" in stats
    loss.backward()
    assert float(ts.student.backbone.vit.cls_token.grad.abs().sum()) > 0
    # a backbone without a [CLS] token cannot give one: refused when the model is built
    with pytest.raises(SelfPatchError, match="image_representation=cls needs a backbone"):
        build_teacher_student(cfg, backbone=small_backbone("dino+selfpatch", 0.0))
    with pytest.raises(SelfPatchError, match="needs selfpatch.aggregation=mean"):
        build_teacher_student(tiny_cfg("dino+selfpatch", image_representation="cls"))


def test_dino_method_has_no_patch_loss():
    ts = make_ts("dino")
    loss, stats = ts(tiny_views(), teacher_temp=0.04)
    assert "patch_loss" not in stats
    assert not hasattr(ts, "patch_loss")
    assert float(loss.detach()) == float(stats["image_loss"]) == float(stats["loss"])


def test_zero_patch_weight_gives_pure_image_loss():
    """lambda = 0: no patch loss, loss == image loss == the lambda = 0.1 model's image loss."""
    ts = make_ts("dino+selfpatch", drop_path=0.0)
    ts0 = copy.deepcopy(ts)
    ts0.selfpatch.loss_weight = 0.0
    assert ts.selfpatch.loss_weight == pytest.approx(0.1)
    views = tiny_views()
    loss, stats = ts(views, teacher_temp=0.04)
    loss0, stats0 = ts0(views, teacher_temp=0.04)
    assert "patch_loss" in stats and "patch_loss" not in stats0
    assert float(loss0.detach()) == float(stats0["image_loss"])
    assert float(stats0["image_loss"]) == pytest.approx(float(stats["image_loss"]), rel=1e-5)
    assert float(loss.detach()) == pytest.approx(
        float(stats["image_loss"]) + 0.1 * float(stats["patch_loss"]), rel=1e-5)
    # the unused centre never moves
    assert float(ts0.selfpatch.patch_loss.center.abs().sum()) == 0.0


def _hand_step(ts: TeacherStudent, cfg: Config, views: list[torch.Tensor],
               t_temp: float) -> dict:
    """The whole method for one step, written out per view from the networks' parts.

    Image representation: the backbone's [CLS] (DINO) or the aggregator over all patch tokens;
    patch targets: the aggregator over only the *real* brute-force positives of each patch
    (no padding, no mask), so equality also checks that padded slots are fully masked.
    """
    sp = cfg.selfpatch
    selfpatch = ts.use_selfpatch
    s_temp = cfg.dino.student_temp
    p_temp = sp.teacher_temp if sp.teacher_temp > 0 else t_temp  # the patch targets' own
    n_patch_views = len(views) if sp.local_crops else 2
    s_img, t_img, s_patch, t_patch = [], [], [], []
    with torch.no_grad():
        for v, x in enumerate(views):
            h, w = x.shape[-2] // 8, x.shape[-1] // 8
            s_cls, s_tok = ts.student.backbone.forward_tokens(x)
            t_cls, t_tok = ts.teacher.backbone.forward_tokens(x)
            if selfpatch and sp.image_representation == "aggregation":
                s_rep, t_rep = ts.student.aggregator(s_tok), ts.teacher.aggregator(t_tok)
            else:  # DINO, or SelfPatch with image_representation=cls
                s_rep, t_rep = s_cls, t_cls
            s_img.append(ts.student.image_head(s_rep))
            t_img.append(ts.teacher.image_head(t_rep))
            if selfpatch and v < n_patch_views:
                top = brute_top_k(t_tok, h, w, sp.neighbourhood, sp.border, sp.k)
                y = torch.stack([
                    torch.cat([ts.teacher.aggregator(t_tok[b, idx][None]) for idx in top[b]])
                    for b in range(x.shape[0])])
                t_patch.append(ts.teacher.patch_head(y))
                s_patch.append(ts.student.patch_head(s_tok))
    zero_img = torch.zeros(cfg.dino.out_dim)
    pairs = [tensor_ce(s_img[b], t_img[a], zero_img, t_temp, s_temp).mean()
             for a in range(2) for b in range(len(views)) if b != a]
    assert len(pairs) == 2 * (len(views) - 1)
    out = {"image_loss": torch.stack(pairs).mean(), "t_patch": t_patch,
           "t_img_center": t_img if cfg.dino.center_views == "all" else t_img[:2]}
    if selfpatch:
        zero_p = torch.zeros(sp.out_dim)
        out["patch_loss"] = torch.stack([tensor_ce(s, t, zero_p, p_temp, s_temp).mean()
                                         for s, t in zip(s_patch, t_patch, strict=True)]).mean()
    return out


E2E_CASES = [
    ("dino", {}, "global"),
    ("dino", {}, "all"),
    ("dino+selfpatch", {"aggregation": "mean"}, "global"),
    ("dino+selfpatch", {"aggregation": "attention"}, "global"),
    ("dino+selfpatch", {"aggregation": "attention", "local_crops": False}, "all"),
    ("dino+selfpatch", {"aggregation": "mean", "k": 2, "border": "wrap", "local_crops": False},
     "global"),
    ("dino+selfpatch", {"aggregation": "mean", "k": 8, "neighbourhood": "all",
                        "local_crops": False}, "global"),
    ("dino+selfpatch", {"aggregation": "attention", "n_views": 2}, "global"),
    ("dino", {"n_views": 2}, "all"),
    # the patch head's own teacher temperature (image targets keep the step's 0.05)
    ("dino+selfpatch", {"aggregation": "attention", "teacher_temp": 0.09}, "global"),
    # the image loss on the backbone's [CLS]; h makes only the patch targets
    ("dino+selfpatch", {"aggregation": "mean", "image_representation": "cls"}, "global"),
]


@pytest.mark.parametrize("method,selfpatch,center_views", E2E_CASES)
def test_forward_equals_hand_written_step(method, selfpatch, center_views):
    """Loss and centre updates of one step equal a per-view hand computation.

    Student side of the patch loss: raw patch tokens; teacher side: aggregated brute-force
    top-k positives of the same view (local crops included unless ``local_crops=False``);
    centres start at 0 and move to 0.1 * (mean teacher output) afterwards (image: the 2 globals,
    or all views with ``center_views=all``; patch: all rows of all patch views).
    """
    settings = {"k": 4, "border": "valid", "neighbourhood": "3x3", "local_crops": True}
    settings.update(selfpatch)
    n_views = settings.pop("n_views", 4)
    ts, cfg = make_ts_cfg(method, drop_path=0.0, center_views=center_views, **settings)
    ts.train()
    views = tiny_views(seed=11)[:n_views]
    want = _hand_step(ts, cfg, views, 0.05)
    loss, stats = ts(views, teacher_temp=0.05)
    assert float(stats["image_loss"]) == pytest.approx(float(want["image_loss"]), rel=1e-4)
    rows = torch.cat(want["t_img_center"]).double()
    torch.testing.assert_close(ts.objective.loss.center[0].double(), 0.1 * rows.mean(dim=0),
                               rtol=1e-4, atol=1e-6)
    if method == "dino":
        assert float(loss.detach()) == pytest.approx(float(want["image_loss"]), rel=1e-4)
        return
    assert float(stats["patch_loss"]) == pytest.approx(float(want["patch_loss"]), rel=1e-4)
    total = want["image_loss"] + 0.1 * want["patch_loss"]
    assert float(loss.detach()) == pytest.approx(float(total), rel=1e-4)
    patch_rows = torch.cat([t.reshape(-1, t.shape[-1]) for t in want["t_patch"]]).double()
    n_patch_views = n_views if settings["local_crops"] else 2
    assert len(want["t_patch"]) == n_patch_views
    assert patch_rows.shape[0] == 2 * (16 + 16 + (4 + 4 if n_patch_views == 4 else 0))
    torch.testing.assert_close(ts.selfpatch.patch_loss.center[0].double(),
                               0.1 * patch_rows.mean(dim=0), rtol=1e-4, atol=1e-6)


def test_diagnostics_do_not_change_the_loss():
    """``valid_neighbour_share`` of the global 4x4 grids, 3x3/valid, k=4: 4 corners miss 1 slot."""
    ts = make_ts("dino+selfpatch", drop_path=0.0)
    ts_diag = copy.deepcopy(ts)
    views = tiny_views(seed=12)
    loss, _ = ts(views, teacher_temp=0.04)
    loss_d, stats = ts_diag(views, teacher_temp=0.04, diagnostics=True)
    assert float(loss_d.detach()) == pytest.approx(float(loss.detach()), rel=1e-6)
    assert float(stats["valid_neighbour_share"]) == pytest.approx((16 * 4 - 4) / 64)
    assert 0.0 <= float(stats["teacher_patch_entropy"]) <= 1.0 + 1e-6
    assert 1.0 - 1e-4 <= float(stats["patch_token_rank"]) <= 48 + 1e-4
    assert all(not t.requires_grad for t in stats.values())


def test_patch_teacher_temperature_sharpens_only_the_patch_targets():
    """``selfpatch.teacher_temp`` > 0 replaces the step's temperature for the patch targets
    only: the image loss is unchanged and the patch loss / entropy equal those of a model run
    at that temperature; 0 follows the step's temperature."""
    ts = make_ts("dino+selfpatch", drop_path=0.0)
    ts_own = copy.deepcopy(ts)
    ts_own.selfpatch.teacher_temp = 0.2
    views = tiny_views(seed=13)
    _, base = copy.deepcopy(ts)(views, teacher_temp=0.04, diagnostics=True)
    _, own = ts_own(views, teacher_temp=0.04, diagnostics=True)
    _, at02 = copy.deepcopy(ts)(views, teacher_temp=0.2, diagnostics=True)
    assert float(own["image_loss"]) == pytest.approx(float(base["image_loss"]), rel=1e-6)
    assert float(own["teacher_entropy"]) == pytest.approx(float(base["teacher_entropy"]))
    assert float(own["patch_loss"]) == pytest.approx(float(at02["patch_loss"]), rel=1e-5)
    assert float(own["teacher_patch_entropy"]) == pytest.approx(
        float(at02["teacher_patch_entropy"]), rel=1e-5)
    # a softer temperature gives flatter targets than the step's 0.04
    assert float(own["teacher_patch_entropy"]) > float(base["teacher_patch_entropy"])
    assert ts.selfpatch.patch_teacher_temp(0.03) == 0.03
    assert ts_own.selfpatch.patch_teacher_temp(0.03) == 0.2


def test_window_candidates_is_the_interior_count():
    """The bound on k of a window neighbourhood is what an interior patch really gets."""
    from selfpatch.methods.neighbours import window_candidates

    for kind in ("3x3", "5x5"):
        table = build_neighbour_table(7, 7, kind, "valid")
        assert window_candidates(kind) == int(table.valid.sum(dim=1).max()) == table.size
    assert window_candidates("all") is None
