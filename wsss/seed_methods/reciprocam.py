"""Recipro-CAM (Byun & Lee, arXiv 2209.14074): gradient-free. For every position p of the trunk's feature map
F, the "mosaic" feature map F ⊙ M_p keeps only the features around p (M_p: the authors' 3×3 Gaussian
centred on p, cut at the border, or a one-hot cell with `kernel: onehot`) and is re-fed to the head; the
map at p is the class probability of that output (`probability`: softmax over classes as the paper, or
sigmoid). Raw map here: p_c(F ⊙ M_p) − p_c(0), the gain over the fully masked feature map, with ReLU —
the paper min-max normalises instead, which the per-class max normalisation of seeds cannot follow.

The head starts with global average pooling, so GAP(F ⊙ M_p) = (F ⋆ g)(p) / (h·w): the mosaic batch of
h·w maps (h·w × the feature map's memory) is computed as one 3×3 depthwise convolution; the result is the
definition's (tests/test_seed_methods.py builds the mosaics). Only the trunk's output can be the target
layer: the head is the "tail" the method re-feeds. No torchcam / pytorch-grad-cam version exists."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from wsss.errors import UserError
from wsss.seed_methods.layers import TRUNK, grid_stride, probabilities

NEEDS_GRAD = False
GAUSSIAN = torch.tensor([[1 / 16, 1 / 8, 1 / 16], [1 / 8, 1 / 4, 1 / 8], [1 / 16, 1 / 8, 1 / 16]])


def pooled_mosaics(feats: torch.Tensor, kernel: str) -> torch.Tensor:
    """GAP(F ⊙ M_p) for every position p: [B,D,h,w] → [B,D,h,w] (the value at p is mosaic p's pooled feature)."""
    h, w = feats.shape[-2:]
    if kernel == "onehot":
        return feats / (h * w)
    if kernel != "gaussian":
        raise UserError(f"cam.kernel={kernel!r}: choose gaussian (the authors') or onehot")
    g = GAUSSIAN.to(feats)[None, None].expand(feats.shape[1], 1, 3, 3)
    return F.conv2d(feats, g, padding=1, groups=feats.shape[1]) / (h * w)


def maps(model, images, keys, kernel: str = "gaussian", probability: str = "softmax", target_layers=None):
    if target_layers and list(target_layers) != [TRUNK]:
        raise UserError(f"cam=reciprocam reads the trunk's output (target_layers [{TRUNK}]), not {list(target_layers)}: "
                        "the head is the part of the network it re-feeds")
    pooled = pooled_mosaics(model.backbone(images), kernel)
    b, d, h, w = pooled.shape
    logits = model.logits(pooled.permute(0, 2, 3, 1).reshape(b * h * w, d, 1, 1))  # GAP of a 1×1 map: itself
    prob = probabilities(logits, probability)[:, keys].reshape(b, h, w, len(keys)).permute(0, 3, 1, 2)
    base = probabilities(model.logits(pooled.new_zeros(1, d, 1, 1)), probability)[0, keys]
    out = F.relu(prob - base[None, :, None, None])
    return out, grid_stride(images, out)
