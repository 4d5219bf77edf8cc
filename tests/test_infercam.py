"""Infer-CAM (wsss/seed_methods/infercam.py) and Extended-CAM's Gaussian upsampling (wsss/cam.py), against their
definitions on hand-made maps and the tiny classifier of tests/test_seed_methods.py."""
import numpy as np
import pytest
import torch

from tests.conftest import compose_cfg
from tests.test_seed_methods import Tiny
from wsss.cam import gaussian_resize, multiscale_maps, normalize_max
from wsss.data.transforms import multiscale_views
from wsss.seed_methods import infercam
from wsss.stages import make_cam


def test_split_boxes_follow_the_authors_rule_clipped_at_the_border():
    # two classes: buffer 20 around the extreme centres
    assert infercam.split_boxes([(50, 60), (90, 30)], (200, 300), 20, whole=False) == [
        (0, 110, 0, 80), (0, 110, 10, 300), (30, 200, 0, 80), (30, 200, 10, 300)]
    # one class near the top-left corner: the authors' negative start would wrap; here it is clipped to 0
    assert infercam.split_boxes([(4, 6)], (100, 120), 10, whole=False) == [
        (0, 14, 0, 16), (0, 14, 0, 120), (0, 100, 0, 16), (0, 100, 0, 120)]
    assert infercam.split_boxes([(1, 1)] * 3, (40, 50), 20, whole=True) == [(0, 40, 0, 50)] * 4


def test_mass_centres_and_an_empty_map():
    m = torch.zeros(2, 10, 20)
    m[0, 2:5, 10:14] = 1.0  # centre (3, 11.5) → (3, 11)
    assert infercam.mass_centres(m) == [(3, 11), (5, 10)]  # the empty map: the image centre


def blob_views(h=32, w=48):
    """One view batch whose single channel holds a bright blob A (1.0) and a dim blob B (0.5) on 0."""
    x = torch.zeros(2, 1, h, w)
    x[0, 0, 4:12, 4:12] = 1.0
    x[0, 0, 20:28, 30:40] = 0.5
    x[1] = x[0].flip(-1)
    return [x]


def first_channel_cam(views):
    """A map that is the view's own first channel (one class), max-normalised: a known 'network'."""
    return normalize_max(views[0][0, :1].clamp_min(0))


def test_erase_and_repeat_finds_the_second_part_after_erasing_the_first():
    views = blob_views()
    once = infercam.erase_and_repeat(first_channel_cam, views, 0.7, 0.01, max_iterations=1)[0]
    assert once[4:12, 4:12].min() > 0.99 and once[20:28, 30:40].max() < 0.51  # B below 0.7: not covered
    found = infercam.erase_and_repeat(first_channel_cam, views, 0.7, 0.01, max_iterations=5)[0]
    assert found[4:12, 4:12].min() > 0.99 and found[20:28, 30:40].min() > 0.99  # B became the max once A was erased
    assert found[0, 20] == 0 and found[16, 0] == 0  # the background stays 0


def test_erased_pixels_take_the_views_mean_colour_and_the_mask_flips_with_the_view():
    v = torch.randn(2, 3, 8, 12, generator=torch.Generator().manual_seed(0))
    v[1] = v[0].flip(-1)
    uncovered = torch.ones(8, 12, dtype=torch.bool)
    uncovered[2:5, 1:4] = False
    out = infercam.fill_covered(v, uncovered)
    torch.testing.assert_close(out[1], out[0].flip(-1))
    mean = v[0].mean((1, 2))
    torch.testing.assert_close(out[0, :, 3, 2], mean)
    torch.testing.assert_close(out[0, :, 6, 8], v[0, :, 6, 8])


def test_more_classes_than_the_split_limit_and_one_pass_is_cam():
    """> 2 classes: no split; with one pass the crop is the image and its map is the CAM."""
    model = Tiny(classes=4).eval()
    image = (np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8)
    norm = ((0.5,) * 3, (0.5,) * 3)
    scales = [1.0, 0.5]
    keys = torch.tensor([0, 1, 3])
    views = multiscale_views(image, scales, norm)
    item = {"image": image, "scales": scales, "norm": norm, "views": views, "size": image.shape[:2]}
    with torch.no_grad():
        strided, high = infercam.image_maps(model, item, keys, max_iterations=1)
        _, cam_high = multiscale_maps(lambda b: infercam.maps(model, b, keys), 3, views, image.shape[:2])
    torch.testing.assert_close(high, normalize_max(cam_high), atol=1e-4, rtol=0)
    assert strided.shape == (3, 10, 14) and float(strided.max()) == pytest.approx(1.0, abs=1e-4)


def test_image_maps_of_one_class_merges_four_crops_into_a_normalised_map():
    model = Tiny(classes=4).eval()
    image = (np.random.default_rng(1).random((48, 64, 3)) * 255).astype(np.uint8)
    norm = ((0.5,) * 3, (0.5,) * 3)
    item = {"image": image, "scales": [1.0], "norm": norm, "views": multiscale_views(image, [1.0], norm),
            "size": (48, 64)}
    with torch.no_grad():
        strided, high = infercam.image_maps(model, item, torch.tensor([2]))
    assert high.shape == (1, 48, 64) and strided.shape == (1, 12, 16)
    assert float(high.min()) >= 0 and float(high.max()) == pytest.approx(1.0, abs=1e-4)


def test_gaussian_upsampling_of_a_single_cell_is_the_stated_kernel():
    """One non-zero cell of a stride-16 grid, σ = 0.8 cells: the output is exp(−d² / 2(0.8·16)²) around the cell's
    centre, d in pixels between pixel centres and the cell centre (written out here in pixels)."""
    cells = torch.zeros(1, 3, 4)
    cells[0, 1, 2] = 2.0
    out = gaussian_resize(cells, (48, 64), sigma=0.8)[0]
    sigma_px = 0.8 * 16
    ys, xs = torch.meshgrid(torch.arange(48) + 0.5, torch.arange(64) + 0.5, indexing="ij")
    d2 = (ys - 1.5 * 16) ** 2 + (xs - 2.5 * 16) ** 2
    torch.testing.assert_close(out, 2.0 * torch.exp(-d2 / (2 * sigma_px ** 2)))


def test_gaussian_upsampling_through_the_scales_is_flip_equivariant():
    model = Tiny(classes=3).eval()
    x = torch.randn(3, 48, 64, generator=torch.Generator().manual_seed(4))
    keys = torch.tensor([0, 2])
    cam = lambda b: infercam.maps(model, b, keys)  # noqa: E731
    with torch.no_grad():
        a = multiscale_maps(cam, 2, [torch.stack([x, x.flip(-1)])], (48, 64), "gaussian", 1.0)
        b = multiscale_maps(cam, 2, [torch.stack([x.flip(-1), x])], (48, 64), "gaussian", 1.0)
    torch.testing.assert_close(a[1], b[1].flip(-1), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(a[1], multiscale_maps(cam, 2, [torch.stack([x, x.flip(-1)])], (48, 64))[1])


def test_upsample_enters_the_seeds_identity_only_when_not_bilinear(tmp_path):
    plain = make_cam.identity(compose_cfg(tmp_path))
    assert "upsample" not in plain  # stored bilinear seeds keep their keys
    gauss = make_cam.identity(compose_cfg(tmp_path, "cam.upsample=gaussian", "cam.gaussian_sigma=0.5"))
    assert gauss["upsample"] == {"mode": "gaussian", "sigma": 0.5}
    assert "options" in make_cam.identity(compose_cfg(tmp_path, "cam=infercam"))
