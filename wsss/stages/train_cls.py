"""train_cls: fit the multi-label classifier on image-level labels (algorithms.md §2).

In:  the dataset's `cls_train` split (images + image-level labels), `cls_val` for a val loss.
Out: `model.ckpt` (Lightning checkpoint, plain hyperparameters, loads with weights_only=True).
"""
from __future__ import annotations

import logging
from pathlib import Path

from torch.utils.data import DataLoader

from wsss.data import dataset_identity, open_dataset
from wsss.data.datasets import ClassificationDataModule, ResizedDataset, loader, single_item
from wsss.errors import UserError
from wsss.models.classifier import ClassifierModule
from wsss.models.linear_probe import probe_head
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

VERSION = 4  # 2: frozen BN statistics really frozen under Lightning; 3: normalisation in the checkpoint;
             # 4: accuracies in percent (a reused older classifier would report fractions)
STORED = True
DISTRIBUTED = True  # runs on every DDP rank (Lightning shards the work)
log = logging.getLogger(__name__)


def identity(cfg) -> dict:
    return {"dataset": dataset_identity(cfg), "splits": plain(cfg.dataset.splits), "cls": schedule_identity(cfg.cls),
            "seed": cfg.seed,
            "precision": str(cfg.trainer.precision)}


def upstream(cfg) -> list[str]:
    return []


def run(cfg, out_dir: Path) -> dict:
    layout = open_dataset(cfg)
    c = cfg.cls
    model = ClassifierModule(
        num_classes=layout.num_classes, backbone=c.backbone, weights=c.weights, lr=c.lr,
        head_lr_mult=c.head_lr_mult, weight_decay=c.weight_decay, momentum=c.momentum,
        poly_power=c.poly_power, optimizer=c.optimizer, freeze_bn_stats=c.freeze_bn_stats, freeze_stem=c.freeze_stem,
        detach_after_layer2=c.detach_after_layer2)
    data = classification_data(cfg, layout, model.normalization)
    callbacks, resume_from = resumable(cfg, out_dir)
    probed = {}
    if c.head_init == "probe" and resume_from is None:  # a resumed fit has its head in the checkpoint
        probed["train_cls/probe/loss"] = probe_head(model, probe_loader(cfg, layout, data.train_ids, model.normalization))
        log.info("train_cls: head initialised by a linear probe of the frozen trunk (loss %.3f)",
                 probed["train_cls/probe/loss"])
    elif c.head_init not in ("probe", "random"):
        raise UserError(f"cls.head_init={c.head_init!r}: choose probe or random")
    trainer = build_trainer(cfg, out_dir, "train_cls", max_epochs=c.epochs,
                            callbacks=callbacks)
    epochs = apply_min_steps(trainer, c.epochs, c.get("min_steps"), len(data.train_ids), c.batch_size)
    trainer.fit(model, data, ckpt_path=resume_from,
                weights_only=True)
    save_checkpoint(trainer, out_dir)
    drop_resume_state(out_dir)
    return {**probed, **logged(trainer, ["train_cls/train/loss_epoch", "train_cls/val/loss", "train_cls/val/acc"]),
            "train_cls/train/images": len(data.train_ids), "train_cls/epochs": epochs,
            "train_cls/steps": int(trainer.global_step)}


def classification_data(cfg, layout, norm, batch_size: int | None = None) -> ClassificationDataModule:
    """The image-label data of train_cls and train_recam: the same splits and augmentation,
    normalised as the model's trunk wants (`norm`, from the model); batches of `batch_size` (default cls's)."""
    c = cfg.cls
    return ClassificationDataModule(layout, labelled(layout, layout.ids(cfg.dataset.splits.cls_train)),
                                    labelled(layout, layout.ids(cfg.dataset.splits.cls_val)),
                                    batch_size or c.batch_size, cfg.num_workers, tuple(c.resize_long), c.crop_size,
                                    norm)


def probe_loader(cfg, layout, ids, norm) -> DataLoader:
    """The linear probe's images: each at the middle of the training long-side range, whole."""
    long_side = round(sum(cfg.cls.resize_long) / 2)
    return loader(ResizedDataset(layout, ids, long_side, norm), 1, cfg.num_workers, collate_fn=single_item)


def labelled(layout, ids) -> list[str]:
    """Images without any class label carry no signal for the classifier: skipped with a warning."""
    kept = [i for i in ids if layout.labels(i).any()]
    skipped = [i for i in ids if not layout.labels(i).any()]
    if skipped:
        log.warning("skipping %d images without image-level labels (e.g. %s)", len(skipped), skipped[0])
    if not kept:
        raise UserError(f"no labelled images in {layout.root}; check Annotations/ or SegmentationClass/")
    return kept


