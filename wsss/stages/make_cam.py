"""make_cam: multi-scale + flip class activation maps for every image of `cam.splits` (§3).

In:  the train_cls checkpoint; the images and their image-level labels (present classes only).
Out: one `<id>.npz` per image (contract.md: keys int64 [K], high_res float16 [K,H,W], strided
     float16 [K,⌈H/4⌉,⌈W/4⌉], max-normalised). Resumable: images already written are skipped.
Runs through Lightning's predict loop, so it shards across devices with trainer=ddp.
"""
from __future__ import annotations

from pathlib import Path

from torch.utils.data import DataLoader

from wsss import artifacts
from wsss.cam import CAMPredictor, SeedWriter, missing_ids
from wsss.data import open_dataset
from wsss.data.datasets import MultiScaleDataset, single_item
from wsss.models.classifier import load_classifier
from wsss.stages import train_cls
from wsss.training import build_trainer, plain

VERSION = 1
STORED = True


def identity(cfg) -> dict:
    return {"cam": plain(cfg.cam), "precision": str(cfg.trainer.precision)}


def upstream(cfg) -> list[str]:
    return ["train_cls"]


def seed_ids(cfg, layout) -> list[str]:
    """Ids of every split in cam.splits, each once, in list order."""
    return list(dict.fromkeys(i for split in cfg.cam.splits for i in layout.ids(split)))


def run(cfg, out_dir: Path) -> dict:
    layout = open_dataset(cfg)
    ids = seed_ids(cfg, layout)
    cls_art = artifacts.require(cfg, "train_cls", "make_cam")
    model = load_classifier(train_cls.checkpoint(cls_art.path))
    todo = missing_ids(out_dir, ids)
    if todo:
        predictor = CAMPredictor(model.backbone, model.cam_weights())
        loader = DataLoader(MultiScaleDataset(layout, todo, cfg.cam.scales), batch_size=1,
                            collate_fn=single_item, num_workers=cfg.num_workers)
        trainer = build_trainer(cfg, out_dir, "make_cam", callbacks=[SeedWriter(out_dir)])
        trainer.predict(predictor, loader, return_predictions=False)
        trainer.strategy.barrier()  # every rank has written its shard
    left = missing_ids(out_dir, ids)
    if left:
        raise RuntimeError(f"make_cam finished but {len(left)} seed files are missing in {out_dir} "
                           f"(e.g. {left[0]}); re-run to complete them")
    return {"make_cam/images": len(ids), "make_cam/computed": len(todo)}
