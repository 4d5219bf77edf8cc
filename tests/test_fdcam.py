"""FD-CAM (wsss/seed_methods/fdcam.py) against direct loops and hand-made arrays whose answer is known."""
import math

import pytest
import torch
import torch.nn.functional as F

import wsss.seed_methods.fdcam as m
from tests.conftest import compose_cfg
from tests.test_seed_methods import Tiny, views
from wsss.errors import UserError
from wsss.seed_methods import options


def direct_groups(feats, quantile):
    """Row by row: cosine similarity to every channel (0 for an all-zero one), its quantile q, the channels
    above q or tied with a positive q, and k itself."""
    b_, d = feats.shape[:2]
    groups = torch.zeros(b_, d, d, dtype=torch.bool)
    for b in range(b_):
        flat = feats[b].flatten(1)
        for k in range(d):
            sims = F.cosine_similarity(flat[k][None], flat, dim=-1)
            sims[flat.norm(dim=-1) * flat[k].norm() == 0] = 0
            q = torch.quantile(sims, quantile)
            groups[b, k] = (sims > q) | ((sims == q) & (q > 0))
            groups[b, k, k] = True
    return groups


def direct_scores(model, feats, groups, keys):
    """Each group switched on, and off, on the whole feature map, one group at a time through model.logits."""
    b_, d = feats.shape[:2]
    scores = torch.zeros(b_, len(keys), d)
    for b in range(b_):
        full = model.logits(feats[b:b + 1])[0, keys]
        for k in range(d):
            mask = groups[b, k].float()[None, :, None, None]
            on = model.logits(feats[b:b + 1] * mask)[0, keys]
            off = model.logits(feats[b:b + 1] * (1 - mask))[0, keys]
            scores[b, :, k] = on + full - off
    return scores


def setup(seed=0):
    model, x, keys = Tiny(dim=16, seed=seed), views(), torch.tensor([0, 2, 3])
    with torch.no_grad():
        feats = model.backbone(x)
    return model, x, keys, feats


def test_groups_and_switching_against_a_direct_loop():
    model, _, keys, feats = setup()
    with torch.no_grad():
        for quantile in (0.5, 0.7, 0.95):
            groups = m.similarity_groups(feats, quantile)
            assert torch.equal(groups, direct_groups(feats, quantile)), quantile
            ours = m.switch_scores(model, feats, groups, keys)
            assert ours.shape == (2, 3, 16)
            assert torch.allclose(ours, direct_scores(model, feats, groups, keys), atol=1e-6), quantile
        # a GAP + bias-free linear head: on = drop when off = the group's share of the logit
        shares = model.cam_weights()[keys][None] * feats.mean((2, 3))[:, None]  # [B,K,D]
        groups = m.similarity_groups(feats, 0.5)
        assert (groups.sum(-1) > 1).any()
        expected = 2 * torch.einsum("bgd,bkd->bkg", groups.float(), shares)
        assert torch.allclose(m.switch_scores(model, feats, groups, keys), expected, atol=1e-6)


def test_maps_against_the_formula():
    model, x, keys, feats = setup(seed=3)
    with torch.enable_grad():
        out, stride = m.maps(model, x, keys, similarity_quantile=0.7)
    assert stride == 16 and out.shape == (2, 3, 3, 4)
    scores = direct_scores(model, feats, direct_groups(feats, 0.7), keys)
    for b in range(2):
        for i, c in enumerate(keys.tolist()):
            f = feats[b:b + 1].clone().requires_grad_(True)
            g = torch.autograd.grad(model.logits(f)[0, c], f)[0][0].mean((1, 2))
            s = scores[b, i]
            w = torch.exp((s - s.min()) / (s.max() - s.min())) * (g - g.min()) / (g.max() - g.min()) - 0.5
            expected = F.relu((w[:, None, None] * feats[b]).sum(0))
            assert torch.allclose(out[b, i], expected, atol=1e-6), (b, c)
    assert out.max() > 0


def one_hot_channels(d=40, h=8, w=8):
    """d channels, channel k one at position k and zero elsewhere: every similarity between two is 0."""
    feats = torch.zeros(1, d, h * w)
    feats[0, torch.arange(d), torch.arange(d)] = 1.0
    return feats.reshape(1, d, h, w)


def test_groups_on_hand_made_arrays():
    feats = one_hot_channels()
    assert torch.equal(m.similarity(feats)[0], torch.eye(40))
    assert torch.equal(m.similarity_groups(feats, 0.95)[0], torch.eye(40, dtype=torch.bool))  # one channel each
    feats[0, 1] = 3 * feats[0, 0]  # exact duplicates (up to scale) of channel 0: 3 of 40, so that the 0.95
    feats[0, 2] = feats[0, 0]      # quantile of their rows is 1 itself, the tie kept together
    feats[0, 5] = 0  # an all-zero channel: similarity 0 to everything, its group itself alone
    sim, groups = m.similarity(feats)[0], m.similarity_groups(feats, 0.95)[0]
    assert torch.allclose(sim[:3, :3], torch.ones(3, 3)) and (sim[5] == 0).all()
    together = torch.zeros(40, dtype=torch.bool)
    together[:3] = True
    for k in range(3):
        assert torch.equal(groups[k], together)
    assert groups[5].nonzero().flatten().tolist() == [5]
    assert all(groups[k].nonzero().flatten().tolist() == [k] for k in range(3, 40))
    # a pair of duplicates: above the quantile (< 1) as in the authors' strict rule
    feats[0, 2] = 0
    feats[0, 2, 7, 7] = 1.0
    pair = m.similarity_groups(feats, 0.95)[0]
    assert pair[0].nonzero().flatten().tolist() == pair[1].nonzero().flatten().tolist() == [0, 1]
    assert pair[2].nonzero().flatten().tolist() == [2]


def test_scores_and_weights_on_hand_made_arrays():
    model = Tiny(dim=40, classes=2)
    feats = one_hot_channels() * torch.linspace(1, 2, 40)[None, :, None, None]
    feats[0, 1] = feats[0, 0]
    feats[0, 7] = 0
    groups = m.similarity_groups(feats, 0.95)
    scores = m.switch_scores(model, feats, groups, torch.tensor([1]))[0, 0]
    a, wc = feats.mean((2, 3))[0], model.cam_weights()[1]
    assert torch.allclose(scores[0], 2 * (wc[0] * a[0] + wc[1] * a[1]), atol=1e-7)  # the pair's share, twice
    assert torch.allclose(scores[3], 2 * wc[3] * a[3], atol=1e-7) and scores[7] == 0
    w = m.combined_weights(torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 3.0, 5.0]), 0.5)
    assert torch.allclose(w, torch.tensor([-0.5, math.exp(0.5) * 0.5 - 0.5, math.e - 0.5]))
    assert torch.equal(m.combined_weights(torch.ones(3), torch.tensor([0.0, 1.0, 2.0]), 0.5),  # exp(0) = 1
                       torch.tensor([-0.5, 0.0, 0.5]))
    assert torch.equal(m.combined_weights(torch.tensor([0.0, 1.0, 2.0]), torch.ones(3), 0.5), torch.full((3,), -0.5))
    assert torch.equal(m.minmax(torch.full((2, 4), 7.0)), torch.zeros(2, 4))  # constant: 0, never NaN


def test_raw_maps_shape_stride_and_no_graph_left():
    """Flip-equivariance, scales and hooks: tests/test_seed_methods.py checks every registered method, fdcam too."""
    model, keys = Tiny(squared=True), torch.tensor([0, 2])
    x = views(h=48, w=64)[0]
    with torch.enable_grad():
        raw, stride = m.maps(model, torch.stack([x, x.flip(-1)]), keys)
    assert raw.shape == (2, 2, 3, 4) and stride == 16 and (raw >= 0).all() and not raw.requires_grad


def test_refusals():
    model, x, keys = Tiny(), views(), torch.tensor([1])
    with pytest.raises(UserError, match="trunk's output"):
        m.maps(model, x, keys, target_layers=["backbone.0"])
    with pytest.raises(UserError, match="similarity_quantile"):
        m.maps(model, x, keys, similarity_quantile=95)


def test_config_composes(tmp_path):
    cfg = compose_cfg(tmp_path, "cam=fdcam")
    assert cfg.cam.method == "fdcam" and cfg.cam.threshold == cfg.dataset.seeds.threshold.cam
    assert options(cfg.cam) == {"target_layers": None, "similarity_quantile": 0.95, "offset": 0.5}
