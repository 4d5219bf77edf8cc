"""XGrad-CAM (Fu et al., BMVC 2020): ReLU(Σ_k w_k A_k) with w_k = Σ_ij (A_k(i,j) / Σ_ab A_k(a,b)) · ∂y_c/∂A_k(i,j),
the activation-weighted gradient. Computed by torchcam, unnormalised."""
from __future__ import annotations

from torchcam.methods import XGradCAM

from wsss.seed_methods.layers import grid_stride, one_layer, per_class

NEEDS_GRAD = True


def maps(model, images, keys, target_layers=None):
    with XGradCAM(model, one_layer(model, target_layers)) as extractor:
        scores = model(images)
        out = per_class(lambda c, keep: extractor(c, scores, normalized=False, retain_graph=keep)[0], keys)
    return out, grid_stride(images, out)
