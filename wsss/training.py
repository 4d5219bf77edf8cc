"""Building Lightning trainers and loggers from the `trainer` and `logger` config groups."""
from __future__ import annotations

from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from omegaconf import OmegaConf


def build_trainer(cfg, out_dir: Path, stage: str, **kwargs) -> L.Trainer:
    """A Trainer from `cfg.trainer` (accelerator, devices, precision, …) plus stage-specific kwargs."""
    logger = False
    if cfg.logger.get("_target_"):
        logger = instantiate(cfg.logger, name=stage)
    kwargs.setdefault("enable_checkpointing", False)
    return instantiate(cfg.trainer, default_root_dir=str(out_dir), logger=logger, **kwargs)


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
