import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from wsss.data.voc import VOC_CLASSES, DatasetError, VOCLayout
from wsss.io import save_label_png


def _tree(root, ids, masks=True, xml=None):
    (root / "JPEGImages").mkdir(parents=True)
    (root / "ImageSets/Segmentation").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    for i, img_id in enumerate(ids):
        Image.new("RGB", (8, 6)).save(root / "JPEGImages" / f"{img_id}.jpg")
        if masks:
            m = np.zeros((6, 8), np.uint8)
            m[1:3, 1:3] = i + 1
            m[0, 0] = 255
            save_label_png(root / "SegmentationClass" / f"{img_id}.png", m)
    for split, members in {"train": ids[:2], "val": ids[2:]}.items():
        (root / "ImageSets/Segmentation" / f"{split}.txt").write_text("\n".join(members) + "\n")
    if xml:
        (root / "Annotations").mkdir()
        for img_id, names in xml.items():
            objs = "".join(f"<object><name>{n}</name><part><name>head</name></part></object>" for n in names)
            (root / "Annotations" / f"{img_id}.xml").write_text(f"<annotation>{objs}</annotation>")


def test_labels_from_masks_never_from_0_or_255(tmp_path):
    _tree(tmp_path, ["a", "b", "c"])
    voc = VOCLayout(tmp_path, VOC_CLASSES)
    assert voc.ids("train") == ["a", "b"]
    assert np.nonzero(voc.labels("b"))[0].tolist() == [1]  # mask value 2 → class index 1


def test_labels_prefer_xml_and_ignore_part_names(tmp_path):
    _tree(tmp_path, ["a", "b", "c"], xml={"a": ["person", "dog"]})
    voc = VOCLayout(tmp_path, VOC_CLASSES)
    assert np.nonzero(voc.labels("a"))[0].tolist() == [VOC_CLASSES.index("dog"), VOC_CLASSES.index("person")]
    assert np.nonzero(voc.labels("b"))[0].tolist() == [1]  # no XML for b: from its mask


def test_missing_root_and_list_fail_with_the_path(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        VOCLayout(tmp_path / "nope", VOC_CLASSES)
    (tmp_path / "JPEGImages").mkdir()
    with pytest.raises(DatasetError, match="ImageSets"):
        VOCLayout(tmp_path, VOC_CLASSES)
    _tree(tmp_path / "t", ["a", "b", "c"])
    with pytest.raises(DatasetError, match="test.txt"):
        VOCLayout(tmp_path / "t", VOC_CLASSES).ids("test")


def test_mask_values_out_of_range_are_refused(tmp_path):
    _tree(tmp_path, ["a", "b", "c"])
    save_label_png(tmp_path / "SegmentationClass" / "a.png", np.full((6, 8), 40, np.uint8))
    with pytest.raises(DatasetError, match="outside 0..20"):
        VOCLayout(tmp_path, VOC_CLASSES).read_mask("a")


def test_train_aug_falls_back_to_train_without_sbd(tmp_path, caplog):
    _tree(tmp_path, ["a", "b", "c"])
    assert VOCLayout(tmp_path, VOC_CLASSES).ids("train_aug") == ["a", "b"]
    assert "falls back to train" in caplog.text


def test_train_aug_from_sbd_excludes_val_and_reads_cls_mat(tmp_path):
    _tree(tmp_path / "voc", ["a", "b", "c"])
    sbd = tmp_path / "sbd"
    (sbd / "cls").mkdir(parents=True)
    (sbd / "train.txt").write_text("d\nc\n")  # c is VOC val: must be excluded
    (sbd / "val.txt").write_text("e\n")
    for img_id, value in {"d": 7, "e": 12}.items():
        seg = np.zeros((4, 4), np.uint8)
        seg[0, 0] = value
        seg[1, 1] = 255
        savemat(sbd / "cls" / f"{img_id}.mat",
                {"GTcls": {"Segmentation": seg, "Boundaries": np.zeros(1), "CategoriesPresent": np.array([value])}})
    voc = VOCLayout(tmp_path / "voc", VOC_CLASSES, sbd_root=sbd)
    assert voc.ids("train_aug") == ["a", "b", "d", "e"]
    assert np.nonzero(voc.labels("d"))[0].tolist() == [6]


def test_voc200_real_tree(voc200):
    voc = VOCLayout(voc200, VOC_CLASSES)
    train = voc.ids("train")
    assert len(train) == 172 and len(voc.ids("val")) == 28
    for img_id in train[:10]:
        mask = voc.read_mask(img_id)
        assert set(np.unique(mask)) <= set(range(21)) | {255}
        assert voc.labels(img_id).any()
        with Image.open(voc.image_path(img_id)) as im:
            assert im.size[::-1] == mask.shape
