"""Trunks for every stage that has one (train_cls, train_recam, make_cam, seg=cls_aspp).

One config choice, `cls.backbone`: a torchvision ResNet name (`resnet.py`, the IRN-exact stride-16
path) or any timm model name (`timm_trunk.py`; EfficientNet-Lite0/Lite2 have offline ImageNet
weights, `weights.py`), or a timm ViT / DeiT (`vit_trunk.py`: patch tokens as a stride-16 map). Every trunk returns stride-16 features and carries its input normalisation
(`mean`, `std`), which the modules store in their checkpoints.
"""
from __future__ import annotations

from torch import nn

from wsss.models.backbones.frozen_bn import FixedStatsBatchNorm2d, freeze_bn_statistics
from wsss.models.backbones.resnet import IMAGENET_MEAN, IMAGENET_STD, RESNETS, ResNetTrunk, build_resnet
from wsss.models.backbones.timm_trunk import TimmTrunk
from wsss.models.backbones.vit_trunk import ViTTrunk, is_vit

__all__ = ["FixedStatsBatchNorm2d", "IMAGENET_MEAN", "IMAGENET_STD", "RESNETS", "build_backbone", "build_resnet",
           "freeze_bn_statistics", "normalization_lists"]


def build_backbone(name: str = "resnet50", weights=None, freeze_bn_stats: bool = True, freeze_stem: bool = True,
                   detach_after_layer2: bool = False) -> nn.Module:
    """The trunk `name` (ResNet or timm) with `weights` (packaged | imagenet | a file | none)."""
    trunk = ResNetTrunk if name in RESNETS else ViTTrunk if is_vit(name) else TimmTrunk
    return trunk(name, weights, freeze_bn_stats, freeze_stem, detach_after_layer2)


def normalization_lists(mean, std, net: nn.Module) -> tuple[list[float], list[float]]:
    """(mean, std) as plain lists for a checkpoint's hyperparameters: the given values (a checkpoint's
    own, when it is rebuilt) or else the network's."""
    return ([float(v) for v in (mean if mean is not None else net.mean)],
            [float(v) for v in (std if std is not None else net.std)])
