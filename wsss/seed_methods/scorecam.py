"""Score-CAM (Wang et al., CVPR-W 2020): ReLU(Σ_k w_k A_k), gradient-free. Each channel's upsampled,
min-max normalised map H_k masks the input; w_k = p_c(X ⊙ H_k) − p_c(X_b), the paper's increase of
confidence over the baseline input X_b = 0 (the mean colour after normalisation), p_c the class
probability (`probability`: softmax over classes as the paper's code, or sigmoid, this classifier's own).

Cost: one forward of the whole classifier per channel and view (Lite0's head: 1,280 channels; × 2 flips
× the scales), batched `batch_size` masked inputs at a time. Channels constant over the image are skipped:
their mask is 0, so the masked input is the baseline and w_k = 0 exactly.

Not torchcam's ScoreCAM (softmax over *channels* of the logit minus the unmasked image's logit, masks
normalised before upsampling) nor pytorch-grad-cam's (softmax over channels of raw logits, numpy round
trips, one image): neither is the paper's weight, and both then min-max normalise the map."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from wsss.seed_methods.layers import captured, grid_stride, one_layer, probabilities

NEEDS_GRAD = False


def channel_masks(acts: torch.Tensor, size) -> torch.Tensor:
    """[n,h,w] activation maps → [n,1,H,W] masks: bilinear to the input size, then min-max to [0, 1]."""
    up = F.interpolate(acts[:, None], size, mode="bilinear", align_corners=False)
    lo = up.flatten(1).min(1).values[:, None, None, None]
    hi = up.flatten(1).max(1).values[:, None, None, None]
    return (up - lo) / (hi - lo)


def score_weights(model, image: torch.Tensor, acts: torch.Tensor, keys, base: torch.Tensor, batch_size: int,
                  probability: str) -> torch.Tensor:
    """w [K,D] for one view: image [3,H,W], its target-layer activations [D,h,w]."""
    weights = acts.new_zeros(len(keys), len(acts))
    flat = acts.flatten(1)
    live = (flat.max(1).values > flat.min(1).values).nonzero()[:, 0]
    for chunk in live.split(batch_size):
        masked = image[None] * channel_masks(acts[chunk], image.shape[-2:])
        weights[:, chunk] = (probabilities(model(masked), probability)[:, keys] - base).T
    return weights


def maps(model, images, keys, target_layers=None, batch_size: int = 32, probability: str = "softmax"):
    with captured(model, [one_layer(model, target_layers)]) as outputs:
        model(images)
    acts = outputs[0]
    base = probabilities(model(torch.zeros_like(images[:1])), probability)[0, keys]
    weights = torch.stack([score_weights(model, images[b], acts[b], keys, base, batch_size, probability)
                           for b in range(len(images))])
    out = F.relu(torch.einsum("bkd,bdhw->bkhw", weights, acts))
    return out, grid_stride(images, out)
