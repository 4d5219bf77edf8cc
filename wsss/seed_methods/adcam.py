"""AD-CAM (Huang, Wang, Sun, Zhang, arXiv 2211.10931, "Attention-based Class Activation Diffusion for WSSS").

The definition in our words: the CAM of each present class is diffused over an affinity between positions, in
proportion to that affinity, like a random walk, after the affinity is refined so that two positions stay strongly
related only when they relate to common neighbours ("conservative": pixels with different neighbourhoods rarely
depend on each other; "convincing": activation moves where the attention says). Not multiplication by attention,
which the paper finds to add false positives. No public code was found; the paper's method section was not at
hand here, so every step below is our reading of its stated intent, and every open choice is a config key
(conf/cam/adcam.yaml) with our value:

1. Affinity A [N, N] over the stride-16 positions of one view, per scale:
   - `affinity: attention` (the paper's, ViT trunks): the patch-to-patch block of the blocks' attention matrices
     (`attention_blocks`: which blocks, null = all), averaged over heads and blocks, rows renormalised to sum
     to 1 after the class token's column is left out (our choices);
   - `affinity: features` (our named deviation, for CNN trunks): softmax over j of cos(f_i, f_j) / `temperature`
     on the trunk's stride-16 features, i.e. attention-like rows (non-negative, summing to 1) sharpened by the
     temperature as softmax sharpens a ViT's attention.
2. Refinement: R_ij = A_ij · cos(A_i, A_j), the cosine between the two rows (their attention to every position):
   0 when i and j share no neighbour, 1 when they attend alike. A symmetric A gives a symmetric R.
   R is raised to `beta` (1 = as refined).
3. Diffusion: P = R with rows normalised to 1 (each position hands its activation to the others in proportion to
   its refined affinity); the CAM x [K, N] becomes x·P^t after t = `steps` steps. Each step conserves every class's
   total activation (Σ_j (xP)_j = Σ_i x_i), and a position's activation never leaves a block of positions closed
   off by zero affinity.
4. The diffused maps replace the CAM (ReLU'd as CAM, already ≥ 0) and are combined over flips and scales as every
   method's (wsss/cam.py): the per-class max normalisation afterwards makes the conserved scale irrelevant.

`base` (default cam) names the method whose stride-16 maps are diffused: AD-CAM diffuses CAM; any other
per-scale method on the trunk's grid (fdcam, gradcam, xgradcam, scorecam, …; with its default settings) can be
diffused the same way, a refinement of its seeds (a second trunk forward for the affinity, without gradients).
Not offered: bases that own the multi-scale loop (infercam) or read a stored preparation (lpcam).

Memory: N = ⌈h/16⌉·⌈w/16⌉ positions per view, a few N×N float32 matrices (a 500×375 photo at scale 1.5: N = 1,692,
~11 MB each). With `affinity: features`, a grid of more than `max_positions` cells is first average-pooled to fit
(the maps diffused there and resized back), so a large photo stays within a few (max_positions)² matrices. With
attention, the ViT has already held its own N×N matrices per head.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from wsss.cam import activation
from wsss.errors import UserError

NEEDS_GRAD = False


def maps(model: nn.Module, images: torch.Tensor, keys: torch.Tensor, affinity: str = "features",
         attention_blocks=None, temperature: float = 0.1, beta: float = 1.0, steps: int = 8,
         max_positions: int = 4096, base: str = "cam"):
    if affinity not in ("attention", "features"):
        raise UserError(f"cam.affinity={affinity!r}: choose attention (a ViT trunk's) or features (the trunk's "
                        "stride-16 features, for CNN trunks)")
    with torch.no_grad():
        if affinity == "attention":
            from wsss.models.backbones.vit_trunk import attention_maps

            with attention_maps(model.backbone, attention_blocks) as recorded:
                feats = model.backbone(images)
            aff, grid = patch_attention(recorded, model.backbone.prefix_tokens), feats.shape[-2:]
        else:
            feats = model.backbone(images)
            small = pooled_to_fit(feats, max_positions)
            aff, grid = feature_affinity(small, temperature), small.shape[-2:]
        transition = diffusion_matrix(refine_affinity(aff), beta)
    cams = base_maps(model, images, keys, feats, base)
    if tuple(grid) == tuple(cams.shape[-2:]):
        return diffuse(cams, transition, steps), 16
    out = diffuse(F.adaptive_avg_pool2d(cams, grid), transition, steps)  # a large photo: diffused on the pooled grid
    return F.interpolate(out, cams.shape[-2:], mode="bilinear", align_corners=False).clamp_min(0), 16


def base_maps(model, images, keys, feats, base: str) -> torch.Tensor:
    """The stride-16 maps to diffuse: CAM from the trunk's features already computed, or another method's maps
    with that method's default settings."""
    if base == "cam":
        return activation(feats, model.cam_weights()[keys]).detach()
    from wsss.seed_methods import method_module

    if base == "adcam":
        raise UserError("cam.base=adcam: choose the method whose maps AD-CAM diffuses (cam, fdcam, lpcam, …)")
    module = method_module(base)
    if getattr(module, "image_maps", None) is not None or getattr(module, "PREPARED_BY", None):
        raise UserError(f"cam.base={base}: {base} needs more than one scale's views (its own multi-scale loop or a "
                        "stored preparation); AD-CAM diffuses a per-scale method's maps (cam, fdcam, gradcam, …)")
    with torch.enable_grad() if module.NEEDS_GRAD else torch.no_grad():
        out, stride = module.maps(model, images, keys)
    if stride != 16:
        raise UserError(f"cam.base={base} gives maps on a stride-{stride} grid; AD-CAM diffuses stride-16 maps "
                        "(the trunk's output)")
    return out.detach()


def patch_attention(recorded, prefix_tokens: int) -> torch.Tensor:
    """[B, N, N] patch-to-patch attention: heads and recorded blocks averaged, the prefix (class) tokens' rows
    and columns left out, rows renormalised to sum to 1."""
    if not recorded or any(a is None for a in recorded):
        raise UserError("no attention was recorded: the trunk's blocks did not run their attention")
    att = torch.stack([a.float().mean(1) for a in recorded]).mean(0)[:, prefix_tokens:, prefix_tokens:]
    return att / att.sum(-1, keepdim=True).clamp_min(1e-12)


def feature_affinity(features: torch.Tensor, temperature: float) -> torch.Tensor:
    """[B, N, N] softmax_j(cos(f_i, f_j) / temperature) on features [B, D, h, w] (positions row-major)."""
    if temperature <= 0:
        raise UserError(f"cam.temperature={temperature} must be > 0")
    f = F.normalize(features.float().flatten(2), dim=1)  # [B, D, N]
    return (torch.einsum("bdi,bdj->bij", f, f) / temperature).softmax(-1)


def refine_affinity(aff: torch.Tensor) -> torch.Tensor:
    """R_ij = A_ij · cos(A_i·, A_j·): an affinity kept only as far as the two positions attend to common
    neighbours ([B, N, N] → [B, N, N])."""
    rows = F.normalize(aff, dim=-1)
    return aff * torch.bmm(rows, rows.transpose(1, 2)).clamp(0, 1)


def diffusion_matrix(refined: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Rows of R^β normalised to 1: row i says how position i's activation is handed to every position."""
    r = refined.pow(beta) if beta != 1 else refined
    return r / r.sum(-1, keepdim=True).clamp_min(1e-12)


def diffuse(cams: torch.Tensor, transition: torch.Tensor, steps: int) -> torch.Tensor:
    """maps [B, K, h, w] after `steps` hand-overs x ← x·P ([B, N, N] row-stochastic): each step keeps every
    class's total."""
    if steps < 0:
        raise UserError(f"cam.steps={steps} must be ≥ 0")
    b, k, h, w = cams.shape
    x = cams.float().flatten(2)
    for _ in range(int(steps)):
        x = torch.bmm(x, transition)
    return x.reshape(b, k, h, w)


def pooled_to_fit(features: torch.Tensor, max_positions: int) -> torch.Tensor:
    """Features average-pooled to the largest grid of the same aspect with at most `max_positions` cells
    (unchanged when they fit)."""
    h, w = features.shape[-2:]
    if h * w <= max_positions:
        return features
    f = math.sqrt(max_positions / (h * w))
    return F.adaptive_avg_pool2d(features, (max(1, int(h * f)), max(1, int(w * f))))
