"""CAM (Zhou et al., CVPR 2016) and ReCAM's maps (Chen et al., CVPR 2022): ReLU(W·F) on the trunk's
stride-16 features F, with the classifier's weights W (ReCAM: W_bce ⊙ W_sce, `map_weights`).
Written out (wsss/cam.py `activation`): the references' exact computation, which the independent check
compares against; torchcam's CAM reads the weights from a fully connected layer, ours is a 1×1 conv."""
from __future__ import annotations

import torch
from torch import nn

from wsss.cam import activation

NEEDS_GRAD = False


def maps(model: nn.Module, images: torch.Tensor, keys: torch.Tensor, map_weights: str | None = None):
    weights = model.cam_weights() if map_weights is None else model.cam_weights(map_weights)
    return activation(model.backbone(images), weights[keys]), 16
