import numpy as np
import pytest

from wsss.metrics import ThresholdSweep, confusion, pixel_errors, scores, threshold_cams


def test_confusion_ignores_255_and_counts_pairs():
    gt = np.array([[0, 1, 255], [2, 2, 1]])
    pred = np.array([[0, 1, 2], [2, 1, 0]])
    conf = confusion(gt, pred, 3)
    expected = np.zeros((3, 3), int)
    for g, p in [(0, 0), (1, 1), (2, 2), (2, 1), (1, 0)]:  # the 255 pixel is left out
        expected[g, p] += 1
    np.testing.assert_array_equal(conf, expected)


def test_miou_known_answer_includes_background_and_skips_absent():
    gt = np.array([0, 0, 0, 1, 1, 255])
    pred = np.array([0, 0, 1, 1, 1, 1])
    s = scores(confusion(gt, pred, 3))  # label 2 absent from both: 0/0 → skipped
    assert s["iou"][0] == pytest.approx(2 / 3)   # TP 2, GT 3, pred 2
    assert s["iou"][1] == pytest.approx(2 / 3)   # TP 2, GT 2, pred 3
    assert np.isnan(s["iou"][2])
    assert s["miou"] == pytest.approx(2 / 3)
    assert s["precision"][1] == pytest.approx(2 / 3) and s["recall"][1] == pytest.approx(1.0)
    assert s["fp"] == pytest.approx((0 / 3 + 1 / 3) / 2)
    assert s["fn"] == pytest.approx((1 / 3 + 0 / 3) / 2)


def test_pixel_errors_split_wrong_pixels_by_kind():
    gt = np.array([0, 0, 0, 1, 1, 2, 2, 2, 255, 0])
    pred = np.array([0, 1, 2, 1, 0, 2, 1, 1, 0, 0])  # 10 pixels, 9 scored
    e = pixel_errors(confusion(gt, pred, 3))
    assert e["bg_as_fg"] == pytest.approx(100 * 2 / 9)    # gt 0 → 1, gt 0 → 2
    assert e["fg_as_bg"] == pytest.approx(100 * 1 / 9)    # gt 1 → 0
    assert e["confusion"] == pytest.approx(100 * 2 / 9)   # gt 2 → 1, twice
    assert all(np.isnan(v) for v in pixel_errors(np.zeros((3, 3))).values())


def test_confusion_rejects_out_of_range_predictions():
    with pytest.raises(ValueError, match="outside"):
        confusion(np.array([0, 1]), np.array([0, 255]), 3)


def test_threshold_ties_go_to_background():
    maps = np.array([[[0.2, 0.5, 0.15]], [[0.1, 0.5, 0.149]]], np.float32)  # K=2, 1×3 image
    keys = np.array([3, 7])
    out = threshold_cams(maps, keys, 0.2)
    # pixel 0: best 0.2 == τ → background; pixel 1: tie between classes → first class (4);
    np.testing.assert_array_equal(out, [[0, 4, 0]])
    assert threshold_cams(maps, keys, 0.1).tolist() == [[4, 4, 4]]
    # larger τ ⇒ more background
    assert (threshold_cams(maps, keys, 0.6) == 0).all()


def test_sweep_matches_direct_thresholding_including_ties():
    rng = np.random.default_rng(0)
    taus = np.round(np.arange(0.05, 0.61, 0.05), 2)
    sweep = ThresholdSweep(taus, 6)
    direct = np.zeros((len(taus), 6, 6), np.int64)
    for _ in range(5):
        k = int(rng.integers(0, 3))
        keys = np.sort(rng.choice(5, size=k, replace=False))
        maps = np.round(rng.random((k, 9, 11)), 2).astype(np.float16)  # values on the τ grid → ties
        gt = rng.integers(0, 6, (9, 11))
        gt[rng.random(gt.shape) < 0.2] = 255
        sweep.update(maps, keys, gt)
        for t, tau in enumerate(taus):
            direct[t] += confusion(gt, threshold_cams(maps, keys, np.float32(tau)), 6)
    np.testing.assert_array_equal(sweep.confusions(), direct)


def test_sweep_on_stored_float16_maps_equals_the_float32_path_and_direct_thresholding():
    """Float16 maps are swept through their bit patterns (a lookup table of buckets); float32 maps and float16
    maps holding a negative value through searchsorted: the same counts, ties (value = τ, two maps equal) included."""
    rng = np.random.default_rng(1)
    taus = np.array([0.125, 0.25, 0.375, 0.5, 0.75], np.float32)  # exact in float16: value = τ happens
    grid = np.array([0, 0.125, 0.25, 0.3, 0.375, 0.5, 0.6, 0.75, 0.99], np.float16)
    keys = np.array([0, 2, 5, 6])
    maps = rng.choice(grid, size=(4, 13, 17))
    maps[1, :3] = maps[0, :3]  # two classes tie on these rows: the first one wins, as argmax
    gt = rng.integers(0, 8, (13, 17))
    gt[rng.random(gt.shape) < 0.1] = 255
    with_negative = maps.copy()
    with_negative[3, 0, 0] = -0.0
    for m in (maps, maps.astype(np.float32), with_negative):
        sweep = ThresholdSweep(taus, 8)
        sweep.update(m, keys, gt)
        direct = np.stack([confusion(gt, threshold_cams(m, keys, t), 8) for t in taus])
        np.testing.assert_array_equal(sweep.confusions(), direct)


def test_sweep_with_no_present_class_is_all_background():
    sweep = ThresholdSweep([0.1, 0.2], 3)
    sweep.update(np.zeros((0, 2, 2), np.float16), np.zeros(0, np.int64), np.array([[0, 1], [2, 255]]))
    for conf in sweep.confusions():
        assert conf[:, 0].sum() == 3 and conf[:, 1:].sum() == 0


def test_eval_pass_memory_does_not_grow_with_the_number_of_images(tmp_path):
    """eval_cam's pass keeps confusion counts only: its peak allocation for 16 images is that of 4."""
    import tracemalloc

    from wsss.cam import seed_file
    from wsss.io import save_seed
    from wsss.stages.eval_cam import accumulate

    rng = np.random.default_rng(0)
    gt = rng.integers(0, 4, (120, 160)).astype(np.uint8)
    for i in range(16):
        save_seed(seed_file(tmp_path, f"im{i}"), np.array([0, 2]), rng.random((2, 120, 160)), rng.random((2, 30, 40)))

    class Layout:
        def read_mask(self, img_id):
            return gt

    def peak(n):
        sweeps = [ThresholdSweep(np.linspace(0.05, 0.95, 91), 4), ThresholdSweep([0.3], 4)]
        tracemalloc.start()
        accumulate(Layout(), tmp_path, [f"im{i}" for i in range(n)], sweeps, desc="test")
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small, large = peak(4), peak(16)
    assert large < 1.1 * small, (small, large)
