"""What a run prints and draws for people: the summary's groups, units and marks, the checks, the legends."""
import numpy as np

from wsss.pipeline import checks, headline, summary_table, unit
from wsss.viz import UNSURE, UNSURE_NAME, VOID, VOID_NAME, colour_labels, colour_scale, legend

METRICS = {
    "train_cls/val/acc": 91.5, "train_cls/train/images": 24, "time/train_cls": 20.6,
    "make_cam/images": 8, "make_cam/computed": 8, "time/make_cam": 0.1,
    "eval_cam/train/miou": 39.27, "eval_cam/train/threshold": 0.63, "eval_cam/train/miou_best": 39.33,
    "eval_cam/train/threshold_best": 0.61, "eval_cam/train/fp": 12.5, "eval_cam/train/error_bg_as_fg_best": 3.0,
    "eval_cam/train/iou/background": 80.0, "protocol/eval_cam/split": "train", "time/eval_cam": 0.9,
    "make_pseudo/train/miou": 40.0, "eval_seg/val/miou": 35.0,
}


def row(text: str, key: str) -> str:
    return next(line for line in text.splitlines() if line.strip().startswith(key + " "))


def test_summary_groups_per_stage_with_units_and_marks_what_is_tuned_on_gt():
    text = summary_table(METRICS, reused={"make_cam"})
    lines = text.splitlines()
    assert lines.index("train_cls  (20.6 s)") < lines.index("eval_cam  (0.9 s)")
    assert row(text, "eval_cam/train/miou").split()[1:] == ["39.27", "%"]
    assert row(text, "eval_cam/train/miou_best").split()[1:] == ["39.33", "%", "GT-tuned"]
    assert row(text, "eval_cam/train/threshold_best").split()[1:] == ["0.61", "GT-tuned"]
    assert row(text, "eval_cam/train/threshold").split()[1:] == ["0.63"]
    assert row(text, "eval_cam/train/fp").split()[1:] == ["12.50", "%"]
    assert row(text, "train_cls/val/acc").split()[1:] == ["91.50", "%"]
    assert unit("train_recam/train/sce_acc_epoch") == "%" and unit("train_cls/train/loss_epoch") == ""
    assert "make_cam  (reused from the store (force=true recomputes)" in text
    assert "make_cam/computed" not in text  # a reused stage computed nothing in this run
    assert "iou/background" not in text and "protocol/" not in text  # per-class values and tags stay in the files


def test_figures_downstream_of_a_swept_tau_are_marked_gt_tuned():
    """Before, `pseudo.threshold_source=swept` printed make_pseudo's mIoU and its τ (chosen on the ground truth)
    unmarked: only `_best` keys were."""
    metrics = {"make_pseudo/train/miou": 44.1, "make_pseudo/train/threshold": 0.32, "make_pseudo/images": 8,
               "train_seg/val/miou": 30.0, "eval_seg/val/miou": 31.0, "time/make_pseudo": 3.0,
               "protocol/gt_tuned/make_pseudo": True, "protocol/gt_tuned/train_seg": True,
               "protocol/gt_tuned/eval_seg": True}
    text = summary_table(metrics)
    assert row(text, "make_pseudo/train/miou").split()[1:] == ["44.10", "%", "GT-tuned"]
    assert row(text, "make_pseudo/train/threshold").split()[1:] == ["0.32", "GT-tuned"]
    assert row(text, "make_pseudo/images").split()[1:] == ["8"]  # a count, not a figure the GT chose
    assert row(text, "eval_seg/val/miou").endswith("GT-tuned")
    assert headline({k: v for k, v in metrics.items() if "make_pseudo" in k})[0] == \
        ("train/miou (GT-tuned)", "44.10 %")
    fixed = {k: v for k, v in metrics.items() if not k.startswith("protocol/")}
    assert not any(line.endswith("GT-tuned") for line in summary_table(fixed).splitlines())


def test_the_two_segmentation_figures_say_how_they_were_scored():
    metrics = {**METRICS, "train_seg/val/miou": 31.9, "protocol/eval_seg/scales": "1.0",
               "protocol/eval_seg/flip": True, "protocol/eval_seg/crf": True}
    text = summary_table(metrics)
    assert row(text, "train_seg/val/miou").split("%")[1].strip() == "monitor: 1 scale, no flip, no CRF"
    assert row(text, "eval_seg/val/miou").split("%")[1].strip() == "scales 1.0, flip, CRF"
    metrics["protocol/eval_seg/crf"] = False
    assert row(summary_table(metrics), "eval_seg/val/miou").split("%")[1].strip() == "scales 1.0, flip, no CRF"


def test_stage_headline_and_the_main_jobs_checks():
    eval_cam = {k: v for k, v in METRICS.items() if k.startswith("eval_cam")}
    assert headline(eval_cam) == [("train/miou", "39.27 %"), ("train/miou_best (GT-tuned)", "39.33 %")]
    assert checks(METRICS) == [
        "check: seeds at the stated τ within 5 points of the GT-tuned best: yes (39.3 vs 39.3)",
        "check: segmentation network at ≥ 90 % of its labels' mIoU: NO (35.0 vs 40.0, 88 %)"]
    assert checks({"eval_cam/train/miou": 10.0}) == []  # nothing to check without the figures


def test_legend_names_the_classes_shown_and_both_kinds_of_255():
    names = ["cat", "dog", "sofa"]
    pseudo = np.array([[0, 2], [255, 2]], np.uint8)
    gt = np.array([[0, 3], [255, 255]], np.uint8)
    entries = legend([pseudo, gt], names, {UNSURE: UNSURE_NAME, VOID: VOID_NAME})
    assert [name for _, name in entries] == ["background", "dog", "sofa", UNSURE_NAME, VOID_NAME]
    assert entries[0][0] == (0, 0, 0) and dict((n, c) for c, n in entries)["dog"] == tuple(colour_labels(pseudo)[0, 1])
    assert tuple(colour_labels(pseudo, UNSURE)[1, 0]) == UNSURE != VOID == tuple(colour_labels(gt)[1, 0])
    assert [n for _, n in legend([np.zeros((2, 2), np.uint8)], names)] == ["background"]


def test_heat_maps_come_with_their_colour_scale_and_the_threshold():
    import matplotlib.pyplot as plt

    fig = plt.figure()
    colour_scale(fig, 0.21)
    (ax,) = fig.axes
    assert "τ 0.21" in ax.get_title(loc="left")
    assert [line.get_xdata()[0] for line in ax.get_lines()] == [0.21]  # the threshold drawn on the 0..1 bar
    assert ax.get_images()[0].get_extent()[:2] == [0, 1]
    plt.close(fig)
