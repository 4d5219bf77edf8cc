"""Calibrate a seed method's stated τ as docs/results.md ("The stated τ") does: the best τ of eval_cam's sweep over
the even-indexed images of the evaluated split, checked on the odd-indexed ones (never tuned on the images a
figure is then given for).

    python scripts/calibrate_tau.py OVERRIDES...

OVERRIDES are the run's own (e.g. `experiment=voc_small dataset.root=... cam=lpcam cam.splits=[train126]
eval_cam.split=train126`): the seeds are the stored make_cam artifact of that run (run the pipeline first).
Prints the even half's best τ, the odd half's mIoU at that τ and at its own best, and a JSON line.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def compose(overrides: list[str]):
    from wsss.config import compose as compose_config

    return compose_config([f"paths.root={Path.cwd()}", "paths.run_dir=.", *overrides])


def half_curve(layout, seeds: Path, ids, thresholds) -> list[float]:
    """mIoU (%) at every τ over `ids`."""
    from wsss.metrics import ThresholdSweep, scores
    from wsss.stages.eval_cam import accumulate

    sweep = ThresholdSweep(thresholds, layout.num_classes + 1)
    accumulate(layout, seeds, ids, [sweep], desc="calibrate_tau")
    return [100 * scores(c)["miou"] for c in sweep.confusions()]


def main(argv=None) -> None:
    overrides = list(sys.argv[1:] if argv is None else argv)
    from wsss import artifacts
    from wsss.data import open_dataset
    from wsss.stages.eval_cam import sweep_thresholds

    cfg = compose(overrides)
    seeds = artifacts.locate(cfg, "make_cam")
    if not seeds.complete:
        raise SystemExit(f"calibrate_tau: no complete make_cam artifact for these overrides ({seeds.path}); run "
                         f"`wsss {' '.join(overrides)} stages=[train_cls,make_cam]` first")
    layout = open_dataset(cfg)
    ids = layout.ids(cfg.eval_cam.split)
    thresholds = sweep_thresholds(cfg.eval_cam.sweep)
    even, odd = (half_curve(layout, seeds.path, ids[i::2], thresholds) for i in (0, 1))
    b_even, b_odd = int(np.nanargmax(even)), int(np.nanargmax(odd))
    result = {"method": cfg.cam.method, "split": cfg.eval_cam.split, "images": len(ids),
              "tau_even": float(thresholds[b_even]), "miou_even": round(even[b_even], 2),
              "miou_odd_at_tau_even": round(odd[b_even], 2), "tau_odd": float(thresholds[b_odd]),
              "miou_odd_best": round(odd[b_odd], 2)}
    print(f"{cfg.cam.method} on {cfg.eval_cam.split}: even half best τ {result['tau_even']:.2f} "
          f"({result['miou_even']:.1f}); odd half at that τ {result['miou_odd_at_tau_even']:.1f}, its own best "
          f"{result['miou_odd_best']:.1f} (τ {result['tau_odd']:.2f})")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
