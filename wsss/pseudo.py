"""One image's pseudo-label from its seeds, and the worker pool that makes them in parallel.

refine=irn also needs train_irn's boundary network (`Refinement.model`): each worker process loads it
once and runs it with one thread (the pool gives the parallelism), or the main process runs it on the GPU.
"""
from __future__ import annotations

import multiprocessing as mp
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsss import crf
from wsss.errors import UserError
from wsss.io import load_rgb, load_seed, save_label_png
from wsss.metrics import threshold_cams
from wsss.progress import progress
from wsss.random_walk import rw_label


@dataclass(frozen=True)
class Task:
    img_id: str
    seed: Path
    image: Path
    out: Path


@dataclass(frozen=True)
class Refinement:
    """How one image's seeds become its label map: the refine config, the thresholds, and for refine=irn the
    boundary network's checkpoint and the device it runs on."""
    refine: object
    tau: float
    fg: float = 0.0
    bg: float = 0.0
    model: Path | None = None
    device: str = "cpu"


def pseudo_label(image: np.ndarray, seed: dict, how: Refinement) -> np.ndarray:
    """Label map (0..C, 255 unsure) of one image; only the image's own classes can appear."""
    refine = how.refine
    maps, keys = seed["high_res"].astype(np.float32), seed["keys"]
    if refine.method == "none":
        return threshold_cams(maps, keys, how.tau).astype(np.uint8)
    if refine.method == "irn":
        return rw_label(seed["strided"].astype(np.float32), keys, boundary_map(how, image), image.shape[:2],
                        refine.sem_seg_bg_threshold, refine.beta, refine.exp_times, refine.radius)
    if refine.mode == "label":
        return crf.ir_label(image, maps, keys, how.fg, how.bg, refine.label_crf)
    return crf.softmax_label(image, maps, keys, refine.alpha, refine.softmax_crf)


_NETS: dict = {}


def boundary_map(how: Refinement, image: np.ndarray):
    """IRN's boundary map of an uint8 image at stride 4 (its network loaded once per process)."""
    from wsss.data.transforms import normalize, to_chw
    from wsss.models.irn import load_irn

    key = (how.model, how.device)
    if key not in _NETS:
        _NETS[key] = load_irn(how.model).to(how.device).eval()
    net = _NETS[key]
    return net.boundary(to_chw(normalize(image, net.normalization)).to(how.device))


def make_one(task: Task, how: Refinement) -> str:
    seed = load_seed(task.seed)
    image = load_rgb(task.image)
    if image.shape[:2] != seed["high_res"].shape[1:]:
        raise UserError(f"image {task.image} is {image.shape[:2]} but its seed {task.seed} is "
                        f"{seed['high_res'].shape[1:]}; the seeds were made from other images: re-run make_cam")
    save_label_png(task.out, pseudo_label(image, seed, how))
    return task.img_id


_HOW: Refinement | None = None


def _init(how: Refinement) -> None:
    global _HOW
    _HOW = how
    if how.model is not None:  # the pool gives the parallelism: one thread each, no oversubscription
        import torch

        torch.set_num_threads(1)


def _work(task: Task) -> str:
    return make_one(task, _HOW)


def run_tasks(tasks: list[Task], workers: int, how: Refinement, desc: str) -> None:
    """Make every task's label map, in `workers` processes (1 = in this process), with a progress bar."""
    bar = progress(total=len(tasks), desc=desc, unit="img")
    if workers <= 1 or len(tasks) <= 1:
        for t in tasks:
            make_one(t, how)
            bar.update()
    else:
        # fork where there is one (as torch's DataLoader workers): spawn would re-import the whole
        # program (torch, Lightning) in every worker
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        chunk = max(1, min(16, len(tasks) // (8 * workers)))
        with ctx.Pool(workers, initializer=_init, initargs=(how,)) as pool:
            for _ in pool.imap_unordered(_work, tasks, chunksize=chunk):
                bar.update()
    bar.close()
