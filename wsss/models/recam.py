"""ReCAM (Chen et al., CVPR 2022; algorithms.md §5): re-train the classifier jointly with a
softmax cross-entropy (SCE) predictor on CAM-masked, class-specific features.

For image b and class c: Â_c = ReLU(w_bce,c·F) / (max + 1e-5) (no detach), the masked feature
f_bc = (1/hw) Σ_xy Â_c(x,y) F(x,y) (a mean over all positions, computed for all classes with one
einsum: never a B×C×D×h×w tensor), SCE logits s_bc = W_sce f_bc; the SCE loss is taken over the
present classes only. Loss = BCE + λ·SCE, and the SCE gradient reaches the backbone and W_bce.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wsss.errors import UserError
from wsss.models.classifier import ClassifierModule, poly_optimizer


def masked_class_features(features: torch.Tensor, w_bce: torch.Tensor) -> torch.Tensor:
    """[B,D,h,w] features, [C,D] weights → [B,C,D] CAM-weighted mean features (all classes)."""
    cams = F.relu(torch.einsum("bdhw,cd->bchw", features, w_bce))
    cams = cams / (cams.flatten(2).max(-1).values[..., None, None] + 1e-5)
    h, w = features.shape[-2:]
    return torch.einsum("bchw,bdhw->bcd", cams, features) / (h * w)


def sce_loss(class_features: torch.Tensor, w_sce: torch.Tensor, labels: torch.Tensor):
    """Mean over images (with ≥1 label) of the mean CE over their present classes; and accuracy."""
    logits = torch.einsum("bcd,kd->bck", class_features, w_sce)           # [B, C, C]
    b_idx, c_idx = torch.nonzero(labels > 0, as_tuple=True)
    if b_idx.numel() == 0:
        return logits.sum() * 0, torch.tensor(float("nan"))
    loss = per_image_mean_ce(logits[b_idx, c_idx], c_idx, b_idx, labels.shape[0])
    acc = (logits[b_idx, c_idx].argmax(-1) == c_idx).float().mean()
    return loss, acc


def per_image_mean_ce(logits: torch.Tensor, targets: torch.Tensor, images: torch.Tensor, num_images: int):
    """SCE over rows [M, C] with class targets [M] from images [M] (indices < num_images): the CE averaged
    over each image's rows, then over the images that have rows (the reference's loss / batch size)."""
    ce = F.cross_entropy(logits, targets, reduction="none")
    per_image = torch.zeros(num_images, device=ce.device).index_add_(0, images, ce)
    counts = torch.bincount(images, minlength=num_images)
    has = counts > 0
    return (per_image[has] / counts[has]).mean()


class ReCAMModule(ClassifierModule):
    """The classifier plus the bias-free SCE predictor."""

    def __init__(self, num_classes: int, backbone: str = "resnet50", weights: str | None = None,
                 lr: float = 5e-5, head_lr_mult: float = 1.0, sce_lr: float = 5e-4, loss_weight: float = 1.0,
                 weight_decay: float = 1e-4, momentum: float = 1e-4,
                 poly_power: float = 0.9, optimizer: str = "sgd", freeze_bn_stats: bool = True,
                 freeze_stem: bool = True, detach_after_layer2: bool = False, mean=None, std=None):
        super().__init__(num_classes, backbone, weights, lr, head_lr_mult, weight_decay, momentum, poly_power,
                         optimizer, freeze_bn_stats, freeze_stem, detach_after_layer2, mean, std)
        self.save_hyperparameters()
        self.keep_normalization(mean, std)  # save_hyperparameters() replaced the parent's record
        self.sce_head = nn.Conv2d(self.backbone.out_channels, num_classes, 1, bias=False)

    def cam_weights(self, map_weights: str = "product") -> torch.Tensor:
        """ReCAM map weights: W_bce ⊙ W_sce (`product`, the VOC reference) or W_bce (`bce`, COCO)."""
        w_bce = super().cam_weights()
        if map_weights == "product":
            return w_bce * self.sce_head.weight.flatten(1)
        if map_weights == "bce":
            return w_bce
        raise UserError(f"cam.map_weights={map_weights!r}: choose product (VOC reference) or bce (COCO)")

    def training_step(self, batch, batch_idx):
        x, y = batch
        feats = self.backbone(x)
        bce = F.multilabel_soft_margin_loss(self.logits(feats), y)
        sce, acc = sce_loss(masked_class_features(feats, super().cam_weights()), self.sce_head.weight.flatten(1), y)
        loss = bce + self.hparams.loss_weight * sce
        log = {"train_recam/train/loss": loss, "train_recam/train/bce": bce, "train_recam/train/sce": sce,
               "train_recam/train/sce_acc": 100 * acc}  # percent, as every share the pipeline reports
        self.log_dict(log, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(x))
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("train_recam/val/loss", F.multilabel_soft_margin_loss(self(x), y), batch_size=len(x))

    def configure_optimizers(self):
        hp = self.hparams
        groups = [{"params": [p for p in self.backbone.parameters() if p.requires_grad], "lr": hp.lr},
                  {"params": list(self.classifier.parameters()), "lr": hp.lr * hp.head_lr_mult},
                  {"params": list(self.sce_head.parameters()), "lr": hp.sce_lr}]
        return poly_optimizer(self, groups, hp.optimizer, hp.weight_decay, hp.momentum, hp.poly_power)
