"""One image's pseudo-label from its seeds, and the worker pool that makes them in parallel."""
from __future__ import annotations

import multiprocessing as mp
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from wsss import crf
from wsss.errors import UserError
from wsss.io import load_rgb, load_seed, save_label_png
from wsss.metrics import threshold_cams


@dataclass(frozen=True)
class Task:
    img_id: str
    seed: Path
    image: Path
    out: Path


def pseudo_label(image: np.ndarray, seed: dict, refine, tau: float, fg: float, bg: float) -> np.ndarray:
    """Label map (0..C, 255 unsure) of one image; only the image's own classes can appear."""
    maps, keys = seed["high_res"].astype(np.float32), seed["keys"]
    if refine.method == "none":
        return threshold_cams(maps, keys, tau).astype(np.uint8)
    if refine.mode == "label":
        return crf.ir_label(image, maps, keys, fg, bg, refine.label_crf)
    return crf.softmax_label(image, maps, keys, refine.alpha, refine.softmax_crf)


def make_one(task: Task, refine, tau: float, fg: float, bg: float) -> str:
    seed = load_seed(task.seed)
    image = load_rgb(task.image)
    if image.shape[:2] != seed["high_res"].shape[1:]:
        raise UserError(f"image {task.image} is {image.shape[:2]} but its seed {task.seed} is "
                        f"{seed['high_res'].shape[1:]}; the seeds were made from other images: re-run make_cam")
    save_label_png(task.out, pseudo_label(image, seed, refine, tau, fg, bg))
    return task.img_id


_ARGS: tuple = ()


def _init(*args) -> None:
    global _ARGS
    _ARGS = args


def _work(task: Task) -> str:
    return make_one(task, *_ARGS)


def run_tasks(tasks: list[Task], workers: int, refine, tau: float, fg: float, bg: float, desc: str) -> None:
    """Make every task's label map, in `workers` processes (1 = in this process), with a progress bar."""
    bar = tqdm(total=len(tasks), desc=desc, unit="img")
    if workers <= 1 or len(tasks) <= 1:
        for t in tasks:
            make_one(t, refine, tau, fg, bg)
            bar.update()
    else:
        # fork where there is one (as torch's DataLoader workers): spawn would re-import the whole
        # program (torch, Lightning) in every worker; the workers use only numpy and pydensecrf
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        chunk = max(1, min(16, len(tasks) // (8 * workers)))
        with ctx.Pool(workers, initializer=_init, initargs=(refine, tau, fg, bg)) as pool:
            for _ in pool.imap_unordered(_work, tasks, chunksize=chunk):
                bar.update()
    bar.close()


def default_workers(setting) -> int:
    return int(setting) if setting else (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                         else os.cpu_count() or 1)
