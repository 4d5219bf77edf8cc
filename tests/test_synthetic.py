import numpy as np
from scipy import ndimage

from wsss.data.synthetic import CLASS_NAMES, CONTEXTS, render
from wsss.data.voc import VOCLayout

GEN = dict(seed=0, num_train_aug=12, num_train=4, num_val=4, min_size=64, max_size=96,
           objects_prob=[0.5, 0.35, 0.15], cooccur_prob=0.5, context_prob=0.85, context_noise_prob=0.08,
           object_scale=[0.14, 0.26], part_scale=0.32, clutter=[3, 10], ignore_width=1)


def test_render_is_deterministic_and_well_formed():
    a = render(np.random.default_rng([0, 5]), GEN)
    b = render(np.random.default_rng([0, 5]), GEN)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    image, label, objects = a
    assert image.dtype == np.uint8 and image.shape[:2] == label.shape
    assert 64 <= label.shape[0] <= 96 and 64 <= label.shape[1] <= 96
    present = set(np.unique(label)) - {0, 255}
    assert present == {c + 1 for c, _ in objects}
    assert len(CLASS_NAMES) >= 10 and len(CONTEXTS) == len(CLASS_NAMES) // 2


def test_dataset_statistics_carry_the_wsss_difficulties():
    many_classes = ignore_frac = 0
    n = 60
    for i in range(n):
        image, label, objects = render(np.random.default_rng([1, i]), GEN)
        classes = {c for c, _ in objects}
        many_classes += len(classes) > 1
        ignore_frac += (label == 255).mean() / n
    assert many_classes / n > 0.3          # multi-class images are common
    assert 0.01 < ignore_frac < 0.2         # a VOC-like void band exists


def test_tree_is_voc_layout(tiny_cfg):
    from wsss.data import open_dataset

    cfg = tiny_cfg()
    voc = open_dataset(cfg)
    assert isinstance(voc, VOCLayout) and voc.has_annotations
    train, aug = voc.ids("train"), voc.ids("train_aug")
    assert set(train) <= set(aug) and not set(aug) & set(voc.ids("val"))
    for img_id in train:
        mask = voc.read_mask(img_id)
        from_mask = {v - 1 for v in np.unique(mask) if 0 < v < 255}
        assert from_mask == set(np.nonzero(voc.labels(img_id))[0])  # XML labels agree with masks
    # the same config gives the same tree (cached, deterministic)
    assert open_dataset(cfg).root == voc.root


def test_partners_can_touch_and_share_the_part_colour():
    g = dict(GEN, objects_prob=[0.0, 1.0, 0.0], cooccur_prob=1.0, touch_prob=1.0, partner_same_part=True)
    touching = 0
    for i in range(20):
        _, label, objects = render(np.random.default_rng([2, i]), g)
        if len(objects) < 2:  # the partner hid its anchor completely
            continue
        (a, _), (b, _) = sorted(objects, key=lambda o: o[0])
        assert {a // 2, b // 2} in ({k, (k + 1) % 6} for k in range(6)) and a % 2 == b % 2
        near_a = ndimage.binary_dilation(label == a + 1, iterations=5)  # across the 255 band
        touching += bool((near_a & (label == b + 1)).any())
    assert touching >= 15


def test_default_generator_draws_are_unchanged_by_the_partner_options():
    a = render(np.random.default_rng([0, 7]), GEN)
    b = render(np.random.default_rng([0, 7]), dict(GEN, touch_prob=0.0, partner_same_part=False))
    np.testing.assert_array_equal(a[0], b[0])
