"""make_pseudo: seeds → pseudo-label maps, optionally refined with a dense CRF (algorithms.md §6) or IRN's
random walk (§7.3).

In:  make_cam's seeds for every split of `pseudo.splits`; the images (the CRF sees the original RGB);
     refine=irn: train_irn's boundary network.
Out: `labels/<id>.png` per image (palette PNG, 0..C, 255 = unsure), `overlays/<id>.png` for a
     sample of `pseudo.eval_split`, and metrics against that split's ground truth.
τ is `cam.threshold` (threshold_source=fixed) or the eval_cam sweep's best τ on the ground truth
(threshold_source=swept, a mild GT leakage that tables mark). refine=crf mode=label is IRN/ReCAM's
IR-label construction (two thresholds, 255 where they disagree); mode=softmax is PSA's. refine=irn
random-walks the strided seeds over the boundary network's affinities (no τ: its background threshold is
`refine.sem_seg_bg_threshold`; no 255).
Resumable: images whose PNG exists are skipped (PNGs are written atomically).
Scoring (pitfall 11): `miou` counts pseudo-label 255 pixels as background, as the reference sem-seg
evaluation does (comparable with published mask numbers); `miou_255_ignored` leaves them out (what
a network trained on them sees); `ignore_pct` is the share of 255 pixels.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from wsss import artifacts, distributed
from wsss.cam import seed_file
from wsss.data import open_dataset
from wsss.errors import UserError
from wsss.io import load_label_png, load_rgb, load_seed
from wsss.metrics import IGNORE, confusion, scores, threshold_cams
from wsss.pseudo import Refinement, Task, boundary_map, run_tasks
from wsss.stages.eval_cam import best_threshold, seed_protocol
from wsss.training import checkpoint_path
from wsss.viz import UNSURE, UNSURE_NAME, VOID, VOID_NAME, boundary_picture, colour_labels, legend, save_panel

VERSION = 1
STORED = True
DISTRIBUTED = True  # every DDP rank makes its shard of the images (wsss/distributed.py); rank 0 scores
SHARDS_ITSELF = True  # its per-image work is sharded by wsss/distributed.py, outside Lightning's loops


def identity(cfg) -> dict:
    p, r = cfg.pseudo, cfg.refine
    refine = {k: v for k, v in OmegaConf.to_container(r, resolve=True).items() if k != "workers"}
    ident = {"splits": list(p.splits), "eval_split": p.eval_split, "refine": refine}
    if not uses_tau(r):  # the labels do not depend on τ: sweeping it must not recompute them
        ident["threshold_source"] = "unused"
    elif p.threshold_source == "fixed":
        ident.update(threshold_source="fixed", threshold=float(cfg.cam.threshold))
    else:  # the swept τ follows from the seeds (an input) and the sweep settings
        ident.update(threshold_source=p.threshold_source,
                     sweep={"split": cfg.eval_cam.split, **OmegaConf.to_container(cfg.eval_cam.sweep)})
    return ident


def uses_tau(refine) -> bool:
    """PSA-style CRF ignores τ; the IR-label CRF with both thresholds absolute does too; IRN's walk has
    its own background threshold (τ reaches it through train_irn's IR labels, an input)."""
    if refine.method == "none":
        return True
    if refine.method == "irn":
        return False
    if refine.mode == "softmax":
        return False
    return refine.get("fg_threshold") is None or refine.get("bg_threshold") is None


def tau_tuned_on_gt(cfg) -> bool:
    """τ is the sweep's best on the ground truth (threshold_source=swept) and the labels use it: directly (seeds
    at τ, the IR-label CRF at τ ± offsets) or, for refine=irn, through train_irn's IR labels. Then every figure of
    train_irn, make_pseudo, train_seg and eval_seg was chosen with the ground truth's help, and is marked so."""
    if cfg.pseudo.threshold_source != "swept":
        return False
    return uses_tau(cfg.refine.ir_labels if cfg.refine.method == "irn" else cfg.refine)


def upstream(cfg) -> list[str]:
    return ["make_cam", "train_irn"] if cfg.refine.method == "irn" else ["make_cam"]


def label_file(out_dir: Path, img_id: str) -> Path:
    return Path(out_dir) / "labels" / f"{img_id}.png"


def thresholds(cfg, layout, seeds: Path, r=None) -> tuple[float, float, float]:
    """(τ, fg τ, bg τ): fg/bg are the IR-label thresholds of `r` (default `cfg.refine`), absolute or
    τ + / − an offset."""
    if cfg.pseudo.threshold_source == "fixed":
        tau = float(cfg.cam.threshold)
    else:  # swept (validated up front)
        tau, _ = best_threshold(cfg, layout, seeds)
    r = cfg.refine if r is None else r
    fg = r.get("fg_threshold") if r.get("fg_threshold") is not None else tau + r.get("fg_offset", 0.0)
    bg = r.get("bg_threshold") if r.get("bg_threshold") is not None else tau - r.get("bg_offset", 0.0)
    return tau, float(np.clip(fg, 0, 1)), float(np.clip(bg, 0, 1))


def ids_left(out_dir: Path, ids) -> list[str]:
    """Ids whose label is not written yet (written atomically: present = complete)."""
    return [i for i in ids if not label_file(out_dir, i).exists()]


def images_left(cfg, out_dir: Path) -> int:
    """Images whose labels a resumed run still has to make (the dry run's count)."""
    return len(ids_left(out_dir, open_dataset(cfg).ids_of(cfg.pseudo.splits)))


def run(cfg, out_dir: Path) -> dict:
    layout = open_dataset(cfg)
    p = cfg.pseudo
    seeds = artifacts.require(cfg, "make_cam", "make_pseudo").path
    tau, fg, bg = thresholds(cfg, layout, seeds)
    ids = layout.ids_of(p.splits)
    tasks = [Task(i, seed_file(seeds, i), layout.image_path(i), label_file(out_dir, i))
             for i in ids_left(out_dir, distributed.shard(ids))]
    how = refinement(cfg, tau, fg, bg)
    workers = 1 if how.device != "cpu" else distributed.worker_share(cfg.refine.workers)
    ranks = f", rank {distributed.rank()} of {distributed.world_size()}" if distributed.world_size() > 1 else ""
    run_tasks(tasks, workers, how, desc=f"make_pseudo ({_describe(cfg)}, {workers} workers{ranks})")
    distributed.wait_for_all()  # every rank's shard is written (DDP; wsss/distributed.py)
    computed = distributed.total(len(tasks))
    if distributed.rank() > 0:
        return {}
    metrics = evaluate(layout, partial(label_file, out_dir), p.eval_split)
    metrics.update({f"make_pseudo/{p.eval_split}/threshold": tau, "make_pseudo/images": len(ids),
                    "make_pseudo/computed": computed})
    if cfg.refine.method == "crf" and cfg.refine.mode == "label":
        metrics.update({"make_pseudo/fg_threshold": fg, "make_pseudo/bg_threshold": bg})
    if cfg.refine.method == "irn":
        metrics["make_pseudo/sem_seg_bg_threshold"] = float(cfg.refine.sem_seg_bg_threshold)
    metrics.update(_protocol(cfg))
    _overlays(layout, seeds, out_dir, layout.ids(p.eval_split)[: p.num_overlays], how)
    return metrics


def refinement(cfg, tau: float, fg: float, bg: float) -> Refinement:
    if cfg.refine.method != "irn":
        return Refinement(cfg.refine, tau, fg, bg)
    model = checkpoint_path(artifacts.require(cfg, "train_irn", "make_pseudo").path)
    return Refinement(cfg.refine, tau, model=model, device=irn_device(cfg))


def irn_device(cfg) -> str:
    """The boundary network runs on the GPU when the trainer may use one and there is one (one process),
    else on the CPU in `refine.workers` processes."""
    import torch

    gpu = cfg.trainer.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return f"cuda:{distributed.device_index()}" if gpu else "cpu"


def evaluate(layout, label_path, split: str, prefix: str = "make_pseudo") -> dict:
    """mIoU of the split's label maps (`label_path(id)`) vs GT, with 255 as background and with 255 left out."""
    n = layout.num_classes + 1
    conf_bg = np.zeros((n, n), np.int64)
    conf_ignore = np.zeros((n, n), np.int64)
    unsure = total = 0
    for img_id in layout.ids(split):
        label = load_label_png(label_path(img_id))
        gt = layout.read_mask(img_id)
        if gt.shape != label.shape:
            raise UserError(f"mask {layout.mask_path(img_id)} is {gt.shape} but the image is {label.shape}; "
                            "masks must have the image's size")
        sure = label != IGNORE
        conf_bg += confusion(gt, np.where(sure, label, 0), n)
        conf_ignore += confusion(gt[sure], label[sure], n)
        unsure += int((~sure).sum())
        total += label.size
    s_bg, s_ignore = scores(conf_bg), scores(conf_ignore)
    pre = f"{prefix}/{split}"
    out = {f"{pre}/miou": 100 * s_bg["miou"], f"{pre}/miou_255_ignored": 100 * s_ignore["miou"],
           f"{pre}/ignore_pct": 100 * unsure / max(total, 1)}
    for i, name in enumerate(["background"] + layout.class_names):
        out[f"{pre}/iou/{name}"] = float(100 * s_bg["iou"][i])
        out[f"{pre}/iou_255_ignored/{name}"] = float(100 * s_ignore["iou"][i])
    return out


def _describe(cfg) -> str:
    r = cfg.refine
    return {"none": "no refinement", "irn": "IRN random walk"}.get(r.method, f"CRF, {r.get('mode')} unary")


def _protocol(cfg) -> dict:
    r = cfg.refine
    return {**seed_protocol(cfg), "protocol/make_pseudo/threshold_source": cfg.pseudo.threshold_source,
            "protocol/make_pseudo/refine": r.method if r.method in ("none", "irn") else f"crf-{r.mode}",
            "protocol/make_pseudo/ignore": "255 as background (miou, the reference); left out (miou_255_ignored)",
            "protocol/make_pseudo/splits": ",".join(cfg.pseudo.splits)}


def _overlays(layout, seeds: Path, out_dir: Path, ids, how: Refinement) -> None:
    """image | seed at τ | (IRN: boundary map) | pseudo-label (with its thresholds) | ground truth, and a legend:
    the classes shown, 255 as "unsure" (pseudo-label, magenta) and "void" (ground truth, VOC's cream)."""
    for img_id in ids:
        seed = load_seed(seed_file(seeds, img_id))
        seed_labels = threshold_cams(seed["high_res"].astype(np.float32), seed["keys"], how.tau).astype(np.uint8)
        image = load_rgb(layout.image_path(img_id))
        tiles = [image, colour_labels(seed_labels)]
        captions = [img_id, f"seed @ τ={how.tau:.2f}"]
        if how.model is not None:
            tiles.append(boundary_picture(boundary_map(how, image).cpu().numpy(), image.shape[:2]))
            captions.append("boundary map (IRN)")
        label, gt = load_label_png(label_file(out_dir, img_id)), layout.read_mask(img_id)
        tiles += [colour_labels(label, UNSURE), colour_labels(gt)]
        name_255 = {**({UNSURE: UNSURE_NAME} if (label == 255).any() else {}),
                    **({VOID: VOID_NAME} if (gt == 255).any() else {})}
        entries = legend([seed_labels, label, gt], layout.class_names, name_255)
        save_panel(out_dir / "overlays" / f"{img_id}.png", tiles, captions + [how_made(how), "ground truth"], entries)


def how_made(how: Refinement) -> str:
    """The pseudo-label panel's caption: the refinement and its thresholds."""
    r = how.refine
    if r.method == "none":
        return f"pseudo-label: seed @ τ={how.tau:.2f}"
    if r.method == "irn":
        return f"pseudo-label: IRN walk, bg {r.sem_seg_bg_threshold:.2f}"
    if r.mode == "label":
        return f"pseudo-label: CRF, fg {how.fg:.2f} / bg {how.bg:.2f}"
    return f"pseudo-label: CRF softmax, α={r.alpha}"
