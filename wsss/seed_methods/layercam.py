"""LayerCAM (Jiang et al., TIP 2021): per layer l, M_l = ReLU(Σ_k ReLU(∂y_c/∂A_k) ⊙ A_k) (torchcam,
unnormalised); several layers fused as the paper's Eq. 9: the shallower layers' maps scaled to
tanh(γ · M_l / max M_l), the deepest's to M_L / max M_L, all resized (bilinear) to the finest layer's grid
and fused by their element-wise maximum (torchcam's `fuse_cams` scales with tanh(γ · M) instead, which
depends on the map's units). With one layer the raw map is kept.

Default layers (`cam.target_layers: null`): the trunk's stage outputs at strides 8 and 16, then its output
(EfficientNet-Lite0: blocks 2, 4, 6 and the head convolution; ResNet: layer2, layer3, layer4). The list
runs shallow to deep: the last one is not tanh-scaled."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchcam.methods import LayerCAM

from wsss.seed_methods.layers import resolve_layers, stage_layers, torchcam_maps

NEEDS_GRAD = True


def fuse_layers(cams: list[torch.Tensor], gamma: float) -> torch.Tensor:
    """[B,h,w] maps of several layers (shallow to deep) → one map on the finest grid."""
    if len(cams) == 1:
        return cams[0]
    size = max((c.shape[-2:] for c in cams), key=lambda s: s[0] * s[1])
    fused = None
    for i, cam in enumerate(cams):
        cam = cam / (cam.flatten(1).max(1).values[:, None, None] + 1e-5)
        if i < len(cams) - 1:
            cam = torch.tanh(gamma * cam)
        cam = F.interpolate(cam[:, None], size, mode="bilinear", align_corners=False)[:, 0]
        fused = cam if fused is None else torch.maximum(fused, cam)
    return fused


def maps(model, images, keys, target_layers=None, gamma: float = 2.0):
    layers = resolve_layers(model, target_layers or stage_layers(model))
    return torchcam_maps(LayerCAM, model, images, keys, layers, lambda cams: fuse_layers(cams, gamma))
