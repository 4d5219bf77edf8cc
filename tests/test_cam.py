"""CAM math on hand-made inputs, and against an independent implementation of algorithms.md §3."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import nn

from wsss.cam import multiscale_cam, padded_size, strided_size
from wsss.data.transforms import multiscale_views
from wsss.models.backbones import IMAGENET_MEAN, IMAGENET_STD, build_backbone


class Pool16(nn.Module):
    """A 'backbone' whose feature at a cell is the mean of the input over that 16×16 block."""

    def forward(self, x):
        h, w = x.shape[-2:]
        x = F.pad(x, (0, 16 * math.ceil(w / 16) - w, 0, 16 * math.ceil(h / 16) - h))
        return F.avg_pool2d(x, 16)


def _views(image_chw, scales=(1.0,)):
    assert scales == (1.0,)
    return [torch.stack([image_chw, image_chw.flip(-1)])]


def test_sizes():
    assert strided_size(375, 500) == (94, 125)
    assert padded_size(375, 500) == (384, 512)


def test_hand_set_weights_known_answer_and_alignment():
    # 40×48 image: 3×3 feature grid, height padded to 48 (width needs none, so the flipped copy
    # lines up with the original). One hot 16×16 block at the top-left.
    img = torch.zeros(3, 40, 48)
    img[0, :16, :16] = 1.0
    weights = torch.tensor([[1.0, 0, 0], [-1.0, 0, 0], [0, 1.0, 0]])
    strided, high = multiscale_cam(Pool16(), weights, _views(img), (40, 48))
    assert high.shape == (3, 40, 48) and strided.shape == (3, 10, 12)
    top = 1 / (1 + 1e-5)
    # half-pixel bilinear ×16 of a one-hot cell: pixels 0..7 sit "before" the first cell centre
    assert torch.allclose(high[0, :8, :8], torch.full((8, 8), top))
    assert (high[0, 24:] == 0).all() and (high[0, :, 24:] == 0).all()
    # aligned: pixel (8+k) lies (k+0.5)/16 of a cell past the centre → 1 − (k+0.5)/16
    # along the padded height (40 → 48), which a direct resize to 40 would stretch
    expected = torch.tensor([1 - (k + 0.5) / 16 for k in range(16)]) * top
    assert torch.allclose(high[0, 8:24, 0], expected, atol=1e-6)
    assert torch.allclose(high[0, 0, 8:24], expected, atol=1e-6)
    # negative evidence → ReLU → all-zero map (stays zero after normalisation); absent feature → 0
    assert (high[1] == 0).all() and (high[2] == 0).all()
    assert (high >= 0).all() and high.max() <= 1


def test_high_res_is_not_a_direct_resize():
    img = torch.zeros(3, 40, 40)
    img[0, :16, :16] = 1.0
    _, high = multiscale_cam(Pool16(), torch.tensor([[1.0, 0, 0]]), _views(img), (40, 40))
    feats = Pool16()(img[None])
    direct = F.interpolate(F.relu(feats[:, :1]), (40, 40), mode="bilinear", align_corners=False)[0]
    direct = direct / (direct.max() + 1e-5)
    assert not torch.allclose(high, direct, atol=1e-2)


def test_flip_sum_is_symmetric():
    rng = torch.Generator().manual_seed(0)
    img = torch.rand(3, 32, 64, generator=rng)
    w = torch.rand(2, 3, generator=rng)
    _, a = multiscale_cam(Pool16(), w, _views(img), (32, 64))
    _, b = multiscale_cam(Pool16(), w, _views(img.flip(-1)), (32, 64))
    assert torch.allclose(a, b.flip(-1), atol=1e-6)


# ------------------------------------------------------------------ independent reference
def _reference_cam(net, w_all, image_u8, keys, scales):
    """A literal transcription of algorithms.md §3, one class at a time, for comparison."""
    h, w = image_u8.shape[:2]
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    h4, w4 = math.ceil(h / 4), math.ceil(w / 4)
    h16, w16 = 16 * math.ceil(h / 16), 16 * math.ceil(w / 16)
    strided = torch.zeros(len(keys), h4, w4, dtype=torch.float64)
    high = torch.zeros(len(keys), h16, w16, dtype=torch.float64)
    for s in scales:
        im = image_u8 if s == 1 else np.asarray(
            Image.fromarray(image_u8).resize((round(w * s), round(h * s)), Image.BICUBIC))
        x = torch.from_numpy(((im / 255.0 - mean) / std).transpose(2, 0, 1).copy()).float()[None]
        for flip in (False, True):
            xin = torch.flip(x, [3]) if flip else x
            with torch.no_grad():
                f = net.layer4(net.layer3(net.layer2(net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(xin))))))))
            for i, k in enumerate(keys):
                cam = torch.relu(F.conv2d(f, w_all[k].reshape(1, -1, 1, 1)))
                if flip:
                    cam = torch.flip(cam, [3])
                strided[i] += F.interpolate(cam, (h4, w4), mode="bilinear", align_corners=False)[0, 0].double()
                high[i] += F.interpolate(cam, (h16, w16), mode="bilinear", align_corners=False)[0, 0].double()
    high = high[:, :h, :w]
    for t in (strided, high):
        for i in range(len(keys)):
            t[i] /= t[i].max() + 1e-5
    return strided, high


def test_matches_independent_reference_on_resnet50(tmp_path):
    torch.manual_seed(0)
    ref = torchvision.models.resnet50(weights=None)
    ref.layer4[0].conv2.stride = (1, 1)
    ref.layer4[0].downsample[0].stride = (1, 1)
    ref.eval()
    torch.save(ref.state_dict(), tmp_path / "r50.pth")
    ours = build_backbone("resnet50", weights=str(tmp_path / "r50.pth")).eval()
    w_all = torch.randn(20, 2048) * 0.02
    rng = np.random.default_rng(0)
    image = np.asarray(Image.fromarray(rng.integers(0, 255, (19, 26, 3), dtype=np.uint8)).resize((103, 75)))
    keys = [3, 14]
    scales = [1.0, 0.5, 1.5, 2.0]
    strided_ref, high_ref = _reference_cam(ref, w_all, image, keys, scales)
    strided, high = multiscale_cam(ours, w_all[keys], multiscale_views(image, scales, (IMAGENET_MEAN, IMAGENET_STD)), image.shape[:2])
    assert high.shape == (2, 75, 103) and strided.shape == (2, 19, 26)
    for got, want in ((high, high_ref), (strided, strided_ref)):
        rel = (got.double() - want).abs().max() / want.abs().max()
        assert rel <= 1e-3, rel


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_backbone_output_stride_16_without_dilation(name):
    net = build_backbone(name)
    assert net(torch.zeros(1, 3, 75, 103)).shape[-2:] == (5, 7)
    assert all(m.dilation == (1, 1) for m in net.modules() if isinstance(m, nn.Conv2d))


def test_frozen_bn_statistics_and_stem():
    net = build_backbone("resnet18", freeze_bn_stats=True, freeze_stem=True).train()
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    before = bns[3].running_mean.clone()
    x = torch.randn(2, 3, 64, 64)
    out = net(x)
    assert torch.equal(bns[3].running_mean, before)
    assert torch.equal(out, net.eval()(x))  # train and eval agree: stored statistics in both
    assert all(p.requires_grad for m in bns[1:] for p in m.parameters())  # γ/β still learn (stem aside)
    assert not any(p.requires_grad for p in net.stem.parameters())
    assert all(p.requires_grad for p in net.layer1.parameters())


def test_detach_after_layer2_stops_gradients():
    net = build_backbone("resnet18", detach_after_layer2=True)
    net(torch.randn(1, 3, 64, 64)).sum().backward()
    assert all(p.grad is None for p in net.layer2.parameters())
    assert any(p.grad is not None for p in net.layer3.parameters())


def test_image_without_labels_gets_empty_maps_of_the_contract_shape():
    strided, high = multiscale_cam(Pool16(), torch.zeros(0, 3), _views(torch.rand(3, 40, 48)), (40, 48))
    assert strided.shape == (0, 10, 12) and high.shape == (0, 40, 48)


def test_channels_last_weights_give_the_same_maps():
    """make_cam runs with channels-last weights (training.ChannelsLast): only the memory order changes."""
    torch.manual_seed(0)
    trunk = build_backbone("resnet18", weights=None).eval()
    weights = torch.randn(3, trunk.out_channels) * 0.05
    image = np.random.default_rng(0).integers(0, 255, (45, 70, 3), dtype=np.uint8)
    views = multiscale_views(image, [1.0, 0.5, 1.5], (IMAGENET_MEAN, IMAGENET_STD))
    want = multiscale_cam(trunk, weights, views, image.shape[:2])
    got = multiscale_cam(trunk.to(memory_format=torch.channels_last), weights, views, image.shape[:2])
    for g, w in zip(got, want, strict=True):
        assert (g - w).abs().max() < 1e-5


def test_seed_writer_writes_in_the_background_and_raises_a_failed_write(tmp_path, monkeypatch):
    from wsss import cam
    from wsss.io import load_seed

    writer = cam.SeedWriter(tmp_path, pending=2)
    for i in range(5):
        pred = {"id": f"im{i}", "keys": np.array([i]), "high_res": np.full((1, 4, 4), i / 10, np.float32),
                "strided": np.zeros((1, 1, 1), np.float32)}
        writer.write_on_batch_end(None, None, pred, None, None, i, 0)
    writer.flush()
    assert [load_seed(cam.seed_file(tmp_path, f"im{i}"))["keys"].tolist() for i in range(5)] == [[i] for i in range(5)]

    def broken(*args):
        raise OSError("disk full")

    monkeypatch.setattr(cam, "save_seed", broken)
    writer.write_on_batch_end(None, None, {**pred, "id": "bad"}, None, None, 5, 0)
    with pytest.raises(OSError, match="disk full"):
        writer.flush()
