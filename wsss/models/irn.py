"""IRN's boundary network (algorithms.md §7.2, `net/resnet50_irn.py`): a frozen ImageNet trunk and the
class-boundary branch trained from inter-pixel relations; the displacement branch (instances) is left out.

The trunk is the ImageNet one, not the CAM network (as IRN): `backbone`/`weights` name it (by default the
classifier's architecture with its ImageNet weights). It is frozen whole: no gradients, BN and everything
else in eval mode, its outputs detached. Per stage output from stride 4 on (`stage_features`; ResNets:
IRN's five, 64/256/512/1024/2048 channels; timm trunks: their feature levels), a 1×1 conv (no bias) to 32
channels + GroupNorm(4) (+ bilinear upsampling to stride 4, cropped) + ReLU; the concatenation goes through
a 1×1 conv with bias to one boundary logit at stride 4. Affinities are 1 − max sigmoid(logit) on each pair's
path (wsss/affinity.py), trained with IRN's balanced loss on the IR labels' pairs within radius 10.
"""
from __future__ import annotations

import math

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from wsss.affinity import affinity_loss, pair_labels, pair_set, path_affinity
from wsss.models.backbones import build_backbone, normalization_lists
from wsss.models.classifier import load_checkpoint, poly_optimizer

BRANCH_CHANNELS = 32


class BoundaryNet(nn.Module):
    def __init__(self, backbone: str, weights):
        super().__init__()
        self.trunk = build_backbone(backbone, weights, freeze_bn_stats=True, freeze_stem=True)
        self.trunk.requires_grad_(False)
        self.trunk.eval()
        with torch.no_grad():
            probe = self.trunk.stage_features(torch.zeros(1, 3, 64, 64))
        self.reductions = [64 // f.shape[-1] for f in probe]
        if min(self.reductions) != 4:
            raise ValueError(f"{backbone}: the boundary branch needs stage outputs at stride 4, got {self.reductions}")
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(f.shape[1], BRANCH_CHANNELS, 1, bias=False), nn.GroupNorm(4, BRANCH_CHANNELS))
            for f in probe)
        self.fuse = nn.Conv2d(BRANCH_CHANNELS * len(probe), 1, 1, bias=True)

    def train(self, mode: bool = True):
        super().train(mode)
        self.trunk.eval()  # frozen, as IRN's backbone (its dropout / drop-path off too)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Boundary logits [B, 1, ⌈H/4⌉, ⌈W/4⌉]."""
        with torch.no_grad():
            feats = self.trunk.stage_features(x)
        size = feats[self.reductions.index(4)].shape[-2:]
        outs = []
        for f, branch, r in zip(feats, self.branches, self.reductions, strict=True):
            y = branch(f.detach())
            if r > 4:  # IRN: upsample by the scale factor, then crop to the stride-4 size; ReLU last
                y = F.interpolate(y, scale_factor=r // 4, mode="bilinear", align_corners=False)
            outs.append(F.relu(y[..., :size[0], :size[1]]))
        return self.fuse(torch.cat(outs, 1))


class IRNModule(L.LightningModule):
    """Trains the boundary branch on (image crop, IR label at stride 4) batches."""

    def __init__(self, backbone: str = "resnet50", weights=None, radius: int = 10, lr: float = 0.1,
                 weight_decay: float = 1e-4, momentum: float = 1e-4, poly_power: float = 0.9, mean=None, std=None):
        super().__init__()
        self.save_hyperparameters()
        self.net = BoundaryNet(backbone, weights)
        self.hparams.mean, self.hparams.std = normalization_lists(mean, std, self.net.trunk)
        self.pairs = pair_set(radius)

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return tuple(self.hparams.mean), tuple(self.hparams.std)

    def training_step(self, batch, batch_idx):
        x, label = batch
        boundary = torch.sigmoid(self.net(x))[:, 0]
        if boundary.shape[-2:] != label.shape[-2:]:
            raise ValueError(f"boundary map {tuple(boundary.shape[-2:])} vs labels {tuple(label.shape[-2:])}: the "
                             "crop size must be a multiple of 4")
        losses = affinity_loss(path_affinity(boundary, self.pairs), *pair_labels(label, self.pairs))
        for name, value in losses.items():
            self.log(f"train_irn/train/{name}", value, prog_bar=name == "loss", on_step=True, on_epoch=True,
                     batch_size=len(x))
        return losses["loss"]

    def configure_optimizers(self):
        hp = self.hparams
        params = [p for p in self.net.parameters() if p.requires_grad]
        return poly_optimizer(self, [{"params": params, "lr": hp.lr}], "sgd", hp.weight_decay, hp.momentum,
                              hp.poly_power)

    @torch.no_grad()
    def boundary(self, image: torch.Tensor) -> torch.Tensor:
        """IRN's inference boundary map [⌈H/4⌉, ⌈W/4⌉] of one normalised image [3, H, W]: the image and its
        flip at scale 1, B = sigmoid(½ logit(image) + ½ flip_back(logit(flipped)))."""
        logits = self.net(torch.stack([image, image.flip(-1)]))[:, 0]
        h, w = math.ceil(image.shape[-2] / 4), math.ceil(image.shape[-1] / 4)
        return torch.sigmoid(logits[0] / 2 + logits[1].flip(-1) / 2)[:h, :w]


def load_irn(path) -> IRNModule:
    return load_checkpoint(path, IRNModule)
