"""IRN's random walk from seeds to pseudo-labels (algorithms.md §7.3, `misc/indexing.py propagate_to_edge`).

On the stride-4 grid of an image (n = h·w pixels): affinities a_ij = 1 − max B on the path for every pair
within radius 5 (B = 1 outside the image, so pairs that leave it get 0), the symmetric matrix A with unit
diagonal, A' = A^β elementwise (β = 10), the transition T = A' with each column divided by its sum, and
r_k = vec(seed_k)ᵀ T^(2^exp_times) with seed_k = strided CAM_k × (1 − B).

The reference builds A and T as dense n×n matrices (n = 11,750 for a 500×375 photo: 552 MB each) and
squares T exp_times times (8 products of n³). Here T stays sparse (at most 2·34 + 1 non-zeros a column)
and the seeds take the 2^exp_times steps one product at a time: x T^(2^e) = (((x T) T) …) T. The same
result in exact arithmetic (tests/test_random_walk.py checks it against the reference's dense
construction), ~70 n values in memory instead of 2 n², and 2^e · 69 n · K multiply-adds instead of e · n³.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F

from wsss.affinity import pair_set, path_affinity
from wsss.metrics import label_lut

RADIUS, BETA, EXP_TIMES = 5, 10, 8  # IRN make_sem_seg_labels.py (radius 5: 34 pair directions)


def affinity_matrix(boundary: torch.Tensor, radius: int = RADIUS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rows, cols, values) of the symmetric affinity matrix A (unit diagonal) of a boundary map [h, w]:
    only pairs with both ends in the image are listed (the others have affinity 0)."""
    h, w = boundary.shape
    pairs = pair_set(radius)
    m = pairs.margin
    padded = F.pad(boundary[None, None], (m, m, 0, m), value=1.0)[0, 0]  # sources = every pixel of the image
    aff = path_affinity(padded, pairs)  # [D, h, w]
    ys, xs = torch.meshgrid(torch.arange(h, device=boundary.device), torch.arange(w, device=boundary.device),
                            indexing="ij")
    rows, cols, vals = [], [], []
    for d, (dy, dx) in enumerate(pairs.directions):
        inside = (ys + dy < h) & (xs + dx >= 0) & (xs + dx < w)
        src = (ys * w + xs)[inside]
        rows.append(src)
        cols.append(src + dy * w + dx)
        vals.append(aff[d][inside])
    src, dst, a = torch.cat(rows), torch.cat(cols), torch.cat(vals)
    diag = torch.arange(h * w, device=boundary.device)
    return (torch.cat([src, dst, diag]), torch.cat([dst, src, diag]),
            torch.cat([a, a, torch.ones(h * w, device=boundary.device, dtype=a.dtype)]))


def transition_transposed(boundary: torch.Tensor, beta: float = BETA, radius: int = RADIUS) -> torch.Tensor:
    """Tᵀ as a sparse CSR matrix [n, n], T = A^β with each column divided by its sum. A is symmetric,
    so Tᵀ is A^β with each row divided by its sum: r = x T is computed as Tᵀ x."""
    rows, cols, a = affinity_matrix(boundary, radius)
    vals = a.pow(beta)
    n = boundary.numel()
    sums = torch.zeros(n, dtype=vals.dtype, device=vals.device).index_add_(0, rows, vals)
    coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals / sums[rows], (n, n), check_invariants=False)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": CSR × dense is 40× faster than COO here
        warnings.simplefilter("ignore", UserWarning)
        return coo.coalesce().to_sparse_csr()


def propagate(seeds: torch.Tensor, boundary: torch.Tensor, beta: float = BETA, exp_times: int = EXP_TIMES,
              radius: int = RADIUS) -> torch.Tensor:
    """Random-walk the seeds [K, h, w] over the boundary map [h, w]: vec(seed_k × (1 − B))ᵀ T^(2^exp_times)."""
    k, h, w = seeds.shape
    t = transition_transposed(boundary, beta, radius)
    x = (seeds * (1 - boundary)).reshape(k, h * w).T.contiguous()
    for _ in range(2 ** exp_times):
        x = t @ x
    return x.T.reshape(k, h, w)


def rw_maps(strided: np.ndarray, boundary: torch.Tensor, size: tuple[int, int], beta: float = BETA,
            exp_times: int = EXP_TIMES, radius: int = RADIUS) -> torch.Tensor:
    """The walked maps of the present classes [K, h, w] at image size: propagate the strided maps, upsample ×4
    (bilinear), crop to `size`, divide by the global max (IRN's make_sem_seg_labels.py, up to its argmax)."""
    h, w = size
    seeds = torch.as_tensor(strided, dtype=torch.float32, device=boundary.device)
    rw = propagate(seeds, boundary.float(), beta, exp_times, radius)
    up = F.interpolate(rw[None], scale_factor=4, mode="bilinear", align_corners=False)[0, :, :h, :w]
    return up / up.max().clamp_min(1e-12)  # no seed mass at all: 0 everywhere, all background (IRN: 0 / 0)


def rw_label(strided: np.ndarray, keys: np.ndarray, boundary: torch.Tensor, size: tuple[int, int],
             bg_threshold: float, beta: float = BETA, exp_times: int = EXP_TIMES, radius: int = RADIUS) -> np.ndarray:
    """IRN's pseudo-label of one image (uint8 0..C, no 255): the walked maps (`rw_maps`) behind a background
    plane at `bg_threshold`, argmax (a tie goes to the background, as a seed's threshold does)."""
    if len(keys) == 0:
        return np.zeros(size, np.uint8)
    up = rw_maps(strided, boundary, size, beta, exp_times, radius)
    scores = torch.cat([torch.full_like(up[:1], bg_threshold), up])
    return label_lut(keys).astype(np.uint8)[scores.argmax(0).cpu().numpy()]
