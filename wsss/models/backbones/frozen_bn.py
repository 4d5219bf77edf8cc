"""Frozen BatchNorm statistics for any trunk (algorithms.md §2.1, pitfall 2).

A frozen BN always normalises with its stored running mean/var and never updates them, in train
and eval alike; γ/β stay ordinary parameters. It is done by giving the BN a `training` flag that
reads False whatever is set: Lightning restores `training` per module (bypassing `train()`), and
timm's fused BN + activation layers (`BatchNormAct2d`) read the same flag, so one mechanism covers
torchvision's `BatchNorm2d` and timm's layers without copying their forward code.
"""
from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class FixedStats:
    """Mixin before a BN class: `training` is always False (setting it is ignored)."""

    @property
    def training(self) -> bool:
        return False

    @training.setter
    def training(self, value: bool) -> None:
        pass


class FixedStatsBatchNorm2d(FixedStats, nn.BatchNorm2d):
    """torchvision's BN with frozen statistics (also usable as a `norm_layer`)."""


_FROZEN: dict[type, type] = {nn.BatchNorm2d: FixedStatsBatchNorm2d}


def frozen_class(cls: type) -> type:
    """The frozen-statistics variant of a BN class (made once per class, same state dict)."""
    if issubclass(cls, FixedStats):
        return cls
    if cls not in _FROZEN:
        name = f"FixedStats{cls.__name__}"
        _FROZEN[cls] = globals()[name] = type(name, (FixedStats, cls), {"__module__": __name__})  # picklable by name
    return _FROZEN[cls]


def freeze_bn_statistics(module: nn.Module) -> int:
    """Freeze the statistics of every BN below `module` in place; returns how many."""
    count = 0
    for m in module.modules():
        if isinstance(m, _BatchNorm):
            m.__class__ = frozen_class(type(m))
            count += 1
    return count
