"""Reader for any dataset in PASCAL VOC layout (contract.md, Datasets on disk; algorithms.md §1).

ROOT/JPEGImages/<id>.jpg, ROOT/SegmentationClass/<id>.png (palette PNG read as indices),
ROOT/ImageSets/Segmentation/<split>.txt, optional ROOT/Annotations/<id>.xml.
Image-level labels come from ROOT/cls_labels.json when the tree has one (id → class names; COCO's
preparation writes it from the annotation file), else from the XML files where they exist (as in the
references, difficult objects included), else from SBD's cls/<id>.mat, else from the masks
(SegmentationClass/, then SegmentationClassAug/; 0 and 255 never a label).
"""
from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from functools import cached_property
from pathlib import Path

import numpy as np

from wsss.errors import UserError
from wsss.io import load_label_png, read_json

log = logging.getLogger(__name__)

VOC_CLASSES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor"]
TRAIN_AUG_SIZE = 10582  # VOC train ∪ SBD train ∪ SBD val − VOC val, on the real data
LABEL_FILE = "cls_labels.json"  # optional: image id → class names (COCO's labels come from its annotation file)


class DatasetError(UserError):
    """A dataset tree is missing or malformed; the message names the path and the fix."""


class VOCLayout:
    def __init__(self, root: str | Path, class_names: list[str], sbd_root: str | Path | None = None):
        self.root = Path(root)
        self.class_names = list(class_names)
        self.sbd_root = Path(sbd_root) if sbd_root else None
        if not self.root.is_dir():
            raise DatasetError(f"dataset root {self.root} does not exist; set dataset.root=PATH to a "
                               "VOC-layout directory (the one holding JPEGImages/)")
        for sub in ("JPEGImages", "ImageSets/Segmentation"):
            if not (self.root / sub).is_dir():
                raise DatasetError(f"{self.root / sub} is missing: dataset.root must point at a VOC-layout "
                                   "tree (e.g. VOCdevkit/VOC2012) with JPEGImages/ and ImageSets/Segmentation/")
        self._labels: dict[str, np.ndarray] = {}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def image_path(self, img_id: str) -> Path:
        return self.root / "JPEGImages" / f"{img_id}.jpg"

    def mask_path(self, img_id: str) -> Path:
        return self.root / "SegmentationClass" / f"{img_id}.png"

    # ------------------------------------------------------------ splits
    def ids(self, split: str) -> list[str]:
        if split == "train_aug" and not (self._list_path("train_aug")).exists():
            return self._train_aug_from_sbd()
        path = self._list_path(split)
        if not path.exists():
            raise DatasetError(f"split list {path} is missing; create it (one image id per line) or "
                               f"choose another split")
        ids = read_list(path)
        if not ids:
            raise DatasetError(f"split list {path} is empty")
        return ids

    def ids_of(self, splits) -> list[str]:
        """Ids of several splits, each once, in list order (train ⊂ train_aug adds nothing new)."""
        return list(dict.fromkeys(i for split in splits for i in self.ids(split)))

    def _list_path(self, split: str) -> Path:
        return self.root / "ImageSets" / "Segmentation" / f"{split}.txt"

    def _train_aug_from_sbd(self) -> list[str]:
        voc_train, voc_val = self.ids("train"), self.ids("val")
        if self.sbd_root is None:
            log.warning("no %s and no dataset.sbd_root: train_aug falls back to train (%d images)",
                        self._list_path("train_aug"), len(voc_train))
            return voc_train
        sbd = []
        for name in ("train.txt", "val.txt"):
            if not (self.sbd_root / name).exists():
                raise DatasetError(f"SBD list {self.sbd_root / name} is missing; dataset.sbd_root must hold "
                                   "SBD's train.txt, val.txt and cls/")
            sbd += read_list(self.sbd_root / name)
        merged = train_aug_ids(voc_train, voc_val, sbd)
        if len(voc_train) == 1464 and len(voc_val) == 1449 and len(merged) != TRAIN_AUG_SIZE:
            log.warning("train_aug has %d images, the references use %d: check the SBD lists",
                        len(merged), TRAIN_AUG_SIZE)
        return merged

    # ------------------------------------------------------------ labels
    def labels(self, img_id: str) -> np.ndarray:
        """Multi-hot float32 [C] image-level label."""
        if img_id not in self._labels:
            self._labels[img_id] = self._read_labels(img_id)
        return self._labels[img_id]

    def _read_labels(self, img_id: str) -> np.ndarray:
        if self._label_file is not None:
            if img_id not in self._label_file:
                raise DatasetError(f"{img_id} has no entry in {self.root / LABEL_FILE}; add it or drop the id "
                                   "from the split list")
            return self._labels_from_names(self._label_file[img_id], self.root / LABEL_FILE)
        xml = self.root / "Annotations" / f"{img_id}.xml"
        if xml.exists():
            return self._labels_from_xml(xml)
        if self.sbd_root is not None and (self.sbd_root / "cls" / f"{img_id}.mat").exists():
            return self._labels_from_values(_sbd_values(self.sbd_root / "cls" / f"{img_id}.mat"))
        for masks in ("SegmentationClass", "SegmentationClassAug"):
            path = self.root / masks / f"{img_id}.png"
            if path.exists():
                return self._labels_from_values(np.unique(load_label_png(path)))
        raise DatasetError(f"no image-level labels for {img_id}: none of {xml}, {self.mask_path(img_id)} "
                           "exists (add Annotations/ or SegmentationClass/ or dataset.sbd_root)")

    @cached_property
    def _label_file(self) -> dict[str, list[str]] | None:
        """`cls_labels.json` at the root (image id → class names), which wsss-prepare coco14 writes."""
        path = self.root / LABEL_FILE
        if not path.exists():
            return None
        try:
            return read_json(path)
        except (OSError, ValueError) as e:
            raise DatasetError(f"{path} is unreadable ({e}); re-run the dataset preparation") from e

    def _labels_from_names(self, names, source: Path) -> np.ndarray:
        unknown = [n for n in names if n not in self.class_names]
        if unknown:
            raise DatasetError(f"{source} names classes {unknown} that dataset.class_names does not hold")
        y = np.zeros(self.num_classes, np.float32)
        y[[self.class_names.index(n) for n in names]] = 1
        return y

    def _labels_from_xml(self, path: Path) -> np.ndarray:
        try:
            tree = ET.parse(path)
        except ET.ParseError as e:
            raise DatasetError(f"annotation {path} is not valid XML ({e}); fix or delete it") from e
        y = np.zeros(self.num_classes, np.float32)
        for obj in tree.getroot().iter("object"):
            name = (obj.findtext("name") or "").strip()
            if name in self.class_names:  # part names (head, hand, …) are not class names
                y[self.class_names.index(name)] = 1
        return y

    def _labels_from_values(self, values) -> np.ndarray:
        y = np.zeros(self.num_classes, np.float32)
        for v in np.asarray(values).ravel():
            if 1 <= v <= self.num_classes:
                y[v - 1] = 1
        return y

    def boxes(self, img_id: str) -> list[tuple[int, int, int, int, int]]:
        """(class index, x0, y0, x1, y1) per XML object, 0-based, end-exclusive."""
        path = self.root / "Annotations" / f"{img_id}.xml"
        out = []
        for obj in ET.parse(path).getroot().iter("object"):
            name, box = (obj.findtext("name") or "").strip(), obj.find("bndbox")
            if name in self.class_names and box is not None:
                x0, y0, x1, y1 = (int(float(box.findtext(t))) for t in ("xmin", "ymin", "xmax", "ymax"))
                out.append((self.class_names.index(name), x0 - 1, y0 - 1, x1, y1))
        return out

    def read_mask(self, img_id: str) -> np.ndarray:
        """Ground-truth indices (0 background, 1..C classes, 255 ignore), checked for range."""
        path = self.mask_path(img_id)
        if not path.exists():
            raise DatasetError(f"ground-truth mask {path} is missing; evaluation needs "
                               "SegmentationClass/<id>.png for every id of the split")
        mask = load_label_png(path)
        bad = (mask > self.num_classes) & (mask != 255)
        if bad.any():
            raise DatasetError(f"mask {path} holds values {sorted(set(np.unique(mask[bad]).tolist()))} "
                               f"outside 0..{self.num_classes} and 255; is it an RGB-coloured mask?")
        return mask

    @cached_property
    def has_annotations(self) -> bool:
        return (self.root / "Annotations").is_dir()


def train_aug_ids(voc_train, voc_val, sbd_ids) -> list[str]:
    """VOC train ∪ SBD (train ∪ val) − VOC val, sorted (algorithms.md §1.1: 10,582 ids on the real lists).
    SBD's own train list holds VOC val images: they must not leak into training."""
    excluded = set(voc_val)
    return sorted(set(voc_train) | {i for i in sbd_ids if i not in excluded})


def read_list(path: Path) -> list[str]:
    """Image ids, one per line; a second column (e.g. an SBD-style 'id label') is ignored."""
    return [line.split()[0] for line in Path(path).read_text().splitlines() if line.strip()]


def _sbd_values(path: Path) -> np.ndarray:
    from scipy.io import loadmat

    try:
        return loadmat(str(path))["GTcls"]["Segmentation"][0, 0]
    except (OSError, ValueError, KeyError) as e:
        raise DatasetError(f"SBD file {path} is unreadable ({e})") from e
