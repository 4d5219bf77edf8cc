"""LPCAM (wsss/seed_methods/lpcam.py) and its prototype stage (wsss/stages/make_prototypes.py)."""
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.test_seed_methods import Tiny, views
from wsss import artifacts
from wsss.io import read_json
from wsss.pipeline import run_pipeline
from wsss.seed_methods import lpcam
from wsss.stages.make_prototypes import feature_file

OPTIONS = {"num_clusters": 3, "kmeans_tol": 1e-6, "kmeans_max_iterations": 50, "class_threshold": 0.9,
           "context_threshold_low": 0.05, "context_threshold": 0.9}


def around(axis: int, n: int, dim: int = 4, scale: float = 10.0, seed: int = 0) -> torch.Tensor:
    """n vectors near scale·e_axis (a little noise)."""
    x = torch.zeros(n, dim)
    x[:, axis] = scale
    return x + 0.1 * torch.randn(n, dim, generator=torch.Generator().manual_seed(seed + axis))


def test_cosine_kmeans_finds_separable_groups_deterministically():
    x = torch.cat([around(0, 30), around(1, 20), around(2, 25)])
    centres = lpcam.cosine_kmeans(x, 3, 1e-8, 100, torch.Generator().manual_seed(0))
    best = F.normalize(centres, dim=1).abs().argmax(1)
    assert sorted(best.tolist()) == [0, 1, 2]
    assert (F.cosine_similarity(centres, torch.eye(4)[best] * 10, dim=1) > 0.99).all()
    again = lpcam.cosine_kmeans(x, 3, 1e-8, 100, torch.Generator().manual_seed(0))
    torch.testing.assert_close(centres, again)


def test_prototypes_on_separable_features():
    """3 classes, head W = 10·e_c. Class 0's foreground features lie near e0: its class prototypes; its other
    features are class 1's object (softmax gives class 0 ≈ 0: not context) and plain background e3 (logits 0:
    probability 1/3 for class 0, between 0.05 and 0.9: context)."""
    weights = torch.eye(3, 4)  # centre · W = the first three coordinates
    fg = around(0, 40)
    rest = torch.cat([around(1, 40), around(3, 40)])
    protos = lpcam.class_prototypes({0: (fg, rest)}, weights * 1.0, {**OPTIONS, "num_clusters": 2}, seed=0)
    centres, context = protos[0]
    assert len(centres) == 2 and (F.normalize(centres, dim=1)[:, 0] > 0.99).all()
    assert len(context) == 1 and F.normalize(context, dim=1)[0, 3] > 0.99


def test_select_prototypes_by_the_softmax_of_the_head():
    weights = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    centres = torch.tensor([[5.0, 0.0], [0.5, 0.0], [0.0, 5.0]])  # p(class 0) = 0.993, 0.622, 0.007
    assert lpcam.select_prototypes(centres, weights, 0, 0.9, float("inf")).tolist() == [[5.0, 0.0]]
    assert lpcam.select_prototypes(centres, weights, 0, 0.05, 0.9).tolist() == [[0.5, 0.0]]


def test_maps_are_the_mean_similarity_to_the_class_minus_the_context_on_flip_summed_features(tmp_path):
    model = Tiny(dim=5, classes=3).eval()
    g = torch.Generator().manual_seed(2)
    protos = {"class_0": torch.rand(2, 5, generator=g), "context_0": torch.rand(1, 5, generator=g),
              "class_1": torch.zeros(0, 5), "context_1": torch.zeros(0, 5),  # no prototype: CAM
              "class_2": torch.rand(3, 5, generator=g), "context_2": torch.zeros(0, 5)}
    np.savez(tmp_path / lpcam.PROTOTYPE_FILE, **{k: v.numpy() for k, v in protos.items()})
    x = views()
    with torch.no_grad():
        out, stride = lpcam.maps(model, x, torch.tensor([0, 1, 2]), prepared=tmp_path)
        feats = model.backbone(x)
    f = feats[0] + feats[1].flip(-1)  # [D,h,w]
    expected = []
    for c in range(3):
        cos = [F.cosine_similarity(f, p[:, None, None], dim=0) for p in protos[f"class_{c}"]]
        ctx = [F.cosine_similarity(f, p[:, None, None], dim=0) for p in protos[f"context_{c}"]]
        if not cos:
            expected.append(F.relu(torch.einsum("dhw,d->hw", f, model.cam_weights()[c])))
            continue
        m = torch.stack(cos).mean(0) - (torch.stack(ctx).mean(0) if ctx else 0)
        expected.append(F.relu(m))
    assert stride == 16 and out.shape == (2, 3, *f.shape[-2:])
    torch.testing.assert_close(out[0], torch.stack(expected), atol=1e-5, rtol=1e-4)
    assert (out[1] == 0).all()
    lpcam.load_prototypes.cache_clear()


@pytest.mark.slow
def test_prototype_stage_resumes_after_a_kill_and_is_reused_by_a_sweep(tiny_cfg):
    stages = "stages=[train_cls,make_prototypes,make_cam,eval_cam]"
    cfg = tiny_cfg("cam=lpcam", stages)
    m = run_pipeline(cfg)
    # the prototypes come from the classifier's training split (train_aug here: 24 images), not the seeds' (train: 8)
    assert cfg.cam.prototype_splits == ["train_aug"] and list(cfg.cam.splits) == ["train"]
    assert m["make_prototypes/images"] == 24 and "eval_cam/train/miou" in m
    art = artifacts.locate(cfg, "make_prototypes")
    first = dict(np.load(art.path / lpcam.PROTOTYPE_FILE))
    ids = sorted(p.stem for p in (art.path / "features").glob("*.npz"))
    # a kill before the clustering: one feature file and the prototypes missing, no manifest
    art.manifest.unlink()
    (art.path / lpcam.PROTOTYPE_FILE).unlink()
    feature_file(art.path, ids[0]).unlink()
    mtime = feature_file(art.path, ids[1]).stat().st_mtime_ns
    run_pipeline(tiny_cfg("cam=lpcam", "stages=[make_prototypes]"))
    assert feature_file(art.path, ids[1]).stat().st_mtime_ns == mtime  # not made again
    again = dict(np.load(art.path / lpcam.PROTOTYPE_FILE))
    assert first.keys() == again.keys() and all(np.array_equal(first[k], again[k]) for k in first)
    # another make_cam setting of LPCAM (its upsampling) reads the same prototypes
    run_pipeline(tiny_cfg("cam=lpcam", "cam.upsample=gaussian", "stages=[make_prototypes,make_cam]"))
    used = read_json(Path(tiny_cfg().paths.run_dir) / "artifacts.json")
    assert used["make_prototypes"]["reused"] is True
    assert len(list(art.path.parent.glob("*/manifest.json"))) == 1
