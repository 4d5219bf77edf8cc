"""train_recam: ReCAM fine-tuning of the train_cls classifier (algorithms.md §5.2).

Runs only when `cam.method=recam`. Starts from the train_cls checkpoint (backbone + W_bce), adds
the bias-free SCE predictor, and trains the whole network with BCE + λ·SCE on the same data
pipeline as train_cls, with the recipe in `cam.train` (reference: SGD, lr 5e-5 backbone and
W_bce, 5e-4 SCE predictor, λ = 1, 4 epochs, batch 16).
In:  train_cls's `model.ckpt`.  Out: `model.ckpt` (ReCAMModule, loads with weights_only=True).
"""
from __future__ import annotations

from pathlib import Path

from wsss import artifacts
from wsss.data import open_dataset
from wsss.errors import UserError
from wsss.models.classifier import load_classifier
from wsss.models.linear_probe import probe_sce_head, sgd_sce_head
from wsss.models.recam import ReCAMModule
from wsss.stages import train_cls
from wsss.training import (
    apply_min_steps,
    build_trainer,
    checkpoint_path,
    drop_resume_state,
    logged,
    resumable,
    save_checkpoint,
    schedule_identity,
)

VERSION = 3  # 2: the probed SCE head (sce_init=probe) is centred over the classes; 3: sce_acc in percent
STORED = True
DISTRIBUTED = True  # runs on every DDP rank (Lightning shards the work)


def needed(cfg) -> bool:
    return cfg.cam.method == "recam"


def identity(cfg) -> dict:
    return {"train": schedule_identity(cfg.cam.train), "seed": cfg.seed, "precision": str(cfg.trainer.precision)}


def upstream(cfg) -> list[str]:
    return ["train_cls"]


def run(cfg, out_dir: Path) -> dict:
    layout = open_dataset(cfg)
    base = load_classifier(checkpoint_path(artifacts.require(cfg, "train_cls", "train_recam").path))
    model = from_classifier(base, cfg.cam.train)
    callbacks, resume_from = resumable(cfg, out_dir)
    data = train_cls.classification_data(cfg, layout, model.normalization, recam_batch_size(cfg))
    probed = {}
    sce_init = cfg.cam.train.get("sce_init", "random")
    if sce_init not in ("probe", "sgd", "random"):
        raise UserError(f"cam.train.sce_init={sce_init!r}: choose random, sgd or probe")
    if sce_init != "random" and resume_from is None:  # a resumed fit has its SCE head in the checkpoint
        probed = init_sce_head(cfg, model, train_cls.probe_loader(cfg, layout, data.train_ids, model.normalization))
    trainer = build_trainer(cfg, out_dir, "train_recam", max_epochs=cfg.cam.train.epochs,
                            callbacks=callbacks)
    epochs = apply_min_steps(trainer, cfg.cam.train.epochs, cfg.cam.train.get("min_steps"), len(data.train_ids),
                             recam_batch_size(cfg))
    trainer.fit(model, data, ckpt_path=resume_from, weights_only=True)
    save_checkpoint(trainer, out_dir)
    drop_resume_state(out_dir)
    return probed | logged(trainer, ["train_recam/train/loss_epoch", "train_recam/train/bce_epoch",
                            "train_recam/train/sce_epoch", "train_recam/train/sce_acc_epoch", "train_recam/val/loss"]) | {
        "train_recam/epochs": epochs, "train_recam/steps": int(trainer.global_step)}


def recam_batch_size(cfg) -> int:
    """cam.train.batch_size where a recipe sets one (ReCAM's COCO code: 6), else the classifier's (VOC: 16)."""
    return int(cfg.cam.train.get("batch_size") or cfg.cls.batch_size)


def init_sce_head(cfg, model, loader) -> dict:
    """The SCE head before fine-tuning, fitted on the frozen trunk's masked class features: `sgd` replays
    the reference's SCE schedule (its init, SGD recipe and `sce_init_steps` steps, at `sce_lr`); `probe`
    is a full-batch Adam fit, centred. Both exist because a few hundred images give ~125 fine-tuning
    steps, against the reference's 2,644, too few to train the head from its random init (docs/results.md, ReCAM)."""
    t = cfg.cam.train
    if t.sce_init == "probe":
        return {"train_recam/probe/sce": probe_sce_head(model, loader)}
    loss, acc = sgd_sce_head(model, loader, steps=t.sce_init_steps, lr=t.sce_lr, momentum=t.momentum,
                             weight_decay=t.weight_decay, poly_power=t.poly_power, batch_size=recam_batch_size(cfg),
                             seed=cfg.seed)
    return {"train_recam/probe/sce": loss, "train_recam/probe/sce_acc": 100 * acc}


def from_classifier(base, t) -> ReCAMModule:
    """A ReCAMModule with the classifier's architecture and weights, and the ReCAM recipe `t`."""
    hp = base.hparams
    model = ReCAMModule(
        num_classes=hp.num_classes, backbone=hp.backbone, weights=None, lr=t.lr, head_lr_mult=t.head_lr_mult,
        sce_lr=t.sce_lr, loss_weight=t.loss_weight, weight_decay=t.weight_decay, momentum=t.momentum,
        poly_power=t.poly_power, optimizer=t.optimizer, freeze_bn_stats=hp.freeze_bn_stats,
        freeze_stem=hp.freeze_stem, detach_after_layer2=hp.detach_after_layer2, mean=hp.mean, std=hp.std)
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("sce_head.") for k in missing), (missing, unexpected)
    return model
