"""Grad-CAM (Selvaraju et al., ICCV 2017): ReLU(Σ_k w_k A_k) with w_k the mean over positions of ∂y_c/∂A_k,
y_c the class logit, A the target layer (default the trunk's output). Computed by torchcam, unnormalised.
On this classifier (GAP + a bias-free linear head, target = the trunk output) w_k = W_ck / (h·w): per view
Grad-CAM is CAM × 1/(h·w), so summed over scales the smaller scales weigh more than in CAM's sum."""
from __future__ import annotations

from torchcam.methods import GradCAM

from wsss.seed_methods.layers import one_layer, torchcam_maps

NEEDS_GRAD = True


def maps(model, images, keys, target_layers=None):
    return torchcam_maps(GradCAM, model, images, keys, [one_layer(model, target_layers)])
