"""eval_seg: full-image inference of the segmentation network, scored on real masks (§8).

In:  the train_seg checkpoint; images (and masks) of `seg.eval.split`.
Out: `pred/<id>.png` (palette PNG, 0..C), overlays for a fixed sample, metrics (mIoU and per-class
     IoU, background included, GT 255 ignored). For the VOC `test` split (no masks) the PNGs are laid
     out for the evaluation server, `results/VOC2012/Segmentation/comp6_test_cls/<id>.png`, and
     archived as `results.tar.gz`. Resumable: images whose PNG exists are skipped.
Test-time options: `scales` and `flip` (softmax averaged), the model's own MSC (seg.msc), and the
DeepLab CRF on the averaged softmax (algorithms.md §6.3).
"""
from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import torch

from wsss import artifacts, distributed
from wsss.crf import crf_from_scores
from wsss.data import open_dataset
from wsss.data.transforms import normalize, rescale, to_chw
from wsss.io import atomic_path, load_label_png, load_rgb, save_label_png
from wsss.metrics import confusion, scores
from wsss.models.classifier import load_checkpoint
from wsss.models.segmenter import SegmentationModule
from wsss.progress import progress
from wsss.training import checkpoint_path, plain
from wsss.viz import colour_labels, legend, save_panel

VERSION = 1
STORED = True
DISTRIBUTED = True  # every DDP rank predicts its shard of the images (wsss/distributed.py); rank 0 scores
SHARDS_ITSELF = True  # its per-image work is sharded by wsss/distributed.py, outside Lightning's loops
SERVER_DIR = Path("results/VOC2012/Segmentation/comp6_test_cls")


def identity(cfg) -> dict:
    return {"eval": plain(cfg.seg.eval)}


def upstream(cfg) -> list[str]:
    return ["train_seg"]


def pred_file(out_dir: Path, split: str, img_id: str) -> Path:
    sub = SERVER_DIR if split == "test" else Path("pred")
    return Path(out_dir) / sub / f"{img_id}.png"


@torch.no_grad()
def predict(model: SegmentationModule, image: np.ndarray, scales, flip: bool) -> np.ndarray:
    """Softmax [C+1,H,W] averaged over test scales (and horizontal flips), at the image's size."""
    h, w = image.shape[:2]
    device = next(model.parameters()).device
    total = None
    for s in scales:
        x = to_chw(normalize(rescale(image, s), model.normalization))[None].to(device)
        batch = torch.cat([x, x.flip(-1)]) if flip else x
        prob = model(batch, size=(h, w)).softmax(1)
        prob = prob[0] + prob[1].flip(-1) if flip else prob[0]
        total = prob if total is None else total + prob
    return (total / (len(scales) * (2 if flip else 1))).float().cpu().numpy()


def ids_left(out_dir: Path, split: str, ids) -> list[str]:
    """Ids whose prediction is not written yet (written atomically: present = complete)."""
    return [i for i in ids if not pred_file(out_dir, split, i).exists()]


def images_left(cfg, out_dir: Path) -> int:
    """Images a resumed run still has to predict (the dry run's count)."""
    split = cfg.seg.eval.split
    return len(ids_left(out_dir, split, open_dataset(cfg).ids(split)))


def run(cfg, out_dir: Path) -> dict:
    e = cfg.seg.eval
    layout = open_dataset(cfg)
    ids = layout.ids(e.split)
    model = load_checkpoint(checkpoint_path(artifacts.require(cfg, "train_seg", "eval_seg").path),
                            SegmentationModule).eval()
    if torch.cuda.is_available():
        model.cuda(distributed.device_index())
    todo = ids_left(out_dir, e.split, distributed.shard(ids))
    for img_id in progress(todo, desc=f"eval_seg {e.split}", unit="img"):
        image = load_rgb(layout.image_path(img_id))
        prob = predict(model, image, e.scales, e.flip)
        label = crf_from_scores(image, prob, e.crf_params).argmax(0) if e.crf else prob.argmax(0)
        save_label_png(pred_file(out_dir, e.split, img_id), label.astype(np.uint8))
    distributed.wait_for_all()  # every rank's shard is written (DDP; wsss/distributed.py)
    computed = distributed.total(len(todo))
    if distributed.rank() > 0:
        return {}
    metrics = {"eval_seg/images": len(ids), "eval_seg/computed": computed, **_protocol(cfg)}
    if e.split == "test":
        _archive(out_dir)
        return metrics
    metrics.update(evaluate(layout, out_dir, e.split))
    _overlays(layout, out_dir, e.split, ids[: e.num_overlays])
    return metrics


def evaluate(layout, out_dir: Path, split: str) -> dict:
    n = layout.num_classes + 1
    conf = np.zeros((n, n), np.int64)
    for img_id in layout.ids(split):
        conf += confusion(layout.read_mask(img_id), load_label_png(pred_file(out_dir, split, img_id)), n)
    s = scores(conf)
    out = {f"eval_seg/{split}/miou": 100 * s["miou"]}
    for i, name in enumerate(["background"] + layout.class_names):
        out[f"eval_seg/{split}/iou/{name}"] = float(100 * s["iou"][i])
    return out


def _archive(out_dir: Path) -> None:
    """results.tar.gz holding results/VOC2012/Segmentation/comp6_test_cls/*.png, for the server."""
    with atomic_path(Path(out_dir) / "results.tar.gz") as tmp:
        with tarfile.open(tmp, "w:gz") as tar:
            tar.add(Path(out_dir) / "results", arcname="results")


def _protocol(cfg) -> dict:
    e = cfg.seg.eval
    return {"protocol/eval_seg/split": e.split, "protocol/seg/arch": cfg.seg.arch,
            "protocol/seg/init": str(cfg.seg.weights), "protocol/eval_seg/msc": bool(cfg.seg.msc),
            "protocol/eval_seg/scales": ",".join(str(s) for s in e.scales), "protocol/eval_seg/flip": bool(e.flip),
            "protocol/eval_seg/crf": bool(e.crf), "protocol/eval_seg/ignore": "GT 255 ignored"}


def _overlays(layout, out_dir: Path, split: str, ids) -> None:
    """image | prediction | ground truth, with a legend of the classes shown."""
    for img_id in ids:
        pred, gt = load_label_png(pred_file(out_dir, split, img_id)), layout.read_mask(img_id)
        save_panel(Path(out_dir) / "overlays" / f"{img_id}.png",
                   [load_rgb(layout.image_path(img_id)), colour_labels(pred), colour_labels(gt)],
                   [img_id, "prediction", "ground truth"], legend([pred, gt], layout.class_names))
