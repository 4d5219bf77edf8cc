"""Grad-CAM++ (Chattopadhay et al., WACV 2018): ReLU(Σ_k w_k A_k) with w_k = Σ_ij α_ij ReLU(g_ij),
α_ij = g_ij² / (2 g_ij² + Σ_ab A_k(a,b) · g_ij³) (0 where g_ij = 0), g = ∂y_c/∂A_k (the closed form for
an exponential score, as both libraries use it; ReLU(g) instead of ReLU(e^y · g), which differs by the
positive factor e^y per view).

torchcam's hooks and backpropagation, our weights: torchcam 0.5.0's GradCAMpp divides α in place on a
boolean-indexed copy, so its α stays g² (tests/test_seed_methods.py shows the difference); pytorch-grad-cam
computes the right α but on numpy copies of one image at a time, normalised."""
from __future__ import annotations

import torch
from torchcam.methods import GradCAMpp

from wsss.seed_methods.layers import one_layer, torchcam_maps

NEEDS_GRAD = True


def gradcampp_weights(activations: torch.Tensor, grads: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """w [B,D] from activations and gradients [B,D,h,w] (the formula above)."""
    g2, g3 = grads.pow(2), grads.pow(3)
    denominator = 2 * g2 + activations.sum((2, 3), keepdim=True) * g3
    alpha = torch.where(grads != 0, g2 / (denominator + eps), torch.zeros_like(grads))
    return (alpha * grads.relu()).sum((2, 3))


class CorrectedGradCAMpp(GradCAMpp):
    def _get_weights(self, class_idx, scores, eps: float = 1e-8, **kwargs):
        self._backprop(scores, class_idx, **kwargs)
        return [gradcampp_weights(a, g, eps) for a, g in zip(self.hook_a, self.hook_g, strict=True)]


def maps(model, images, keys, target_layers=None):
    return torchcam_maps(CorrectedGradCAMpp, model, images, keys, [one_layer(model, target_layers)])
