"""Building Lightning trainers and loggers from the `trainer` and `logger` config groups."""
from __future__ import annotations

import os
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from omegaconf import OmegaConf


def build_trainer(cfg, out_dir: Path, stage: str, **kwargs) -> L.Trainer:
    """A Trainer from `cfg.trainer` (accelerator, devices, precision, …) plus stage-specific kwargs."""
    from wsss import tracking

    logger = False
    if tracking.enabled(cfg):  # the job's W&B run, shared by every stage
        logger = tracking.lightning_logger(stage)
    elif cfg.logger.get("_target_"):
        logger = instantiate(cfg.logger, name=stage)
    kwargs.setdefault("enable_checkpointing", False)
    return instantiate(cfg.trainer, default_root_dir=str(out_dir), logger=logger, **kwargs)


CHECKPOINT = "model.ckpt"


def checkpoint_path(art_path: Path) -> Path:
    """Where a training stage's artifact keeps its model."""
    return Path(art_path) / CHECKPOINT


def save_checkpoint(trainer: L.Trainer, out_dir: Path) -> None:
    """Atomically write `out_dir/model.ckpt`. Collective: every rank calls it, rank 0 writes."""
    tmp = Path(out_dir) / f".{CHECKPOINT}.tmp"
    trainer.save_checkpoint(tmp)
    if trainer.is_global_zero:
        os.replace(tmp, checkpoint_path(out_dir))  # a reader never sees half a checkpoint


def logged(trainer: L.Trainer, keys) -> dict[str, float]:
    """The named end-of-fit values Lightning has, as plain floats."""
    out = {}
    for k in keys:
        v = trainer.callback_metrics.get(k)
        if v is not None:
            out[k.removesuffix("_epoch")] = float(v)
    return out


def plain(section) -> dict:
    return OmegaConf.to_container(section, resolve=True)
