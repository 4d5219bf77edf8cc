"""eval_cam: seed quality against ground truth (algorithms.md §4).

In:  make_cam's seeds (high_res maps) and the split's SegmentationClass masks.
Out (run directory): `curve.json` + `curve.png` (mIoU for every background threshold of the sweep),
     `overlays/<id>.png` for a fixed sample of images, and metrics: mIoU, per-class IoU /
     precision / recall and the FP/FN split at the stated τ (`cam.threshold`), and the sweep's best.
Protocol: 255 pixels ignored; background + all classes in the mean; the sweep uses the GT, which
the field accepts but which is a mild leakage: the stated-τ figure is the honest one.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from wsss import artifacts
from wsss.cam import seed_file
from wsss.data import open_dataset
from wsss.errors import UserError
from wsss.io import load_rgb, load_seed, write_json
from wsss.metrics import ThresholdSweep, pixel_errors, scores, threshold_cams
from wsss.progress import progress
from wsss.stages import make_cam
from wsss.viz import colour_labels, heatmap, legend, save_curve, save_panel

VERSION = 1
STORED = False


def identity(cfg) -> dict:
    return {"eval_cam": cfg.eval_cam, "threshold": cfg.cam.threshold}


def upstream(cfg) -> list[str]:
    return ["make_cam"]


def sweep_thresholds(spec) -> np.ndarray:
    n = int(round((spec.stop - spec.start) / spec.step)) + 1
    return np.round(spec.start + spec.step * np.arange(n), 6)


def accumulate(layout, seeds: Path, ids, sweeps: list[ThresholdSweep], desc: str) -> None:
    """Add every image's seeds (vs its ground truth) to each threshold sweep."""
    for img_id in progress(ids, desc=desc):
        seed = load_seed(seed_file(seeds, img_id))
        gt = layout.read_mask(img_id)
        if gt.shape != seed["high_res"].shape[1:]:
            raise UserError(f"mask {layout.mask_path(img_id)} is {gt.shape} but the image/seed is "
                            f"{seed['high_res'].shape[1:]}; masks must have the image's size")
        for sweep in sweeps:
            sweep.update(seed["high_res"], seed["keys"], gt)


def best_threshold(cfg, layout, seeds: Path) -> tuple[float, float]:
    """(τ, mIoU %) of the sweep's best background threshold on eval_cam.split's ground truth."""
    sweep = ThresholdSweep(sweep_thresholds(cfg.eval_cam.sweep), layout.num_classes + 1)
    accumulate(layout, seeds, layout.ids(cfg.eval_cam.split), [sweep], desc="sweeping τ on GT")
    curve, best = miou_curve(sweep)
    return float(sweep.thresholds[best]), float(curve[best])


def miou_curve(sweep: ThresholdSweep) -> tuple[list[float], int]:
    """mIoU (%) at every threshold of the sweep, and the index of the best one."""
    curve = [100 * scores(c)["miou"] for c in sweep.confusions()]
    return curve, int(np.nanargmax(curve))


def run(cfg, out_dir: Path) -> dict:
    layout = open_dataset(cfg)
    split = cfg.eval_cam.split
    if split not in cfg.cam.splits:
        raise UserError(f"eval_cam.split={split} has no seeds: add it to cam.splits (now {list(cfg.cam.splits)})")
    seeds = artifacts.require(cfg, "make_cam", "eval_cam").path
    tau = float(cfg.cam.threshold)
    n_labels = layout.num_classes + 1
    sweep = ThresholdSweep(sweep_thresholds(cfg.eval_cam.sweep), n_labels)
    fixed = ThresholdSweep([tau], n_labels)
    ids = layout.ids(split)
    accumulate(layout, seeds, ids, [sweep, fixed], desc=f"eval_cam {split}")
    curve, best = miou_curve(sweep)
    at_tau_conf = fixed.confusions()[0]
    at_tau = scores(at_tau_conf)
    metrics = _metrics(f"eval_cam/{split}", at_tau, layout.class_names, tau, curve[best], sweep.thresholds[best])
    for suffix, conf in (("", at_tau_conf), ("_best", sweep.confusions()[best])):
        metrics.update({f"eval_cam/{split}/error_{k}{suffix}": v for k, v in pixel_errors(conf).items()})
    metrics.update(_protocol(cfg, split))
    write_json(out_dir / "curve.json", {"thresholds": sweep.thresholds.tolist(), "miou": curve,
                                        "threshold": tau, "miou_at_threshold": metrics[f"eval_cam/{split}/miou"]})
    save_curve(out_dir / "curve.png", sweep.thresholds, curve, (tau, 100 * at_tau["miou"]),
               f"{cfg.cam.method} seeds, {split} ({len(ids)} images)")
    _overlays(layout, seeds, ids[: cfg.eval_cam.num_overlays], tau, out_dir / "overlays")
    return metrics


def _metrics(prefix, s, class_names, tau, best_miou, best_tau) -> dict:
    out = {f"{prefix}/miou": 100 * s["miou"], f"{prefix}/threshold": tau,
           f"{prefix}/miou_best": float(best_miou), f"{prefix}/threshold_best": float(best_tau),
           f"{prefix}/fp": 100 * s["fp"], f"{prefix}/fn": 100 * s["fn"]}
    for i, name in enumerate(["background"] + class_names):
        for m in ("iou", "precision", "recall"):
            out[f"{prefix}/{m}/{name}"] = float(100 * s[m][i])
    return out


def _protocol(cfg, split) -> dict:
    return {**seed_protocol(cfg), "protocol/eval_cam/split": split,
            "protocol/eval_cam/threshold_source": "stated (miou); swept on GT (miou_best)",
            "protocol/eval_cam/ignore": "255 ignored", "protocol/eval_cam/crf": False}


def seed_protocol(cfg) -> dict:
    """How the seeds were made: the tags every stage that reads them reports (eval_cam, make_pseudo), so a run
    of either alone still says which method, scales, trunk and seed its figures come from."""
    return {"protocol/cam/method": cfg.cam.method, "protocol/cam/scales": ",".join(str(s) for s in cfg.cam.scales),
            "protocol/cam/flip": True, "protocol/cam/precision": make_cam.precision(cfg),
            "protocol/backbone": cfg.cls.backbone, "protocol/init": str(cfg.cls.weights), "protocol/seed": cfg.seed}


def _overlays(layout, seeds: Path, ids, tau: float, out: Path) -> None:
    """image | one heat map per present class | seed labels at τ | ground truth, with a legend, for a fixed
    sample of ids."""
    for img_id in ids:
        image = load_rgb(layout.image_path(img_id))
        seed = load_seed(seed_file(seeds, img_id))
        maps = seed["high_res"].astype(np.float32)
        pred = threshold_cams(maps, seed["keys"], tau).astype(np.uint8)
        gt = layout.read_mask(img_id)
        heat = [heatmap(image, m) for m in maps]
        titles = [f"map: {layout.class_names[k]}" for k in seed["keys"]]
        save_panel(out / f"{img_id}.png", [image, *heat, colour_labels(pred), colour_labels(gt)],
                   [img_id, *titles, f"seed: best map > τ={tau:.2f}", "ground truth"],
                   legend([pred, gt], layout.class_names), heat_tau=tau)
