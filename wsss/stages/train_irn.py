"""train_irn: IRN's boundary network from IR labels (algorithms.md §7.1-7.2), for refine=irn.

Runs only when `refine=irn`. Two steps, each resumable:
1. IR labels for every image of `pseudo.splits` (the images IRN's walk will label, as the references train
   IRN on train_aug): refine=crf's label-unary CRF at two thresholds (`refine.ir_labels`, the same code),
   0 background, 1..C classes, 255 unsure. Scored against the masks of `pseudo.eval_split`.
2. The boundary branch on a frozen ImageNet trunk (`refine.train`), with IRN's augmentation (scale 0.5-1.5,
   flip, crop), the IR labels at stride 4, the pairs within radius 10 and the balanced affinity loss,
   SGD with the poly schedule.
In:  make_cam's seeds.  Out: `ir_labels/<id>.png`, `model.ckpt` (IRNModule, loads with weights_only=True).
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

from wsss import artifacts, distributed
from wsss.cam import seed_file
from wsss.data import open_dataset
from wsss.data.datasets import AffinityDataset, loader
from wsss.errors import UserError
from wsss.models.irn import IRNModule
from wsss.pseudo import Refinement, Task, run_tasks
from wsss.stages import make_pseudo
from wsss.training import (
    apply_min_steps,
    build_trainer,
    drop_resume_state,
    logged,
    plain,
    resumable,
    save_checkpoint,
    schedule_identity,
)

VERSION = 2  # 2: stride-4 labels at the cell centres (IRN's PIL resize), were every 4th pixel from the corner
STORED = True
DISTRIBUTED = True  # every DDP rank: its shard of the IR labels (wsss/distributed.py), then Lightning's training
SHARDS_ITSELF = True  # its per-image work is sharded by wsss/distributed.py, outside Lightning's loops


def needed(cfg) -> bool:
    return cfg.refine.method == "irn"


def identity(cfg) -> dict:
    ir = {k: v for k, v in plain(cfg.refine.ir_labels).items() if k != "workers"}
    ident = {"splits": list(cfg.pseudo.splits), "ir_labels": ir, "train": schedule_identity(cfg.refine.train), "seed": cfg.seed,
             "precision": str(cfg.trainer.precision), "threshold_source": cfg.pseudo.threshold_source}
    if cfg.pseudo.threshold_source == "fixed":
        ident["threshold"] = float(cfg.cam.threshold)
    return ident


def upstream(cfg) -> list[str]:
    return ["make_cam"]


def ir_label_file(out_dir: Path, img_id: str) -> Path:
    return Path(out_dir) / "ir_labels" / f"{img_id}.png"


def make_ir_labels(cfg, layout, ids, out_dir: Path) -> dict:
    """The IR label of every image of `ids` (skipping those already written), and their scores."""
    seeds = artifacts.require(cfg, "make_cam", "train_irn").path
    ir = cfg.refine.ir_labels
    tau, fg, bg = make_pseudo.thresholds(cfg, layout, seeds, ir)
    tasks = [Task(i, seed_file(seeds, i), layout.image_path(i), ir_label_file(out_dir, i))
             for i in distributed.shard(ids) if not ir_label_file(out_dir, i).exists()]
    workers = distributed.worker_share(ir.workers)
    run_tasks(tasks, workers, Refinement(ir, tau, fg, bg), desc=f"train_irn: IR labels ({workers} workers)")
    distributed.wait_for_all()  # every rank's shard is written (DDP; wsss/distributed.py)
    if distributed.rank() > 0:
        return {}
    split = cfg.pseudo.eval_split
    scores = make_pseudo.evaluate(layout, partial(ir_label_file, out_dir), split, prefix="train_irn")
    keep = ("miou", "miou_255_ignored", "ignore_pct")
    return {**{f"train_irn/{split}/ir_{k}": scores[f"train_irn/{split}/{k}"] for k in keep},
            "train_irn/ir_fg_threshold": fg, "train_irn/ir_bg_threshold": bg}


def run(cfg, out_dir: Path) -> dict:
    layout = open_dataset(cfg)
    t = cfg.refine.train
    ids = layout.ids_of(cfg.pseudo.splits)
    if len(ids) < t.batch_size:  # checked before the IR labels, which take minutes
        raise UserError(f"pseudo.splits={list(cfg.pseudo.splits)} has {len(ids)} images, fewer than "
                        f"refine.train.batch_size={t.batch_size}")
    if t.crop_size % 4 or t.crop_size // 4 < 2 * t.radius:
        raise UserError(f"refine.train.crop_size={t.crop_size} must be a multiple of 4 and at least {8 * t.radius} "
                        f"(its stride-4 labels must hold pairs of radius {t.radius})")
    metrics = make_ir_labels(cfg, layout, ids, out_dir)  # every rank its shard (DDP); rank 0 scores them
    model = IRNModule(backbone=t.backbone, weights=t.weights, radius=t.radius, lr=t.lr, weight_decay=t.weight_decay,
                      momentum=t.momentum, poly_power=t.poly_power)
    data = AffinityDataset(layout, ids, partial(ir_label_file, out_dir), model.normalization, t.scale_range,
                           t.crop_size)
    callbacks, resume_from = resumable(cfg, out_dir)
    trainer = build_trainer(cfg, out_dir, "train_irn", max_epochs=t.epochs, callbacks=callbacks)
    epochs = apply_min_steps(trainer, t.epochs, t.get("min_steps"), len(ids), t.batch_size)
    workers = cfg.num_workers
    trainer.fit(model, loader(data, t.batch_size, workers, persistent=True, shuffle=True, drop_last=True),
                ckpt_path=resume_from, weights_only=True)
    save_checkpoint(trainer, out_dir)
    drop_resume_state(out_dir)
    keys = [f"train_irn/train/{k}_epoch" for k in ("loss", "bg_pos", "fg_pos", "neg")]
    return {**metrics, **logged(trainer, keys), "train_irn/train/images": len(ids),
            "train_irn/epochs": epochs, "train_irn/steps": int(trainer.global_step)}
