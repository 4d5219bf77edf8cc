"""Each job's share of the machine's cores, so that parallel sweep jobs do not oversubscribe it.

A torch process uses every core for its intra-op threads, and make_pseudo's pools start a process per core:
two such jobs side by side on one machine run far slower than one after the other (issue 33: make_cam fell
from 13 to 0.5 images/s under `hydra/launcher=joblib` with 2 jobs). A job's share, `cpu_threads`:

- set explicitly (`cpu_threads=4`): that;
- Hydra's joblib launcher: the cores ÷ the jobs it runs at once (min of `n_jobs`, -1 = one per core, and the
  sweep's size);
- Hydra's submitit launchers: `hydra.launcher.cpus_per_task` when given; submitit_local otherwise starts every job
  of the sweep at once, so the cores ÷ the sweep's size; on SLURM without it, the cores the job was given
  (its CPU affinity);
- otherwise (one run, or the basic launcher's jobs one after another): every core the process may use.

The share sets torch's intra-op threads and OMP_NUM_THREADS (inherited by the worker processes) and is the
default size of the per-image worker pools (`refine.workers: null`, wsss/pseudo.py).
The sweep's size is counted where it is known, in the launching process, by Hydra's own sweeper from the
command line, and handed to the jobs in WSSS_SWEEP_JOBS.

The share follows the sweep as it runs: jobs of a sweep seldom cost the same (`cam=cam,fdcam`), and a job left
running alone on half the cores would make the parallel sweep slower than the same jobs one after another. The
launching process makes a folder (WSSS_SWEEP_ROOM) where each job leaves a mark when it ends; a running job
recounts the marks every few seconds between batches (`rebalance`, called by the trainers' `CoreShare`
callback) and takes the cores of the jobs that ended and were not replaced: cores ÷ min(jobs at once, jobs not
yet ended). Only torch's threads grow this way; a worker pool already started keeps its size.
"""
from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

log = logging.getLogger("wsss")
SWEEP_JOBS = "WSSS_SWEEP_JOBS"
SWEEP_ROOM = "WSSS_SWEEP_ROOM"
RECOUNT_SECONDS = 3.0
_SHARE: int | None = None
_AT_ONCE: int | None = None  # jobs of this sweep at once on this machine, when the share follows the sweep
_SWEEP: int | None = None  # the sweep's size
_LAST_COUNT = 0.0


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def count_sweep_jobs(argv: list[str]) -> int | None:
    """The number of jobs `wsss -m ARGS` launches (Hydra's basic sweeper's product of the comma lists), or
    None when argv is not a multirun or cannot be parsed (Hydra then reports the error itself)."""
    if not {"-m", "--multirun"} & set(argv):
        return None
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args = [a for a in argv if not a.startswith("-")]
    try:
        batches = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(args), None)
    except Exception:  # noqa: BLE001 - Hydra's parser errors have no common base; Hydra reports them
        return None
    return sum(len(b) for b in batches)


def parallel_jobs(launcher: dict, sweep_jobs: int | None) -> int | None:
    """How many jobs of this sweep run at once on this machine, or None when the launcher decides per job."""
    target = str(launcher.get("_target_", ""))
    jobs = sweep_jobs or 1
    if "joblib" in target:
        n = int(launcher.get("n_jobs") or -1)
        at_once = available_cores() + 1 + n if n < 0 else n  # joblib: -1 = every core, -2 = all but one ...
        return max(1, min(jobs, at_once))
    if "submitit" in target and "LocalLauncher" in target:
        return max(1, jobs)
    return None


def job_share(setting, launcher: dict | None, sweep_jobs: int | None, ended: int = 0) -> int:
    """This job's cores (see the module's docstring); `ended`: the sweep's jobs that have ended."""
    if setting:
        return max(1, int(setting))
    launcher = launcher or {}
    if launcher.get("cpus_per_task"):
        return int(launcher["cpus_per_task"])
    at_once = parallel_jobs(launcher, sweep_jobs)
    return cores_among(at_once, sweep_jobs, ended) if at_once else available_cores()


def cores_among(at_once: int, sweep_jobs: int | None, ended: int) -> int:
    """The cores ÷ the jobs running now: as many as run at once, fewer when too few jobs are left."""
    return max(1, available_cores() // min(at_once, max(1, (sweep_jobs or 1) - ended)))


def open_room() -> None:
    """In the launching process of a multirun: the folder where the sweep's jobs mark their end (removed when
    the launcher exits, after its jobs)."""
    if SWEEP_ROOM not in os.environ:
        room = tempfile.mkdtemp(prefix="wsss-sweep-")
        atexit.register(shutil.rmtree, room, ignore_errors=True)
        os.environ[SWEEP_ROOM] = room


def ended_jobs() -> int:
    room = os.environ.get(SWEEP_ROOM)
    return len(os.listdir(room)) if room and os.path.isdir(room) else 0


def mark_job_ended() -> None:
    """Tell the sweep's other jobs that this one has ended (its cores are free)."""
    room = os.environ.get(SWEEP_ROOM)
    if room and os.path.isdir(room):
        (Path(room) / uuid.uuid4().hex).touch()  # joblib runs several jobs in one process: no pid names


def apply_share(cfg) -> int:
    """Set this job's share (torch threads, OMP_NUM_THREADS, the pools' default size); returns it."""

    global _SHARE, _AT_ONCE, _SWEEP, _LAST_COUNT
    launcher = {}
    try:
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import OmegaConf

        if HydraConfig.initialized():
            launcher = OmegaConf.to_container(HydraConfig.get().launcher, resolve=False) or {}
    except (ImportError, ValueError):
        launcher = {}
    sweep = os.environ.get(SWEEP_JOBS)
    _SWEEP = int(sweep) if sweep else None
    setting = cfg.get("cpu_threads")
    share = job_share(setting, launcher, _SWEEP, ended_jobs())
    follows = not setting and not launcher.get("cpus_per_task")
    _AT_ONCE = parallel_jobs(launcher, _SWEEP) if follows else None
    _LAST_COUNT = time.monotonic()
    # a joblib worker runs job after job: set the share of each, also where it is every core
    if share != available_cores() or setting or _AT_ONCE is not None:
        _set_threads(share)
        log.info("this job's share of the cores: %d of %d (cpu_threads; docs/sweeps.md)", share, available_cores())
    _SHARE = share
    return share


def _set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)
    os.environ["OMP_NUM_THREADS"] = str(n)  # inherited by the worker processes started from here on


def rebalance() -> None:
    """Between batches: take the cores of the sweep's jobs that ended (module docstring). Cheap; recounts at
    most every RECOUNT_SECONDS. Must run on the thread that runs torch's ops (OpenMP's thread count is per
    thread)."""
    global _SHARE, _LAST_COUNT
    if _AT_ONCE is None or _SHARE is None or time.monotonic() - _LAST_COUNT < RECOUNT_SECONDS:
        return
    _LAST_COUNT = time.monotonic()
    share = cores_among(_AT_ONCE, _SWEEP, ended_jobs())
    if share > _SHARE:
        _set_threads(share)
        log.info("jobs of the sweep ended: this job's share of the cores is now %d of %d", share, available_cores())
        _SHARE = share


def share() -> int:
    """The job's cores as set by `apply_share`, else every core."""
    return _SHARE or available_cores()
