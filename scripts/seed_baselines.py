"""Trivial seed baselines on a VOC-layout split, to read seed mIoU against.

- all background: every pixel 0;
- nearest box: every pixel gets the class of the nearest object box of its image (distance 0
  inside a box), i.e. the image's classes placed by box, with no background at all (needs
  Annotations/; skipped without);
- centre prior: no network at all: every present class gets the same centred Gaussian map
  (σ = a quarter of each side), thresholded as a seed at the stated τ 0.15 and at the best τ of
  eval_cam's sweep (0.05-0.95 on the ground truth, as eval_cam), what a seed must beat to show any localisation.
All are scored exactly like eval_cam (255 ignored, background + classes, nanmean).

    python scripts/seed_baselines.py DATA_ROOT [--split train] [--classes synthetic|voc12]
"""
from __future__ import annotations

import argparse

import numpy as np

from wsss.data.synthetic import CLASS_NAMES
from wsss.data.voc import VOC_CLASSES, VOCLayout
from wsss.metrics import ThresholdSweep, confusion, scores

SWEEP = np.round(np.arange(0.05, 0.955, 0.01), 6)  # eval_cam's default sweep (conf/config.yaml: 0.05-0.95)


def nearest_box_labels(shape, boxes) -> np.ndarray:
    """Label of the nearest box per pixel (ties → the first box); all background if no box."""
    h, w = shape
    if not boxes:
        return np.zeros(shape, np.int64)
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    dists = []
    for _, x0, y0, x1, y1 in boxes:
        dy = np.maximum(np.maximum(y0 - yy, yy - y1), 0)
        dx = np.maximum(np.maximum(x0 - xx, xx - x1), 0)
        dists.append(np.hypot(dx, dy))
    classes = np.array([b[0] + 1 for b in boxes])
    return classes[np.argmin(np.stack(dists), axis=0)]


def centre_prior(shape, num_present: int) -> np.ndarray:
    """[K, H, W]: one centred Gaussian (σ = side / 4) per present class, max 1."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    g = np.exp(-0.5 * (((yy - h / 2) / (h / 4)) ** 2 + ((xx - w / 2) / (w / 4)) ** 2))
    return np.repeat(g[None].astype(np.float32), num_present, 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root")
    ap.add_argument("--split", default="train")
    ap.add_argument("--classes", choices=["synthetic", "voc12"], default="synthetic")
    args = ap.parse_args()
    voc = VOCLayout(args.root, CLASS_NAMES if args.classes == "synthetic" else VOC_CLASSES)
    n = voc.num_classes + 1
    conf_bg, conf_box = np.zeros((n, n), np.int64), np.zeros((n, n), np.int64)
    has_boxes = (voc.root / "Annotations").is_dir()
    prior = ThresholdSweep(SWEEP, n)
    for img_id in voc.ids(args.split):
        gt = voc.read_mask(img_id)
        conf_bg += confusion(gt, np.zeros_like(gt), n)
        if has_boxes:
            conf_box += confusion(gt, nearest_box_labels(gt.shape, voc.boxes(img_id)), n)
        keys = np.nonzero(voc.labels(img_id))[0]
        prior.update(centre_prior(gt.shape, len(keys)), keys, gt)
    curve = [100 * scores(c)["miou"] for c in prior.confusions()]
    best = int(np.nanargmax(curve))
    stated = int(np.argmin(np.abs(SWEEP - 0.15)))
    print(f"all background   mIoU {100 * scores(conf_bg)['miou']:.2f}")
    print(f"nearest box      mIoU {100 * scores(conf_box)['miou']:.2f}" if has_boxes else
          "nearest box      (no Annotations/: skipped)")
    print(f"centre prior     mIoU {curve[stated]:.2f} at τ 0.15, best {curve[best]:.2f} at τ {SWEEP[best]:.2f}")


if __name__ == "__main__":
    main()
