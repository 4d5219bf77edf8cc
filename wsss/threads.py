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
"""
from __future__ import annotations

import logging
import os

log = logging.getLogger("wsss")
SWEEP_JOBS = "WSSS_SWEEP_JOBS"
_SHARE: int | None = None


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


def job_share(setting, launcher: dict | None, sweep_jobs: int | None) -> int:
    """This job's cores (see the module's docstring)."""
    if setting:
        return max(1, int(setting))
    launcher = launcher or {}
    if launcher.get("cpus_per_task"):
        return int(launcher["cpus_per_task"])
    at_once = parallel_jobs(launcher, sweep_jobs)
    return max(1, available_cores() // at_once) if at_once else available_cores()


def apply_share(cfg) -> int:
    """Set this job's share (torch threads, OMP_NUM_THREADS, the pools' default size); returns it."""
    import torch

    global _SHARE
    launcher = None
    try:
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import OmegaConf

        if HydraConfig.initialized():
            launcher = OmegaConf.to_container(HydraConfig.get().launcher, resolve=False)
    except (ImportError, ValueError):
        launcher = None
    sweep = os.environ.get(SWEEP_JOBS)
    share = job_share(cfg.get("cpu_threads"), launcher, int(sweep) if sweep else None)
    if share != available_cores() or cfg.get("cpu_threads"):
        torch.set_num_threads(share)
        os.environ["OMP_NUM_THREADS"] = str(share)
        log.info("this job's share of the cores: %d of %d (cpu_threads; docs/sweeps.md)", share, available_cores())
    _SHARE = share
    return share


def share() -> int:
    """The job's cores as set by `apply_share`, else every core."""
    return _SHARE or available_cores()
