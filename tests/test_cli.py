"""The installed command, end to end, in a subprocess (as a user runs it)."""
import json
import subprocess
import sys

import pytest

from tests.conftest import TINY


@pytest.mark.slow
def test_cli_seed_pipeline(tmp_path):
    cmd = [sys.executable, "-m", "wsss", "stages=[train_cls,make_cam,eval_cam]", f"paths.root={tmp_path}",
           *TINY]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "eval_cam/train/miou_best" in res.stdout and "run directory:" in res.stdout
    run_dir = res.stdout.strip().splitlines()[-1].split("run directory: ")[1]
    metrics = json.loads(open(f"{run_dir}/metrics.json").read())
    assert {"eval_cam/train/miou", "eval_cam/train/threshold", "eval_cam/train/miou_best",
            "eval_cam/train/threshold_best", "eval_cam/train/iou/background"} <= set(metrics)


@pytest.mark.slow
def test_cli_bad_stage_name_fails_clearly(tmp_path):
    res = subprocess.run([sys.executable, "-m", "wsss", "stages=[train_clz]", f"paths.root={tmp_path}"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode != 0
    assert "unknown stage" in res.stderr + res.stdout


@pytest.mark.slow
def test_voc_layout_tree_without_annotations(tmp_path, voc200):
    """`dataset=voc12 dataset.root=PATH` on a real VOC tree (a linked subset of voc200, no XML)."""
    root = tmp_path / "voc"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    ids = (voc200 / "ImageSets/Segmentation/train.txt").read_text().split()
    lists = {"train": ids[:6], "val": ids[6:9]}
    for split, members in lists.items():
        (root / "ImageSets/Segmentation" / f"{split}.txt").write_text("\n".join(members) + "\n")
        for i in members:
            (root / "JPEGImages" / f"{i}.jpg").symlink_to(voc200 / "JPEGImages" / f"{i}.jpg")
            (root / "SegmentationClass" / f"{i}.png").symlink_to(voc200 / "SegmentationClass" / f"{i}.png")
    cmd = [sys.executable, "-m", "wsss", "dataset=voc12", f"dataset.root={root}", f"paths.root={tmp_path}",
           "cls.epochs=1", "cls.batch_size=2", "cls.crop_size=128", "cls.resize_long=[96,160]", "cam.scales=[0.5]",
           "seg.max_steps=2", "seg.batch_size=2",
           "seg.crop_size=64", "refine=crf", "num_workers=0", "trainer=cpu", "+trainer.enable_progress_bar=false"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "falls back to train" in res.stdout + res.stderr  # no train_aug list, no SBD
    run_dir = res.stdout.strip().splitlines()[-1].split("run directory: ")[1]
    metrics = json.loads(open(f"{run_dir}/metrics.json").read())
    assert "eval_cam/train/iou/person" in metrics and metrics["train_cls/train/images"] == 6
    # every stage ran (stages=all): pseudo-labels with the CRF on real images, a network, val mIoU
    assert metrics["make_pseudo/images"] == 6 and "make_pseudo/train/iou/person" in metrics
    assert metrics["eval_seg/images"] == 3 and "eval_seg/val/iou/person" in metrics


@pytest.mark.slow
def test_bad_dataset_root_is_one_clear_line(tmp_path):
    res = subprocess.run([sys.executable, "-m", "wsss", "dataset=voc12", f"dataset.root={tmp_path}/nope",
                          "stages=[train_cls]", f"paths.root={tmp_path}"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 2
    message = (f"wsss: error: dataset root {tmp_path}/nope does not exist; set dataset.root=PATH to a VOC-layout "
               "directory (the one holding JPEGImages/)")
    assert res.stderr.strip().splitlines() == [message]  # once, on stderr
    assert "does not exist" not in res.stdout  # not again as a log line on the console
    logs = list((tmp_path / "outputs").rglob("*.log"))
    assert any("does not exist" in p.read_text() for p in logs)  # but in the job's log file
    assert not (tmp_path / "artifacts").exists() and not list(tmp_path.rglob("*.lock"))  # nothing left behind


@pytest.mark.slow
@pytest.mark.parametrize("overrides,message", [
    (["dataset.root=../shared/data/voc530"], "wsss: error: dataset.root=../shared/data/voc530 is set but "
     "dataset=synthetic makes its own images and reads no root: add dataset=voc12 (or dataset=coco14) to read the "
     "VOC-layout tree there"),
    (["+cam.treshold=0.2"], "wsss: error: +cam.treshold=0.2: no stage reads the key cam.treshold (added with +, "
     "it would change nothing); did you mean cam.threshold=0.2?")])
def test_silent_mistakes_are_one_line_errors(tmp_path, overrides, message):
    """Both ran before, printing figures: the synthetic data's under a VOC root, τ unchanged under a typo."""
    res = subprocess.run([sys.executable, "-m", "wsss", "stages=[train_cls]", f"paths.root={tmp_path}", *overrides],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [message]
    assert not (tmp_path / "artifacts").exists()


@pytest.mark.slow
def test_joblib_sweep_trains_the_shared_classifier_once(tmp_path):
    """Two parallel jobs that need the same classifier: one trains it, the other waits and reuses it. Their loaders
    start worker processes: inside a joblib (loky) job the default multiprocessing context is loky's, so the loaders
    fork their workers (before: "'Process' object has no attribute 'env'" and train_irn's loader hung)."""
    cmd = [sys.executable, "-m", "wsss", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "refine=none,crf",
           "stages=[train_cls,make_cam,make_pseudo]", *TINY, "num_workers=1"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(list((tmp_path / "artifacts" / "train_cls").glob("*/manifest.json"))) == 1
    assert len(list((tmp_path / "artifacts" / "make_cam").glob("*/manifest.json"))) == 1
    assert len(list((tmp_path / "artifacts" / "make_pseudo").glob("*/manifest.json"))) == 2
    used = [json.loads(p.read_text()) for p in (tmp_path / "outputs" / "multirun").glob("*/*/artifacts.json")]
    assert sorted(u["train_cls"]["reused"] for u in used) == [False, True]
