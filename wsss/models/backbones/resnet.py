"""torchvision ResNets with the reference changes of algorithms.md §2.1.

- output stride 16: layer4's first block gets stride 1 and *no* dilation (not torchvision's
  `replace_stride_with_dilation`, which would dilate);
- optional frozen BN statistics (every BN always normalises with its stored running mean/var;
  γ/β stay trainable), frozen conv1/bn1, and IRN's stop-gradient after layer2.
Inputs are normalised with the ImageNet mean/std of torchvision's weights.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn

from wsss.errors import UserError
from wsss.models.backbones.frozen_bn import freeze_bn_statistics
from wsss.models.backbones.weights import download_failed, is_none

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_resnet(name: str, weights: str | None) -> nn.Module:
    """A torchvision ResNet with `weights`: 'imagenet' (torchvision's V1 weights, as the references),
    a torchvision weights enum name (e.g. IMAGENET1K_V2), a local state-dict path, or None (random,
    torchvision's default initialisation).
    """
    if name not in RESNETS:
        raise UserError(f"unknown backbone {name!r}; choose one of {RESNETS} or a timm model name")
    if is_none(weights):
        return getattr(torchvision.models, name)(weights=None)
    if weights == "packaged":
        raise UserError(f"cls.weights=packaged: no ImageNet weights for {name} ship with a Python package; use "
                        "backbone tf_efficientnet_lite0/tf_efficientnet_lite2, or weights imagenet (download)")
    if weights == "imagenet" or weights.isupper():
        enum = torchvision.models.get_model_weights(name)
        chosen = enum.IMAGENET1K_V1 if weights == "imagenet" else enum[weights]
        try:
            return getattr(torchvision.models, name)(weights=chosen)  # downloads on first use
        except OSError as e:  # urllib's URLError is an OSError
            file = Path(chosen.url).name
            raise download_failed(f"{name} {chosen}", e, Path(torch.hub.get_dir()) / "checkpoints" / file,
                                  chosen.url) from e
    path = Path(weights).expanduser()
    if not path.exists():
        raise UserError(f"backbone weights {path} not found; pass 'imagenet', a torchvision "
                        "weights name, a local .pth state dict, or none")
    net = getattr(torchvision.models, name)(weights=None)
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    missing, unexpected = net.load_state_dict(state, strict=False)
    if [k for k in missing if not k.startswith("fc.")] or unexpected:
        raise UserError(f"{path} does not hold {name} weights (missing {missing[:3]}, unexpected "
                        f"{unexpected[:3]})")
    return net


class ResNetTrunk(nn.Module):
    """ResNet trunk returning the stride-16 layer4 features (no pooling, no fc)."""

    mean, std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(self, name: str = "resnet50", weights: str | None = None, freeze_bn_stats: bool = True,
                 freeze_stem: bool = True, detach_after_layer2: bool = False):
        super().__init__()
        net = build_resnet(name, weights)
        block = net.layer4[0]
        (block.conv2 if hasattr(block, "conv3") else block.conv1).stride = (1, 1)  # stride on the 3×3
        block.downsample[0].stride = (1, 1)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.out_channels = net.fc.in_features
        self.detach_after_layer2 = detach_after_layer2
        if freeze_bn_stats:  # algorithms.md §10.2: BN statistics frozen always
            freeze_bn_statistics(self)
        if freeze_stem:
            for p in list(net.conv1.parameters()) + list(net.bn1.parameters()):
                p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.stem(x)))
        if self.detach_after_layer2:
            x = x.detach()
        return self.layer4(self.layer3(x))

    def stage_names(self, min_stride: int = 8) -> list[str]:
        """The stage outputs from stride `min_stride` on, before the trunk's own output (layer4)."""
        strides = {"layer1": 4, "layer2": 8, "layer3": 16}
        return [n for n, s in strides.items() if s >= min_stride]

    def stage_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """IRN's five stage outputs: the stem after max-pooling (/4), layer1 (/4), layer2 (/8), layer3, layer4 (/16)."""
        feats = [self.stem(x)]
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            feats.append(layer(feats[-1]))
        return feats
