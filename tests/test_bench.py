"""scripts/bench.py: its reference loop is algorithms.md §3, and the whole benchmark runs and reports."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import TINY
from wsss.cam import multiscale_cam
from wsss.data.transforms import multiscale_views
from wsss.models.classifier import ClassifierModule

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import bench  # noqa: E402


def test_reference_loop_gives_make_cams_maps():
    torch.manual_seed(0)
    model = ClassifierModule(5, "resnet18", None).eval()
    image = np.random.default_rng(0).integers(0, 255, (37, 58, 3), dtype=np.uint8)
    keys, scales = np.array([1, 3]), [1.0, 0.5, 1.5]
    strided, high = bench.reference_maps(model, image, keys, scales, "cpu")
    want = multiscale_cam(model.backbone, model.cam_weights()[keys], multiscale_views(image, scales, model.normalization),
                          image.shape[:2])
    assert strided.shape == (2, 10, 15) and high.shape == (2, 37, 58)
    for got, w in zip((strided, high), want, strict=True):
        assert np.abs(got - w.numpy()).max() < 1e-6


def test_ratios_and_equality_verdict():
    assert bench.ratio(3.0, 2.0) == 1.5 and np.isnan(bench.ratio(1.0, 0.0))
    assert bench.EQUAL_WITHIN < 2 ** -9  # tighter than two float16 steps near 1


@pytest.mark.slow
@pytest.mark.heavy  # ten measuring processes, each importing torch and Lightning: 75-85 s on 2 cores
def test_quick_benchmark_runs_and_reports_every_figure(tmp_path):
    tiny = [o for o in TINY if not o.startswith(("num_workers", "+trainer"))]
    out = tmp_path / "bench"
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick", "--images", "3",
                          "--refine-images", "2", "--out", str(out), "--json", str(tmp_path / "b.json"), *tiny,
                          "dataset.generator.num_train=3", "num_workers=1"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    last = json.loads(res.stdout.strip().splitlines()[-1])
    assert last == json.loads((tmp_path / "b.json").read_text())
    assert last["make_cam_maps_equal"] and last["make_cam_max_abs_diff"] <= bench.EQUAL_WITHIN
    for key in ("make_cam_speedup", "eval_sweep_vs_single", "crf_speedup_2_workers", "irn_speedup_2_workers",
                "seed_bytes_vs_float32"):
        assert last[key] > 0, key
    assert last["seed_bytes_vs_float32"] < 1  # float16, compressed
    assert set(last["peak_rss_mb"]) >= {"reference", "make_cam", "eval_cam_all", "crf", "irn", "train_cls",
                                        "train_seg"}
    assert last["images"] == 3 and "make_cam vs the reference loop" in res.stdout
