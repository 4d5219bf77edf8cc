"""XGrad-CAM (Fu et al., BMVC 2020): ReLU(Σ_k w_k A_k) with w_k = Σ_ij (A_k(i,j) / Σ_ab A_k(a,b)) · ∂y_c/∂A_k(i,j),
the activation-weighted gradient. Computed by torchcam, unnormalised."""
from __future__ import annotations

from torchcam.methods import XGradCAM

from wsss.seed_methods.layers import one_layer, torchcam_maps

NEEDS_GRAD = True


def maps(model, images, keys, target_layers=None):
    return torchcam_maps(XGradCAM, model, images, keys, [one_layer(model, target_layers)])
