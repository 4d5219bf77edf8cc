"""scripts/make_tables.py on hand-made run directories, and on a real seed × method sweep."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import TINY
from wsss.io import write_json

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import make_tables  # noqa: E402


def fake_run(d: Path, overrides: list[str], metrics: dict, paper: dict | None = None,
             class_names: list[str] | None = None) -> None:
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    config = {**({"paper": paper} if paper else {}), **({"dataset": {"class_names": class_names}} if class_names else {})}
    (d / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    write_json(d / "metrics.json", metrics)  # as the pipeline writes it: keys sorted


def test_rows_group_seeds_with_mean_and_sample_std(tmp_path, capsys):
    tags = {"protocol/eval_cam/split": "train", "protocol/backbone": "resnet50", "protocol/init": "imagenet"}
    paper = {"eval_cam/train/miou": {"value": 48.3, "confirmed": False}}
    fake_run(tmp_path / "0", ["cam=cam", "seed=0"], {"eval_cam/train/miou": 49.0, **tags}, paper)
    fake_run(tmp_path / "1", ["cam=cam", "seed=1"], {"eval_cam/train/miou": 51.0, **tags}, paper)
    fake_run(tmp_path / "2", ["cam=recam", "seed=0", "stages=[eval_cam]"], {"eval_cam/train/miou": 55.0, **tags})
    make_tables.main([str(tmp_path)])
    out = capsys.readouterr().out.splitlines()
    cam = next(line for line in out if line.startswith("| cam=cam |"))
    recam = next(line for line in out if line.startswith("| cam=recam |"))
    assert "| 2 | 50.0 ± 1.4 |" in cam and "48.3?" in cam and "resnet50" in cam  # std with n − 1
    assert "| 1 | 55.0 |" in recam
    make_tables.main([str(tmp_path), "--format", "csv"])
    assert capsys.readouterr().out.splitlines()[0].startswith("setting,n,eval_cam/train/miou")
    make_tables.main([str(tmp_path), "--format", "latex"])
    assert r"50.0 $\pm$ 1.4" in capsys.readouterr().out


def test_worker_counts_do_not_split_a_setting(tmp_path, capsys):
    """Process and thread counts change the speed, not the figures: runs differing only in them share a row."""
    tags = {"protocol/eval_cam/split": "train", "protocol/make_pseudo/refine": "irn"}
    fake_run(tmp_path / "0", ["refine=irn", "seed=0"], {"make_pseudo/train/miou": 46.0, **tags})
    fake_run(tmp_path / "1", ["refine=irn", "seed=1", "refine.workers=1", "refine.ir_labels.workers=1", "num_workers=1"],
             {"make_pseudo/train/miou": 45.0, **tags})
    make_tables.main([str(tmp_path)])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| refine=irn |")]
    assert len(rows) == 1 and "| 2 | 45.5 ± 0.7 |" in rows[0] and "| irn |" in rows[0]


def test_empty_or_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no metrics.json"):
        make_tables.main([str(tmp_path)])
    with pytest.raises(SystemExit, match="does not exist"):
        make_tables.main([str(tmp_path / "nope")])


@pytest.mark.slow
def test_seed_by_method_sweep_shares_classifiers_and_gives_a_cam_and_a_recam_row(tmp_path):
    # no paths.* override: everything lands under the launch directory, as for a user
    cmd = [sys.executable, "-m", "wsss", "-m", "seed=0,1", "cam=cam,recam",
           "stages=[train_cls,train_recam,make_cam,eval_cam]", "++cam.train.epochs=1", *TINY]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    store = tmp_path / "artifacts"  # one classifier and one ReCAM per seed, CAM and ReCAM seeds for each
    assert [len(list(store.glob(f"{s}/*/manifest.json"))) for s in ("train_cls", "train_recam", "make_cam")] == [2, 2, 4]
    sweep = next((tmp_path / "outputs" / "multirun").iterdir())
    jobs = sorted(sweep.iterdir(), key=lambda d: int(d.name.split("_")[0]) if d.name[0].isdigit() else -1)
    jobs = [d for d in jobs if (d / "metrics.json").exists()]
    assert [d.name.split("_")[0] for d in jobs] == ["0", "1", "2", "3"] and all(len(d.name) <= 100 for d in jobs)
    reused = [(yaml.safe_load((d / ".hydra" / "overrides.yaml").read_text()),
               json.loads((d / "artifacts.json").read_text())["train_cls"]["reused"]) for d in jobs]
    for seed in ("seed=0", "seed=1"):  # the second job of a seed reuses its classifier
        assert sorted(r for overrides, r in reused if seed in overrides) == [False, True]
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_tables.py"), str(sweep)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    rows = [line for line in res.stdout.splitlines() if line.startswith("| cam=")]
    assert [r.split(" | ")[0] for r in rows] == ["| cam=cam", "| cam=recam"]
    assert all(" | 2 | " in r and "±" in r for r in rows)


def test_method_rows_carry_best_threshold_and_seconds_per_image(tmp_path, capsys):
    tags = {"protocol/eval_cam/split": "train", "protocol/cam/method": "gradcam"}
    for i, (method, sec) in enumerate((("cam", 0.93), ("gradcam", 1.404))):
        fake_run(tmp_path / str(i), [f"cam={method}"], {"eval_cam/train/miou": 30.0, "eval_cam/train/miou_best": 33.3,
                                                        "eval_cam/train/threshold_best": 0.4, **tags,
                                                        "make_cam/seconds_per_image": sec})
    make_tables.main([str(tmp_path)])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| setting | n | eval_cam/train/miou | eval_cam/train/miou_best (GT-tuned) | "
                             "eval_cam/train/threshold_best (GT-tuned) | make_cam/seconds_per_image |")
    assert "| 30.0 | 33.3 | 0.40 | 1.40 |" in next(line for line in out if line.startswith("| cam=gradcam |"))


def test_per_class_table_has_a_row_per_class_in_dataset_order_at_80_classes(tmp_path, capsys):
    from wsss.prepare.coco import CLASS_NAMES

    names = ["background", *CLASS_NAMES]
    for seed in (0, 1):
        for cam in ("cam", "recam"):
            per_class = {f"eval_cam/train/iou/{n}": float(i + seed + (cam == "recam")) for i, n in enumerate(names)}
            fake_run(tmp_path / f"{cam}{seed}", [f"cam={cam}", f"seed={seed}"], {"eval_cam/train/miou": 1.0, **per_class},
                     class_names=CLASS_NAMES)
    make_tables.main([str(tmp_path), "--per-class", "eval_cam/train", "--format", "csv"])
    lines = capsys.readouterr().out.splitlines()
    table = lines[lines.index("eval_cam/train IoU,cam=cam,cam=recam"):]
    assert len(table) == 1 + 81
    assert table[1] == "background,0.5,1.5" and table[-1] == "toothbrush,80.5,81.5"  # mean over the two seeds


def test_a_rerun_of_the_same_seed_counts_once_and_reused_timings_are_left_out(tmp_path, capsys):
    """Before: two runs of seed 0 (the second reused everything) gave n = 2 and ± 0.0, and the seconds per image
    of the run that made the seeds were averaged with themselves."""
    tags = {"protocol/eval_cam/split": "train"}
    fake_run(tmp_path / "a", ["seed=0"], {"eval_cam/train/miou": 39.3, "make_cam/seconds_per_image": 0.5, **tags})
    fake_run(tmp_path / "b", ["seed=0"], {"eval_cam/train/miou": 39.3, "make_cam/seconds_per_image": 0.5, **tags})
    write_json(tmp_path / "b" / "artifacts.json", {"make_cam": {"path": "x", "reused": True}})
    fake_run(tmp_path / "c", ["seed=1"], {"eval_cam/train/miou": 41.3, "make_cam/seconds_per_image": 0.9, **tags})
    write_json(tmp_path / "c" / "artifacts.json", {"make_cam": {"path": "y", "reused": True}})
    make_tables.main([str(tmp_path)])
    captured = capsys.readouterr()
    row = next(line for line in captured.out.splitlines() if line.startswith("| (defaults) |"))
    assert "| 2 | 40.3 ± 1.4 | 0.50 |" in row  # two seeds; the timing of the run that computed, not of the reuses
    assert "2 runs of one setting with seed 0 count once" in captured.err


def test_figures_of_a_swept_tau_are_marked_gt_tuned_and_protocol_comes_from_make_pseudo(tmp_path, capsys):
    swept = {"make_pseudo/train/miou": 44.0, "protocol/gt_tuned/make_pseudo": True,
             "protocol/make_pseudo/threshold_source": "swept", "protocol/make_pseudo/splits": "train",
             "protocol/cam/method": "cam", "protocol/backbone": "tf_efficientnet_lite0"}
    fake_run(tmp_path / "0", ["refine=crf", "pseudo.threshold_source=swept"], swept)
    fake_run(tmp_path / "1", ["refine=crf"], {**swept, "protocol/gt_tuned/make_pseudo": False,
                                              "protocol/make_pseudo/threshold_source": "fixed"})
    make_tables.main([str(tmp_path)])
    out = capsys.readouterr().out.splitlines()
    tuned = next(line for line in out if line.startswith("| pseudo.threshold_source=swept |"))
    fixed = next(line for line in out if line.startswith("| (defaults) |"))
    assert "| 44.0 GT-tuned |" in tuned and "GT-swept" in tuned and "| 44.0 |" in fixed
    assert "| cam | train |" in tuned and "tf_efficientnet_lite0" in tuned  # no "?" without eval_cam
