"""GPU paths (marked `gpu`, skipped without CUDA; scripts/gpu_check.sh runs them first on a lent GPU), and the
check script's own behaviour on a machine without one."""
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY

ROOT = Path(__file__).resolve().parent.parent
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_gpu_check_without_a_gpu_says_so_and_exits_0(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    res = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(tmp_path / "out")], env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "no CUDA GPU" in res.stdout
    result = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert result["device"]["gpu"] is False and result["parts"] == {}


@pytest.mark.gpu
@needs_cuda
def test_cam_maps_on_the_gpu_equal_the_cpus():
    from wsss.cam import multiscale_cam
    from wsss.models.classifier import ClassifierModule

    model = ClassifierModule(4, "tf_efficientnet_lite0", "packaged").eval()
    x = torch.rand(3, 96, 128)
    views = [torch.stack([x, x.flip(-1)])]
    keys = torch.tensor([0, 2])
    cpu = multiscale_cam(model.backbone, model.cam_weights()[keys], views, (96, 128))
    gpu_model = model.cuda()
    gpu = multiscale_cam(gpu_model.backbone, gpu_model.cam_weights()[keys], [v.cuda() for v in views], (96, 128))
    for a, b in zip(cpu, gpu, strict=True):
        assert torch.allclose(a, b.cpu(), atol=1e-3)
    with torch.autocast("cuda", dtype=torch.float16):
        half = multiscale_cam(gpu_model.backbone, gpu_model.cam_weights()[keys], [v.cuda() for v in views], (96, 128))
    assert (half[1].float().cpu() - cpu[1]).abs().max() < 0.05  # 16-mixed moves the maps by little


@pytest.mark.gpu
@needs_cuda
def test_the_pipeline_runs_on_the_gpu_with_amp_and_channels_last(tmp_path):
    from tests.conftest import compose_cfg
    from wsss import artifacts
    from wsss.pipeline import run_pipeline

    cfg = compose_cfg(tmp_path, *[o for o in TINY if o != "trainer=cpu"], "trainer=gpu",
                      "stages=[train_cls,make_cam,eval_cam]")
    metrics = run_pipeline(cfg)
    assert 0 <= metrics["eval_cam/train/miou"] <= 100
    manifest = json.loads(artifacts.locate(cfg, "make_cam").manifest.read_text())
    assert manifest["identity"]["config"]["precision"] == "16-mixed"  # trainer=gpu's AMP reached make_cam
