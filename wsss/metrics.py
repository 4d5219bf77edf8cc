"""Confusion matrices and IoU, the one implementation used by every stage (algorithms.md §4).

Conventions: ground-truth pixels equal to `ignore_index` (255) are left out; mIoU is the mean over
background + all classes of IoU_c = TP / (GT + Pred − TP), skipping classes with 0/0 (nanmean).
"""
from __future__ import annotations

import numpy as np

IGNORE = 255


def confusion(gt: np.ndarray, pred: np.ndarray, num_labels: int, ignore_index: int = IGNORE) -> np.ndarray:
    """Confusion matrix [gt, pred] of size num_labels² over the pixels whose GT is not ignored.

    Predicted values outside 0..num_labels-1 (e.g. 255 in a pseudo-label) must be mapped by the
    caller first: that choice is part of the protocol and is stated there.
    """
    gt = np.asarray(gt).ravel().astype(np.int64)
    pred = np.asarray(pred).ravel().astype(np.int64)
    if gt.shape != pred.shape:
        raise ValueError(f"gt has {gt.size} pixels but pred has {pred.size}")
    keep = gt != ignore_index
    gt, pred = gt[keep], pred[keep]
    if gt.size and (gt.max() >= num_labels or pred.max() >= num_labels or pred.min() < 0):
        raise ValueError(f"labels outside 0..{num_labels - 1} (gt max {gt.max()}, pred range "
                         f"{pred.min()}..{pred.max()})")
    return np.bincount(gt * num_labels + pred, minlength=num_labels ** 2).reshape(num_labels, num_labels)


def scores(conf: np.ndarray) -> dict[str, np.ndarray | float]:
    """IoU, precision, recall per label, mIoU, and IRN's false-positive / false-negative split."""
    conf = conf.astype(np.float64)
    tp = np.diag(conf)
    gt = conf.sum(1)
    pred = conf.sum(0)
    union = gt + pred - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = tp / union
        precision = tp / pred
        recall = tp / gt
        fp = (pred - tp) / union
        fn = (gt - tp) / union
    return {"iou": iou, "precision": precision, "recall": recall, "miou": float(np.nanmean(iou)),
            "fp": float(np.nanmean(fp)), "fn": float(np.nanmean(fn))}


def pixel_errors(conf: np.ndarray) -> dict[str, float]:
    """Where the wrong pixels go, in percent of all scored pixels (label 0 = background):
    background taken for a class (`bg_as_fg`), a class taken for background (`fg_as_bg`: missed,
    e.g. partial activation), and one class taken for another (`confusion`: what co-occurrence
    causes and ReCAM's softmax is meant to fix)."""
    conf = conf.astype(np.float64)
    total = conf.sum()
    classes = conf[1:, 1:]
    shares = {"bg_as_fg": conf[0, 1:].sum(), "fg_as_bg": conf[1:, 0].sum(),
              "confusion": classes.sum() - np.trace(classes)}
    return {k: float(100 * v / total) if total else float("nan") for k, v in shares.items()}


def label_lut(keys) -> np.ndarray:
    """Map from local index (0 = background, i = keys[i-1]'s map) to label value (0, keys + 1)."""
    return np.concatenate([[0], np.asarray(keys, np.int64) + 1])


def threshold_cams(high_res: np.ndarray, keys: np.ndarray, threshold: float) -> np.ndarray:
    """Seed label map by constant-threshold background padding (algorithms.md §4.2).

    A plane of value τ is put in front of the K class maps and the argmax taken, ties going to
    background: a pixel is class keys[i]+1 iff its best map value is > τ.
    """
    scored = np.concatenate([np.full((1,) + high_res.shape[1:], threshold, np.float32),
                             high_res.astype(np.float32)])
    return label_lut(keys)[np.argmax(scored, axis=0)]


def best_map(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(max over the K maps, its index) per pixel, as np.max and np.argmax over axis 0 give them (ties to the
    first map), one map at a time with vectorised element-wise steps (argmax over the first axis is not)."""
    best = maps[0].copy()
    index = np.zeros(best.shape, np.uint8 if maps.shape[0] <= 256 else np.intp)
    for k in range(1, maps.shape[0]):
        index = np.where(maps[k] > best, np.asarray(k, index.dtype), index)
        best = np.maximum(best, maps[k])
    return best, index


def half_bits(maps: np.ndarray) -> np.ndarray | None:
    """float16 maps ≥ 0 as their bit patterns (uint16), which order as the values do; None for other maps."""
    if maps.dtype != np.float16:
        return None
    bits = maps.view(np.uint16)
    return bits if bits.max() < 0x8000 else None  # no sign bit: no negative value (nor −0)


class ThresholdSweep:
    """Confusion matrices for many background thresholds in one pass over the pixels.

    A pixel whose best class is L with value m is predicted L for every τ < m and background for
    every τ ≥ m, so counting it once in the bucket k = #{τ < m} and taking cumulative sums gives
    the same matrices as thresholding at each τ separately (tested against that).
    """

    def __init__(self, thresholds, num_labels: int):
        self.thresholds = np.asarray(thresholds, dtype=np.float32)
        if np.any(np.diff(self.thresholds) <= 0):
            raise ValueError("thresholds must be strictly increasing")
        self.num_labels = num_labels
        n_t = len(self.thresholds)
        self._bucketed = np.zeros((n_t + 1, num_labels, num_labels), np.int64)
        self._half_table: np.ndarray | None = None

    def update(self, high_res: np.ndarray, keys: np.ndarray, gt: np.ndarray) -> None:
        valid = gt != IGNORE
        if high_res.shape[0] == 0:  # no present class: everything is background at any τ
            bucket = np.zeros(int(valid.sum()), np.int64)
            best_lab = np.zeros(gt.shape, np.int64)
        else:
            bits = half_bits(high_res)
            best, best_idx = best_map(high_res.astype(np.float32) if bits is None else bits)
            best_lab = (np.asarray(keys) + 1)[best_idx]
            bucket = self._buckets(best[valid]) if bits is None else self._half_buckets()[best[valid]]  # #{τ < m}
        g = gt[valid].astype(np.int64)
        if g.size and g.max() >= self.num_labels:
            raise ValueError(f"ground truth holds label {g.max()} but there are {self.num_labels} labels")
        n = self.num_labels
        flat = (bucket * n + g) * n + best_lab[valid]
        self._bucketed += np.bincount(flat, minlength=self._bucketed.size).reshape(self._bucketed.shape)

    def _buckets(self, values: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.thresholds, values, side="left")

    def _half_buckets(self) -> np.ndarray:
        """#{τ < m} for every float16 bit pattern m. Seeds are stored in float16, so each of their values is one
        of 2^16: a table made once by the same searchsorted gives identical counts with one gather per pixel
        instead of a binary search over the thresholds (and no conversion to float32)."""
        if self._half_table is None:
            every_half = np.arange(2**16, dtype=np.uint16).view(np.float16).astype(np.float32)
            self._half_table = self._buckets(every_half)
        return self._half_table

    def confusions(self) -> np.ndarray:
        """[T, n, n]: for threshold t, pixels with bucket > t keep their class, the rest are bg."""
        fg_part = np.cumsum(self._bucketed[::-1], axis=0)[::-1][1:]   # Σ_{k>t}
        bg_total = np.cumsum(self._bucketed.sum(axis=2), axis=0)[:-1]  # Σ_{k≤t}, summed over pred
        out = fg_part.copy()
        out[:, :, 0] += bg_total
        return out
