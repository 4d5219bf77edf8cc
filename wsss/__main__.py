"""`wsss [OVERRIDES]` / `python -m wsss`: the Hydra app (configs in conf/, contract.md)."""
from __future__ import annotations

import hashlib
import logging
import os
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from wsss import threads
from wsss.config import CONFIG_DIR
from wsss.errors import UserError
from wsss.overrides import check_added_keys
from wsss.pipeline import run_pipeline


def short_dirname(overrides: str, limit: int = 96) -> str:
    """A sweep job's directory name from its overrides: readable, one level, bounded in length."""
    name = overrides.replace("/", "_") or "defaults"
    if len(name) <= limit:
        return name
    return f"{name[:limit - 9]}_{hashlib.sha1(name.encode()).hexdigest()[:8]}"


OmegaConf.register_new_resolver("wsss.dirname", short_dirname, replace=True)


def one_line(error: Exception) -> str:
    """The message of a user error, also when a DataLoader worker re-raised it with its traceback."""
    text = str(error).strip()
    if "Traceback (most recent call last)" in text:  # "Caught X in DataLoader worker ...": keep the cause
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last and "Error" in last.split(": ", 1)[0] else last
    return text


def _export_sweep_size() -> None:
    """In the launching process: the sweep's job count and the folder where its jobs mark their end, for the
    jobs' share of the cores (wsss/threads.py); the launchers' job processes inherit the environment (a job's
    own argv is not the sweep's)."""
    if threads.SWEEP_JOBS not in os.environ:
        jobs = threads.count_sweep_jobs(sys.argv[1:])
        if jobs:
            os.environ[threads.SWEEP_JOBS] = str(jobs)
            threads.open_room()


_export_sweep_size()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        from hydra.core.hydra_config import HydraConfig

        check_added_keys(list(HydraConfig.get().overrides.task), cfg)
        run_pipeline(cfg)
    except UserError as e:  # the user's to fix: one line on stderr, not a traceback
        message = one_line(e)
        log_to_files(logging.getLogger("wsss").makeRecord("wsss", logging.ERROR, __file__, 0, message, (), None))
        print(f"wsss: error: {message}", file=sys.stderr)
        sys.exit(2)
    finally:  # the sweep's other jobs take this job's cores (wsss/threads.py); DDP's extra ranks are not jobs
        from wsss.artifacts import global_rank

        if global_rank() == 0:
            threads.mark_job_ended()


def log_to_files(record: logging.LogRecord) -> None:
    """The error in the job's log file too (Hydra's `<run>/<job>.log`), but not again on the console."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


if __name__ == "__main__":
    main()
