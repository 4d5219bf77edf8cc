"""`wsss [OVERRIDES]` / `python -m wsss`: the Hydra app (configs in conf/, contract.md)."""
from __future__ import annotations

import hashlib
import logging
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from wsss.errors import UserError
from wsss.overrides import check_added_keys
from wsss.pipeline import run_pipeline
from wsss.threads import SWEEP_JOBS, count_sweep_jobs

# conf/ sits beside the package in a source checkout (editable install), as the layout prescribes
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


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
    """In the launching process: the sweep's job count for the jobs' share of the cores (wsss/threads.py); the
    launchers' job processes inherit the environment (a job's own argv is not the sweep's)."""
    if SWEEP_JOBS not in os.environ:
        jobs = count_sweep_jobs(sys.argv[1:])
        if jobs:
            os.environ[SWEEP_JOBS] = str(jobs)


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


def log_to_files(record: logging.LogRecord) -> None:
    """The error in the job's log file too (Hydra's `<run>/<job>.log`), but not again on the console."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


if __name__ == "__main__":
    main()
