"""Pseudo-labels: the CRF wrappers on hand-made inputs, the two-threshold rule, and the stage."""
import json

import numpy as np
import pytest
from omegaconf import OmegaConf

from wsss import artifacts, crf
from wsss.io import artifact_files, load_label_png
from wsss.pipeline import run_pipeline
from wsss.pseudo import Refinement, pseudo_label
from wsss.stages.make_pseudo import label_file

REFINE = OmegaConf.load(__file__.replace("tests/test_pseudo.py", "conf/refine/crf.yaml"))


def halves(h=48, w=64) -> np.ndarray:
    lab = np.zeros((h, w), np.int64)
    lab[:, w // 2:] = 1
    return lab


def test_label_crf_on_flat_image_with_confident_unaries_returns_the_labels():
    flat = np.full((48, 64, 3), 128, np.uint8)
    p = OmegaConf.merge(REFINE.label_crf, {"gt_prob": 0.95})
    assert (crf.crf_from_labels(flat, halves(), 2, p) == halves()).all()


def test_softmax_crf_on_flat_image_with_confident_scores_returns_the_labels():
    flat = np.full((48, 64, 3), 128, np.uint8)
    lab = halves()
    scores = np.where(np.stack([lab == 0, lab == 1]), 0.99, 0.01).astype(np.float32)
    assert (crf.crf_from_scores(flat, scores, REFINE.softmax_crf).argmax(0) == lab).all()


def test_crf_follows_colour_edges():
    """A label map off by a few pixels snaps to the image's colour boundary (the point of the CRF)."""
    img = np.zeros((48, 64, 3), np.uint8)
    img[:, 32:] = 255
    lab = np.zeros((48, 64), np.int64)
    lab[:, 28:] = 1  # 4 columns too far left
    assert (crf.crf_from_labels(img, lab, 2, REFINE.label_crf) == halves()).all()


def test_two_threshold_combination_by_hand():
    fg = np.array([[0, 0, 3, 3], [0, 5, 0, 0]], np.uint8)
    bg = np.array([[0, 3, 3, 0], [5, 5, 5, 0]], np.uint8)
    # fg says class → class; both say bg → 0; fg says bg but bg says class → 255
    assert crf.combine_fg_bg(fg, bg).tolist() == [[0, 255, 3, 3], [255, 5, 255, 0]]


@pytest.mark.parametrize("mode", ["label", "softmax"])
def test_labels_are_present_classes_background_or_unsure(mode):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)
    seed = {"keys": np.array([2, 7]), "high_res": rng.random((2, 40, 52)).astype(np.float16)}
    refine = OmegaConf.merge(REFINE, {"mode": mode})
    out = pseudo_label(image, seed, Refinement(refine, tau=0.15, fg=0.3, bg=0.05))
    assert out.dtype == np.uint8 and out.shape == (40, 52)
    assert set(np.unique(out)) <= {0, 3, 8, 255}
    if mode == "softmax":
        assert 255 not in out


def test_ir_label_thresholds_by_hand():
    """Flat image, maps with three plateaus: ≥ fg → class, between → unsure, ≤ bg → background."""
    flat = np.full((30, 90, 3), 100, np.uint8)
    maps = np.zeros((1, 30, 90), np.float32)
    maps[0, :, :30], maps[0, :, 30:60], maps[0, :, 60:] = 0.9, 0.2, 0.01
    p = OmegaConf.merge(REFINE.label_crf, {"gt_prob": 0.99, "bilateral": {"compat": 0}, "gaussian": {"compat": 0}})
    out = crf.ir_label(flat, maps, np.array([4]), fg_threshold=0.3, bg_threshold=0.05, p=p)
    assert (out[:, :30] == 5).all() and (out[:, 30:60] == 255).all() and (out[:, 60:] == 0).all()


def test_ir_label_with_reference_pairwise_terms_snaps_to_edges():
    """The reference CRF parameters: a map spilling past a colour edge is pulled back to it."""
    img = np.zeros((48, 96, 3), np.uint8)
    img[:, :48] = (200, 40, 40)
    maps = np.zeros((1, 48, 96), np.float32)
    maps[0, :, :56] = 0.9  # 8 columns of spill onto the black half
    out = crf.ir_label(img, maps, np.array([1]), fg_threshold=0.3, bg_threshold=0.05, p=REFINE.label_crf)
    assert (out[:, :44] == 2).all() and (out[:, 60:] == 0).all()
    assert (out[:, 48:56] != 2).all()  # the spill is no longer labelled as the class


def test_image_without_classes_is_background():
    image = np.zeros((20, 20, 3), np.uint8)
    seed = {"keys": np.zeros(0, np.int64), "high_res": np.zeros((0, 20, 20), np.float16)}
    for mode in ("label", "softmax"):
        out = pseudo_label(image, seed, Refinement(OmegaConf.merge(REFINE, {"mode": mode}), 0.15, 0.3, 0.05))
        assert (out == 0).all()


def test_make_pseudo_stage_resumes_and_scores(tiny_cfg, tmp_path):
    cfg = tiny_cfg("stages=[train_cls,make_cam,make_pseudo]", "refine=crf", "refine.workers=2")
    metrics = run_pipeline(cfg)
    out = artifacts.locate(cfg, "make_pseudo").path
    ids = sorted(p.stem for p in artifact_files(out / "labels", "*.png"))
    assert len(ids) == metrics["make_pseudo/images"] == 8
    for key in ("miou", "miou_255_ignored", "ignore_pct", "threshold", "iou/background", "iou_255_ignored/background"):
        assert f"make_pseudo/train/{key}" in metrics
    assert 0 < metrics["make_pseudo/train/ignore_pct"] < 100  # the IR-label CRF leaves unsure pixels
    tau = cfg.dataset.seeds.threshold.cam  # the data's stated τ; IR labels at τ + 0.15 / τ − 0.10 (IRN's 0.30 / 0.05 at 0.15)
    assert metrics["make_pseudo/fg_threshold"] == pytest.approx(tau + 0.15)
    assert metrics["make_pseudo/bg_threshold"] == pytest.approx(tau - 0.10)
    assert metrics["protocol/make_pseudo/refine"] == "crf-label"
    assert len(artifact_files(out / "overlays", "*.png")) == 6
    png = label_file(out, ids[0])
    assert load_label_png(png).dtype == np.uint8 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # an interrupted run: the manifest never written and two labels missing → only those two are made
    before = {i: label_file(out, i).read_bytes() for i in ids}
    (out / "manifest.json").unlink()
    for i in ids[:2]:
        label_file(out, i).unlink()
    again = run_pipeline(tiny_cfg("stages=[make_pseudo]", "refine=crf", "refine.workers=1"))
    assert again["make_pseudo/computed"] == 2
    assert {i: label_file(out, i).read_bytes() for i in ids} == before
    assert again["make_pseudo/train/miou"] == metrics["make_pseudo/train/miou"]


def test_refine_sweep_makes_seeds_once_and_none_has_no_unsure_pixels(tiny_cfg, tmp_path):
    none = run_pipeline(tiny_cfg("stages=[train_cls,make_cam,make_pseudo]", "refine=none"))
    seeds = artifacts.locate(tiny_cfg(), "make_cam")
    stamp = seeds.manifest.stat().st_mtime_ns
    run_pipeline(tiny_cfg("stages=[train_cls,make_cam,make_pseudo]", "refine=crf"))
    assert seeds.manifest.stat().st_mtime_ns == stamp  # reused, not recomputed
    assert len(list((tmp_path / "artifacts" / "make_pseudo").glob("*/manifest.json"))) == 2
    assert none["make_pseudo/train/ignore_pct"] == 0
    assert none["make_pseudo/train/miou"] == none["make_pseudo/train/miou_255_ignored"]
    used = json.loads((tmp_path / "run" / "artifacts.json").read_text())
    assert used["make_cam"]["reused"] is True


def test_tau_is_not_in_the_key_when_the_labels_ignore_it(tiny_cfg):
    key = lambda *o: artifacts.locate(tiny_cfg("refine=crf", *o), "make_pseudo").key  # noqa: E731
    assert key("cam.threshold=0.1") != key("cam.threshold=0.2")  # τ ± offsets
    absolute = ("refine.fg_threshold=0.3", "refine.bg_threshold=0.05")
    assert key("cam.threshold=0.1", *absolute) == key("cam.threshold=0.2", *absolute)
    assert key("cam.threshold=0.1", "refine.mode=softmax") == key("cam.threshold=0.2", "refine.mode=softmax")


def test_swept_threshold_is_the_eval_cam_best(tiny_cfg):
    m = run_pipeline(tiny_cfg("stages=[train_cls,make_cam,eval_cam,make_pseudo]", "pseudo.threshold_source=swept"))
    assert m["make_pseudo/train/threshold"] == pytest.approx(m["eval_cam/train/threshold_best"])
    assert m["make_pseudo/train/miou"] == pytest.approx(m["eval_cam/train/miou_best"])
    assert m["protocol/make_pseudo/threshold_source"] == "swept"
    assert m["protocol/gt_tuned/make_pseudo"] is True  # the summary and the tables mark its figures GT-tuned
    assert m["protocol/cam/method"] == "cam" and m["protocol/backbone"]  # the seeds' tags, from make_pseudo too
