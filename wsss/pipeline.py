"""Running the configured stages in pipeline order, and the end-of-run summary."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import lightning as L
from omegaconf import DictConfig, OmegaConf

from wsss import artifacts, distributed, threads, tracking
from wsss.errors import UserError
from wsss.io import read_json, write_json
from wsss.keys import TAU_STAGES, is_tuned_on_gt, unit
from wsss.stages import STAGES
from wsss.stages.make_pseudo import tau_tuned_on_gt

log = logging.getLogger("wsss")


class ConfigError(UserError):
    pass


def selected_stages(stages) -> list[str]:
    """`all` or a list of names, returned in pipeline order; unknown names are an error."""
    if isinstance(stages, str):
        stages = list(STAGES) if stages == "all" else [stages]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ConfigError(f"unknown stage(s) {unknown}; valid: all or a list of {list(STAGES)}")
    return [s for s in STAGES if s in set(stages)]


def validate(cfg: DictConfig, stages=None) -> None:
    """Refuse settings that cannot work, before anything runs. With `stages` (the run's), the split rules of the
    pseudo-label and segmentation stages are checked only when one of them runs: seeds made and scored on a subset
    (`cam.splits=[train126] eval_cam.split=train126`) need no pseudo or seg keys changed."""
    runs = set(stages) if stages is not None else None
    if cfg.dataset.name == "synthetic" and cfg.dataset.get("root"):
        # an error, not a guess: a VOC-layout root does not say which class list it holds (VOC's 20, COCO's 80)
        raise ConfigError(f"dataset.root={cfg.dataset.root} is set but dataset=synthetic makes its own images and "
                          "reads no root: add dataset=voc12 (or dataset=coco14) to read the VOC-layout tree there")
    tau = cfg.cam.threshold
    if not 0 <= tau <= 1:
        raise ConfigError(f"cam.threshold={tau} must lie in [0, 1] (maps are max-normalised)")
    for key, scales in (("cam.scales", cfg.cam.scales), ("seg.scales", cfg.seg.scales),
                        ("seg.eval.scales", cfg.seg.eval.scales)):
        if not len(scales) or any(s <= 0 for s in scales):
            raise ConfigError(f"{key}={list(scales)} must be a non-empty list of values > 0")
    if cfg.cam.get("upsample", "bilinear") not in ("bilinear", "gaussian") or cfg.cam.get("gaussian_sigma", 1.0) <= 0:
        raise ConfigError(f"cam.upsample={cfg.cam.get('upsample')} cam.gaussian_sigma={cfg.cam.get('gaussian_sigma')}: "
                          "choose bilinear or gaussian, and a sigma > 0 (cells)")
    sw = cfg.eval_cam.sweep
    if not (0 <= sw.start < sw.stop <= 1 and sw.step > 0):
        raise ConfigError(f"eval_cam.sweep={OmegaConf.to_container(sw)} needs 0 ≤ start < stop ≤ 1, step > 0")
    uses_pseudo = runs is None or bool(runs & {"train_irn", "make_pseudo", "train_seg"})
    if uses_pseudo and (not set(cfg.pseudo.splits) <= set(cfg.cam.splits)
                        or cfg.pseudo.eval_split not in cfg.pseudo.splits):
        raise ConfigError(f"pseudo.splits={list(cfg.pseudo.splits)} must be among cam.splits={list(cfg.cam.splits)} "
                          f"(the splits with seeds) and include pseudo.eval_split={cfg.pseudo.eval_split}")
    if (runs is None or "train_seg" in runs) and cfg.seg.train_split not in cfg.pseudo.splits:
        raise ConfigError(f"seg.train_split={cfg.seg.train_split} has no pseudo-labels: add it to pseudo.splits "
                          f"and cam.splits (now {list(cfg.pseudo.splits)} / {list(cfg.cam.splits)})")
    if cfg.pseudo.threshold_source not in ("fixed", "swept"):
        raise ConfigError(f"pseudo.threshold_source={cfg.pseudo.threshold_source!r}: choose fixed or swept")
    r = cfg.refine
    if r.method not in ("none", "crf", "irn") or r.get("mode", "label") not in ("label", "softmax"):
        raise ConfigError(f"refine={r.method} mode={r.get('mode')}: choose refine=none, refine=crf "
                          "(refine.mode=label|softmax) or refine=irn")
    crf = r.ir_labels if r.method == "irn" else r
    for key in ("fg_threshold", "bg_threshold"):
        if crf.get(key) is not None and not 0 <= crf[key] <= 1:
            raise ConfigError(f"refine.{'ir_labels.' if r.method == 'irn' else ''}{key}={crf[key]} must lie in [0, 1]")
    if r.method == "irn" and not 0 <= r.sem_seg_bg_threshold <= 1:
        raise ConfigError(f"refine.sem_seg_bg_threshold={r.sem_seg_bg_threshold} must lie in [0, 1] (the walk's "
                          "output is divided by its maximum)")


def run_pipeline(cfg: DictConfig) -> dict:
    """Run the selected stages; write `metrics.json` and `artifacts.json` after each; print the summary."""
    stages = selected_stages(OmegaConf.to_container(cfg.stages) if OmegaConf.is_list(cfg.stages) else cfg.stages)
    validate(cfg, stages)
    if cfg.get("dry_run"):
        from wsss.dry_run import describe, plan

        print(describe(plan(cfg, stages)))
        return {}
    threads.apply_share(cfg)
    run_dir = Path(cfg.paths.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics_file = run_dir / "metrics.json"
    metrics = read_json(metrics_file) if metrics_file.exists() else {}
    rank0 = artifacts.global_rank() == 0  # with DDP every rank walks the pipeline; rank 0 reports
    if rank0:
        artifacts.record_used(run_dir)  # artifacts.json exists for every run, even one that stores nothing
    failed = True
    try:
        if rank0:
            tracking.start(cfg)
        for name in stages:
            metrics.update(_run_stage(cfg, name, run_dir, rank0))
            if rank0:
                write_json(metrics_file, metrics)
        failed = False
    finally:  # the W&B run is always finished; a failure marks it failed (and the job exits non-zero)
        if rank0:
            tracking.finish(failed)
    if rank0:
        used = read_json(run_dir / "artifacts.json")
        print(summary_table(metrics, {s for s in stages if used.get(s, {}).get("reused")}))
        for line in checks(metrics):
            print(line)
        print(f"run directory: {run_dir}")
    return metrics


def _run_stage(cfg, name: str, run_dir: Path, rank0: bool) -> dict:
    module = STAGES[name]
    if not getattr(module, "needed", lambda _: True)(cfg):
        log.info("stage %s: not needed for cam=%s refine=%s, skipped", name, cfg.cam.method, cfg.refine.method)
        return {}
    log.info("stage %s", name)
    # every stage starts from the same RNG state, so a stage computes the same output whether
    # or not its upstream stages ran in this process or were reused from the store
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    start = time.time()
    out = {}
    if module.STORED:
        if getattr(module, "SHARDS_ITSELF", False):  # no Trainer may have started the DDP ranks yet
            distributed.ensure_processes(cfg)
        out = artifacts.produce(cfg, name, module.run, run_dir, getattr(module, "DISTRIBUTED", False))
    elif rank0:  # run-directory stages are single-process
        used = read_json(run_dir / "artifacts.json")
        for up in module.upstream(cfg):  # what this run read (made earlier when this run did not make it)
            art = artifacts.locate(cfg, up)
            if art.complete and up not in used:
                artifacts.record_used(run_dir, art, reused=True)
        out = module.run(cfg, run_dir / name)
    out = {**out, f"time/{name}": round(time.time() - start, 2)}
    if name in TAU_STAGES and tau_tuned_on_gt(cfg):
        out[f"protocol/gt_tuned/{name}"] = True
    if rank0:
        tracking.log_stage(cfg, name, out)
        reused = read_json(run_dir / "artifacts.json").get(name, {}).get("reused", False)
        log.info("stage %s %s in %.1f s%s", name, "reused" if reused else "done", out[f"time/{name}"],
                 "".join(f"; {label} {value}" for label, value in headline(out)))
    return out


def headline(metrics: dict) -> list[tuple[str, str]]:
    """The figures worth a line when a stage finishes: its mIoU (stated and GT-tuned), accuracy, final loss."""
    out = []
    for k, v in metrics.items():
        last = k.split("/")[-1]
        if k.count("/") <= 2 and last in ("miou", "miou_best", "acc", "loss", "loss_epoch") and isinstance(v, float):
            label = "/".join(k.split("/")[1:]) + (" (GT-tuned)" if is_tuned_on_gt(k, metrics) else "")
            out.append((label, f"{v:.2f}{' ' + unit(k) if unit(k) else ''}"))
    return out


def how_scored(key: str, metrics: dict) -> str:
    """How a segmentation mIoU was made, so that train_seg's and eval_seg's figures are not read as one: training's
    validation is a monitor (one scale, no flip, no CRF); eval_seg's follows its protocol tags."""
    if key == "train_seg/val/miou":
        return "monitor: 1 scale, no flip, no CRF"
    if key.startswith("eval_seg/") and key.endswith("/miou"):
        scales = metrics.get("protocol/eval_seg/scales")
        parts = [f"scales {scales}" if scales else "",
                 "flip" if metrics.get("protocol/eval_seg/flip") else "",
                 "CRF" if metrics.get("protocol/eval_seg/crf") else "no CRF"]
        return ", ".join(p for p in parts if p)
    return ""


def summary_table(metrics: dict, reused: set[str] = frozenset()) -> str:
    """The headline numbers grouped per stage (everything but per-class values and protocol tags), with units;
    figures tuned on the ground truth say so; a stage reused from the store says so."""
    rows = [(k, v) for k, v in metrics.items() if not k.startswith("protocol/") and k.count("/") <= 2]
    width = max((len(k) for k, _ in rows), default=10)
    lines = ["summary (% for IoU, accuracy and pixel shares; GT-tuned = chosen on the ground truth, optimistic)"]
    for stage in [s for s in STAGES if any(k.split("/")[0] == s for k, _ in rows)]:
        time_key = f"time/{stage}"
        how = ("reused from the store (force=true recomputes); its figures are from the run that made it"
               if stage in reused else f"{metrics[time_key]:.1f} s" if time_key in metrics else "")
        lines.append(f"\n{stage}" + (f"  ({how})" if how else ""))
        for k, v in rows:
            if k.split("/")[0] != stage or (stage in reused and k.endswith("/computed")):
                continue
            value = f"{v:.2f}" if isinstance(v, float) else str(v)
            note = "GT-tuned" if is_tuned_on_gt(k, metrics) else how_scored(k, metrics)
            lines.append(f"  {k:<{width}}  {value:>9} {unit(k):<2} {note}".rstrip())
    return "\n".join(lines)


def checks(metrics: dict) -> list[str]:
    """The main job's checks (README, The main job): the seeds at the stated τ within 5 points of the GT-tuned best,
    and the segmentation network at ≥ 90 % of its training labels' mIoU. Printed when the run has the figures."""
    out = []
    for k, v in metrics.items():
        if k.startswith("eval_cam/") and k.endswith("/miou") and k.replace("/miou", "/miou_best") in metrics:
            best = metrics[k.replace("/miou", "/miou_best")]
            out.append(f"check: seeds at the stated τ within 5 points of the GT-tuned best: "
                       f"{'yes' if best - v <= 5 else 'NO'} ({v:.1f} vs {best:.1f})")
    labels = [v for k, v in metrics.items() if k.startswith("make_pseudo/") and k.endswith("/miou")]
    seg = [v for k, v in metrics.items() if k.startswith("eval_seg/") and k.endswith("/miou")]
    if labels and seg:
        share = 100 * seg[0] / labels[0] if labels[0] else float("nan")
        out.append(f"check: segmentation network at ≥ 90 % of its labels' mIoU: {'yes' if share >= 90 else 'NO'} "
                   f"({seg[0]:.1f} vs {labels[0]:.1f}, {share:.0f} %)")
    return out
