"""The CAM-family seed methods (wsss/seed_methods/) on tiny hand-made networks whose answer is known."""
import json
import subprocess
import sys
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.conftest import TINY
from wsss.cam import multiscale_cam, multiscale_maps
from wsss.errors import UserError
from wsss.io import load_seed
from wsss.seed_methods import METHODS, method_module
from wsss.seed_methods.gradcampp import gradcampp_weights
from wsss.seed_methods.guided_backprop import guided_relus
from wsss.seed_methods.layercam import fuse_layers
from wsss.seed_methods.layers import grid_stride, resolve_layers, stage_layers
from wsss.seed_methods.reciprocam import GAUSSIAN

GRADIENT_FREE_OR_NOT = [m for m in METHODS if m != "recam"]


class TinyTrunk(nn.Sequential):
    def stage_names(self, min_stride=8):
        return ["1"]  # the stride-4 ReLU: LayerCAM fuses it with the output


class Tiny(nn.Module):
    """A classifier of this pipeline's shape: trunk (stride 16) → GAP → bias-free 1×1 head.
    `squared=True` pools F² instead of F, so that gradients vary over positions (the Grad-CAM family's
    weights then differ from each other and from CAM's)."""

    def __init__(self, dim=5, classes=4, squared=False, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.backbone = TinyTrunk(nn.Conv2d(3, 8, 4, stride=4), nn.ReLU(), nn.Conv2d(8, dim, 4, stride=4), nn.ReLU())
        self.classifier = nn.Conv2d(dim, classes, 1, bias=False)
        self.squared = squared

    def logits(self, feats):
        return self.classifier((feats ** 2 if self.squared else feats).mean((2, 3), keepdim=True)).flatten(1)

    def forward(self, x):
        return self.logits(self.backbone(x))

    def cam_weights(self):
        return self.classifier.weight.flatten(1)


def views(seed=1, h=48, w=64):
    x = torch.randn(3, h, w, generator=torch.Generator().manual_seed(seed))
    return torch.stack([x, x.flip(-1)])


def run(method, model, images, keys, **options):
    with torch.enable_grad() if method_module(method).NEEDS_GRAD else torch.no_grad():
        return method_module(method).maps(model, images, keys, **options)


def activations_and_grads(model, images, c):
    feats = model.backbone(images).detach().requires_grad_(True)
    g = torch.autograd.grad(model.logits(feats)[:, c].sum(), feats)[0]
    return feats.detach(), g


def normalised(m):
    return m / m.flatten(-2).max(-1).values[..., None, None]


def test_gradcam_on_gap_linear_head_is_cam_up_to_a_positive_scale():
    model, x, keys = Tiny(), views(), torch.tensor([0, 2, 3])
    grad, stride = run("gradcam", model, x, keys)
    cam, _ = run("cam", model, x, keys)
    assert stride == 16 and grad.shape == cam.shape == (2, 3, 3, 4)
    has = cam.flatten(2).max(-1).values > 0
    assert has.any()
    ratio = grad[has].flatten(1).sum(1) / cam[has].flatten(1).sum(1)
    assert torch.allclose(ratio, torch.full_like(ratio, 1 / 12), rtol=1e-4)  # 1/(h·w): 3×4 cells
    assert torch.allclose(normalised(grad[has]), normalised(cam[has]), atol=1e-5)


@pytest.mark.parametrize("method", ["gradcam", "xgradcam", "gradcampp", "layercam"])
def test_gradient_methods_against_their_formulas(method):
    model, x, keys = Tiny(squared=True), views(), torch.tensor([1, 3])
    out, _ = run(method, model, x, keys, target_layers=["backbone"])
    for i, c in enumerate(keys.tolist()):
        a, g = activations_and_grads(model, x, c)
        if method == "gradcam":
            expected = F.relu((g.mean((2, 3), keepdim=True) * a).sum(1))
        elif method == "xgradcam":
            w = (g * a).sum((2, 3), keepdim=True) / a.sum((2, 3), keepdim=True)
            expected = F.relu((w * a).sum(1))
        elif method == "gradcampp":
            expected = F.relu((gradcampp_weights(a, g)[..., None, None] * a).sum(1))
        else:
            expected = F.relu((F.relu(g) * a).sum(1))
        assert torch.allclose(out[:, i], expected, rtol=1e-5, atol=1e-7), method


def test_gradcampp_weights_on_hand_made_arrays():
    a = torch.tensor([[1.0, 2.0], [3.0, 0.0]])[None, None]  # Σ A = 6
    g = torch.full((1, 1, 2, 2), 0.5)
    # α = g² / (2g² + ΣA·g³) = 0.25 / (0.5 + 0.75) = 0.2 everywhere; w = Σ α·ReLU(g) = 4 · 0.2 · 0.5
    assert torch.allclose(gradcampp_weights(a, g), torch.tensor([[0.4]]))
    g = torch.tensor([[0.5, 0.0], [-0.5, 0.5]])[None, None]  # zero and negative gradients add nothing
    assert torch.allclose(gradcampp_weights(a, g), torch.tensor([[0.2]]))
    # torchcam 0.5.0's own GradCAMpp leaves α = g² (why gradcampp.py computes the weights itself)
    from torchcam.methods import GradCAMpp

    model, x, keys = Tiny(squared=True), views(), torch.tensor([1])
    with torch.enable_grad(), GradCAMpp(model, "backbone") as extractor:
        theirs = extractor(1, model(x), normalized=False)[0]
    ours, _ = run("gradcampp", model, x, keys, target_layers=["backbone"])
    assert not torch.allclose(theirs, ours[:, 0], rtol=1e-3)


def test_layercam_default_fuses_stages_and_fusion_known_answer():
    shallow = torch.tensor([[[0.0, 1.0], [2.0, 4.0]]])  # /max → 0, .25, .5, 1 → tanh(2·)
    deep = torch.tensor([[[3.0]]])  # one cell, /max → 1 everywhere after resizing
    fused = fuse_layers([shallow, deep], gamma=2.0)
    assert fused.shape == (1, 2, 2) and torch.allclose(fused, torch.full((1, 2, 2), 3 / (3 + 1e-5)))
    fused = fuse_layers([shallow, 0 * deep], gamma=2.0)
    expected = torch.tanh(2 * shallow / (4 + 1e-5))
    assert torch.allclose(fused, expected)
    from wsss.models.classifier import ClassifierModule

    model = ClassifierModule(3, "tf_efficientnet_lite0", None).eval()
    layers = resolve_layers(model, stage_layers(model))
    assert layers == ["backbone.net.blocks.2", "backbone.net.blocks.4", "backbone.net.blocks.6", "backbone"]
    out, stride = run("layercam", model, torch.randn(2, 3, 64, 96), torch.tensor([0, 2]))
    assert stride == 8 and out.shape == (2, 2, 8, 12) and (out >= 0).all() and out.max() <= 1


def test_scorecam_against_a_direct_loop_over_channels():
    model, x, keys = Tiny(), views(), torch.tensor([0, 2])
    for probability in ("softmax", "sigmoid"):
        out, stride = run("scorecam", model, x, keys, batch_size=2, probability=probability)
        prob = (lambda z: z.softmax(-1)) if probability == "softmax" else torch.sigmoid
        with torch.no_grad():
            feats = model.backbone(x)
            base = prob(model(torch.zeros_like(x[:1])))[0]
            for b in range(2):
                for i, c in enumerate(keys.tolist()):
                    cam = torch.zeros(feats.shape[-2:])
                    for k in range(feats.shape[1]):
                        up = F.interpolate(feats[b:b + 1, k:k + 1], x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
                        if up.max() == up.min():
                            continue
                        mask = (up - up.min()) / (up.max() - up.min())
                        cam += (prob(model(x[b:b + 1] * mask))[0, c] - base[c]) * feats[b, k]
                    assert torch.allclose(out[b, i], F.relu(cam), atol=1e-6), (probability, b, c)
    assert stride == 16


def test_reciprocam_against_its_definition():
    """Mosaic feature maps built one by one (the authors' construction: the feature vector at p spread with a
    3×3 Gaussian, cut at the border, zero elsewhere) and re-fed to the head."""
    model, x, keys = Tiny(), views(), torch.tensor([1, 3])
    for kernel in ("gaussian", "onehot"):
        out, stride = run("reciprocam", model, x, keys, kernel=kernel)
        with torch.no_grad():
            feats = model.backbone(x)
            b_, d, h, w = feats.shape
            base = model.logits(torch.zeros(1, d, h, w)).softmax(-1)[0]
            for b in range(b_):
                mosaics = torch.zeros(h * w, d, h, w)
                for i in range(h):
                    for j in range(w):
                        for di in (-1, 0, 1):
                            for dj in (-1, 0, 1):
                                if 0 <= i + di < h and 0 <= j + dj < w:
                                    g = GAUSSIAN[1 + di, 1 + dj] if kernel == "gaussian" else float(di == dj == 0)
                                    mosaics[i * w + j, :, i + di, j + dj] = g * feats[b, :, i + di, j + dj]
                prob = model.logits(mosaics).softmax(-1)
                expected = F.relu(prob[:, keys] - base[keys]).T.reshape(len(keys), h, w)
                assert torch.allclose(out[b], expected, atol=1e-7), kernel
    assert stride == 16
    with pytest.raises(UserError, match="trunk's output"):
        run("reciprocam", model, x, keys, target_layers=["backbone.0"])


def test_saliency_is_max_over_colour_of_the_abs_input_gradient():
    # a linear "network": y_c = Σ v_c·x over the image → ∂y_c/∂x = v_c everywhere
    class Linear(nn.Module):
        def __init__(self):
            super().__init__()
            self.v = nn.Parameter(torch.tensor([[1.0, -3.0, 2.0], [0.5, 0.0, -0.25]]))

        def forward(self, x):
            return torch.einsum("bchw,kc->bk", x, self.v)

    out, stride = run("saliency", Linear(), views(h=5, w=7), torch.tensor([0, 1]))
    assert stride == 1 and out.shape == (2, 2, 5, 7)
    assert torch.allclose(out[:, 0], torch.full((2, 5, 7), 3.0)) and torch.allclose(out[:, 1], torch.full((2, 5, 7), 0.5))
    model, x = Tiny(squared=True), views()
    out, _ = run("saliency", model, x, torch.tensor([2]))
    xg = x.clone().requires_grad_(True)
    g = torch.autograd.grad(model(xg)[:, 2].sum(), xg)[0]
    assert torch.allclose(out[:, 0], g.abs().amax(1))


class GuidedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (x > 0) * (g > 0)


def test_guided_backprop_against_a_guided_relu_network_and_hooks_restored():
    model, x = Tiny(squared=True), views()
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    for m in relus:
        m.inplace = True
    out, stride = run("guided_backprop", model, x, torch.tensor([0, 3]))
    assert stride == 1
    assert all(m.inplace and not m._backward_hooks for m in relus)  # restored
    bb = model.backbone
    for i, c in enumerate((0, 3)):
        xg = x.clone().requires_grad_(True)
        feats = GuidedReLU.apply(bb[2](GuidedReLU.apply(bb[0](xg))))
        g = torch.autograd.grad(model.logits(feats)[:, c].sum(), xg)[0]
        assert torch.allclose(out[:, i], g.abs().amax(1), atol=1e-7)
    plain, _ = run("saliency", model, x, torch.tensor([0, 3]))
    assert not torch.allclose(plain, out)


def test_guided_relus_covers_relu6_and_refuses_a_net_without_relus():
    net = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU6(inplace=True), nn.Conv2d(2, 1, 1))
    with guided_relus(net) as n:
        assert n == 1 and not net[1].inplace
    assert net[1].inplace and not net[1]._backward_hooks
    with pytest.raises(UserError, match="no nn.ReLU"), guided_relus(nn.Sequential(nn.Conv2d(3, 1, 1), nn.SiLU())):
        pass


def hooks(model):
    return sum(len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("method", GRADIENT_FREE_OR_NOT)
def test_every_method_flip_equivariant_multiscale_and_leaves_no_hooks(method, tmp_path):
    """As CAM: the combined map of the flipped image is the flipped map (widths on whole cells), the maps
    come at the image's size whatever the scales, in [0, 1]; and the model carries no hook afterwards, so
    a second call gives the same maps. (LPCAM reads random prototypes of the tiny trunk's 5 channels.)"""
    model, keys = Tiny(squared=True), torch.tensor([0, 2])
    x = views(h=48, w=64)[0]
    maps = method_module(method).maps
    if getattr(method_module(method), "PREPARED_BY", None):
        g = torch.Generator().manual_seed(0)
        np.savez(tmp_path / "prototypes.npz", **{f"{kind}_{c}": torch.rand(2, 5, generator=g).numpy()
                                                for c in range(4) for kind in ("class", "context")})
        maps = partial(maps, prepared=tmp_path)

    def combined(img, scales=(1.0,)):
        vs = [torch.stack([v, v.flip(-1)]) for v in
              [F.interpolate(img[None], scale_factor=s, mode="bilinear", align_corners=False)[0] for s in scales]]
        with torch.enable_grad():
            return multiscale_maps(lambda b: maps(model, b, keys), len(keys), vs, img.shape[-2:])

    before = hooks(model)
    _, a = combined(x)
    _, b = combined(x.flip(-1))
    assert torch.allclose(a, b.flip(-1), atol=1e-5)
    strided, high = combined(x, (1.0, 2.0))
    assert high.shape == (2, 48, 64) and strided.shape == (2, 12, 16) and 0 <= high.min() and high.max() <= 1
    assert hooks(model) == before == 0
    assert torch.equal(combined(x, (1.0, 2.0))[1], high)


def test_cam_method_is_the_reference_cam():
    model, x, keys = Tiny(), views(), torch.tensor([0, 1, 3])
    ours = multiscale_maps(lambda b: run("cam", model, b, keys), 3, [x], (48, 64))
    with torch.no_grad():
        ref = multiscale_cam(model.backbone, model.cam_weights()[keys], [x], (48, 64))
    assert all(torch.equal(a, b) for a, b in zip(ours, ref, strict=True))


def test_grid_stride_and_unknown_names():
    assert grid_stride(torch.zeros(1, 3, 100, 90), torch.zeros(1, 1, 7, 6)) == 16
    assert grid_stride(torch.zeros(1, 3, 100, 90), torch.zeros(1, 1, 100, 90)) == 1
    with pytest.raises(UserError, match=r"no module 'backbone.O' \(close: .*backbone.0"):
        resolve_layers(Tiny(), ["backbone.O"])
    with pytest.raises(UserError, match="unknown seed method"):
        method_module("gradcamm")



@pytest.mark.slow
def test_sweep_over_every_method_trains_one_classifier(tmp_path):
    """The acceptance: `wsss -m cam=cam,gradcam,…` reads one train_cls checkpoint (gradient methods outside
    inference mode), writes one seed artifact per method in the contract's format with its time per image,
    and eval_cam scores each at its stated τ."""
    cmd = [sys.executable, "-m", "wsss", "-m", f"cam={','.join(GRADIENT_FREE_OR_NOT)}",
           "stages=[train_cls,make_prototypes,make_cam,eval_cam]", *TINY, "cam.scales=[0.5]"]  # 24-40 px: Score-CAM
    # stays cheap; make_prototypes runs for cam=lpcam only
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    store = tmp_path / "artifacts"
    assert len(list(store.glob("train_cls/*/manifest.json"))) == 1
    manifests = [json.loads(p.read_text()) for p in store.glob("make_cam/*/manifest.json")]
    assert sorted(m["identity"]["config"]["method"] for m in manifests) == sorted(GRADIENT_FREE_OR_NOT)
    assert len({m["identity"]["inputs"]["train_cls"] for m in manifests}) == 1
    for m in manifests:
        assert m["metrics"]["make_cam/seconds_per_image"] > 0
    seed = load_seed(next(store.glob("make_cam/*/*.npz")))
    assert seed["high_res"].dtype.name == "float16" and seed["high_res"].max() <= 1
    runs = [json.loads(p.read_text()) for p in tmp_path.glob("outputs/multirun/*/*/metrics.json")]
    assert sorted(r["protocol/cam/method"] for r in runs) == sorted(GRADIENT_FREE_OR_NOT)
    assert all(0 <= r["eval_cam/train/miou"] <= 100 for r in runs)


def test_target_layers_reach_the_method():
    """cam.target_layers names a module of the classifier: Score-CAM on Lite0's 24-channel stride-4 stage."""
    from wsss.models.classifier import ClassifierModule

    model = ClassifierModule(3, "tf_efficientnet_lite0", None).eval()
    x = torch.randn(2, 3, 32, 48)
    out, stride = run("scorecam", model, x, torch.tensor([1]), target_layers=["backbone.net.blocks.1"])
    assert stride == 4 and out.shape == (2, 1, 8, 12)
    with pytest.raises(UserError, match="reads one layer"):
        run("gradcam", model, x, torch.tensor([1]), target_layers=["backbone.net.blocks.1", "backbone"])
