"""FD-CAM (Li, Li, Ma & Wu, ICPR 2022, arXiv 2206.08792; code crishhh1998/FD-CAM, src/fdcam.py): Grad-CAM's
weights re-weighted by "grouped channel switching" scores.

For one view, A [D,h,w] the trunk's output, y_c(·) the head's logit of class c on a feature map:

    S_kj  = cos(A_k, A_j)  (the flattened maps; 0 where a channel is all zero)
    G_k   = {k} ∪ {j : S_kj > q_k} ∪ {j : S_kj = q_k > 0},  q_k the `similarity_quantile` θ of row S_k
            (channel k's similarity group)
    s_k   = y_c(A ⊙ 1[G_k]) + (y_c(A) − y_c(A ⊙ 1[not G_k]))   (the group switched on + the drop when off)
    g_k   = mean over positions of ∂y_c/∂A_k                   (Grad-CAM's weight)
    w_k   = exp(ŝ_k) · ĝ_k − `offset`,  ^ = min-max over the D channels
    map_c = ReLU(Σ_k w_k A_k)

On this classifier (GAP + bias-free linear head, W its weights, ā = GAP(A)) the definition reads
s_k = 2 Σ_{j∈G_k} W_cj ā_j and g_k = W_ck/(h·w): the group's share of the class logit, and the class weight.

The authors' settings (src/fdcam.py and src/switch_cam.py; the paper's text was not at hand): the class
logit y_c, not a probability, for both the scores and the gradient (their BaseCAM, grad-cam 1.3.2,
backpropagates the logit); cosine similarity of the flattened maps, NaN → 0; the per-row quantile by
torch.quantile (linear interpolation, the row includes the channel itself), strict ">"; both weight vectors
min-max normalised over channels; w = exp(ŝ)·ĝ − 0.5; their BaseCAM's ReLU of the weighted sum.
θ = 0.95: fdcam.py takes it as an argument without a default; switch_cam.py (the earlier SwitchCAM that their
demo notebook runs) fixes torch.quantile(row, 0.95). Not followed: SwitchCAM's Taylor-series combination
(factor 3) and its reuse of one group's score for all its members — FD-CAM's code has neither.

Choices the paper/code leave open, and why:
- Ties at the quantile. The code's strict ">" is kept where nothing ties with q_k, i.e. on real features
  except at similarity 0 (channels with disjoint supports, all-zero channels) and 1 (duplicates). There:
  k ∈ G_k always, and channels tied at a positive q_k count as above it. Else, once a channel has more
  exact duplicates than the top (1−θ) share holds (3 of 40 channels at θ = 0.95), q_k = 1 and the code's
  group is empty (s_k the logit of the empty map) instead of the duplicates; ties at q_k = 0 (no similar
  channel) stay out, as in the code, so orthogonal channels are groups of one. An all-zero channel's
  group is {k}, its score 0.
- A constant weight vector (max = min) is normalised to 0, not the code's 0/0 = NaN.
- The similarities in single precision even under autocast (make_cam's 16-mixed / bf16-mixed): rounded
  ones would tie at the quantile and change the groups.
- Per view and per present class: the groups (class-free) per view, the scores and gradients per class;
  the normalisation over the channels of one view and class (the code's broadcasting assumes batch 1).
- All D groups in one head call on pooled features: a channel mask is constant over positions, so
  GAP(A ⊙ m) = m ⊙ GAP(A) and y_c(A ⊙ m) = model.logits of the 1×1 map m ⊙ ā — exact for a head that starts
  with GAP, as model.logits does (tests/test_fdcam.py compares it with model.logits(A ⊙ m) group by group).
  The authors run 128 masked maps at a time through VGG16's avgpool + classifier.
- The gradient is taken through the head only (the trunk runs without a graph): ∂y_c/∂A needs nothing
  below A. NEEDS_GRAD all the same, since it backpropagates.
- Only the trunk's output can be the target layer, refused otherwise (UserError): the head is the part of
  the network the switching re-runs; the rest of the trunk after an inner module is no simple callable.

Deviations forced by the seed protocol: the raw map (the ReLU kept, the library's min-max of the map
dropped; seeds are normalised by their max after the scales are summed); present classes only. The
weights lie in [−offset, e − offset] whatever the view, so a view's map scales with A as CAM's does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from wsss.errors import UserError
from wsss.seed_methods.layers import TRUNK, grid_stride

NEEDS_GRAD = True


def similarity(feats: torch.Tensor) -> torch.Tensor:
    """Cosine similarity between the channels' flattened maps: [B,D,h,w] → [B,D,D] (0 for an all-zero channel),
    in single precision under autocast too (half-precision similarities would tie at the quantile)."""
    with torch.autocast(feats.device.type, enabled=False):
        unit = F.normalize(feats.flatten(2).float(), dim=-1)
        return unit @ unit.transpose(1, 2)


def similarity_groups(feats: torch.Tensor, quantile: float) -> torch.Tensor:
    """G [B,D,D] bool, row k = channel k's group: k and the channels above the `quantile` of its similarities
    (or tied with it, if it is positive)."""
    if not 0 <= quantile <= 1:
        raise UserError(f"cam.similarity_quantile={quantile}: a quantile lies in [0, 1] (the authors': 0.95)")
    sim = similarity(feats)
    cut = torch.quantile(sim, quantile, dim=-1, keepdim=True)
    eye = torch.eye(sim.shape[-1], dtype=torch.bool, device=sim.device)
    return (sim > cut) | ((sim == cut) & (cut > 0)) | eye


def switch_scores(model, feats: torch.Tensor, groups: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """s [B,K,D]: each group switched on alone, plus the drop of the logit with it switched off."""
    pooled = feats.mean((2, 3))  # GAP(A ⊙ m) = m ⊙ GAP(A) for a mask m constant over positions
    b, d = pooled.shape

    def logits(masks: torch.Tensor) -> torch.Tensor:  # masks [B,G,D] → y [B,G,K]
        return model.logits((masks * pooled[:, None]).reshape(-1, d, 1, 1))[:, keys].reshape(b, -1, len(keys))

    full = logits(torch.ones_like(pooled)[:, None])
    on, off = logits(groups.to(pooled.dtype)), logits((~groups).to(pooled.dtype))
    return (on + full - off).transpose(1, 2)


def gradient_weights(model, feats: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """g [B,K,D]: Grad-CAM's weight, the positions' mean of ∂y_c/∂A, backpropagated through the head only."""
    with torch.enable_grad():
        f = feats.detach().requires_grad_(True)
        y = model.logits(f)[:, keys]
        grads = [torch.autograd.grad(y[:, i].sum(), f, retain_graph=i < len(keys) - 1)[0] for i in range(len(keys))]
    return torch.stack(grads, 1).mean((3, 4))


def minmax(x: torch.Tensor) -> torch.Tensor:
    """Min-max over the last dimension (channels); 0 where it is constant."""
    lo, hi = x.amin(-1, keepdim=True), x.amax(-1, keepdim=True)
    span = hi - lo
    return torch.where(span > 0, (x - lo) / torch.where(span > 0, span, torch.ones_like(span)), torch.zeros_like(x))


def combined_weights(scores: torch.Tensor, grads: torch.Tensor, offset: float) -> torch.Tensor:
    """w = exp(ŝ)·ĝ − offset, ^ = min-max over channels."""
    return minmax(scores).exp() * minmax(grads) - offset


def maps(model, images, keys, target_layers=None, similarity_quantile: float = 0.95, offset: float = 0.5):
    if target_layers and list(target_layers) != [TRUNK]:
        raise UserError(f"cam=fdcam reads the trunk's output (target_layers [{TRUNK}]), not {list(target_layers)}: "
                        "the head is the part of the network its channel switching re-runs")
    with torch.no_grad():
        feats = model.backbone(images).float()
        groups = similarity_groups(feats, similarity_quantile)
        scores = switch_scores(model, feats, groups, keys).float()
    weights = combined_weights(scores, gradient_weights(model, feats, keys).float(), offset)
    out = F.relu(torch.einsum("bkd,bdhw->bkhw", weights, feats))
    return out, grid_stride(images, out)
