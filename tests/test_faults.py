"""Fault injection: kills mid-stage, broken files, bad values. Nothing lost, corrupted or reused stale."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import TINY
from wsss import artifacts
from wsss.data import open_dataset
from wsss.errors import UserError
from wsss.io import load_seed, save_label_png
from wsss.pipeline import run_pipeline
from wsss.training import RESUME, checkpoint_path

SLOW_CAM = ["dataset.generator.num_train=24", "cam.scales=[1.0,0.5,1.5,2.0]"]


def start(tmp_path: Path, *overrides: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "wsss", f"paths.root={tmp_path}", *TINY, *overrides]
    return subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)


def kill_when(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    """SIGKILL the process group as soon as `ready()` holds (fails if the job ends first)."""
    end = time.time() + timeout
    try:
        while not _holds(ready):
            assert proc.poll() is None, f"the job ended before the kill: {proc.stderr.read().decode()[-2000:]}"
            assert time.time() < end, "timed out waiting for the moment to kill"
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _holds(ready) -> bool:
    try:
        return bool(ready())
    except Exception:  # noqa: BLE001 - e.g. a checkpoint read while it is being written
        return False


@pytest.mark.slow
def test_sigkill_during_make_cam_then_rerun_gives_the_uninterrupted_seeds(tiny_cfg, tmp_path):
    cfg = tiny_cfg("stages=[train_cls,make_cam]", *SLOW_CAM)
    run_pipeline(cfg)
    seeds = artifacts.locate(cfg, "make_cam").path
    reference = {p.name: p.read_bytes() for p in seeds.glob("*.npz")}
    assert len(reference) == 24
    shutil.rmtree(seeds)
    proc = start(tmp_path, "stages=[make_cam]", *SLOW_CAM)
    kill_when(proc, lambda: len(list(seeds.glob("*.npz"))) >= 5)
    written = list(seeds.glob("*.npz"))
    assert not (seeds / "manifest.json").exists() and 5 <= len(written) < 24  # killed mid-stage
    for p in written:  # whatever is there is complete (atomic writes)
        load_seed(p)
    m = run_pipeline(tiny_cfg("stages=[make_cam]", *SLOW_CAM))
    assert 0 < m["make_cam/computed"] <= 24 - 5
    assert {p.name: p.read_bytes() for p in seeds.glob("*.npz")} == reference
    assert not list(seeds.glob(".*tmp*"))  # no temporary files mistaken for seeds


@pytest.mark.slow
def test_sigkill_during_training_then_rerun_resumes_from_the_last_checkpoint(tiny_cfg, tmp_path):
    overrides = ["stages=[train_cls]", "cls.epochs=6", "resume_every_n_steps=2"]
    cfg = tiny_cfg(*overrides)
    art = artifacts.locate(cfg, "train_cls").path
    proc = start(tmp_path, *overrides)
    kill_when(proc, lambda: (art / RESUME / "last.ckpt").exists() and
              torch.load(art / RESUME / "last.ckpt", weights_only=True)["global_step"] >= 8)
    assert not (art / "manifest.json").exists() and not checkpoint_path(art).exists()
    done = torch.load(art / RESUME / "last.ckpt", weights_only=True)["global_step"]
    res = subprocess.run([sys.executable, "-m", "wsss", f"paths.root={tmp_path}", *TINY, *overrides],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    out = res.stdout + res.stderr
    assert "resuming from" in out and "Restored all states from the checkpoint" in out  # Lightning resumed
    final = torch.load(checkpoint_path(art), weights_only=True)
    assert final["global_step"] == 6 * 6 and done < final["global_step"]  # 24 images / batch 4 × 6 epochs
    assert final["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"] == 6
    assert (art / "manifest.json").exists() and not (art / RESUME).exists()


def test_unreadable_resume_checkpoint_is_dropped(tiny_cfg, tmp_path, caplog):
    from wsss.training import resumable

    out = tmp_path / "art"
    (out / RESUME).mkdir(parents=True)
    (out / RESUME / "last.ckpt").write_bytes(b"PK\x03\x04 truncated")
    _, start_from = resumable(tiny_cfg(), out)
    assert start_from is None and not (out / RESUME / "last.ckpt").exists()
    assert "training starts over" in caplog.text


def _tiny_tree(tiny_cfg):
    cfg = tiny_cfg("stages=[train_cls,make_cam,eval_cam]")
    return cfg, open_dataset(cfg)


def test_truncated_image_is_named(tiny_cfg):
    cfg, voc = _tiny_tree(tiny_cfg)
    path = voc.image_path(voc.ids("train")[0])
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(UserError, match=f"image {path} is unreadable"):
        run_pipeline(cfg)
    assert not list((Path(cfg.paths.artifacts_dir)).glob("train_cls/*/manifest.json"))  # nothing sealed


def test_mask_of_another_size_is_named(tiny_cfg):
    cfg, voc = _tiny_tree(tiny_cfg)
    run_pipeline(tiny_cfg("stages=[train_cls,make_cam]"))
    img_id = voc.ids("train")[1]
    save_label_png(voc.mask_path(img_id), np.zeros((5, 7), np.uint8))
    with pytest.raises(UserError, match=f"mask {voc.mask_path(img_id)} is \\(5, 7\\)"):
        run_pipeline(tiny_cfg("stages=[eval_cam]"))


def test_mask_values_out_of_range_are_named(tiny_cfg):
    cfg, voc = _tiny_tree(tiny_cfg)
    run_pipeline(tiny_cfg("stages=[train_cls,make_cam]"))
    img_id = voc.ids("train")[2]
    mask = np.asarray(Image.open(voc.mask_path(img_id))).copy()
    mask[0, 0] = 77
    save_label_png(voc.mask_path(img_id), mask)
    with pytest.raises(UserError, match="holds values \\[77\\]"):
        run_pipeline(tiny_cfg("stages=[eval_cam]"))


def test_empty_split_is_named(tiny_cfg):
    cfg, voc = _tiny_tree(tiny_cfg)
    (voc.root / "ImageSets/Segmentation/train.txt").write_text("\n")
    with pytest.raises(UserError, match="train.txt is empty"):
        run_pipeline(tiny_cfg("stages=[make_cam]"))


def test_truncated_seed_file_is_named_and_not_reused(tiny_cfg):
    cfg = tiny_cfg("stages=[train_cls,make_cam,eval_cam]")
    run_pipeline(cfg)
    seed = next(artifacts.locate(cfg, "make_cam").path.glob("*.npz"))
    seed.write_bytes(seed.read_bytes()[:50])
    with pytest.raises(UserError, match=f"seed file {seed} is unreadable"):
        run_pipeline(tiny_cfg("stages=[eval_cam]"))


def test_checkpoint_of_another_model_is_refused(tiny_cfg):
    from wsss.models.classifier import load_checkpoint
    from wsss.models.recam import ReCAMModule

    cfg = tiny_cfg("stages=[train_cls]")
    run_pipeline(cfg)
    with pytest.raises(UserError, match="was not written by ReCAMModule"):
        load_checkpoint(checkpoint_path(artifacts.locate(cfg, "train_cls").path), ReCAMModule)


def test_too_little_disk_space_for_seeds_fails_before_writing(tiny_cfg, monkeypatch):
    cfg = tiny_cfg("stages=[train_cls,make_cam]")
    run_pipeline(tiny_cfg("stages=[train_cls]"))
    monkeypatch.setattr(shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(UserError, match="GiB are free"):
        run_pipeline(cfg)
    seeds = artifacts.locate(cfg, "make_cam").path
    assert not list(seeds.glob("*.npz")) and not (seeds / "manifest.json").exists()


@pytest.mark.slow
def test_cli_names_a_truncated_image_read_in_a_loader_worker(tiny_cfg, tmp_path):
    """A worker process re-raises the error with its traceback; the user still gets one line."""
    voc = open_dataset(tiny_cfg())
    path = voc.image_path(voc.ids("train_aug")[3])
    path.write_bytes(path.read_bytes()[:200])
    res = subprocess.run([sys.executable, "-m", "wsss", f"paths.root={tmp_path}", *TINY, "num_workers=1",
                          "stages=[train_cls]"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2
    errors = [line for line in res.stderr.splitlines() if line.startswith("wsss: error:")]
    assert len(errors) == 1 and f"image {path} is unreadable" in errors[0] and "Traceback" not in res.stderr
