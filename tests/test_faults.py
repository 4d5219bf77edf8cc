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

from tests.conftest import TINY, compose_cfg
from wsss import artifacts
from wsss.cam import seed_files
from wsss.data import open_dataset
from wsss.errors import UserError
from wsss.io import is_temporary, load_seed, read_json, save_label_png
from wsss.pipeline import run_pipeline
from wsss.training import RESUME, checkpoint_path


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


# stage → the writer that the stand-in (tests/blocking_writer.py) stops in the middle of its 3rd file
KILLED_WRITER = {"make_cam": "wsss.cam.save_seed", "make_pseudo": "wsss.pseudo.save_label_png",
                 "eval_seg": "wsss.stages.eval_seg.save_label_png"}
WRITE_KILL = ["dataset.generator.num_train=24", "refine.workers=1"]  # 24 seeds; labels made in-process
BLOCKING_WRITER = str(Path(__file__).with_name("blocking_writer.py"))


@pytest.fixture(scope="module")
def finished_store(tmp_path_factory):
    """A store holding every stage's output of one uninterrupted run: the reference for the kill tests."""
    root = tmp_path_factory.mktemp("store")
    run_pipeline(compose_cfg(root, *TINY, *WRITE_KILL))
    return root


def _contents(art: Path) -> dict[str, bytes]:
    return {str(p.relative_to(art)): p.read_bytes() for p in art.rglob("*") if p.is_file() and p.name != "manifest.json"}


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(KILLED_WRITER))
def test_kill_during_a_write_then_rerun_leaves_no_temporary_file_and_an_exact_manifest(finished_store, stage):
    root = finished_store
    overrides = [*TINY, *WRITE_KILL, f"stages=[{stage}]"]
    cfg = compose_cfg(root, *overrides)
    art = artifacts.locate(cfg, stage).path
    reference = _contents(art)
    shutil.rmtree(art)
    marker = root / f"{stage}.writing"
    marker.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, BLOCKING_WRITER, KILLED_WRITER[stage], "3", str(marker),
                             f"paths.root={root}", *overrides], cwd=root, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    kill_when(proc, marker.exists)
    stale = [p for p in art.rglob("*") if is_temporary(p)]
    assert len(stale) == 1 and stale[0].read_bytes().startswith(b"PK")  # killed in the middle of a write
    assert not (art / "manifest.json").exists()
    if stage == "make_cam":  # the temporary file never counts as a seed
        assert len(seed_files(art)) == 2
        with pytest.raises(UserError, match="unreadable"):
            load_seed(stale[0])

    run_pipeline(cfg)
    assert not [p for p in art.rglob("*") if is_temporary(p)]
    listed = read_json(art / "manifest.json")["files"]
    assert listed == sorted(reference) and set(listed) == set(_contents(art))  # exactly the real files
    if stage == "make_cam":
        assert listed == sorted(f"{i}.npz" for i in open_dataset(cfg).ids("train")) and len(listed) == 24
    assert _contents(art) == reference  # byte-equal to the uninterrupted run


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
    seed = seed_files(artifacts.locate(cfg, "make_cam").path)[0]
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
    assert not seed_files(seeds) and not (seeds / "manifest.json").exists()


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
