"""The pipeline's speed and memory benchmark: each heavy stage timed in one run on one machine, make_cam
against a straightforward per-image reference loop on the same weights and images.

    python scripts/bench.py [--quick] [--images N] [--out DIR] [--json FILE] [overrides...]

What runs (each measurement in a fresh process, so that its peak memory is its own):
- `reference`: algorithms.md §3 written out as the references run it: one image at a time, one scale at a
  time (the image and its flip, the reference's batch of two), float32, NCHW, no_grad, loading, resizing
  and writing in the same loop; seeds stored as the references store them (float32, uncompressed).
- `make_cam`: the real stage (wsss/stages/make_cam.py) on the same images and checkpoint: inference mode,
  channels-last weights, images decoded and resized in loader workers, seeds compressed and written on a
  background thread, float16 storage. Its maps are compared with the reference's (`make_cam_max_abs_diff`;
  equal means within float16 storage: ≤ 1e-3 on maps in [0, 1]), in float32 (cam.precision=32-true).
  Without --quick, also with channels_last=false, to tell the memory order's share of the gain from the
  rest, and under autocast (cam.precision=bf16-mixed on a CPU, 16-mixed on a GPU): its speed and how far
  its maps move.
- `eval_cam`: the real stage on the first half and on all of the images (peak memory must not grow with the
  number of images), and its one pass over the maps for the whole τ sweep against one τ
  (`eval_sweep_vs_single`: the sweep's time over the faster of one τ by the same pass and one τ by
  thresholding and a confusion matrix, algorithms.md §4; each with the seeds and masks read, as eval_cam
  does, and `..._compute` on maps already in memory).
- make_pseudo's CRF (refine=crf, the IR-label CRF) and IRN's random walk (refine=irn) in 1 and 2 worker
  processes, through the stage's own worker pool, on the first `--refine-images` seeds.
- One training step of train_cls and of train_seg (forward, backward, optimiser step; Lightning's loop,
  the stage's model, data and batch size), the median over a few steps after a warm-up.

Data: the configured dataset; by default the built-in synthetic generator at VOC's image sizes (333-500 px
a side), written under --out, with the references' CAM scales 1, 0.5, 1.5, 2. Real photos:
`dataset=voc12 dataset.root=PATH` (its cam.scales then apply; `cam.splits` images are used, the first --images).
Model: the configured classifier (default EfficientNet-Lite0 with the packaged ImageNet weights) with a
seeded random head, and for refine=irn the same trunk with a seeded random boundary branch: speed and the
equality of the two make_cam paths do not depend on trained heads, so no training stage runs. Everything
lives in a throw-away artifact store under --out. On a GPU (trainer=gpu) the reference loop runs on the
same GPU and peak GPU memory is reported.

Output: a table, then as the last line one JSON object (also written to --json): `make_cam_speedup`,
`eval_sweep_vs_single`, `crf_speedup_2_workers`, `irn_speedup_2_workers`, `seed_bytes_vs_float32`,
`peak_rss_mb` per stage (the main process), seconds,
and what ran where. Compare figures within one run: timings on a shared machine are noisy.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EQUAL_WITHIN = 1e-3  # maps in [0, 1] stored as float16: spacing 2^-11 below 1, plus float32 summation order
VOC_SIZES = ["dataset.generator.min_size=333", "dataset.generator.max_size=500"]
REFERENCE_SCALES = "cam.scales=[1.0,0.5,1.5,2.0]"  # algorithms.md §3


# ------------------------------------------------------------------ configuration shared by every process
def compose_cfg(state: dict, *extra: str):
    from wsss.config import compose

    out = Path(state["out"])
    return compose([f"paths.root={ROOT}", f"paths.data_dir={out / 'data'}", f"paths.artifacts_dir={out / 'artifacts'}",
                    f"paths.run_dir={out / 'run'}", *state["overrides"], *extra])


def bench_overrides(user: list[str], images: int) -> list[str]:
    """The user's overrides, after the synthetic data at VOC's sizes when the dataset is the synthetic one."""
    state = {"out": tempfile.gettempdir(), "overrides": user}
    if compose_cfg(state).dataset.name != "synthetic":
        return list(user)
    counts = [f"dataset.generator.num_train_aug={images}", f"dataset.generator.num_train={images}",
              "dataset.generator.num_val=4"]
    return [*counts, *VOC_SIZES, REFERENCE_SCALES, *user]


def device_of(cfg) -> str:
    import torch

    gpu = cfg.trainer.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return "cuda" if gpu else "cpu"


def bench_ids(cfg, layout, n: int) -> list[str]:
    return layout.ids_of(cfg.cam.splits)[:n]


def limit_images(layout, n: int):
    """The layout with every split cut to its first n ids (the stages read their images through `ids`)."""
    full = layout.ids
    layout.ids = lambda split: full(split)[:n]
    return layout


# ------------------------------------------------------------------ setup: data and the untrained models
def setup(state: dict) -> dict:
    import torch

    from wsss import artifacts
    from wsss.data import open_dataset
    from wsss.models.classifier import ClassifierModule
    from wsss.models.irn import IRNModule

    cfg = compose_cfg(state)
    layout = open_dataset(cfg)  # the synthetic data is written here on first use
    c = cfg.cls

    def classifier(cfg, out_dir: Path) -> dict:
        torch.manual_seed(cfg.seed)
        model = ClassifierModule(layout.num_classes, c.backbone, c.weights, freeze_bn_stats=c.freeze_bn_stats,
                                 freeze_stem=c.freeze_stem, detach_after_layer2=c.detach_after_layer2)
        torch.nn.init.normal_(model.classifier.weight, std=0.02)
        save_module(model, out_dir / "model.ckpt")
        return {"bench/head": "random (seeded)"}

    artifacts.produce(cfg, "train_cls", classifier, Path(cfg.paths.run_dir))
    cfg_irn = compose_cfg(state, "refine=irn")
    t = cfg_irn.refine.train

    def boundary_net(cfg, out_dir: Path) -> dict:
        torch.manual_seed(cfg.seed)
        save_module(IRNModule(t.backbone, t.weights, t.radius), out_dir / "model.ckpt")
        return {"bench/boundary_branch": "random (seeded)"}

    artifacts.produce(cfg_irn, "train_irn", boundary_net, Path(cfg.paths.run_dir))
    ids = bench_ids(cfg, layout, state["images"])
    return {"images": len(ids), "dataset": cfg.dataset.name, "backbone": c.backbone, "weights": str(c.weights),
            "scales": list(cfg.cam.scales), "device": device_of(cfg)}


def save_module(module, path: Path) -> None:
    """A checkpoint as the stages read it (load_checkpoint: hyperparameters + state dict, no pickle)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}, path)


# ------------------------------------------------------------------ make_cam: the reference loop and the stage
def reference_maps(model, image, keys, scales, device):
    """algorithms.md §3 for one image, as written there: per scale, the PIL-bicubic-resized image and its flip
    (a batch of two), A = ReLU(W·F), M_s = A(img) + flip_back(A(flip)), bilinear to ⌈H/4⌉×⌈W/4⌉ and to
    16⌈H/16⌉×16⌈W/16⌉ (then cropped top-left), summed over scales, each map divided by its max + 1e-5."""
    import math

    import torch
    import torch.nn.functional as F

    from wsss.data.transforms import normalize, rescale, to_chw

    h, w = image.shape[:2]
    weights = model.cam_weights()[torch.as_tensor(keys, dtype=torch.long)].to(device)
    strided = high = 0
    for s in scales:
        x = to_chw(normalize(rescale(image, s), model.normalization))
        pair = torch.stack([x, x.flip(-1)]).to(device)
        with torch.no_grad():
            a = F.relu(F.conv2d(model.backbone(pair), weights[:, :, None, None]))
            m = (a[0] + a[1].flip(-1))[None]
            strided = strided + F.interpolate(m, (math.ceil(h / 4), math.ceil(w / 4)), mode="bilinear",
                                              align_corners=False)[0]
            high = high + F.interpolate(m, (16 * math.ceil(h / 16), 16 * math.ceil(w / 16)), mode="bilinear",
                                        align_corners=False)[0]
    high = high[:, :h, :w]
    return [(t / (t.flatten(1).max(1).values[:, None, None] + 1e-5)).cpu().numpy() for t in (strided, high)]


def child_reference(state: dict) -> dict:
    import numpy as np
    import torch

    from wsss import artifacts
    from wsss.data import open_dataset
    from wsss.io import load_rgb
    from wsss.models.classifier import load_classifier
    from wsss.training import checkpoint_path

    cfg = compose_cfg(state)
    layout = open_dataset(cfg)
    out = Path(state["out"]) / "reference"
    out.mkdir(parents=True, exist_ok=True)
    device = device_of(cfg)
    start = time.perf_counter()
    model = load_classifier(checkpoint_path(artifacts.require(cfg, "train_cls", "bench").path)).eval().to(device)
    for img_id in bench_ids(cfg, layout, state["images"]):
        image = load_rgb(layout.image_path(img_id))
        keys = np.nonzero(layout.labels(img_id))[0]
        if len(keys):
            strided, high = reference_maps(model, image, keys, cfg.cam.scales, device)
        else:
            strided, high = (np.zeros((0, 1, 1), np.float32),) * 2
        np.savez(out / f"{img_id}.npz", keys=keys, cam=strided, high_res=high)  # float32, as the references
    if device == "cuda":
        torch.cuda.synchronize()
    return {"seconds": time.perf_counter() - start}


def child_make_cam(state: dict, channels_last: bool = True, precision: str = "32-true") -> dict:
    """The real stage, recomputed (force). `precision` "autocast": bf16-mixed on a CPU, 16-mixed on a GPU."""
    from wsss import artifacts
    from wsss.stages import make_cam

    if precision == "autocast":
        precision = "16-mixed" if device_of(compose_cfg(state)) == "cuda" else "bf16-mixed"
    cfg = compose_cfg(state, "force=true", f"channels_last={str(channels_last).lower()}", f"cam.precision={precision}")
    limit = state["images"]
    make_cam.open_dataset = lambda c, _open=make_cam.open_dataset: limit_split_ids(_open(c), c, limit)
    start = time.perf_counter()
    artifacts.produce(cfg, "make_cam", make_cam.run, Path(cfg.paths.run_dir), distributed=True)
    return {"seconds": time.perf_counter() - start, "path": str(artifacts.locate(cfg, "make_cam").path),
            "precision": precision}


def limit_split_ids(layout, cfg, n: int):
    """make_cam's images: the first n of cam.splits (what the reference loop takes)."""
    keep = set(bench_ids(cfg, layout, n))
    full = layout.ids_of
    layout.ids_of = lambda splits: [i for i in full(splits) if i in keep]
    return layout


def compare_seeds(reference: Path, ours: Path) -> dict:
    """Largest difference between the stage's maps and the reference's, and the bytes each stores."""
    import numpy as np

    from wsss.io import load_seed

    worst, ref_bytes, our_bytes = 0.0, 0, 0
    for ref_file in sorted(reference.glob("*.npz")):
        ours_file = ours / ref_file.name
        mine = load_seed(ours_file)
        with np.load(ref_file) as ref:
            if ref["keys"].tolist() != mine["keys"].tolist():
                raise AssertionError(f"{ours_file}: keys {mine['keys']} but the reference has {ref['keys']}")
            for a, b in ((ref["high_res"], mine["high_res"]), (ref["cam"], mine["strided"])):
                if a.size:
                    worst = max(worst, float(np.abs(a - b.astype(np.float32)).max()))
        ref_bytes += ref_file.stat().st_size
        our_bytes += ours_file.stat().st_size
    return {"max_abs_diff": worst, "reference_bytes": ref_bytes, "bytes": our_bytes}


# ------------------------------------------------------------------ eval_cam
def child_eval_cam(state: dict, images: int) -> dict:
    from wsss import artifacts
    from wsss.stages import eval_cam

    cfg = compose_cfg(state)
    eval_cam.open_dataset = lambda c, _open=eval_cam.open_dataset: limit_images(_open(c), images)
    before = peak_rss_mb()
    start = time.perf_counter()
    metrics = eval_cam.run(cfg, Path(state["out"]) / "run" / f"eval_cam_{images}")
    split = cfg.eval_cam.split
    return {"seconds": time.perf_counter() - start, "peak_growth_mb": peak_rss_mb() - before, "images": images,
            "miou": metrics[f"eval_cam/{split}/miou"], "path": str(artifacts.locate(cfg, "make_cam").path)}


def child_eval_sweep(state: dict) -> dict:
    """The τ sweep's one pass against one τ, with the files read (as eval_cam runs) and on maps in memory."""
    import numpy as np

    from wsss import artifacts
    from wsss.cam import seed_file
    from wsss.data import open_dataset
    from wsss.io import load_seed
    from wsss.metrics import ThresholdSweep, confusion, threshold_cams
    from wsss.stages.eval_cam import sweep_thresholds

    cfg = compose_cfg(state)
    layout = open_dataset(cfg)
    seeds = artifacts.require(cfg, "make_cam", "bench").path
    ids = [i for i in layout.ids(cfg.eval_cam.split) if seed_file(seeds, i).exists()][: state["images"]]
    n = layout.num_classes + 1
    taus, tau = sweep_thresholds(cfg.eval_cam.sweep), float(cfg.cam.threshold)

    def sweep_pass(items, thresholds):
        sweep = ThresholdSweep(thresholds, n)
        for seed, gt in items:
            sweep.update(seed["high_res"], seed["keys"], gt)
        return sweep.confusions()

    def per_tau_pass(items):  # one τ the straightforward way: threshold, then a confusion matrix
        conf = np.zeros((n, n), np.int64)
        for seed, gt in items:
            conf += confusion(gt, threshold_cams(seed["high_res"], seed["keys"], tau), n)
        return conf

    def from_files():
        return ((load_seed(seed_file(seeds, i)), layout.read_mask(i)) for i in ids)

    in_memory = list(from_files())  # also warms the page cache for the timed passes below
    timed = {
        "sweep": lambda: sweep_pass(from_files(), taus), "one_tau": lambda: sweep_pass(from_files(), [tau]),
        "one_tau_plain": lambda: per_tau_pass(from_files()),
        "sweep_compute": lambda: sweep_pass(in_memory, taus), "one_tau_compute": lambda: sweep_pass(in_memory, [tau]),
        "one_tau_plain_compute": lambda: per_tau_pass(in_memory)}
    out = {k: best_of(fn, 2) for k, fn in timed.items()}
    single = sweep_pass(in_memory, [tau])[0]
    if not np.array_equal(single, per_tau_pass(in_memory)):
        raise AssertionError("the sweep's one-τ confusion differs from thresholding at τ")
    return {**out, "thresholds": len(taus), "images": len(ids)}


# ------------------------------------------------------------------ make_pseudo's worker pool: CRF and IRN's walk
def child_refine(state: dict, method: str) -> dict:
    """make_pseudo's labels for the first refine_images seeds, in 1 and then 2 worker processes."""
    from wsss import artifacts
    from wsss.cam import seed_file
    from wsss.data import open_dataset
    from wsss.pseudo import Task, run_tasks
    from wsss.stages import make_pseudo

    cfg = compose_cfg(state, f"refine={method}")
    layout = open_dataset(cfg)
    seeds = artifacts.require(cfg, "make_cam", "bench").path
    tau, fg, bg = make_pseudo.thresholds(cfg, layout, seeds)
    how = make_pseudo.refinement(cfg, tau, fg, bg)
    ids = bench_ids(cfg, layout, state["refine_images"])
    out = {"images": len(ids)}
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as labels:
            tasks = [Task(i, seed_file(seeds, i), layout.image_path(i), Path(labels) / f"{i}.png") for i in ids]
            start = time.perf_counter()
            run_tasks(tasks, workers, how, desc=f"{method}, {workers} worker(s)")
            out[f"seconds_{workers}_workers"] = time.perf_counter() - start
    return out


# ------------------------------------------------------------------ training steps
def child_train_step(state: dict, stage: str, channels_last: bool = True) -> dict:
    import lightning as L
    from torch.utils.data import RandomSampler

    from wsss.data import open_dataset
    from wsss.data.datasets import loader
    from wsss.training import build_trainer

    cfg = compose_cfg(state, f"channels_last={str(channels_last).lower()}", "+trainer.enable_progress_bar=false",
                      "+trainer.enable_model_summary=false", "+trainer.limit_val_batches=0")
    layout = open_dataset(cfg)
    warm, steps = state["warm_steps"], state["steps"]
    model, dataset, batch_size, crop = (train_cls_parts if stage == "train_cls" else train_seg_parts)(cfg, layout)
    # drawn with replacement: as many batches as the steps need, whatever the number of images
    sampler = RandomSampler(dataset, replacement=True, num_samples=batch_size * (warm + steps))
    data = loader(dataset, batch_size, cfg.num_workers, sampler=sampler, drop_last=True)

    class StepTimer(L.Callback):
        def __init__(self):
            self.times, self._t = [], 0.0

        def on_train_batch_start(self, *args):
            self._t = time.perf_counter()

        def on_train_batch_end(self, *args):
            self.times.append(time.perf_counter() - self._t)

    timer = StepTimer()
    trainer = build_trainer(cfg, Path(state["out"]) / "run" / stage, stage, max_steps=warm + steps, max_epochs=-1,
                            callbacks=[timer])
    trainer.fit(model, data)
    measured = sorted(timer.times[warm:])
    return {"seconds_per_step": measured[len(measured) // 2], "batch": f"{batch_size}×{crop}²",
            "steps": len(measured)}


def train_cls_parts(cfg, layout):
    """train_cls's model, augmentation and batch size."""
    from wsss.data.datasets import ClassificationDataset
    from wsss.models.classifier import ClassifierModule

    c = cfg.cls
    model = ClassifierModule(layout.num_classes, c.backbone, c.weights, lr=c.lr, head_lr_mult=c.head_lr_mult,
                             weight_decay=c.weight_decay, momentum=c.momentum, poly_power=c.poly_power,
                             optimizer=c.optimizer, freeze_bn_stats=c.freeze_bn_stats, freeze_stem=c.freeze_stem,
                             detach_after_layer2=c.detach_after_layer2)
    data = ClassificationDataset(layout, layout.ids(cfg.dataset.splits.cls_train), True, model.normalization,
                                 tuple(c.resize_long), c.crop_size)
    return model, data, c.batch_size, c.crop_size


def train_seg_parts(cfg, layout):
    """train_seg's network, augmentation and batch size; the split's masks stand in for the pseudo-labels
    (the step costs the same)."""
    from wsss.data.datasets import SegmentationDataset
    from wsss.stages.train_seg import build_model

    s = cfg.seg
    model = build_model(cfg, layout.num_classes + 1)
    data = SegmentationDataset(layout, layout.ids(s.train_split), layout.mask_path, True, model.normalization,
                               s.scales, s.crop_size)
    return model, data, s.batch_size, s.crop_size


# ------------------------------------------------------------------ process plumbing
def peak_rss_mb() -> float:
    """This process's peak resident memory. Worker processes are left out: forked, they share its pages,
    which their own peaks would count again."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


CHILDREN = {
    "reference": child_reference,
    "make_cam": child_make_cam,
    "make_cam_nchw": lambda s: child_make_cam(s, channels_last=False),
    "make_cam_autocast": lambda s: child_make_cam(s, precision="autocast"),
    "eval_cam_half": lambda s: child_eval_cam(s, max(1, s["images"] // 2)),
    "eval_cam_all": lambda s: child_eval_cam(s, s["images"]),
    "eval_sweep": child_eval_sweep,
    "crf": lambda s: child_refine(s, "crf"),
    "irn": lambda s: child_refine(s, "irn"),
    "train_cls": lambda s: child_train_step(s, "train_cls"),
    "train_seg": lambda s: child_train_step(s, "train_seg"),
}


def run_child(name: str, state_file: Path) -> None:
    """In the child process: one measurement, printed as JSON on the last stdout line."""
    import torch

    state = json.loads(state_file.read_text())
    result = CHILDREN[name](state)
    result.update(peak_rss_mb=peak_rss_mb(), threads=torch.get_num_threads())
    if torch.cuda.is_available():
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(result))


def measure(name: str, state_file: Path) -> dict:
    print(f"[bench] {name} …", file=sys.stderr, flush=True)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}  # the children's progress bars stay, library warnings go
    proc = subprocess.run([sys.executable, __file__, "--child", name, "--state", str(state_file)],
                          stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    if proc.returncode:
        raise SystemExit(f"bench: the {name} measurement failed (exit {proc.returncode}); its output is above")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


def summarize(r: dict, info: dict, quick: bool) -> dict:
    cmp_ = r["compare"]
    rows = {k: v for k, v in r.items() if isinstance(v, dict) and "peak_rss_mb" in v}
    sweep = r["eval_sweep"]
    single = min(sweep["one_tau"], sweep["one_tau_plain"])
    single_compute = min(sweep["one_tau_compute"], sweep["one_tau_plain_compute"])
    out = {
        "make_cam_speedup": ratio(r["reference"]["seconds"], r["make_cam"]["seconds"]),
        "make_cam_max_abs_diff": cmp_["max_abs_diff"],
        "make_cam_maps_equal": cmp_["max_abs_diff"] <= EQUAL_WITHIN,
        "eval_sweep_vs_single": ratio(sweep["sweep"], single),
        "eval_sweep_vs_single_compute": ratio(sweep["sweep_compute"], single_compute),
        "crf_speedup_2_workers": ratio(r["crf"]["seconds_1_workers"], r["crf"]["seconds_2_workers"]),
        "irn_speedup_2_workers": ratio(r["irn"]["seconds_1_workers"], r["irn"]["seconds_2_workers"]),
        "seed_bytes_vs_float32": ratio(cmp_["bytes"], cmp_["reference_bytes"]),
        "eval_cam_peak_growth_mb": {str(r[k]["images"]): round(r[k]["peak_growth_mb"], 1)
                                    for k in ("eval_cam_half", "eval_cam_all")},
        "peak_rss_mb": {k: round(v["peak_rss_mb"], 1) for k, v in rows.items()},
        "seconds": {**{k: round(v["seconds"], 3) for k, v in rows.items() if "seconds" in v},
                    **{f"{k}_{w}_workers": round(r[k][f"seconds_{w}_workers"], 3)
                       for k in ("crf", "irn") for w in (1, 2)}},
        "train_cls_seconds_per_step": round(r["train_cls"]["seconds_per_step"], 4),
        "train_seg_seconds_per_step": round(r["train_seg"]["seconds_per_step"], 4),
        "quick": quick, **info, "threads": r["make_cam"]["threads"], "cpus": len(os.sched_getaffinity(0)),
        "refine_images": r["crf"]["images"]}
    if "make_cam_nchw" in r:
        out["make_cam_speedup_without_channels_last"] = ratio(r["reference"]["seconds"], r["make_cam_nchw"]["seconds"])
    if "make_cam_autocast" in r:
        out["make_cam_autocast"] = {"precision": r["make_cam_autocast"]["precision"],
                                    "speedup": ratio(r["reference"]["seconds"], r["make_cam_autocast"]["seconds"]),
                                    "max_abs_diff": r["compare_autocast"]["max_abs_diff"]}
    gpu = {k: round(v["peak_gpu_mb"], 1) for k, v in rows.items() if "peak_gpu_mb" in v}
    if gpu:
        out["peak_gpu_mb"] = gpu
    return out


def print_table(s: dict, r: dict) -> None:
    n = s["images"]
    print(f"\nwsss bench: {n} images ({s['dataset']}, scales {s['scales']}), {s['backbone']} ({s['weights']}), "
          f"{s['device']}, {s['threads']} torch threads on {s['cpus']} CPUs{' (--quick)' if s['quick'] else ''}")
    print(f"{'measurement':<34} {'seconds':>9} {'per image':>10} {'peak RSS MB':>12}")
    for name, sec in s["seconds"].items():
        child = name.split("_")[0] if name.endswith("_workers") else name
        count = r[child].get("images", n)
        print(f"{name:<34} {sec:9.2f} {sec / max(count, 1):10.3f} {s['peak_rss_mb'][child]:12.0f}")
    for stage in ("train_cls", "train_seg"):
        print(f"{stage + ' step (' + r[stage]['batch'] + ')':<34} {s[stage + '_seconds_per_step']:9.3f} "
              f"{'':>10} {s['peak_rss_mb'][stage]:12.0f}")
    print(f"\nmake_cam vs the reference loop: ×{s['make_cam_speedup']:.2f}, maps "
          f"{'equal' if s['make_cam_maps_equal'] else 'DIFFERENT'} (max |Δ| {s['make_cam_max_abs_diff']:.2e}, "
          f"≤ {EQUAL_WITHIN:g} counts as equal); seed files {s['seed_bytes_vs_float32']:.2f} × the float32 ones")
    if "make_cam_speedup_without_channels_last" in s:
        print(f"make_cam with channels_last=false: ×{s['make_cam_speedup_without_channels_last']:.2f}")
    if "make_cam_autocast" in s:
        a = s["make_cam_autocast"]
        print(f"make_cam with cam.precision={a['precision']}: ×{a['speedup']:.2f}, max |Δ| {a['max_abs_diff']:.2e} "
              "(its effect on seed mIoU: docs/performance.md)")
    print(f"τ sweep ({r['eval_sweep']['thresholds']} thresholds) vs one τ: ×{s['eval_sweep_vs_single']:.2f} "
          f"(files read), ×{s['eval_sweep_vs_single_compute']:.2f} (maps in memory)")
    print(f"eval_cam peak memory growth by images: {s['eval_cam_peak_growth_mb']} MB")
    print(f"2 workers vs 1: CRF ×{s['crf_speedup_2_workers']:.2f}, IRN walk ×{s['irn_speedup_2_workers']:.2f} "
          f"({s['refine_images']} images)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a few minutes on 2 CPU cores: fewer images and steps")
    ap.add_argument("--images", type=int, help="images for make_cam / eval_cam (default 40; --quick 10)")
    ap.add_argument("--refine-images", type=int, help="images for the CRF and the walk (default 12; --quick 4)")
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "wsss-bench",
                    help="work directory: data, throw-away artifacts, seeds (reused by the next run)")
    ap.add_argument("--json", type=Path, help="also write the JSON result here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--state", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, as for wsss (e.g. dataset=voc12 dataset.root=…)")
    args = ap.parse_args(argv)
    if args.child:
        run_child(args.child, args.state)
        return 0
    images = args.images or (10 if args.quick else 40)
    state = {"out": str(args.out.resolve()), "images": images,
             "refine_images": args.refine_images or (4 if args.quick else 12),
             "warm_steps": 2, "steps": 3 if args.quick else 8, "overrides": bench_overrides(args.overrides, images)}
    args.out.mkdir(parents=True, exist_ok=True)
    state_file = args.out / "state.json"
    state_file.write_text(json.dumps(state))
    info = setup(state)  # in this process: it measures nothing
    extra = [] if args.quick else ["make_cam_nchw", "make_cam_autocast"]
    order = ["reference", *extra, "make_cam", "eval_cam_half", "eval_cam_all", "eval_sweep", "crf", "irn", "train_cls",
             "train_seg"]  # make_cam last of its kind: the later stages read its (float32-path) seeds
    results = {name: measure(name, state_file) for name in order}
    results["compare"] = compare_seeds(args.out / "reference", Path(results["make_cam"]["path"]))
    if "make_cam_autocast" in results:
        results["compare_autocast"] = compare_seeds(args.out / "reference", Path(results["make_cam_autocast"]["path"]))
    summary = summarize(results, info, args.quick)
    print_table(summary, results)
    line = json.dumps(summary, sort_keys=True)
    if args.json:
        args.json.write_text(line + "\n")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
