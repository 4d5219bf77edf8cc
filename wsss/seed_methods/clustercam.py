"""Cluster-CAM (Feng et al., arXiv 2302.01642; Neural Networks 178, 2024): Score-CAM with the target layer's
channels grouped by k-means, so that one masked input per *cluster* is scored instead of one per channel.

Per view X (its target-layer activations A_1..A_D, h×w):
  1. Clustering: every live channel's map, min-max normalised on the feature grid, is a point in R^(h·w);
     k-means (k-means++ initialisation from a torch.Generator seeded `kmeans_seed`, Lloyd iterations until
     no assignment changes, at most `kmeans_iters`) splits them into `clusters` groups C_1..C_K.
  2. Merged map of cluster j: M_j = Σ_{d∈C_j} A_d; its mask H_j = min-max(bilinear(M_j → H×W)), as Score-CAM's
     `channel_masks`. One forward of the whole classifier per cluster: z_j = logits(X ⊙ H_j). The masks do not
     depend on the class, so one forward serves every present class.
  3. `cognition: scissors` (default), our reading of the paper's cognition-base and cognition-scissors:
     α_j = softmax over the clusters of the class logit z_j,c. The cognition-base map is the mean map
     M̄_t = M_t/|C_t| of the cluster t with the highest score, the cognition-scissors the mean map M̄_b of the
     cluster b with the lowest; the map is ReLU(α_t·M̄_t − (1 − α_t)·M̄_b): the least class-like cluster cuts
     its regions out of the most class-like one, harder the less dominant the base cluster is.
     `cognition: weighted`: ReLU(Σ_j s_j·M_j), s_j = p_c(X ⊙ H_j) − p_c(X_b), Score-CAM's increase of
     confidence over the baseline X_b = 0 (`probability`: softmax over classes or sigmoid, as scorecam.yaml):
     each channel weighted by its cluster's score; with one channel per cluster it is Score-CAM exactly.

What we could read of the paper, and what is ours. Only the abstract was reachable (arXiv / PubMed / ar5iv
openings; no public code by the authors): it names the k-means split of the feature maps into clusters, one
forward per cluster, and the final map as the merge of a "cognition-base map" and "cognition-scissors"
forged from the clustered maps. The method section — K, the normalisations, the exact base/scissors rule —
was not in any stored copy. Hence every setting below is a choice, with its reason:
  - base = top cluster, scissors = bottom cluster, weights α_t and −(1 − α_t), α a softmax over clusters of
    the class logits: the one public implementation naming these terms (tetutaro/class_activation_mapping,
    cam/base/channel_weight.py, its `channel_minmax` branch; a third party's reading, not the authors' code,
    which also adds gradients and blurred baselines we leave out) reads the paper so; logits, not probabilities,
    because a softmax over clusters of numbers in [0, 1] is near uniform (α_t ≈ 1/K would let the scissors
    erase almost everything). The baseline's logit cancels in the softmax, so it is not computed there.
  - `clusters: 10`: the paper's K was not found; 10 keeps the masked forwards at about 1/128 of Score-CAM's
    on Lite0, and is within the range (3..11 for 512 channels) of that implementation's elbow choice of K.
  - clustering the *normalised* low-resolution maps: channels grouped by where they fire, not by their
    magnitude (the masks are normalised anyway), and at h·w dimensions rather than H·W (memory, speed).
  - merged map = the *sum* of the cluster's activations (the mask is the same for sum or mean); scissors
    compares *means*, so that a large background cluster does not outweigh the base by its size alone.
  - channels constant over the view (dead) are left out of the clustering: their mask is 0 and their
    masked input the baseline, as Score-CAM skips them; a merged map constant over the view gets mask 0.
  - the generator is re-seeded for every view, so a view's map does not depend on its place in the batch
    (the flip-sum of wsss/cam.py then stays flip-equivariant) and seeds are reproducible artifacts.

Deviations forced by the seed protocol (wsss/seed_methods/__init__.py): raw maps with the method's ReLU, never
min-max normalised (wsss.cam.multiscale_maps normalises per class after the flip and scale sums); maps for the
present classes only, not the argmax class; `probability` as Score-CAM's, softmax (papers' single-label
classifiers) or sigmoid (this multi-label classifier's own).

Cost: K forwards of the whole classifier per view (one per cluster; `weighted` adds one baseline forward per
scale), where Score-CAM needs one per live channel, D (Lite0's trunk output: D = 1,280): about D/K = 128× fewer
masked forwards at K = 10, plus a k-means over D points in h·w dimensions, × 2 flips × the scales.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from wsss.errors import UserError
from wsss.seed_methods.layers import captured, grid_stride, one_layer, probabilities
from wsss.seed_methods.scorecam import channel_masks

NEEDS_GRAD = False
COGNITIONS = ("scissors", "weighted")


def squared_distances(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """[n,f], [k,f] → [n,k], exact (no matmul expansion: equal points are at distance 0)."""
    return ((x[:, None] - centres[None]) ** 2).sum(-1)


def kmeans_pp(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ initial centres [≤k,f]: each next centre drawn ∝ its squared distance to the nearest chosen."""
    first = int(torch.randint(len(x), (1,), generator=generator))
    centres = x[first:first + 1]
    nearest = squared_distances(x, centres)[:, 0]
    while len(centres) < k and nearest.sum() > 0:  # stop once every point coincides with a centre
        i = int(torch.multinomial(nearest.double().cpu(), 1, generator=generator))
        centres = torch.cat([centres, x[i:i + 1]])
        nearest = torch.minimum(nearest, squared_distances(x, x[i:i + 1])[:, 0])
    return centres


def kmeans(x: torch.Tensor, k: int, iters: int, seed: int) -> torch.Tensor:
    """Cluster labels [n] of the rows of x: k-means++ then Lloyd until no label changes (≤ iters rounds).
    Deterministic for a seed; labels 0..K'-1 numbered by first member (K' ≤ k: empty clusters dropped)."""
    centres = kmeans_pp(x, min(k, len(x)), torch.Generator().manual_seed(seed))
    labels = squared_distances(x, centres).argmin(1)
    for _ in range(iters):
        members = F.one_hot(labels, len(centres)).to(x.dtype)  # [n,k]
        counts = members.sum(0)
        means = (members.T @ x) / counts.clamp(min=1)[:, None]
        centres = torch.where(counts[:, None] > 0, means, centres)  # an empty cluster keeps its centre
        new = squared_distances(x, centres).argmin(1)
        if torch.equal(new, labels):
            break
        labels = new
    return renumber(labels)


def renumber(labels: torch.Tensor) -> torch.Tensor:
    """Labels renamed 0, 1, … in order of their first occurrence (a canonical name for a partition)."""
    order = {}
    for v in labels.tolist():
        order.setdefault(v, len(order))
    return torch.tensor([order[v] for v in labels.tolist()], device=labels.device)


def channel_clusters(acts: torch.Tensor, k: int, iters: int, seed: int) -> list[torch.Tensor]:
    """The live channels of acts [D,h,w] grouped by k-means on their min-max normalised maps: channel indices
    per cluster (none for a view whose every channel is constant)."""
    flat = acts.flatten(1).float()
    lo, hi = flat.min(1).values, flat.max(1).values
    live = (hi > lo).nonzero()[:, 0]
    if len(live) == 0:
        return []
    points = (flat[live] - lo[live, None]) / (hi - lo)[live, None]
    labels = kmeans(points, k, iters, seed).to(live.device)
    return [live[labels == j] for j in range(int(labels.max()) + 1)]


def cluster_logits(model, image: torch.Tensor, merged: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Logits [K,C] of the view image [3,H,W] masked by each merged map [K,h,w] (min-max mask, 0 if constant)."""
    out = []
    for chunk in merged.split(batch_size):
        masks = torch.nan_to_num(channel_masks(chunk, image.shape[-2:]), nan=0.0)
        out.append(model(image[None] * masks))
    return torch.cat(out)


def scissors_map(logits: torch.Tensor, merged: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """[nk,h,w]: ReLU(α_t·M̄_t − (1 − α_t)·M̄_b) per class, α = softmax over clusters of logits [K,nk]."""
    alpha = logits.softmax(0)
    top, bottom = alpha.argmax(0), alpha.argmin(0)
    mean = merged / sizes[:, None, None]
    a = alpha.gather(0, top[None])[0][:, None, None]
    return F.relu(a * mean[top] - (1 - a) * mean[bottom])


def view_map(model, image, acts, keys, base_prob, options) -> torch.Tensor:
    """Cluster-CAM [nk,h,w] of one view: image [3,H,W], its target-layer activations acts [D,h,w]."""
    groups = channel_clusters(acts, options["clusters"], options["kmeans_iters"], options["kmeans_seed"])
    if not groups:
        return acts.new_zeros(len(keys), *acts.shape[-2:])
    merged = torch.stack([acts[g].sum(0) for g in groups])
    logits = cluster_logits(model, image, merged, options["batch_size"])
    if options["cognition"] == "scissors":
        sizes = torch.tensor([len(g) for g in groups], dtype=merged.dtype, device=merged.device)
        return scissors_map(logits[:, keys], merged, sizes)
    weights = probabilities(logits, options["probability"])[:, keys] - base_prob  # [K,nk]
    return F.relu(torch.einsum("jk,jhw->khw", weights, merged))


def maps(model, images, keys, clusters: int = 10, cognition: str = "scissors", kmeans_iters: int = 100,
         kmeans_seed: int = 0, target_layers=None, batch_size: int = 32, probability: str = "softmax"):
    if cognition not in COGNITIONS:
        raise UserError(f"cam.cognition={cognition!r}: choose {' or '.join(COGNITIONS)}")
    if int(clusters) < 1:
        raise UserError(f"cam.clusters={clusters}: k-means needs at least one cluster")
    with captured(model, [one_layer(model, target_layers)]) as outputs:
        model(images)
    acts = outputs[0]
    base_prob = None  # the baseline's logit cancels in the scissors' softmax: only `weighted` needs p_c(X_b)
    if cognition == "weighted":
        base_prob = probabilities(model(torch.zeros_like(images[:1])), probability)[0, keys]
    options = {"clusters": int(clusters), "cognition": cognition, "kmeans_iters": int(kmeans_iters),
               "kmeans_seed": int(kmeans_seed), "batch_size": int(batch_size), "probability": probability}
    out = torch.stack([view_map(model, images[b], acts[b], keys, base_prob, options) for b in range(len(images))])
    return out, grid_stride(images, out)
