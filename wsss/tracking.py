"""Weights & Biases tracking (`logger=wandb`), through the official client and Lightning's WandbLogger.

One W&B run per job, opened before the first stage and always finished: exit code 0 on success,
1 when a stage fails (the run shows as failed; the job still exits non-zero). Training stages log
through `WandbLogger(experiment=run)`, the same run; after each stage its scalar metrics go to the
history and summary, its per-class IoU to a table, and a capped set of pictures (CAM overlays;
pseudo-labels and predictions as W&B masks with class names and 255 as "ignore").
Jobs of one Hydra sweep share a group (the sweep directory's name). Without an API key the mode is
offline (`wandb sync <run>/wandb/offline-run-*` uploads later). The config is logged as plain values;
the API key lives only in W&B's own settings/environment, never in the config.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from wsss.io import artifact_files

log = logging.getLogger(__name__)
_RUN = None  # the job's W&B run, when logger=wandb


def enabled(cfg) -> bool:
    return cfg.logger.get("name") == "wandb"


def current():
    return _RUN


def _mode(setting) -> str:
    if setting:
        return str(setting)
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if _has_api_key() else "offline"


def _has_api_key() -> bool:
    """An API key in the environment or in ~/.netrc (where `wandb login` puts it); never read out."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    import netrc

    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _group(cfg) -> str | None:
    if cfg.logger.get("group"):
        return cfg.logger.group
    run_dir = Path(cfg.paths.run_dir)
    return run_dir.parent.name if run_dir.parent.parent.name == "multirun" else None


def start(cfg) -> None:
    """Open the job's run (rank 0 only); a no-op unless logger=wandb."""
    global _RUN
    if not enabled(cfg):
        return
    import wandb

    plain = OmegaConf.to_container(cfg, resolve=True)
    lg = cfg.logger
    _RUN = wandb.init(project=lg.project, entity=lg.get("entity"), group=_group(cfg), tags=list(lg.get("tags") or []),
                      name=Path(cfg.paths.run_dir).name, dir=str(cfg.paths.run_dir), config=plain,
                      mode=_mode(lg.get("mode")), reinit="finish_previous")
    # summaries of the curves: best loss / accuracy / mIoU next to the final value (W&B keeps "last")
    for stage in ("train_cls", "train_recam", "train_seg"):
        for split in ("train", "val"):
            _RUN.define_metric(f"{stage}/{split}/loss*", summary="min,last")
    for name in ("train_cls/val/acc*", "train_seg/val/miou*"):
        _RUN.define_metric(name, summary="max,last")
    log.info("W&B run %s (%s mode, group %s)", _RUN.name, _RUN.settings.mode, _group(cfg))


def finish(failed: bool) -> None:
    global _RUN
    if _RUN is not None:
        _RUN.finish(exit_code=1 if failed else 0)
        _RUN = None


def lightning_logger(stage: str):
    """Lightning's WandbLogger on the job's run. Module hyperparameters are not written into the run
    config (each stage would overwrite the previous one's `lr`, ...): the full config is there."""
    from lightning.pytorch.loggers import WandbLogger

    class StageLogger(WandbLogger):
        def log_hyperparams(self, params, *args, **kwargs) -> None:
            pass

    return StageLogger(experiment=_RUN, prefix="")


def log_stage(cfg, stage: str, metrics: dict) -> None:
    """A finished stage: numbers to history + summary, strings (protocol tags) to summary, per-class
    IoU as a table, and pictures (capped by logger.max_images). Tracking never fails the job."""
    if _RUN is None:
        return
    try:
        _log_stage(cfg, stage, metrics)
    except Exception as e:  # noqa: BLE001 - the stage's results are on disk; W&B is a copy
        log.warning("W&B: could not log stage %s (%s)", stage, e)


def _log_stage(cfg, stage: str, metrics: dict) -> None:
    import wandb

    numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    _RUN.log(numbers)
    _RUN.summary.update({k: v for k, v in metrics.items() if k not in numbers})
    for prefix in sorted({k.split("/iou/")[0] for k in numbers if "/iou/" in k}):
        rows = [[k.split("/iou/")[1], numbers[k]] for k in numbers if k.startswith(prefix + "/iou/")]
        _RUN.log({f"{prefix}/per_class_iou": wandb.Table(columns=["class", "IoU %"], data=rows)})
    images = _pictures(cfg, stage, int(cfg.logger.get("max_images", 8)))
    if images:
        _RUN.log({f"{stage}/images": images})


def _pictures(cfg, stage: str, cap: int) -> list:
    import wandb

    from wsss import artifacts

    if stage == "eval_cam":
        files = artifact_files(Path(cfg.paths.run_dir) / "eval_cam" / "overlays", "*.png")[:cap]
        return [wandb.Image(str(f), caption=f.stem) for f in files]
    if stage not in ("make_pseudo", "eval_seg"):
        return []
    from wsss.data import open_dataset
    from wsss.io import load_label_png, load_rgb
    from wsss.stages.eval_seg import pred_file
    from wsss.stages.make_pseudo import label_file

    layout = open_dataset(cfg)
    out_dir = artifacts.locate(cfg, stage).path
    split = cfg.pseudo.eval_split if stage == "make_pseudo" else cfg.seg.eval.split
    names = {0: "background", **{i + 1: n for i, n in enumerate(layout.class_names)}, 255: "ignore"}
    images = []
    for img_id in layout.ids(split)[:cap]:
        path = label_file(out_dir, img_id) if stage == "make_pseudo" else pred_file(out_dir, split, img_id)
        masks = {"prediction" if stage == "eval_seg" else "pseudo_label":
                 {"mask_data": np.asarray(load_label_png(path)), "class_labels": names}}
        if split != "test":
            masks["ground_truth"] = {"mask_data": layout.read_mask(img_id), "class_labels": names}
        images.append(wandb.Image(load_rgb(layout.image_path(img_id)), masks=masks, caption=img_id))
    return images
