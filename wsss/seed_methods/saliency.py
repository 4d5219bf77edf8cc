"""Vanilla gradient saliency (Simonyan et al., ICLR-W 2014): max over the colour channels of |∂y_c/∂x|,
y_c the class logit, at every input pixel (stride 1). A pixel-gradient baseline: no ReLU (|·| is ≥ 0).
Neither torchcam nor pytorch-grad-cam has it."""
from __future__ import annotations

import torch

from wsss.seed_methods.layers import per_class

NEEDS_GRAD = True


def input_gradient_maps(model, images, keys) -> torch.Tensor:
    """[B,K,H,W]: max over colour channels of |∂y_c/∂x| for each present class c."""
    x = images.detach().requires_grad_(True)
    scores = model(x)
    return per_class(lambda c, keep: torch.autograd.grad(scores[:, c].sum(), x, retain_graph=keep)[0].abs().amax(1),
                     keys)


def maps(model, images, keys):
    return input_gradient_maps(model, images, keys), 1
