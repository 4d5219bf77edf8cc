"""torchvision ResNets with the reference changes of algorithms.md §2.1.

- output stride 16: layer4's first block gets stride 1 and *no* dilation (not torchvision's
  `replace_stride_with_dilation`, which would dilate);
- optional frozen BN statistics (every BN always normalises with its stored running mean/var;
  γ/β stay trainable), frozen conv1/bn1, and IRN's stop-gradient after layer2.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from wsss.errors import UserError

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")


def build_resnet(name: str, weights: str | None) -> nn.Module:
    """A torchvision ResNet with `weights`: 'imagenet' (torchvision's V1 weights, as the references),
    a torchvision weights enum name (e.g. IMAGENET1K_V2), a local state-dict path, or None (random,
    torchvision's default initialisation).
    """
    if name not in RESNETS:
        raise UserError(f"unknown backbone {name!r}; choose one of {RESNETS}")
    if weights in (None, "none", "random", ""):
        return getattr(torchvision.models, name)(weights=None)
    if weights == "imagenet" or weights.isupper():
        enum = torchvision.models.get_model_weights(name)
        chosen = enum.IMAGENET1K_V1 if weights == "imagenet" else enum[weights]
        return getattr(torchvision.models, name)(weights=chosen)  # downloads on first use
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


class FixedStatsBatchNorm2d(nn.BatchNorm2d):
    """BN that always normalises with its stored running statistics and never updates them,
    whatever its `training` flag (Lightning restores flags per module, bypassing `train()`).
    γ and β stay ordinary trainable parameters, as in the references."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


class Backbone(nn.Module):
    """ResNet trunk returning the stride-16 layer4 features (no pooling, no fc)."""

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
            for m in self.modules():
                if type(m) is nn.BatchNorm2d:
                    m.__class__ = FixedStatsBatchNorm2d  # same parameters and buffers, same state dict
        if freeze_stem:
            for p in list(net.conv1.parameters()) + list(net.bn1.parameters()):
                p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.stem(x)))
        if self.detach_after_layer2:
            x = x.detach()
        return self.layer4(self.layer3(x))
