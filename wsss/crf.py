"""Dense CRF refinement with pydensecrf (the maintained fork `pydensecrf2`; algorithms.md §6).

Three uses, each with the reference parameters in the config:
- `crf_from_labels`: label unary (gt_prob) as in IRN/ReCAM IR-label creation (§6.1);
- `crf_from_scores`: softmax-style unary −log(max(p, 1e-5)) as in PSA (§6.2) and DeepLab (§6.3);
- `ir_label`: IRN's two-threshold combination of two label-unary CRF passes (§6.1, pitfall 18).
The image must be the original uint8 RGB, H×W×3, C-contiguous (pitfall 22); it is made so here.
"""
from __future__ import annotations

import numpy as np

from wsss.errors import UserError
from wsss.metrics import IGNORE, label_lut, threshold_cams


def _densecrf():
    try:
        import pydensecrf.densecrf as dcrf
        import pydensecrf.utils as utils
    except ImportError as e:  # pragma: no cover - depends on the install
        raise UserError("refine=crf needs pydensecrf: pip install pydensecrf2 (the maintained fork; "
                        "it imports as pydensecrf)") from e
    return dcrf, utils


def _infer(image: np.ndarray, unary: np.ndarray, n_labels: int, p) -> np.ndarray:
    """Mean-field inference with a Gaussian and a bilateral kernel; returns marginals [n, H, W]."""
    dcrf, _ = _densecrf()
    h, w = image.shape[:2]
    d = dcrf.DenseCRF2D(w, h, n_labels)  # (width, height, labels): pitfall 22
    d.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    d.addPairwiseGaussian(sxy=p.gaussian.sxy, compat=p.gaussian.compat)
    rgb = np.array(image, dtype=np.uint8, order="C")  # a writable C-contiguous copy (PIL arrays are read-only)
    d.addPairwiseBilateral(sxy=p.bilateral.sxy, srgb=p.bilateral.srgb, rgbim=rgb, compat=p.bilateral.compat)
    q = d.inference(int(p.iterations))
    return np.asarray(q, dtype=np.float32).reshape(n_labels, h, w)


def _check_image(image: np.ndarray, shape: tuple[int, int]) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"the CRF needs an H×W×3 uint8 RGB image, got {image.dtype} {image.shape}")
    if image.shape[:2] != tuple(shape):
        raise ValueError(f"image is {image.shape[:2]} but the labels/scores are {tuple(shape)}")


def crf_from_labels(image: np.ndarray, labels: np.ndarray, n_labels: int, p) -> np.ndarray:
    """Refine a hard label map in 0..n_labels−1 (IRN `crf_inference_label`); returns labels."""
    _check_image(image, labels.shape)
    if n_labels < 2:  # nothing to choose between
        return np.zeros(labels.shape, np.int64)
    _, utils = _densecrf()
    unary = utils.unary_from_labels(labels.astype(np.int64), n_labels, gt_prob=p.gt_prob, zero_unsure=False)
    return _infer(image, unary, n_labels, p).argmax(0)


def crf_from_scores(image: np.ndarray, scores: np.ndarray, p) -> np.ndarray:
    """Marginals [n,H,W] from per-label scores [n,H,W] with unary −log(max(score, 1e-5))."""
    _check_image(image, scores.shape[1:])
    _, utils = _densecrf()
    unary = utils.unary_from_softmax(scores.astype(np.float32), clip=1e-5)
    return _infer(image, unary, scores.shape[0], p)


def combine_fg_bg(fg_conf: np.ndarray, bg_conf: np.ndarray) -> np.ndarray:
    """IRN's rule: fg where the fg pass says fg; bg where both say bg; 255 (unsure) elsewhere."""
    out = np.full(fg_conf.shape, IGNORE, np.uint8)
    out[fg_conf != 0] = fg_conf[fg_conf != 0]
    out[(fg_conf == 0) & (bg_conf == 0)] = 0
    return out


def ir_label(image: np.ndarray, maps: np.ndarray, keys: np.ndarray, fg_threshold: float,
             bg_threshold: float, p) -> np.ndarray:
    """IR-label style pseudo-label (§6.1): two label-unary CRF passes, 255 where they disagree."""
    lut = label_lut(keys).astype(np.uint8)
    n = len(keys) + 1
    local = np.arange(len(keys))  # CRF over local labels 0..K, mapped back to classes by lut
    fg_conf = lut[crf_from_labels(image, threshold_cams(maps, local, fg_threshold), n, p)]
    bg_conf = lut[crf_from_labels(image, threshold_cams(maps, local, bg_threshold), n, p)]
    return combine_fg_bg(fg_conf, bg_conf)


def softmax_label(image: np.ndarray, maps: np.ndarray, keys: np.ndarray, alpha: float, p) -> np.ndarray:
    """PSA-style pseudo-label (§6.2): scores [(1 − max)^α, maps...] through the CRF, argmax."""
    lut = label_lut(keys).astype(np.uint8)
    if len(keys) == 0:
        return np.zeros(image.shape[:2], np.uint8)
    maps = maps.astype(np.float32)
    bg = np.power(1 - maps.max(0, keepdims=True), alpha)
    return lut[crf_from_scores(image, np.concatenate([bg, maps]), p).argmax(0)]
