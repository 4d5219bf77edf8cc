"""make_cam: multi-scale + flip seed maps for every image of `cam.splits` (§3), by the method `cam.method`.

In:  the train_cls checkpoint (cam=cam and every other method, wsss/seed_methods/) or the train_recam one
     (cam=recam); the images and their image-level labels (present classes only).
Out: one `<id>.npz` per image (contract.md: keys int64 [K], high_res float16 [K,H,W], strided
     float16 [K,⌈H/4⌉,⌈W/4⌉], max-normalised). Resumable: images already written are skipped.
Runs through Lightning's predict loop, so it shards across devices with trainer=ddp.
"""
from __future__ import annotations

import shutil
import time
from functools import partial
from pathlib import Path

from wsss import artifacts
from wsss.cam import SeedPredictor, SeedWriter, missing_ids
from wsss.data import open_dataset
from wsss.data.datasets import MultiScaleDataset, loader, single_item
from wsss.errors import UserError
from wsss.models.classifier import load_checkpoint, load_classifier
from wsss.models.recam import ReCAMModule
from wsss.seed_methods import method_module, options
from wsss.training import build_trainer, checkpoint_path

VERSION = 1
STORED = True
DISTRIBUTED = True  # runs on every DDP rank (Lightning shards the work)


def identity(cfg) -> dict:
    """What shapes the maps (not τ, which only eval_cam / make_pseudo use)."""
    c = cfg.cam
    ident = {"method": c.method, "scales": list(c.scales), "splits": list(c.splits),
             "precision": precision(cfg)}
    if c.method == "recam":
        ident["map_weights"] = c.map_weights
    elif c.method != "cam":  # a method's own settings (target layers, batch size, …)
        ident["options"] = options(c)
    if c.get("upsample", "bilinear") != "bilinear":  # absent otherwise: the stored bilinear maps keep their keys
        ident["upsample"] = {"mode": c.upsample, "sigma": float(c.gaussian_sigma)}
    return ident


def precision(cfg) -> str:
    """The maps' arithmetic: cam.precision, else the trainer's (bf16-mixed / 16-mixed run the method under
    autocast; the maps are combined in float32 either way)."""
    return str(cfg.cam.get("precision") or cfg.trainer.precision)


def upstream(cfg) -> list[str]:
    prepared = getattr(method_module(cfg.cam.method), "PREPARED_BY", None)
    return [model_stage(cfg)] + ([prepared] if prepared else [])


def model_stage(cfg) -> str:
    method_module(cfg.cam.method)  # a known method
    return "train_recam" if cfg.cam.method == "recam" else "train_cls"


def load_maps_model(cfg):
    """(the classifier the configured method reads, its input normalisation)."""
    stage = model_stage(cfg)
    path = checkpoint_path(artifacts.require(cfg, stage, "make_cam").path)
    model = load_checkpoint(path, ReCAMModule) if stage == "train_recam" else load_classifier(path)
    return model, model.normalization


def estimated_bytes(layout, ids) -> int:
    """Upper bound of the seed files' size: float16 high-res + strided maps per present class
    (sizes from the image headers, no decoding; compression only makes the files smaller)."""
    from PIL import Image

    total = 0
    for i in ids:
        with Image.open(layout.image_path(i)) as img:
            w, h = img.size
        k = int(layout.labels(i).sum())
        total += 2 * k * (h * w + -(-h // 4) * -(-w // 4)) + 512
    return total


def check_disk_space(layout, ids, out_dir: Path) -> None:
    """Refuse to start when the seeds cannot fit: better now than after hours of inference."""
    if not ids:
        return
    need, free = estimated_bytes(layout, ids), shutil.disk_usage(out_dir).free
    if need > free:
        raise UserError(f"make_cam needs up to {need / 2**30:.2f} GiB for {len(ids)} seed files in {out_dir} but "
                        f"only {free / 2**30:.2f} GiB are free; free space or set paths.artifacts_dir elsewhere")


def seed_predictor(cfg, model, method) -> SeedPredictor:
    """The predict-loop module of the configured method: its options, the stored artifact it is prepared by
    (`PREPARED_BY`), and whether it owns the multi-scale loop (`image_maps`)."""
    opts = options(cfg.cam)
    prepared = getattr(method, "PREPARED_BY", None)
    if prepared:
        opts["prepared"] = artifacts.require(cfg, prepared, "make_cam").path
    image_maps = partial(method.image_maps, **opts) if hasattr(method, "image_maps") else None
    return SeedPredictor(model, partial(method.maps, **opts), method.NEEDS_GRAD, cfg.cam.get("upsample", "bilinear"),
                         float(cfg.cam.get("gaussian_sigma", 1.0)), image_maps)


def images_left(cfg, out_dir: Path) -> int:
    """Images whose seeds a resumed run still has to make (the dry run's count)."""
    return len(missing_ids(out_dir, open_dataset(cfg).ids_of(cfg.cam.splits)))


def run(cfg, out_dir: Path) -> dict:
    layout = open_dataset(cfg)
    ids = layout.ids_of(cfg.cam.splits)
    todo = missing_ids(out_dir, ids)
    check_disk_space(layout, todo, out_dir)
    timing = {}
    if todo:
        model, norm = load_maps_model(cfg)
        method = method_module(cfg.cam.method)
        predictor = seed_predictor(cfg, model, method)
        owns_scales = hasattr(method, "image_maps")
        images = loader(MultiScaleDataset(layout, todo, cfg.cam.scales, norm, with_image=owns_scales), 1,
                        cfg.num_workers, collate_fn=single_item)
        trainer = build_trainer(cfg, out_dir, "make_cam", callbacks=[SeedWriter(out_dir)],
                                inference_mode=not method.NEEDS_GRAD, precision=precision(cfg))
        start = time.time()
        trainer.predict(predictor, images, return_predictions=False)
        trainer.strategy.barrier()  # every rank has written its shard
        # device-seconds per image (wall time × devices / images), the cost of the method at these scales
        timing = {"make_cam/seconds_per_image": (time.time() - start) * trainer.world_size / len(todo)}
    left = missing_ids(out_dir, ids)
    if left:
        raise RuntimeError(f"make_cam finished but {len(left)} seed files are missing in {out_dir} "
                           f"(e.g. {left[0]}); re-run to complete them")
    return {"make_cam/images": len(ids), "make_cam/computed": len(todo), **timing}
