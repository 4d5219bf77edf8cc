"""What a metric key says about its figure: its unit, and whether the ground truth helped choose it.

Shared by the run's summary (wsss/pipeline.py) and the tables (scripts/make_tables.py); light to import.
"""
from __future__ import annotations

TAU_STAGES = ("train_irn", "make_pseudo", "train_seg", "eval_seg")  # downstream of the pseudo-labels' τ


def is_tuned_on_gt(key: str, metrics: dict | None = None) -> bool:
    """Figures chosen on the ground truth, optimistic, marked as such: the sweep's best τ and its scores, and
    with `pseudo.threshold_source=swept` every figure (%, thresholds) of the stages whose input used that τ
    (`protocol/gt_tuned/<stage>` in `metrics`)."""
    if key.endswith("_best") or "_best/" in key:
        return True
    stage, last = key.split("/")[0], key.split("/")[-1]
    flagged = bool((metrics or {}).get(f"protocol/gt_tuned/{stage}"))
    return flagged and (unit(key) == "%" or "threshold" in last)


UNITS = (("miou", "%"), ("iou", "%"), ("precision", "%"), ("recall", "%"), ("acc", "%"), ("fp", "%"), ("fn", "%"),
         ("error_", "%"), ("ignore_pct", "%"), ("seconds", "s"), ("time/", "s"))


def unit(key: str) -> str:
    last = key.split("/")[-1].removesuffix("_epoch").removesuffix("_step")  # Lightning's logged variants
    for marker, u in UNITS:
        if last.startswith(marker) or last.endswith(marker) or (marker.endswith("/") and key.startswith(marker)):
            return u
    return ""
