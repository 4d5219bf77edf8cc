"""Building Lightning trainers and loggers from the `trainer` and `logger` config groups."""
from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm
from omegaconf import OmegaConf

from wsss import threads
from wsss.io import TEMP_SUFFIX
from wsss.progress import LinesWhenLogged


def build_trainer(cfg, out_dir: Path, stage: str, **kwargs) -> L.Trainer:
    """A Trainer from `cfg.trainer` (accelerator, devices, precision, …) plus stage-specific kwargs."""
    from wsss import tracking

    logger = False
    if tracking.enabled(cfg):  # the job's W&B run, shared by every stage
        logger = tracking.lightning_logger(stage)
    elif cfg.logger.get("_target_"):
        logger = instantiate(cfg.logger, name=stage)
    kwargs.setdefault("enable_checkpointing", False)
    callbacks = [*kwargs.get("callbacks", []), CoreShare()]
    if cfg.get("channels_last"):
        callbacks.append(ChannelsLast())
    if cfg.trainer.get("enable_progress_bar", True) and kwargs.get("enable_progress_bar", True):
        callbacks.append(StageProgressBar(stage))
    kwargs["callbacks"] = callbacks
    # frozen-statistics BNs report training=False by design (models/backbones/frozen_bn.py)
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
    quiet_lightning()
    return instantiate(cfg.trainer, default_root_dir=str(out_dir), logger=logger, **kwargs)


class CoreShare(Callback):
    """Between batches, a sweep job takes the cores of the sweep's jobs that have ended (wsss/threads.py)."""

    def on_train_batch_end(self, *args, **kwargs) -> None:
        threads.rebalance()

    def on_predict_batch_end(self, *args, **kwargs) -> None:
        threads.rebalance()

    def on_validation_batch_end(self, *args, **kwargs) -> None:
        threads.rebalance()


class _NoAdvertising(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


def quiet_lightning() -> None:
    """What Lightning prints that says nothing about the run, filtered where it arises (not every warning or
    log line): its advertising tip (logged at each Trainer's start through its rank-zero logger) and the
    deprecation warning its own `_pytree` helper raises on every predict loop with torch ≥ 2.9 (Lightning's
    code, not ours: nothing for a user to change)."""
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _NoAdvertising) for f in rank_zero.filters):
        rank_zero.addFilter(_NoAdvertising())
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            module=r"lightning\.pytorch\.utilities\._pytree")


class LineLightningTqdm(LinesWhenLogged, Tqdm):
    """Lightning's bar; whole throttled lines when stdout is not a terminal (wsss/progress.py)."""


class StageProgressBar(TQDMProgressBar):
    """Lightning's bar, named after the stage ("make_cam", "train_cls epoch 3") instead of "Predicting
    DataLoader 0" / "Epoch 3"."""

    def __init__(self, stage: str):
        super().__init__()
        self.stage = stage

    @property
    def train_description(self) -> str:
        return self.stage

    @property
    def predict_description(self) -> str:
        return self.stage

    @property
    def validation_description(self) -> str:
        return f"{self.stage} validation"

    def _bar(self, desc: str, position: int, leave: bool, **extra) -> Tqdm:
        """Lightning's bar settings (TQDMProgressBar.init_*_tqdm), drawn as lines in a log file."""
        return LineLightningTqdm(desc=desc, position=position, disable=self.is_disabled, leave=leave,
                                 dynamic_ncols=True, file=sys.stdout, bar_format=self.BAR_FORMAT, **extra)

    def init_train_tqdm(self) -> Tqdm:
        return self._bar(self.train_description, 2 * self.process_position, True, smoothing=0)

    def init_predict_tqdm(self) -> Tqdm:
        return self._bar(self.predict_description, 2 * self.process_position, True, smoothing=0)

    def init_validation_tqdm(self) -> Tqdm:
        has_main_bar = self.trainer.state.fn != "validate"
        return self._bar(self.validation_description, 2 * self.process_position + has_main_bar, not has_main_bar)

    def init_sanity_tqdm(self) -> Tqdm:
        return self._bar(self.sanity_check_description, 2 * self.process_position, False)

    def on_train_epoch_start(self, trainer, *args) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(f"{self.stage} epoch {trainer.current_epoch}")

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        super().on_predict_batch_start(trainer, pl_module, batch, batch_idx, dataloader_idx)
        self.predict_progress_bar.set_description(self.stage, refresh=False)  # Lightning redraws it at once


class ChannelsLast(L.Callback):
    """Puts the module's 4-D weights in channels-last memory order before training and prediction:
    convolutions then run in NHWC (a conv whose weight is channels-last returns channels-last output, so
    the inputs need no conversion), faster on CPU and the layout tensor cores want on GPU. Values and
    state-dict keys are unchanged; only the layout differs (maps equal to 1e-5: tests/test_cam.py).
    2 cores, one run each: train step ×1.40 for EfficientNet-Lite0, ×1.20 for ResNet-18
    (`scripts/bench_parts.py trunk --size 256`); make_cam on VOC-sized images of varying sizes, where
    every new shape costs oneDNN a new plan, in `scripts/bench.py` (docs/performance.md)."""

    def setup(self, trainer, pl_module, stage):
        import torch

        if stage in ("fit", "predict"):
            pl_module.to(memory_format=torch.channels_last)


CHECKPOINT = "model.ckpt"
RESUME = "resume"  # a training stage's in-progress checkpoints, inside its (not yet sealed) artifact


class ResumeCheckpoint(L.Callback):
    """Keeps `resume/last.ckpt` current: every `every_n_steps` optimiser steps and at every epoch end,
    written beside the target and renamed (atomic, like `save_checkpoint`), so a kill at any moment
    leaves the previous good checkpoint in place. (Lightning's ModelCheckpoint with save_top_k=0
    skips the epoch-end save and writes through $TMPDIR.)"""

    def __init__(self, path: Path, every_n_steps: int):
        self.path, self.every = Path(path), max(1, int(every_n_steps))
        self._last = -1  # the step last saved, so an epoch-end save is not repeated on the next batch

    def _save(self, trainer: L.Trainer) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        save_atomically(trainer, self.path)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step and trainer.global_step % self.every == 0 and trainer.global_step != self._last:
            self._last = trainer.global_step
            self._save(trainer)

    def on_train_epoch_end(self, trainer, pl_module):
        self._last = trainer.global_step
        self._save(trainer)


def resumable(cfg, out_dir: Path) -> tuple[list, str | None]:
    """The callback that keeps `out_dir/resume/last.ckpt` current (every `resume_every_n_steps`
    steps and every epoch), and the checkpoint to resume from when an earlier attempt was killed.

    An unreadable last.ckpt is dropped (by rank 0) with a warning: training restarts.
    """
    import logging

    import torch

    from wsss.artifacts import global_rank

    last = Path(out_dir) / RESUME / "last.ckpt"
    start_from = None
    if last.exists():
        try:
            torch.load(last, map_location="cpu", weights_only=True)  # no unpickling, as fit() loads it
            start_from = str(last)
            logging.getLogger("wsss").info("resuming from %s", last)
        except Exception as e:  # noqa: BLE001 - any failure means: not a usable checkpoint
            logging.getLogger("wsss").warning("ignoring unreadable %s (%s); training starts over", last, e)
            if global_rank() == 0:
                last.unlink(missing_ok=True)
    return [ResumeCheckpoint(last, cfg.resume_every_n_steps)], start_from


def drop_resume_state(out_dir: Path) -> None:
    """After the final model is written, the in-progress checkpoints are no longer needed."""
    import shutil

    shutil.rmtree(Path(out_dir) / RESUME, ignore_errors=True)


def checkpoint_path(art_path: Path) -> Path:
    """Where a training stage's artifact keeps its model."""
    return Path(art_path) / CHECKPOINT


def save_checkpoint(trainer: L.Trainer, out_dir: Path) -> None:
    """Atomically write `out_dir/model.ckpt`. Collective: every rank calls it, rank 0 writes."""
    save_atomically(trainer, checkpoint_path(out_dir))


def save_atomically(trainer: L.Trainer, path: Path) -> None:
    """`trainer.save_checkpoint` beside `path`, then a rename: a reader never sees half a file.
    Collective: every rank calls it, rank 0 writes."""
    tmp = Path(path).with_name(f".{Path(path).name}{TEMP_SUFFIX}")  # swept if a kill leaves it
    # What is *written*: the full training state (optimiser, loops), which resuming needs. It holds
    # tensors and plain values only; every read of it uses torch.load(..., weights_only=True).
    trainer.save_checkpoint(tmp, weights_only=False)
    if trainer.is_global_zero:
        os.replace(tmp, path)


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


OPTIONAL_KEYS = ("min_steps", "batch_size")  # declared later than the schedules they sit in, default null


def schedule_identity(section) -> dict:
    """A training section as a stage's identity, its optional keys left out while null (no minimum of steps,
    the classifier's batch): their arrival in conf/ changes no identity, so no stored artifact, of a schedule
    they leave as it was."""
    out = plain(section)
    for key in OPTIONAL_KEYS:
        if key in out and out[key] is None:
            del out[key]
    return out


def epochs_with_min_steps(epochs: int, min_steps: int | None, num_images: int, batch_size: int,
                          world_size: int = 1) -> int:
    """`epochs`, or more when they give fewer than `min_steps` optimiser steps.

    A schedule stated in epochs gives a smaller set fewer steps: `min_steps` (the steps the recipe was made
    with) keeps them. Steps per epoch as the loaders make them: each of `world_size` ranks takes
    ceil(num_images / world_size) images (DistributedSampler pads) in batches of `batch_size`, the last partial
    batch dropped. Whole epochs, so the count may exceed `min_steps` by less than one epoch.
    """
    if not min_steps:
        return int(epochs)
    per_rank = -(-num_images // world_size)
    batches = max(1, per_rank // batch_size)
    return max(int(epochs), -(-int(min_steps) // batches))


def apply_min_steps(trainer: L.Trainer, epochs: int, min_steps: int | None, num_images: int, batch_size: int) -> int:
    """Set the trainer's epoch count by `epochs_with_min_steps` (its world size known once it is built); the
    poly schedule reads the total from the trainer when the fit starts, so it spans the longer fit."""
    n = epochs_with_min_steps(epochs, min_steps, num_images, batch_size, trainer.world_size)
    trainer.fit_loop.max_epochs = n
    return n
