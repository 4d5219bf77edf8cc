"""train_seg: fit the segmentation network on pseudo-labels (algorithms.md §8).

In:  make_pseudo's label maps of `seg.train_split`; the real masks of `seg.val_split` (validation).
Out: `model.ckpt` (Lightning checkpoint with plain hyperparameters; loads with weights_only=True).
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

from wsss import artifacts
from wsss.data import open_dataset
from wsss.data.datasets import SegmentationDataset, loader
from wsss.errors import UserError
from wsss.models.classifier import load_classifier
from wsss.models.segmenter import SegmentationModule
from wsss.stages.make_pseudo import label_file
from wsss.training import build_trainer, checkpoint_path, drop_resume_state, logged, plain, resumable, save_checkpoint

VERSION = 2  # 2: the input normalisation in the checkpoint
STORED = True
DISTRIBUTED = True  # runs on every DDP rank (Lightning shards the work)


def identity(cfg) -> dict:
    return {"seg": {k: v for k, v in plain(cfg.seg).items() if k != "eval"}, "seed": cfg.seed,
            "precision": str(cfg.trainer.precision)}


def upstream(cfg) -> list[str]:
    return ["make_pseudo", "train_cls"] if cfg.seg.arch == "cls_aspp" else ["make_pseudo"]


def build_model(cfg, num_labels: int) -> SegmentationModule:
    """The configured network; seg.arch=cls_aspp takes the classifier's trunk: its ResNet, BN setting
    and trained weights (learnt from image-level labels only)."""
    s = cfg.seg
    hp = dict(num_classes=num_labels, arch=s.arch, weights=s.weights, optimizer=s.optimizer, lr=s.lr,
              head_lr_mult=s.head_lr_mult, head_bias_lr_mult=s.head_bias_lr_mult, weight_decay=s.weight_decay,
              momentum=s.momentum, poly_power=s.poly_power, msc=s.msc, freeze_bn=s.freeze_bn,
              full_res_loss=s.full_res_loss)
    if s.arch != "cls_aspp":
        return SegmentationModule(**hp)
    cls = load_classifier(checkpoint_path(artifacts.require(cfg, "train_cls", "train_seg").path))
    model = SegmentationModule(**{**hp, "trunk": cls.hparams.backbone, "freeze_bn": cls.hparams.freeze_bn_stats,
                                  "mean": cls.hparams.mean, "std": cls.hparams.std})
    model.net.backbone.load_state_dict(cls.backbone.state_dict())
    return model


def run(cfg, out_dir: Path) -> dict:
    s = cfg.seg
    layout = open_dataset(cfg)
    labels = artifacts.require(cfg, "make_pseudo", "train_seg").path
    model = build_model(cfg, layout.num_classes + 1)
    train = SegmentationDataset(layout, layout.ids(s.train_split), partial(label_file, labels), True,
                                model.normalization, s.scales, s.crop_size)
    val = SegmentationDataset(layout, layout.ids(s.val_split), layout.mask_path, False, model.normalization)
    if len(train) < s.batch_size:
        raise UserError(f"seg.train_split={s.train_split} has {len(train)} images, fewer than "
                        f"seg.batch_size={s.batch_size}")
    workers = cfg.num_workers
    callbacks, resume_from = resumable(cfg, out_dir)
    trainer = build_trainer(cfg, out_dir, "train_seg", max_steps=s.max_steps, max_epochs=-1,
                            accumulate_grad_batches=s.accumulate, check_val_every_n_epoch=s.val_every_n_epochs,
                            callbacks=callbacks)
    trainer.fit(model,
                loader(train, s.batch_size, workers, persistent=True, shuffle=True, drop_last=True),
                loader(val, 1, workers, persistent=True), ckpt_path=resume_from,
                weights_only=True)
    save_checkpoint(trainer, out_dir)
    drop_resume_state(out_dir)
    return {**logged(trainer, ["train_seg/train/loss_epoch", "train_seg/val/miou"]),
            "train_seg/train/images": len(train), "train_seg/steps": int(trainer.global_step)}
