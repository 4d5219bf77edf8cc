"""Trivial seed baselines on a VOC-layout split, to read seed mIoU against.

- all background: every pixel 0;
- nearest box: every pixel gets the class of the nearest object box of its image (distance 0
  inside a box), i.e. the image's classes placed by box, with no background at all.
Both are scored exactly like eval_cam (255 ignored, background + classes, nanmean).

    python scripts/seed_baselines.py DATA_ROOT [--split train] [--classes synthetic|voc12]
"""
from __future__ import annotations

import argparse

import numpy as np

from wsss.data.synthetic import CLASS_NAMES
from wsss.data.voc import VOC_CLASSES, VOCLayout
from wsss.metrics import confusion, scores


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root")
    ap.add_argument("--split", default="train")
    ap.add_argument("--classes", choices=["synthetic", "voc12"], default="synthetic")
    args = ap.parse_args()
    voc = VOCLayout(args.root, CLASS_NAMES if args.classes == "synthetic" else VOC_CLASSES)
    n = voc.num_classes + 1
    conf_bg, conf_box = np.zeros((n, n), np.int64), np.zeros((n, n), np.int64)
    for img_id in voc.ids(args.split):
        gt = voc.read_mask(img_id)
        conf_bg += confusion(gt, np.zeros_like(gt), n)
        conf_box += confusion(gt, nearest_box_labels(gt.shape, voc.boxes(img_id)), n)
    print(f"all background   mIoU {100 * scores(conf_bg)['miou']:.2f}")
    print(f"nearest box      mIoU {100 * scores(conf_box)['miou']:.2f}")


if __name__ == "__main__":
    main()
