"""IRN's inter-pixel relations (algorithms.md §7): pairs, paths, affinities, pair labels, the loss.

A pair joins a source pixel i to a destination j = i + (dy, dx) within a radius r; only the forward
half-plane is listed (dy > 0, or dy = 0 and dx > 0), each unordered pair once. The path of a pair is
every grid point of the box spanned by i and j whose distance to the line i→j is below 1 (both ends
included), and the affinity a_ij = 1 − max of the boundary map B over that path. Sources lie in the
window rows [0, h − m), columns [m, w − m) with the margin m = r − 1, so that every destination is on
the grid; a pixel-grid tensor is read at offset (dy, dx) of that window by `shifted`.
Pair labels and the loss follow IRN's `GetAffinityLabelFromIndices` and `step/train_irn.py`.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from wsss.metrics import IGNORE

EPS = 1e-5  # IRN's log offset


@dataclass(frozen=True)
class PairSet:
    radius: int
    directions: tuple[tuple[int, int], ...]       # (dy, dx) of each pair type
    paths: tuple[tuple[tuple[int, int], ...], ...]  # per direction, the path's (y, x) offsets from the source

    @property
    def margin(self) -> int:
        return self.radius - 1


def directions(radius: int) -> list[tuple[int, int]]:
    """IRN's search directions: (0, x) for 1 ≤ x < r, then (y, x) for 1 ≤ y < r, |x| < r, x² + y² < r²."""
    out = [(0, x) for x in range(1, radius)]
    out += [(y, x) for y in range(1, radius) for x in range(-radius + 1, radius) if x * x + y * y < radius ** 2]
    return out


def path(dy: int, dx: int) -> tuple[tuple[int, int], ...]:
    """Grid points of the box from (0, 0) to (dy, dx) at distance < 1 from the line through both."""
    length_sq = dy * dy + dx * dx
    return tuple((y, x) for y in range(min(0, dy), max(0, dy) + 1) for x in range(min(0, dx), max(0, dx) + 1)
                 if (dy * x - dx * y) ** 2 < length_sq)


@functools.lru_cache(maxsize=8)
def pair_set(radius: int) -> PairSet:
    dirs = directions(radius)
    return PairSet(radius, tuple(dirs), tuple(path(dy, dx) for dy, dx in dirs))


def source_shape(h: int, w: int, margin: int) -> tuple[int, int]:
    if h <= margin or w <= 2 * margin:
        raise ValueError(f"a {h}×{w} grid is too small for pairs of radius {margin + 1}")
    return h - margin, w - 2 * margin


def shifted(x: torch.Tensor, dy: int, dx: int, margin: int) -> torch.Tensor:
    """x[..., dy + source rows, dx + source columns]: the values at offset (dy, dx) of every source."""
    sh, sw = source_shape(x.shape[-2], x.shape[-1], margin)
    return x[..., dy:dy + sh, margin + dx:margin + dx + sw]


def path_affinity(boundary: torch.Tensor, pairs: PairSet) -> torch.Tensor:
    """a = 1 − max of `boundary` [..., h, w] on each pair's path → [..., D, h − m, w − 2m]."""
    m = pairs.margin
    return torch.stack([1 - torch.stack([shifted(boundary, y, x, m) for y, x in p]).amax(0) for p in pairs.paths],
                       dim=-3)


def pair_labels(label: torch.Tensor, pairs: PairSet) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(bg-positive, fg-positive, negative) float masks [..., D, h − m, w − 2m] from a label map [..., h, w]
    (0 background, 1..C classes, 255 unsure): a pair is valid when neither end is 255, positive when
    both ends agree (background or the same class), negative otherwise."""
    m = pairs.margin
    src = shifted(label, 0, 0, m).unsqueeze(-3)
    dst = torch.stack([shifted(label, dy, dx, m) for dy, dx in pairs.directions], dim=-3)
    valid = (src != IGNORE) & (dst != IGNORE)
    same = (src == dst) & valid
    return (same & (src == 0)).float(), (same & (src > 0)).float(), (valid & (src != dst)).float()


def affinity_loss(aff: torch.Tensor, bg_pos: torch.Tensor, fg_pos: torch.Tensor, neg: torch.Tensor) -> dict:
    """IRN's balanced loss, each term a mean over the whole batch's pairs of its kind:
    L_pos = ½ (bg-pos −log(a + ε) + fg-pos −log(a + ε)), L_neg = −log(1 + ε − a), total (L_pos + L_neg) / 2."""
    def mean(loss, mask):
        return (loss * mask).sum() / (mask.sum() + EPS)

    pos_log = -torch.log(aff + EPS)
    bg, fg = mean(pos_log, bg_pos), mean(pos_log, fg_pos)
    negative = mean(-torch.log(1 + EPS - aff), neg)
    positive = bg / 2 + fg / 2
    return {"loss": (positive + negative) / 2, "bg_pos": bg, "fg_pos": fg, "neg": negative}
