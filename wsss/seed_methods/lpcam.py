"""LPCAM (Chen & Sun, "Extracting Class Activation Maps from Non-Discriminative Features as well", CVPR 2023; the
authors' code `zhaozhengChen/LPCAM`, `step/make_lpcam.py`): training-free given the classifier. CAM's map of a class
is the similarity of each local feature to one weight vector, which answers only on the most discriminative
features; LPCAM replaces it by the similarity to several prototypes of the class, found by clustering the class's
own local features, which cover its less discriminative parts too.

Prototypes (the stage make_prototypes, once per classifier; `prototypes`): for each class c, the trunk's stride-16
features of the training images labelled c at scale 1 are split by c's CAM (multi-scale + flip, max-normalised,
resized to the feature grid by nearest neighbour) into foreground (CAM > `select_threshold`, 0.1) and the rest
(CAM < 0.1); each set is clustered by k-means with cosine distance into `num_clusters` (12) centres. The class
prototypes are the foreground centres that the classifier gives to c with softmax probability > `class_threshold`
(0.9; softmax over the classes of centre · W); the context prototypes are the other set's centres with probability
between `context_threshold_low` (0.05) and `context_threshold` (0.9): background that looks somewhat like c.

Maps (this module): per scale, F = features(image) + flip_back(features(flip)); the map of c is the mean cosine
similarity of F to c's class prototypes, minus the mean cosine similarity to its context prototypes, ReLU. The
scales are combined as every method's (wsss/cam.py; the authors average them, the same after the max
normalisation).

Deviations, each named: ReLU also when a class has no context prototype (the authors keep the raw similarity,
which may be negative; below any τ either way); a class with no class prototype (none reaches 0.9) falls back to
its CAM on the flip-summed features (the authors' code fails there); k-means starts from `num_clusters` distinct
features drawn with a generator seeded by `seed`, keeps an empty cluster's centre, and stops when the squared sum
of the centres' shifts is below `kmeans_tol` (5, as kmeans_pytorch's tol in the authors' call) or after
`kmeans_max_iterations`; the prototypes come from the images of `cam.prototype_splits` (the authors': VOC
`train`); the maps use train_cls's classifier (LPCAM on ReCAM's weights is not offered).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

PREPARED_BY = "make_prototypes"
NEEDS_GRAD = False
PROTOTYPE_KEYS = ("prototype_splits", "num_clusters", "select_threshold", "class_threshold", "context_threshold_low",
                  "context_threshold", "kmeans_tol", "kmeans_max_iterations")
PROTOTYPE_FILE = "prototypes.npz"


def maps(model, images, keys, prepared: Path, **prototype_options):
    """[2,K,h,w] for one view batch: the map from the flip-summed features in the first slot, zeros in the second
    (the authors sum the features of the image and its flip before the similarity, not the maps after)."""
    protos = load_prototypes(str(Path(prepared) / PROTOTYPE_FILE))
    feats = model.backbone(images).float()
    f = feats[0] + feats[1].flip(-1)  # [D,h,w]
    d, h, w = f.shape
    unit = F.normalize(f.reshape(d, h * w), dim=0)
    weights = model.cam_weights().float()
    out = []
    for c in keys.tolist():
        centres, context = (torch.as_tensor(a, device=f.device) for a in protos[c])
        if len(centres) == 0:  # no class prototype: the class's CAM
            out.append(F.relu(weights[c] @ f.reshape(d, h * w)))
            continue
        m = (F.normalize(centres, dim=1) @ unit).mean(0)
        if len(context):
            m = m - (F.normalize(context, dim=1) @ unit).mean(0)
        out.append(F.relu(m))
    a = torch.stack(out).reshape(len(out), h, w)
    return torch.stack([a, torch.zeros_like(a)]), 16


@lru_cache(maxsize=4)
def load_prototypes(path: str) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """class index → (class prototypes [n, D], context prototypes [m, D]) from make_prototypes' file."""
    with np.load(path, allow_pickle=False) as f:
        classes = sorted({int(k.split("_")[1]) for k in f.files})
        return {c: (f[f"class_{c}"], f[f"context_{c}"]) for c in classes}


def cosine_kmeans(x: torch.Tensor, k: int, tol: float, max_iterations: int, generator: torch.Generator) -> torch.Tensor:
    """k centres [k, D] of the rows of `x` [n, D]: each row to the centre of highest cosine similarity, each centre
    the mean of its rows (an empty cluster keeps its centre), until Σ‖Δcentre‖ squared < `tol`."""
    k = min(k, len(x))
    centres = x[torch.randperm(len(x), generator=generator)[:k]].clone()
    unit = F.normalize(x, dim=1)
    for _ in range(max_iterations):
        choice = (unit @ F.normalize(centres, dim=1).T).argmax(1)
        new = centres.clone()
        counts = torch.bincount(choice, minlength=k)
        sums = torch.zeros_like(centres).index_add_(0, choice, x)
        filled = counts > 0
        new[filled] = sums[filled] / counts[filled, None]
        shift = float((new - centres).norm(dim=1).sum()) ** 2
        centres = new
        if shift < tol:
            break
    return centres


def select_prototypes(centres: torch.Tensor, weights: torch.Tensor, c: int, low: float, high: float) -> torch.Tensor:
    """The centres whose softmax over the classes (centre · W) gives class c a probability in (low, high)."""
    if len(centres) == 0:
        return centres
    prob = torch.softmax(centres @ weights.T, dim=1)[:, c]
    return centres[(prob > low) & (prob < high)]


def class_prototypes(features: dict[int, tuple[torch.Tensor, torch.Tensor]], weights: torch.Tensor, options: dict,
                     seed: int) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """class → (class prototypes, context prototypes) from class → (foreground features, other features)."""
    def fit(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if not len(x):
            return x
        return cosine_kmeans(x, options["num_clusters"], options["kmeans_tol"], options["kmeans_max_iterations"], g)

    out = {}
    for c, (fg, rest) in sorted(features.items()):
        g = torch.Generator().manual_seed(seed * 1000 + c)
        centres, rest_centres = fit(fg, g), fit(rest, g)
        out[c] = (select_prototypes(centres, weights, c, options["class_threshold"], float("inf")),
                  select_prototypes(rest_centres, weights, c, options["context_threshold_low"],
                                    options["context_threshold"]))
    return out
