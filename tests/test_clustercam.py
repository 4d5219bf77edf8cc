"""Cluster-CAM (wsss/seed_methods/clustercam.py) on the Tiny classifier and hand-made channel maps."""
import pytest
import torch
import torch.nn.functional as F

from tests.conftest import compose_cfg
from tests.test_seed_methods import Tiny, hooks, run, views
from wsss.cam import multiscale_maps
from wsss.errors import UserError
from wsss.seed_methods import clustercam, options


def clustercam_maps(model, images, keys, **opts):
    with torch.no_grad():
        return clustercam.maps(model, images, keys, **opts)


def test_one_channel_per_cluster_weighted_is_scorecam():
    model, x, keys = Tiny(), views(), torch.tensor([0, 2])
    with torch.no_grad():
        feats = model.backbone(x)
    for b in range(2):  # K = D: k-means leaves every live channel alone
        groups = clustercam.channel_clusters(feats[b], 5, 100, 0)
        live = (feats[b].flatten(1).max(1).values > feats[b].flatten(1).min(1).values).sum()
        assert len(groups) == live >= 2 and all(len(g) == 1 for g in groups)
    for probability in ("softmax", "sigmoid"):
        ours, stride = clustercam_maps(model, x, keys, clusters=5, cognition="weighted", batch_size=2,
                                       probability=probability)
        theirs, _ = run("scorecam", model, x, keys, batch_size=2, probability=probability)
        assert stride == 16 and ours.shape == theirs.shape == (2, 2, 3, 4)
        assert torch.allclose(ours, theirs, atol=1e-6), probability


def test_scissors_against_a_direct_loop_over_channels():
    """K = D: base and scissors are the channels whose masked input gives the highest and lowest class logit,
    α their softmax over the live channels; the map ReLU(α_t·A_t − (1 − α_t)·A_b)."""
    model, x, keys = Tiny(), views(), torch.tensor([1, 3])
    out, _ = clustercam_maps(model, x, keys, clusters=5)
    with torch.no_grad():
        feats = model.backbone(x)
        for b in range(2):
            live, logits = [], []
            for k in range(feats.shape[1]):
                up = F.interpolate(feats[b:b + 1, k:k + 1], x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
                if up.max() > up.min():
                    live.append(k)
                    logits.append(model(x[b:b + 1] * (up - up.min()) / (up.max() - up.min()))[0])
            alpha = torch.stack(logits).softmax(0)
            for i, c in enumerate(keys.tolist()):
                t, s = live[int(alpha[:, c].argmax())], live[int(alpha[:, c].argmin())]
                a = alpha[:, c].max()
                assert torch.allclose(out[b, i], F.relu(a * feats[b, t] - (1 - a) * feats[b, s]), atol=1e-6)


def test_kmeans_recovers_hand_made_clusters_deterministically():
    g = torch.Generator().manual_seed(0)
    p, q = torch.rand(4, 4, generator=g), torch.rand(4, 4, generator=g)
    # channels 0, 2, 5 fire as p, channels 1, 3, 4 as q (scaled, shifted: the same once normalised); 6 is dead
    acts = torch.stack([p, 2 * q + 1, 3 * p, q, 5 * q - 2, p + 7, torch.full((4, 4), 0.5)])
    for seed in range(5):
        groups = [g.tolist() for g in clustercam.channel_clusters(acts, 2, 100, seed)]
        assert groups == [[0, 2, 5], [1, 3, 4]], seed
    # three far-apart blobs of noisy points, listed interleaved
    centres = torch.tensor([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]])
    points = centres.repeat(5, 1) + 0.01 * torch.randn(15, 2, generator=g)
    labels = clustercam.kmeans(points, 3, 100, 0)
    assert labels.tolist() == [0, 1, 2] * 5
    assert all(torch.equal(clustercam.kmeans(points, 3, 100, s), labels) for s in range(5))
    assert clustercam.kmeans(points, 15, 100, 0).tolist() == list(range(15))  # k = n: singletons
    assert clustercam.kmeans(points[:3].repeat(2, 1), 6, 100, 0).tolist() == [0, 1, 2] * 2  # k > distinct points


@pytest.mark.parametrize("cognition", clustercam.COGNITIONS)
def test_flip_equivariant_shapes_non_negative_no_hooks(cognition):
    """As tests/test_seed_methods.py checks every registered method: the combined map of the flipped image is
    the flipped map, at the image's size whatever the scales, in [0, 1]; no hook is left on the model."""
    model, keys = Tiny(squared=True), torch.tensor([0, 2])
    x = views(h=48, w=64)[0]

    def raw(batch):
        return clustercam_maps(model, batch, keys, clusters=3, cognition=cognition)

    def combined(img, scales=(1.0,)):
        vs = [torch.stack([v, v.flip(-1)]) for v in
              [F.interpolate(img[None], scale_factor=s, mode="bilinear", align_corners=False)[0] for s in scales]]
        return multiscale_maps(raw, len(keys), vs, img.shape[-2:])

    out, stride = raw(views(h=48, w=64))
    assert out.shape == (2, 2, 3, 4) and stride == 16 and (out >= 0).all() and out.max() > 0
    _, a = combined(x)
    _, b = combined(x.flip(-1))
    assert torch.allclose(a, b.flip(-1), atol=1e-5)
    strided, high = combined(x, (1.0, 2.0))
    assert high.shape == (2, 48, 64) and strided.shape == (2, 12, 16) and 0 <= high.min() and high.max() <= 1
    assert hooks(model) == 0
    assert torch.equal(combined(x, (1.0, 2.0))[1], high)


def test_bad_options_refused():
    model, x, keys = Tiny(), views(), torch.tensor([0])
    with pytest.raises(UserError, match="cognition"):
        clustercam_maps(model, x, keys, cognition="base")
    with pytest.raises(UserError, match="clusters"):
        clustercam_maps(model, x, keys, clusters=0)


def test_config_composes(tmp_path):
    cfg = compose_cfg(tmp_path, "cam=clustercam")
    assert cfg.cam.method == "clustercam" and cfg.cam.threshold == cfg.dataset.seeds.threshold.cam
    assert options(cfg.cam) == {"target_layers": None, "batch_size": 32, "probability": "softmax", "clusters": 10,
                                "cognition": "scissors", "kmeans_iters": 100, "kmeans_seed": 0}
