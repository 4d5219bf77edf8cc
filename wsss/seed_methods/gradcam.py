"""Grad-CAM (Selvaraju et al., ICCV 2017): ReLU(Σ_k w_k A_k) with w_k the mean over positions of ∂y_c/∂A_k,
y_c the class logit, A the target layer (default the trunk's output). Computed by torchcam, unnormalised.
On this classifier (GAP + a bias-free linear head, target = the trunk output) w_k = W_ck / (h·w): Grad-CAM
is CAM up to a positive scale, which the per-class max normalisation removes."""
from __future__ import annotations

from torchcam.methods import GradCAM

from wsss.seed_methods.layers import grid_stride, one_layer, per_class

NEEDS_GRAD = True


def maps(model, images, keys, target_layers=None):
    with GradCAM(model, one_layer(model, target_layers)) as extractor:
        scores = model(images)
        out = per_class(lambda c, keep: extractor(c, scores, normalized=False, retain_graph=keep)[0], keys)
    return out, grid_stride(images, out)
