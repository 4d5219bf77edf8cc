"""Benchmarks of single parts, measured as ratios within one run on one machine (never as timed tests).
The stages themselves, against the reference loop, with peak memory: scripts/bench.py.

    python scripts/bench_parts.py trunk [--backbones resnet18 tf_efficientnet_lite0] [--size 224] [--batch 16]
    python scripts/bench_parts.py walk [--classes 1 3 20] [--repeats 3]
    python scripts/bench_parts.py seeds [--methods cam gradcam ...] [--scales 1.0 0.5 1.5] [--present 2] [--repeats 1]
    python scripts/bench_parts.py precision [overrides...]

`trunk`: one classifier training step (forward + backward, batch × size²) and one CAM forward
(an image and its flip at 500×375, VOC's usual size) per backbone, in contiguous (NCHW) and
channels-last (NHWC, `channels_last=true`) memory order; the best of `--repeats` after a warm-up,
and the ratio to the first row.

`walk`: refine=irn per image, each case in a fresh process: the boundary network (Lite0 and ResNet-50
trunks, image + flip) and the random walk (affinities, sparse transition, 256 steps, upsampling) on a
500×375 photo (VOC's usual size) and a 500×500 one, for K present classes; seconds (best of --repeats)
and the walk's peak memory (the process's peak RSS growth over a warmed-up baseline), beside the
reference's dense transition matrix (n² float32, before its squarings need a second one).

`seeds`: make_cam's work for one 500×375 image (VOC's usual size) with `--present` classes, per seed
method (wsss/seed_methods/), on one Lite0 classifier with the packaged ImageNet weights: the image and its flip
at each of `--scales` (default voc_small's), combined as make_cam does; seconds (best of --repeats, after a
warm-up) and the ratio to CAM, all in one process.

`precision`: what autocast does to the seeds: make_cam's maps (cam=cam) from the configured train_cls checkpoint
(run `wsss stages=[train_cls]` with the same overrides first) for eval_cam.split, computed in float32, under
bfloat16 and under float16 autocast on the CPU, each scored as eval_cam scores them (mIoU at the stated τ and
at the sweep's best). Lightning turns `16-mixed` into `bf16-mixed` on a CPU, so float16 is run here through
torch.autocast directly: the number format of a GPU's 16-mixed, though not its kernels.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench import best_of  # scripts/bench.py, beside this file


def bench_trunk(backbones: list[str], size: int, batch: int, repeats: int) -> None:
    import torch
    import torch.nn.functional as F

    from wsss.models.classifier import ClassifierModule

    def best(fn) -> float:
        fn()  # warm-up
        return best_of(fn, repeats)

    rows = []
    for name in backbones:
        model = ClassifierModule(20, name, None, freeze_bn_stats=True)
        for layout in (torch.contiguous_format, torch.channels_last):
            model = model.to(memory_format=layout)
            x, y = torch.randn(batch, 3, size, size), torch.zeros(batch, 20)
            pair = torch.randn(2, 3, 375, 500)

            def step(model=model, x=x, y=y):
                F.multilabel_soft_margin_loss(model(x), y).backward()

            def cam(model=model, pair=pair):
                with torch.no_grad():
                    model.backbone(pair)

            rows.append((name, "channels_last" if layout is torch.channels_last else "contiguous", best(step), best(cam)))
    print(f"\ntrunks on {torch.get_num_threads()} threads: train step batch {batch}×{size}², CAM forward 2×500×375")
    print(f"{'backbone':<24} {'memory':<14} {'step s':>7} {'ratio':>6} {'cam s':>7} {'ratio':>6}")
    for name, layout, step_s, cam_s in rows:
        print(f"{name:<24} {layout:<14} {step_s:7.3f} {step_s / rows[0][2]:6.2f} {cam_s:7.3f} {cam_s / rows[0][3]:6.2f}")


def bench_seeds(methods: list[str], scales: list[float], classes: int, repeats: int) -> None:
    import numpy as np
    import torch

    from wsss.cam import multiscale_maps
    from wsss.data.transforms import multiscale_views
    from wsss.models.classifier import ClassifierModule
    from wsss.seed_methods import method_module

    torch.manual_seed(0)
    model = ClassifierModule(20, "tf_efficientnet_lite0", "packaged").eval()
    image = np.random.default_rng(0).integers(0, 256, (375, 500, 3), dtype=np.uint8)
    views = multiscale_views(image, scales, model.normalization)  # make_cam's own views
    keys = torch.arange(classes)
    with torch.no_grad():  # warm-up of the trunk at every scale, so that the first method timed pays no first-call costs
        multiscale_maps(lambda b: method_module("cam").maps(model, b, keys), classes, views, (375, 500))
    rows = []
    for name in methods:
        method = method_module(name)

        def seeds(views=views, method=method):
            with torch.enable_grad() if method.NEEDS_GRAD else torch.no_grad():
                multiscale_maps(lambda b: method.maps(model, b, keys), classes, views, (375, 500))

        seeds([min(views, key=lambda v: v.numel())])  # warm-up: the smallest scale
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            seeds()
            times.append(time.perf_counter() - start)
        rows.append((name, min(times)))
        print(f"{name:<16} {rows[-1][1]:8.2f} s", flush=True)
    print(f"\nseed methods on {torch.get_num_threads()} threads: one 500×375 image + flip at scales {scales}, "
          f"{classes} present classes, Lite0 (1,280 channels at stride 16)")
    base = dict(rows).get("cam")
    print(f"{'method':<16} {'s/image':>8} {'× CAM':>7}")
    for name, sec in rows:
        print(f"{name:<16} {sec:8.2f} {sec / base if base else float('nan'):7.1f}")


WALK_CASE = """
import json, resource, sys, time
import numpy as np, torch
from wsss.models.irn import IRNModule
from wsss.random_walk import rw_label
h, w, k, repeats = (int(v) for v in sys.argv[1:5])
h4, w4 = -(-h // 4), -(-w // 4)
rng = np.random.default_rng(0)
rw_label(rng.random((k, 20, 20), np.float32), np.arange(k), torch.rand(20, 20), (80, 80), 0.25)  # warm-up
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
cams, edge = rng.random((k, h4, w4), np.float32), torch.rand(h4, w4) ** 4
times = []
for _ in range(repeats):
    start = time.perf_counter()
    rw_label(cams, np.arange(k), edge, (h, w), 0.25)
    times.append(time.perf_counter() - start)
peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
nets = {}
for name, weights in (("tf_efficientnet_lite0", None), ("resnet50", None)):
    net = IRNModule(name, weights).eval()
    image = torch.randn(3, h, w)
    net.boundary(image)
    start = time.perf_counter()
    for _ in range(repeats):
        net.boundary(image)
    nets[name] = (time.perf_counter() - start) / repeats
print(json.dumps({"walk_s": min(times), "peak_mb": peak, "n": h4 * w4, "nets": nets}))
"""


def bench_walk(classes: list[int], repeats: int) -> None:
    import json
    import subprocess

    import torch

    print(f"\nrefine=irn per image on {torch.get_num_threads()} threads (one process per case)")
    print(f"{'image':<9} {'K':>3} {'n = h4·w4':>9} {'walk s':>7} {'walk peak MB':>13} {'dense T MB':>11} "
          f"{'B Lite0 s':>10} {'B R50 s':>8}")
    for h, w in ((375, 500), (500, 500)):
        for k in classes:
            out = subprocess.run([sys.executable, "-c", WALK_CASE, str(h), str(w), str(k), str(repeats)],
                                 capture_output=True, text=True, check=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            dense = r["n"] ** 2 * 4 / 2**20
            print(f"{w}×{h:<5} {k:>3} {r['n']:>9} {r['walk_s']:7.2f} {r['peak_mb']:13.0f} {dense:11.0f} "
                  f"{r['nets']['tf_efficientnet_lite0']:10.2f} {r['nets']['resnet50']:8.2f}")


def bench_precision(overrides: list[str]) -> None:
    import numpy as np
    import torch

    from wsss.cam import multiscale_maps
    from wsss.config import compose
    from wsss.data import open_dataset
    from wsss.data.datasets import MultiScaleDataset
    from wsss.metrics import ThresholdSweep, scores
    from wsss.seed_methods import method_module
    from wsss.stages.eval_cam import sweep_thresholds
    from wsss.stages.make_cam import load_maps_model

    cfg = compose([f"paths.root={Path.cwd()}", "paths.run_dir=/tmp/wsss-bench", *overrides])
    layout = open_dataset(cfg)
    model, norm = load_maps_model(cfg)
    model.eval()
    ids = layout.ids(cfg.eval_cam.split)
    views = MultiScaleDataset(layout, ids, cfg.cam.scales, norm)
    taus, tau = sweep_thresholds(cfg.eval_cam.sweep), float(cfg.cam.threshold)
    cam = method_module("cam")
    print(f"\nseed mIoU by arithmetic: cam=cam, {len(ids)} {cfg.eval_cam.split} images of {cfg.dataset.name}, "
          f"scales {list(cfg.cam.scales)}, stated τ {tau}")
    print(f"{'arithmetic':<18} {'mIoU at τ':>10} {'best mIoU':>10} {'best τ':>7} {'max |Δ| vs float32':>19}")
    reference = {}
    for name, dtype in (("float32", None), ("bfloat16 autocast", torch.bfloat16), ("float16 autocast", torch.float16)):
        sweep, fixed, worst = ThresholdSweep(taus, layout.num_classes + 1), ThresholdSweep([tau], layout.num_classes + 1), 0.0
        for item in views:
            keys = torch.as_tensor(item["keys"], dtype=torch.long)
            with torch.inference_mode(), torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                _, high = multiscale_maps(lambda b, keys=keys: cam.maps(model, b, keys), len(keys), item["views"],
                                          item["size"])
            high = high.numpy().astype(np.float16)  # as stored
            if dtype is None:
                reference[item["id"]] = high
            elif high.size:
                worst = max(worst, float(np.abs(high.astype(np.float32) - reference[item["id"]]).max()))
            gt = layout.read_mask(item["id"])
            for s in (sweep, fixed):
                s.update(high, item["keys"], gt)
        curve = [100 * scores(c)["miou"] for c in sweep.confusions()]
        best = int(np.nanargmax(curve))
        print(f"{name:<18} {100 * scores(fixed.confusions()[0])['miou']:10.2f} {curve[best]:10.2f} {taus[best]:7.2f} "
              f"{worst:19.4f}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["trunk", "walk", "seeds", "precision"])
    ap.add_argument("--methods", nargs="+", default=["cam", "gradcam", "gradcampp", "xgradcam", "layercam",
                                                      "reciprocam", "saliency", "guided_backprop", "scorecam"])
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.5, 1.5])
    ap.add_argument("--present", type=int, default=2, help="seeds: present classes")
    ap.add_argument("--classes", type=int, nargs="+", default=[1, 3, 20])
    ap.add_argument("--backbones", nargs="+", default=["resnet18", "resnet50", "tf_efficientnet_lite0"])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("overrides", nargs="*", help="precision: Hydra overrides, as for wsss")
    args = ap.parse_args(argv)
    if args.what == "trunk":
        bench_trunk(args.backbones, args.size, args.batch, args.repeats)
    elif args.what == "walk":
        bench_walk(args.classes, args.repeats)
    elif args.what == "seeds":
        bench_seeds(args.methods, args.scales, args.present, args.repeats)
    else:
        bench_precision(args.overrides)
    return 0


if __name__ == "__main__":
    sys.exit(main())
