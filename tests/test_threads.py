"""Each sweep job's share of the cores (wsss/threads.py), and a real submitit job through Hydra's launcher."""
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import TINY
from wsss import threads

JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
LOCAL = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
SLURM = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
BASIC = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


def test_sweep_size_is_hydras_product_of_the_comma_lists():
    assert threads.count_sweep_jobs(["-m", "seed=0,1", "cam=cam,lpcam,fdcam", "stages=[a,b]"]) == 6
    assert threads.count_sweep_jobs(["--multirun", "hydra/launcher=joblib", "seed=0"]) == 1
    assert threads.count_sweep_jobs(["seed=0,1"]) is None  # not a multirun: one job


@pytest.mark.parametrize("setting,launcher,jobs,share", [
    (None, {"_target_": BASIC}, 4, 8),                       # one after another: every core
    (None, None, None, 8),                                   # a single run
    (None, {"_target_": JOBLIB, "n_jobs": 2}, 4, 4),         # 2 at once
    (None, {"_target_": JOBLIB, "n_jobs": -1}, 3, 2),        # -1 = a job per core, but only 3 jobs: 8 // 3
    (None, {"_target_": JOBLIB, "n_jobs": -1}, 20, 1),       # more jobs than cores: one each
    (None, {"_target_": JOBLIB, "n_jobs": -7}, 20, 4),       # -7: all cores but six run at once = 2
    (None, {"_target_": LOCAL, "cpus_per_task": None}, 3, 2),  # submitit_local starts all 3 at once
    (None, {"_target_": LOCAL, "cpus_per_task": 3}, 3, 3),
    (None, {"_target_": SLURM, "cpus_per_task": None}, 50, 8),  # SLURM: the job's own allocation (affinity)
    (5, {"_target_": JOBLIB, "n_jobs": 2}, 2, 5),            # cpu_threads overrides
])
def test_job_share(monkeypatch, setting, launcher, jobs, share):
    monkeypatch.setattr(threads, "available_cores", lambda: 8)
    assert threads.job_share(setting, launcher, jobs) == share


@pytest.mark.parametrize("launcher,jobs,ended,share", [
    ({"_target_": JOBLIB, "n_jobs": 2}, 3, 1, 4),   # one ended, the third took its place: still 2 at once
    ({"_target_": JOBLIB, "n_jobs": 2}, 3, 2, 8),   # the last job runs alone: every core
    ({"_target_": LOCAL, "cpus_per_task": None}, 4, 2, 4),
    ({"_target_": JOBLIB, "n_jobs": 2}, 2, 5, 8),   # more marks than jobs (never less than one job running)
])
def test_a_job_takes_the_cores_of_the_jobs_that_ended(monkeypatch, launcher, jobs, ended, share):
    monkeypatch.setattr(threads, "available_cores", lambda: 8)
    assert threads.job_share(None, launcher, jobs, ended) == share


def test_rebalance_raises_torch_threads_when_a_job_of_the_sweep_ends(monkeypatch, tmp_path):
    """A 2-job sweep on 2 cores: 1 thread each; once the other job marks its end, the one left takes both."""
    import torch

    before = torch.get_num_threads()
    monkeypatch.setenv(threads.SWEEP_ROOM, str(tmp_path))
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    monkeypatch.setattr(threads, "RECOUNT_SECONDS", 0.0)
    monkeypatch.setattr(threads, "_AT_ONCE", 2)
    monkeypatch.setattr(threads, "_SWEEP", 2)
    monkeypatch.setattr(threads, "_SHARE", 1)
    try:
        torch.set_num_threads(1)
        threads.rebalance()
        assert threads.share() == 1 and torch.get_num_threads() == 1  # the other job still runs
        threads.mark_job_ended()
        threads.rebalance()
        assert threads.share() == 2 and torch.get_num_threads() == 2
        assert threads.os.environ["OMP_NUM_THREADS"] == "2"
    finally:
        torch.set_num_threads(before)


def test_rebalance_leaves_an_explicit_share_alone(monkeypatch, tmp_path):
    monkeypatch.setenv(threads.SWEEP_ROOM, str(tmp_path))
    monkeypatch.setattr(threads, "RECOUNT_SECONDS", 0.0)
    monkeypatch.setattr(threads, "_AT_ONCE", None)  # cpu_threads=N or cpus_per_task: the share is the user's
    monkeypatch.setattr(threads, "_SHARE", 1)
    threads.mark_job_ended()
    threads.rebalance()
    assert threads.share() == 1


def test_every_job_of_a_sweep_marks_its_end(tmp_path):
    """The marks the jobs count come from the jobs themselves (wsss/__main__.py), one per job."""
    room = tmp_path / "room"
    room.mkdir()
    env = {**os.environ, threads.SWEEP_ROOM: str(room)}
    cmd = [sys.executable, "-m", "wsss", "-m", "seed=0,1", "dry_run=true", f"paths.root={tmp_path}", *TINY]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(list(room.iterdir())) == 2


@pytest.mark.slow
def test_a_submitit_local_sweep_runs_each_job_on_its_share(tmp_path):
    """Two jobs through submitit's own executor (Hydra's submitit_local launcher): each runs, writes its metrics
    and logs its share of the cores (all of them ÷ 2, the jobs submitit_local starts at once)."""
    cmd = [sys.executable, "-m", "wsss", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
           "seed=0,1", "stages=[train_cls]", f"paths.root={tmp_path}", *TINY]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    runs = sorted(tmp_path.glob("outputs/multirun/*/*/metrics.json"))
    assert len(runs) == 2 and all("train_cls/val/acc" in json.loads(p.read_text()) for p in runs)
    assert list(tmp_path.glob("outputs/multirun/*/.submitit/*"))  # submitit's own job folders
    expected = max(1, threads.available_cores() // 2)
    logs = [p.read_text() for p in tmp_path.glob("outputs/multirun/*/*/wsss.log")]
    assert len(logs) == 2
    if expected != threads.available_cores():
        assert all(f"share of the cores: {expected} of" in text for text in logs)
