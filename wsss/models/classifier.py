"""Stage A: the multi-label classifier (algorithms.md §2): trunk → GAP → bias-free 1×1 conv.

The module takes plain hyperparameters only, so its checkpoint rebuilds it on its own and loads
with `torch.load(..., weights_only=True)` (see `load_classifier`).
"""
from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from wsss.errors import UserError
from wsss.models.backbones import build_backbone, normalization_lists


def poly_lambda(total_steps: int, power: float):
    """lr factor before step t: (1 − t/T)^power (the references' PolyOptimizer)."""
    total = max(int(total_steps), 1)
    return lambda t: (1 - min(t, total - 1) / total) ** power


class ClassifierModule(L.LightningModule):
    def __init__(self, num_classes: int, backbone: str = "resnet50", weights: str | None = None,
                 lr: float = 0.1, head_lr_mult: float = 10.0, weight_decay: float = 1e-4,
                 momentum: float = 1e-4, poly_power: float = 0.9, optimizer: str = "sgd", freeze_bn_stats: bool = True,
                 freeze_stem: bool = True, detach_after_layer2: bool = False, mean=None, std=None):
        super().__init__()
        self.save_hyperparameters()
        self.backbone = build_backbone(backbone, weights, freeze_bn_stats, freeze_stem, detach_after_layer2)
        self.classifier = nn.Conv2d(self.backbone.out_channels, num_classes, 1, bias=False)
        self.keep_normalization(mean, std)

    def keep_normalization(self, mean, std) -> None:
        """Record the trunk's input normalisation in the hyperparameters, so that it travels in the
        checkpoint and every stage reads it from there (given values win: a checkpoint's own)."""
        self.hparams.mean, self.hparams.std = normalization_lists(mean, std, self.backbone)

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) of the inputs this model was trained on, in [0, 1] RGB units."""
        return tuple(self.hparams.mean), tuple(self.hparams.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(self.backbone(x))

    def logits(self, feats: torch.Tensor) -> torch.Tensor:
        """GAP then the bias-free 1×1 head: [B,D,h,w] → [B,C]."""
        return self.classifier(feats.mean((2, 3), keepdim=True)).flatten(1)

    def cam_weights(self) -> torch.Tensor:
        """[C, D] weights whose dot product with a feature vector is the class activation."""
        return self.classifier.weight.flatten(1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.multilabel_soft_margin_loss(self(x), y)
        self.log("train_cls/train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(x))
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("train_cls/val/loss", F.multilabel_soft_margin_loss(logits, y), prog_bar=True,
                 batch_size=len(x))
        # exact-match-free metric: share (%) of (image, class) decisions right at p = 0.5
        self.log("train_cls/val/acc", 100 * ((logits > 0).float() == y).float().mean(), batch_size=len(x))

    def configure_optimizers(self):
        hp = self.hparams
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        groups = [{"params": backbone, "lr": hp.lr},
                  {"params": list(self.classifier.parameters()), "lr": hp.lr * hp.head_lr_mult}]
        return poly_optimizer(self, groups, hp.optimizer, hp.weight_decay, hp.momentum, hp.poly_power)


def poly_optimizer(module: L.LightningModule, groups, name: str, weight_decay, momentum, poly_power):
    """The optimiser with a per-step poly schedule over the whole fit.

    `sgd` is the references' recipe: plain L2 weight decay and an *effective* momentum of 1e-4
    (weight decay passed in momentum's position; algorithms.md §2.2), hence momentum=1e-4.
    `adamw` is our deviation for training from random initialisation (the quick synthetic
    default), where the SGD recipe, made for fine-tuning ImageNet weights, barely moves a
    bias-free head in a few hundred steps.
    """
    if name == "sgd":
        opt = torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=momentum, weight_decay=weight_decay)
    elif name == "adamw":
        opt = torch.optim.AdamW(groups, lr=groups[0]["lr"], weight_decay=weight_decay)
    else:
        raise UserError(f"unknown optimizer {name!r}; choose sgd or adamw")
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, poly_lambda(module.trainer.estimated_stepping_batches, poly_power))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def load_checkpoint(path, module_cls):
    """Rebuild a module from its own checkpoint, never unpickling (weights_only=True).

    Initial weights are not fetched again: the checkpoint's state dict replaces them.
    """
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, foreign or pickled files all end here
        raise UserError(f"checkpoint {path} cannot be loaded safely ({e}); re-run the stage that "
                         "wrote it with force=true") from e
    hparams = dict(ckpt.get("hyper_parameters", {}))
    try:
        model = module_cls(**{**hparams, "weights": None})
        model.load_state_dict(ckpt["state_dict"])
    except (TypeError, RuntimeError, KeyError) as e:
        raise UserError(f"checkpoint {path} was not written by {module_cls.__name__} with a matching "
                         f"configuration ({str(e).splitlines()[0]}); re-run its stage with force=true") from e
    return model


def load_classifier(path) -> ClassifierModule:
    return load_checkpoint(path, ClassifierModule)
