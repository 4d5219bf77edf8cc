"""Segmentation networks for train_seg (algorithms.md §8).

- `deeplabv2_resnet*`: DeepLab-v2 as kazuto1011/deeplab-pytorch: ResNet at output stride 8
  (dilated layer3/4), ASPP = sum of four 3×3 convs with dilation 6/12/18/24, and the MSC wrapper
  (inputs at 1, 0.5, 0.75; outputs fused by element-wise max; all four outputs in the loss).
- `deeplabv3_resnet50/101`: torchvision's DeepLab-v3 (no aux head).
- `cls_aspp`: the classifier's own trunk (stride 16) and an ASPP-style head, initialised from the
  train_cls checkpoint: the quick CPU default (a deviation: the references start from ImageNet).
- `small`: a DeepLab-v2-shaped network of ~0.17 M parameters (stride 8, ASPP-style dilated sum)
  that trains in minutes on a CPU; the synthetic default, not a paper model.
Networks return logits at their stride; `SegmentationModule` upsamples them to the image.
"""
from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from wsss.errors import UserError
from wsss.metrics import IGNORE, scores
from wsss.models.backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FixedStatsBatchNorm2d,
    build_backbone,
    build_resnet,
    normalization_lists,
)
from wsss.models.classifier import poly_optimizer

MSC_SCALES = (0.5, 0.75)


class ASPPv2(nn.Module):
    """DeepLab-v2 ASPP: parallel 3×3 convs at several dilations whose outputs are summed."""

    def __init__(self, in_ch: int, num_classes: int, rates):
        super().__init__()
        self.branches = nn.ModuleList(nn.Conv2d(in_ch, num_classes, 3, padding=r, dilation=r) for r in rates)
        for conv in self.branches:
            nn.init.normal_(conv.weight, 0, 0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x):
        return sum(b(x) for b in self.branches)


class DeepLabV2(nn.Module):
    mean, std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(self, depth: int, num_classes: int, weights, rates=(6, 12, 18, 24), freeze_bn: bool = True):
        super().__init__()
        net = getattr(torchvision.models, f"resnet{depth}")(
            weights=None, replace_stride_with_dilation=[False, True, True],
            norm_layer=FixedStatsBatchNorm2d if freeze_bn else nn.BatchNorm2d)
        _copy_weights(net, f"resnet{depth}", weights)
        if freeze_bn:  # "batch-norm frozen" (§8.1): statistics and γ/β, as deeplab-pytorch trains only convs
            for m in net.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.requires_grad_(False)
        self.backbone = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2,
                                      net.layer3, net.layer4)
        self.head = ASPPv2(net.fc.in_features, num_classes, rates)

    def forward(self, x):
        return self.head(self.backbone(x))


class TorchvisionDeepLabV3(nn.Module):
    mean, std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(self, depth: int, num_classes: int, weights):
        super().__init__()
        ctor = getattr(torchvision.models.segmentation, f"deeplabv3_resnet{depth}")
        self.net = ctor(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False)
        _copy_weights(self.net.backbone, f"resnet{depth}", weights)
        self.backbone, self.head = self.net.backbone, self.net.classifier

    def forward(self, x):
        return self.head(self.backbone(x)["out"])


def _block(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallDeepLab(nn.Module):
    """Stride-8 conv net with a dilated layer and a DeepLab-v2 style head; random init, CPU-fast."""

    mean, std = IMAGENET_MEAN, IMAGENET_STD  # any fixed normalisation will do from random init

    def __init__(self, num_classes: int, width: int = 16, rates=(1, 2, 4)):
        super().__init__()
        self.backbone = nn.Sequential(_block(3, width, 2), _block(width, 2 * width, 2),
                                      _block(2 * width, 4 * width, 2), _block(4 * width, 4 * width, 1, 2))
        self.head = ASPPv2(4 * width, num_classes, rates)

    def forward(self, x):
        return self.head(self.backbone(x))


def _copy_weights(net: nn.Module, arch: str, weights) -> None:
    """ImageNet init (`imagenet` = torchvision V1, a weights name, or a local state dict) into a
    dilated trunk: the state dict is the plain ResNet's, only strides/dilations differ."""
    if weights in (None, "none", "random", ""):
        return
    state = {k: v for k, v in build_resnet(arch, weights).state_dict().items() if not k.startswith("fc.")}
    missing, _ = net.load_state_dict(state, strict=False)
    if [k for k in missing if k.split(".")[0] in {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4"}]:
        raise UserError(f"seg.weights={weights}: the trunk misses {missing[:3]}")


class ClassifierTrunkASPP(nn.Module):
    """The train_cls trunk (ResNet or timm at output stride 16, wsss.models.backbones) with an
    ASPP-style head (rates 1/2/4: the maps of small CPU images are ~8×8). Initialised from the
    classifier by train_seg, so it starts from features that already tell the classes apart (image
    labels only); its inputs are normalised as the classifier's."""

    def __init__(self, trunk: str, num_classes: int, freeze_bn: bool):
        super().__init__()
        self.backbone = build_backbone(trunk, None, freeze_bn_stats=freeze_bn, freeze_stem=True)
        self.mean, self.std = self.backbone.mean, self.backbone.std
        self.head = ASPPv2(self.backbone.out_channels, num_classes, (1, 2, 4))

    def forward(self, x):
        return self.head(self.backbone(x))


def build_segmenter(arch: str, num_classes: int, weights=None, freeze_bn: bool = True,
                    trunk: str = "resnet18") -> nn.Module:
    """The network named by `seg.arch`; `num_classes` counts background."""
    if arch == "cls_aspp":
        return ClassifierTrunkASPP(trunk, num_classes, freeze_bn)
    if arch == "small":
        if weights:
            raise UserError("seg.arch=small has no pretrained weights; set seg.weights=null")
        return SmallDeepLab(num_classes)
    if arch in ("deeplabv2_resnet50", "deeplabv2_resnet101"):
        return DeepLabV2(int(arch.removeprefix("deeplabv2_resnet")), num_classes, weights, freeze_bn=freeze_bn)
    if arch in ("deeplabv3_resnet50", "deeplabv3_resnet101"):
        return TorchvisionDeepLabV3(int(arch.removeprefix("deeplabv3_resnet")), num_classes, weights)
    raise UserError(f"seg.arch={arch!r}: choose cls_aspp, small, deeplabv2_resnet50/101 or deeplabv3_resnet50/101")


def msc_outputs(net: nn.Module, x: torch.Tensor, scales=MSC_SCALES) -> tuple[list[torch.Tensor], torch.Tensor]:
    """DeepLab-v2 MSC: (logits at 1 and at each input scale, each at its own size; their max fused
    on the scale-1 grid). Training sums the loss over all of them; inference uses the max."""
    base = net(x)
    pyramid = [net(F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)) for s in scales]
    aligned = [base] + [F.interpolate(p, size=base.shape[2:], mode="bilinear", align_corners=False) for p in pyramid]
    return [base, *pyramid], torch.stack(aligned).max(0).values


class SegmentationModule(L.LightningModule):
    """Trains a segmentation network with cross-entropy (255 ignored) on (pseudo-)label maps.

    Labels are resized (nearest) to each output's size, as DeepLab-v2 does, so the loss is taken
    at the network's stride, unless `full_res_loss` (logits upsampled to the labels, as torchvision's
    references train); predictions are upsampled to the image (bilinear) for evaluation.
    """

    def __init__(self, num_classes: int, arch: str = "small", weights: str | None = None,
                 optimizer: str = "sgd", lr: float = 2.5e-4, head_lr_mult: float = 10.0,
                 head_bias_lr_mult: float = 20.0, weight_decay: float = 5e-4, momentum: float = 0.9,
                 poly_power: float = 0.9, msc: bool = False, freeze_bn: bool = True, trunk: str = "resnet18",
                 full_res_loss: bool = False, mean=None, std=None):
        super().__init__()
        self.save_hyperparameters()
        self.net = build_segmenter(arch, num_classes, weights, freeze_bn, trunk)
        # the network's input normalisation travels in the checkpoint (eval_seg reads it from there)
        self.hparams.mean, self.hparams.std = normalization_lists(mean, std, self.net)
        self._confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return tuple(self.hparams.mean), tuple(self.hparams.std)

    def forward(self, x: torch.Tensor, size=None) -> torch.Tensor:
        """Logits upsampled (once, bilinear) to `size` (default: the input's); MSC max fusion when
        the model was trained with MSC."""
        logits = msc_outputs(self.net, x)[1] if self.hparams.msc else self.net(x)
        return F.interpolate(logits, size=size or x.shape[2:], mode="bilinear", align_corners=False)

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.hparams.msc:
            native, fused = msc_outputs(self.net, x)
            outs = [*native, fused]
        else:
            outs = [self.net(x)]
        if self.hparams.full_res_loss:  # torchvision style: logits upsampled to the labels
            outs = [F.interpolate(o, size=y.shape[1:], mode="bilinear", align_corners=False) for o in outs]
        loss = sum(F.cross_entropy(o, _resize_labels(y, o.shape[2:]), ignore_index=IGNORE) for o in outs)
        self.log("train_seg/train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(x))
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        pred = self(x).argmax(1)
        keep = y != IGNORE
        n = self.hparams.num_classes
        self._confusion += torch.bincount(y[keep] * n + pred[keep], minlength=n * n).reshape(n, n).cpu()

    def on_validation_epoch_end(self):
        conf = self.trainer.strategy.reduce(self._confusion.to(self.device), reduce_op="sum")
        self.log("train_seg/val/miou", 100 * scores(conf.cpu().numpy())["miou"], sync_dist=False)
        self._confusion.zero_()

    def configure_optimizers(self):
        """Backbone at lr, head weights at lr × head_lr_mult, head biases at lr × head_bias_lr_mult
        without weight decay (DeepLab-v2's 1× / 10× / 20×), poly schedule per step."""
        hp = self.hparams
        head_w = [p for n, p in self.net.head.named_parameters() if not n.endswith("bias")]
        head_b = [p for n, p in self.net.head.named_parameters() if n.endswith("bias")]
        groups = [{"params": [p for p in self.net.backbone.parameters() if p.requires_grad], "lr": hp.lr},
                  {"params": head_w, "lr": hp.lr * hp.head_lr_mult}]
        if head_b:
            groups.append({"params": head_b, "lr": hp.lr * hp.head_bias_lr_mult, "weight_decay": 0.0})
        return poly_optimizer(self, groups, hp.optimizer, hp.weight_decay, hp.momentum, hp.poly_power)


def _resize_labels(y: torch.Tensor, size) -> torch.Tensor:
    if tuple(y.shape[1:]) == tuple(size):
        return y
    # nearest-exact samples pixel centres, as PIL's NEAREST in the reference's resize_labels
    return F.interpolate(y[:, None].float(), size=size, mode="nearest-exact")[:, 0].long()
