"""Calibrate IRN's walk background threshold (`sem_seg_bg_threshold`) as the stated τ is calibrated: the best
value over one half of a split's images, checked on the other half (docs/results.md, "The stated τ").

    python scripts/walk_threshold.py [--half even|odd|all] [--workers N] OVERRIDES...

OVERRIDES are the run's own (e.g. `experiment=voc_small dataset.root=... refine=irn seed=0`): the seeds and the
boundary network are the stored artifacts of that run (make_cam, train_irn; run the pipeline first). The walk
is run once per image; the threshold only places the background plane before the argmax, so one pass scores
every threshold of eval_cam's sweep (the same ThresholdSweep, ties to the background as in the walk's argmax).
Prints the curve's best, the figure at the configured threshold, and a JSON line.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
from pathlib import Path

import numpy as np


def compose(overrides: list[str]):
    from wsss.config import compose as compose_config

    return compose_config([f"paths.root={Path.cwd()}", "paths.run_dir=.", *overrides])


_JOB: dict = {}


def _walk(img_id: str):
    """(id, walked maps in float16 [K, H, W], keys) of one image, in a worker (one thread)."""
    from wsss.io import load_rgb, load_seed
    from wsss.pseudo import boundary_map
    from wsss.random_walk import rw_maps

    how, r, seed_path, image_path = _JOB["how"], _JOB["refine"], _JOB["seed"](img_id), _JOB["image"](img_id)
    seed, image = load_seed(seed_path), load_rgb(image_path)
    if len(seed["keys"]) == 0:
        return img_id, np.zeros((0, *image.shape[:2]), np.float16), seed["keys"]
    maps = rw_maps(seed["strided"].astype(np.float32), boundary_map(how, image), image.shape[:2], r.beta,
                   r.exp_times, r.radius)
    return img_id, maps.cpu().numpy().astype(np.float16), seed["keys"]


def _init(job: dict) -> None:
    import torch

    _JOB.update(job)
    torch.set_num_threads(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--half", choices=["even", "odd", "all"], default="even",
                    help="the split's even-indexed (0, 2, …), odd-indexed or all images")
    ap.add_argument("--workers", type=int, default=None, help="processes (default: every CPU)")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()

    from functools import partial

    from wsss import artifacts
    from wsss.cam import seed_file
    from wsss.data import open_dataset
    from wsss.distributed import worker_share
    from wsss.metrics import ThresholdSweep, scores
    from wsss.progress import progress
    from wsss.pseudo import Refinement
    from wsss.stages.eval_cam import sweep_thresholds
    from wsss.training import checkpoint_path

    cfg = compose(args.overrides)
    if cfg.refine.method != "irn":
        raise SystemExit("walk_threshold: give the run's overrides with refine=irn")
    layout = open_dataset(cfg)
    seeds, irn = artifacts.locate(cfg, "make_cam"), artifacts.locate(cfg, "train_irn")
    for name, art in (("make_cam", seeds), ("train_irn", irn)):
        if not art.complete:
            raise SystemExit(f"walk_threshold: no complete {name} artifact for these overrides ({art.path}); "
                             f"run `wsss {' '.join(args.overrides)} stages=[train_cls,make_cam,train_irn]` first")
    split = cfg.pseudo.eval_split
    ids = layout.ids(split)
    ids = ids if args.half == "all" else ids[0 if args.half == "even" else 1::2]
    job = {"how": Refinement(cfg.refine, 0.0, model=checkpoint_path(irn.path)), "refine": cfg.refine,
           "seed": partial(seed_file, seeds.path), "image": layout.image_path}
    sweep = ThresholdSweep(sweep_thresholds(cfg.eval_cam.sweep), layout.num_classes + 1)
    at_setting = ThresholdSweep([float(cfg.refine.sem_seg_bg_threshold)], layout.num_classes + 1)
    workers = args.workers or worker_share(None)
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ctx.Pool(workers, initializer=_init, initargs=(job,)) as pool:
        for img_id, maps, keys in progress(pool.imap_unordered(_walk, ids), total=len(ids), desc="walk_threshold"):
            gt = layout.read_mask(img_id)
            sweep.update(maps, keys, gt)
            at_setting.update(maps, keys, gt)
    curve = [100 * scores(c)["miou"] for c in sweep.confusions()]
    best = int(np.nanargmax(curve))
    setting = 100 * scores(at_setting.confusions()[0])["miou"]
    result = {"split": split, "half": args.half, "images": len(ids), "best_threshold": float(sweep.thresholds[best]),
              "miou_best": round(curve[best], 2), "threshold": float(cfg.refine.sem_seg_bg_threshold),
              "miou_at_threshold": round(setting, 2)}
    print(f"{split} ({args.half} half, {len(ids)} images): best {result['best_threshold']:.2f} "
          f"({result['miou_best']:.1f}); at the configured {result['threshold']:.2f}: {result['miou_at_threshold']:.1f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
