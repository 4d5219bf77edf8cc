"""scripts/make_figure.py: the grid's tiles and captions on hand-made label maps, and the three figures of a real
two-job sweep (cam=cam,gradcam on tiny synthetic data)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.conftest import TINY
from wsss.io import load_label_png, palette, save_label_png, write_json
from wsss.viz import UNSURE, UNSURE_NAME, VOID, VOID_NAME

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import make_figure  # noqa: E402

PAL = np.array(palette(), np.uint8).reshape(256, 3)
NAMES = ["a", "b", "c"]  # classes 1..3 of the hand-made maps


def colours(tile: np.ndarray) -> set[tuple]:
    return {tuple(int(v) for v in c) for c in tile.reshape(-1, 3)}


def miou_by_hand(gt: np.ndarray, pred: np.ndarray, num_labels: int) -> float:
    """Mean over labels present in the GT or the prediction of |both| / |either|, GT 255 left out."""
    keep = gt != 255
    ious = [np.sum((gt == c) & (pred == c) & keep) / np.sum(((gt == c) | (pred == c)) & keep)
            for c in range(num_labels) if np.any(((gt == c) | (pred == c)) & keep)]
    return 100 * float(np.mean(ious))


# ---------------------------------------------------------------- hand-made label maps
def test_a_tile_holds_exactly_the_palette_colours_of_its_labels():
    label = np.zeros((30, 40), np.uint8)
    label[5:20, 5:20] = 3
    label[25:, :] = 255
    unsure = make_figure.label_tile(label, UNSURE)
    assert unsure.shape == (make_figure.TILE_HEIGHT, 160, 3)  # scaled to the fixed height, aspect kept
    assert colours(unsure) == {tuple(PAL[0]), tuple(PAL[3]), UNSURE}
    assert colours(make_figure.label_tile(label)) == {tuple(PAL[0]), tuple(PAL[3]), VOID}  # ground truth: void


def test_the_grid_has_a_row_per_id_a_column_per_job_and_captions_with_the_image_miou():
    gt = np.zeros((4, 6), np.uint8)
    gt[:2, :3] = 1
    gt[3, :] = 255
    pred = np.zeros((4, 6), np.uint8)
    pred[:2, :2] = 1
    pred[2, :] = 3  # class 3: in the prediction only (IoU 0); class 2 in neither (left out)
    pred[0, 5] = 255  # unsure: background in scoring
    images = {i: np.full((4, 6, 3), 90, np.uint8) for i in ("x", "y")}
    gts = {"x": gt, "y": gt}
    columns = {"cam=cam": {"x": pred, "y": gt}, "cam=gradcam": {"x": gt, "y": None}}
    grid = make_figure.build_grid(["x", "y"], images, gts, columns, NAMES, UNSURE)
    assert grid.titles == ["image", "ground truth", "cam=cam", "cam=gradcam"]
    assert [[c.caption for c in row] for row in grid.cells] == [
        ["x", "", f"mIoU {miou_by_hand(gt, np.where(pred == 255, 0, pred), 4):.1f}", "mIoU 100.0"],
        ["y", "", "mIoU 100.0", "no file"]]
    assert grid.cells[0][2].caption == "mIoU 36.5"  # background 6/14, a 4/6, c 0/6; b in neither: left out
    assert colours(grid.cells[0][2].tile) == {tuple(PAL[v]) for v in (0, 1, 3)} | {UNSURE}
    assert all(c.tile.shape[0] == make_figure.TILE_HEIGHT for row in grid.cells for c in row)
    assert [name for _, name in grid.legend] == ["background", "a", "c", VOID_NAME, UNSURE_NAME]


def test_job_labels_break_between_overrides_and_never_inside_a_number():
    assert make_figure.wrap_label("cam=gradcam, refine=crf, seed=1", 16) == "cam=gradcam,\nrefine=crf,\nseed=1"
    lines = make_figure.wrap_label("cam.threshold=0.25, refine.some_long_option_name=value\nmIoU 9.0", 16)
    assert "0.25" in lines and lines.endswith("\nmIoU 9.0")
    assert all(len(line) <= 16 for line in lines.splitlines())


def test_nothing_usable_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="does not exist"):
        make_figure.main([str(tmp_path / "nope")])
    with pytest.raises(SystemExit, match="no metrics.json under"):
        make_figure.main([str(tmp_path)])
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"dataset": {"name": "synthetic"}}))
    write_json(run / "metrics.json", {})
    write_json(run / "artifacts.json", {})
    with pytest.raises(SystemExit, match="has a make_pseudo artifact for --stage make_pseudo; run the jobs with"):
        make_figure.main([str(tmp_path), "--stage", "make_pseudo"])


def test_the_saved_config_resolves_outside_hydra(tmp_path):
    """paths.root is `${hydra:runtime.cwd}` in a run's config: filled from hydra.yaml, and a relative dataset.root
    is relative to where the run was launched, not to where the figure is made."""
    run = tmp_path / "outputs" / "runs" / "t"
    (run / ".hydra").mkdir(parents=True)
    config = {"paths": {"root": "${hydra:runtime.cwd}", "data_dir": "${paths.root}/data",
                        "run_dir": "${hydra:runtime.output_dir}"},
              "dataset": {"root": "../voc", "name": "voc12"}}
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    hydra = {"hydra": {"runtime": {"cwd": str(tmp_path / "launch"), "output_dir": str(run)},
                       "sweep": {"dir": "${now:%Y}"}}}
    (run / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    cfg, cwd = make_figure.load_config(run)
    assert cwd == tmp_path / "launch"
    assert cfg.paths.data_dir == f"{tmp_path}/launch/data" and cfg.paths.run_dir == str(run)
    assert Path(cfg.dataset.root) == tmp_path / "launch" / ".." / "voc"


# ---------------------------------------------------------------- a real sweep
@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """Two jobs (CAM, Grad-CAM) sharing one classifier, through make_pseudo; 8 train_aug images train it."""
    cwd = tmp_path_factory.mktemp("sweep")
    tiny = [o for o in TINY if not o.startswith("dataset.generator.num_train_aug=")]
    cmd = [sys.executable, "-m", "wsss", "-m", "cam=cam,gradcam", "stages=[train_cls,make_cam,eval_cam,make_pseudo]",
           "dataset.generator.num_train_aug=8", *tiny]
    # one torch thread: two on a busy 2-core machine spin-wait on each other (measured: the sweep 94 s vs 23 s)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=cwd, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    return next((cwd / "outputs" / "multirun").iterdir())


def job_dir(sweep: Path, override: str) -> Path:
    return next(p.parent.parent for p in sorted(sweep.glob("*/.hydra/overrides.yaml"))
                if override in yaml.safe_load(p.read_text()))


def dataset_dir(sweep: Path) -> Path:
    """The synthetic set the sweep wrote: under data/ of the directory it was launched from."""
    return next((sweep.parents[2] / "data").glob("synthetic_*"))


@pytest.mark.slow
def test_one_command_writes_the_three_figures(sweep, capsys):
    assert make_figure.main([str(sweep)]) == 0
    written = capsys.readouterr().out.split()
    names = ["qualitative_eval_cam.png", "threshold_curves.png", "per_class_iou_eval_cam.png"]
    assert written == [str(sweep / "figures" / n) for n in names]
    for path in map(Path, written):
        assert Image.open(path).format == "PNG" and path.stat().st_size <= 300_000
    make_figure.main([str(sweep), "--stage", "make_pseudo", "--format", "pdf", "--out", str(sweep / "pdf")])
    assert sorted(p.name for p in (sweep / "pdf").iterdir()) == ["per_class_iou_make_pseudo.pdf",
                                                                "qualitative_make_pseudo.pdf", "threshold_curves.pdf"]
    assert all(p.read_bytes()[:5] == b"%PDF-" for p in (sweep / "pdf").iterdir())


@pytest.mark.slow
def test_grid_columns_name_the_jobs_and_rows_follow_the_ids(sweep, tmp_path):
    jobs = make_figure.load_jobs([str(sweep)])
    grid = make_figure.collect_grid(jobs)
    assert grid.titles == ["image", "ground truth", "cam=cam", "cam=gradcam"]
    train = dataset_dir(sweep) / "ImageSets" / "Segmentation" / "train.txt"
    assert grid.ids == train.read_text().split()[:4]  # the stated default: the first 4 of the split
    assert [len(row) for row in grid.cells] == [4] * 4
    sizes = []
    for ids in (grid.ids[:1], grid.ids[:2]):
        out = tmp_path / f"{len(ids)}.png"
        make_figure.main([str(sweep), "--ids", *ids, "--out", str(out)])
        sizes.append(Image.open(out).size)
    assert sizes[1][1] - sizes[0][1] >= make_figure.TILE_HEIGHT and sizes[1][0] >= sizes[0][0]


@pytest.mark.slow
def test_a_cell_shows_the_seeds_at_the_stated_tau_and_their_image_miou(sweep):
    job = job_dir(sweep, "cam=gradcam")
    grid = make_figure.collect_grid(make_figure.load_jobs([str(sweep)]))
    img_id = grid.ids[3]
    seeds = Path(json.loads((job / "artifacts.json").read_text())["make_cam"]["path"])
    tau = json.loads((job / "metrics.json").read_text())["eval_cam/train/threshold"]
    with np.load(seeds / f"{img_id}.npz") as z:
        maps, keys = z["high_res"].astype(np.float32), z["keys"]
    pred = np.where(maps.max(0) > tau, keys[maps.argmax(0)] + 1, 0)
    gt = load_label_png(dataset_dir(sweep) / "SegmentationClass" / f"{img_id}.png")
    cell = grid.cells[3][3]
    assert cell.caption == f"mIoU {miou_by_hand(gt, pred, 13):.1f}"
    assert colours(cell.tile) == {tuple(PAL[v]) for v in np.unique(pred)}


@pytest.mark.slow
def test_pseudo_label_and_prediction_cells_and_the_heat_map(sweep, tmp_path, capsys):
    jobs = make_figure.load_jobs([str(sweep)])
    pseudo = make_figure.collect_grid(jobs, "make_pseudo", num_ids=2)
    labels = Path(jobs[0].used["make_pseudo"]["path"]) / "labels"
    gt_dir = dataset_dir(sweep) / "SegmentationClass"
    img_id = pseudo.ids[1]
    expected = miou_by_hand(load_label_png(gt_dir / f"{img_id}.png"), load_label_png(labels / f"{img_id}.png"), 13)
    assert pseudo.cells[1][2].caption == f"mIoU {expected:.1f}" and len(pseudo.cells) == 2
    # a job whose predictions are the ground truth (a hand-made eval_seg artifact), and one without make_cam
    fake, bare = tmp_path / "runs" / "0_fake", tmp_path / "runs" / "1_bare"
    shutil.copytree(job_dir(sweep, "cam=cam"), fake)
    shutil.copytree(job_dir(sweep, "cam=gradcam"), bare)
    used = json.loads((fake / "artifacts.json").read_text())
    write_json(fake / "artifacts.json", {**used, "eval_seg": {"path": str(tmp_path / "eval_seg"), "reused": False}})
    val = (gt_dir.parent / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    for i in val[:2]:
        gt = load_label_png(gt_dir / f"{i}.png")
        save_label_png(tmp_path / "eval_seg" / "pred" / f"{i}.png", np.where(gt == 255, 0, gt))
    metrics = json.loads((fake / "metrics.json").read_text())
    write_json(fake / "metrics.json", {**metrics, "eval_seg/val/miou": 100.0, "eval_seg/val/iou/background": 100.0,
                                       "eval_seg/val/iou/ring_bar": 100.0})
    write_json(bare / "artifacts.json", {})
    seg_jobs = make_figure.load_jobs([str(tmp_path / "runs")])
    capsys.readouterr()
    grid = make_figure.collect_grid(seg_jobs, "eval_seg", num_ids=3)
    assert f"{bare.resolve()}: artifacts.json has no eval_seg artifact; left out" in capsys.readouterr().err
    assert grid.ids == val[:3] and len(grid.titles) == 3
    assert [row[2].caption for row in grid.cells] == ["mIoU 100.0", "mIoU 100.0", "no file"]
    classes, columns, values = make_figure.per_class_table(seg_jobs, "eval_seg")
    assert classes == ["background", "ring_bar"] and columns == [f"{seg_jobs[0].label}\nmIoU 100.0"]
    assert values.tolist() == [[100.0], [100.0]]
    classes, _, values = make_figure.per_class_table(jobs, "make_pseudo")
    assert classes[0] == "background" and classes[1:] == list(jobs[0].cfg.dataset.class_names)
    assert values[0, 1] == jobs[1].metrics["make_pseudo/train/iou/background"]
