"""`wsss-prepare coco14`: MS COCO 2014 as a VOC-layout tree that `dataset=coco14` reads (algorithms.md §1.4).

From the published train2014.zip, val2014.zip and annotations_trainval2014.zip (MD5-checked), under ROOT/coco2014:
- JPEGImages/<file name>.jpg: both splits' images (ids are the file names' stems, COCO_train2014_000000000009);
- SegmentationClass/<id>.png: semantic masks from the instance annotations, decoded by pycocotools (polygons
  and RLE): category ids (1..90 with gaps) mapped to 1..80 in id order, 0 background; instances painted in the
  annotation file's order, a later one over an earlier one (ReCAM's mscoco/annToMask.py);
- crowd regions (iscrowd=1): `--crowd background` (default, the references: crowd annotations skipped, their
  pixels stay 0) or `--crowd ignore` (255 where no single instance covers the pixel);
- cls_labels.json: image id → class names, from every annotation of the image (crowd ones included: the class
  is in the photo), read by the VOC-layout reader before anything else;
- ImageSets/Segmentation/train.txt and val.txt: the images with at least one annotation. Images without any are
  left out of the lists and counted in the summary. A deviation: ReCAM's COCO code (torchvision's CocoDetection)
  keeps them, as all-background images with an empty label; the pipeline's seed stages need a class per image;
- the lists and cls_labels.json are written last, just before the done-file: a tree without them is unfinished;
- the published archives hold 82,783 train2014 and 40,504 val2014 images: checked when they are the ones used.
Resumable: masks are written atomically by worker processes and skipped when present; a second run does nothing;
a run that resumes with another `--crowd` than the masks on disk were drawn with stops (ROOT/coco2014/.crowd).
"""
from __future__ import annotations

import gc
import logging
from pathlib import Path

import numpy as np

from wsss.io import atomic_path, read_json, save_label_png, write_json
from wsss.prepare.archives import Archive, PrepareError, unpack
from wsss.prepare.workers import map_files

log = logging.getLogger(__name__)
DONE = ".wsss-prepared.json"
SPLITS = {"train": "train2014", "val": "val2014"}
PUBLISHED_IMAGES = {"train2014": 82783, "val2014": 40504}
PUBLISHED = {
    "train2014": Archive("http://images.cocodataset.org/zips/train2014.zip", "train2014.zip",
                         "0da8c0bd3d6becc4dcb32757491aca88"),
    "val2014": Archive("http://images.cocodataset.org/zips/val2014.zip", "val2014.zip",
                       "a3d79f5ed8d289b7a7554ce06a5782b3"),
    "annotations": Archive("http://images.cocodataset.org/annotations/annotations_trainval2014.zip",
                           "annotations_trainval2014.zip", "0a379cfc70b0e71301e0f377548639bd"),
}
CLASS_NAMES = [  # COCO's 80 categories in id order (conf/dataset/coco14.yaml holds the same list)
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush"]
CROWD_POLICIES = ("background", "ignore")


def prepare(root: Path, workers: int, crowd: str = "background", archives: dict[str, Archive] | None = None) -> Path:
    """The prepared tree ROOT/coco2014 (`dataset.root` for dataset=coco14)."""
    if crowd not in CROWD_POLICIES:
        raise PrepareError(f"--crowd {crowd}: choose one of {CROWD_POLICIES}")
    published = archives is None
    archives = archives or PUBLISHED
    root = Path(root).resolve()
    out = root / "coco2014"
    if (out / DONE).exists():
        done = read_json(out / DONE)
        if done.get("crowd") != crowd:
            raise PrepareError(f"{out} was prepared with --crowd {done.get('crowd')}; delete its SegmentationClass/ "
                               f"and {out / DONE} to prepare it with --crowd {crowd}")
        log.info("%s is prepared already (%s): nothing to do", out, done)
        return out
    check_crowd_policy(out, crowd)
    downloads = root / "downloads"
    annotations = unpack(archives["annotations"], downloads, "annotations", out / "annotations")
    summary = {"crowd": crowd}
    labels: dict[str, list[str]] = {}
    lists: dict[str, list[str]] = {}
    for split, folder in SPLITS.items():
        unpack(archives[folder], downloads, folder, out / "JPEGImages")
        coco = load_annotations(annotations / f"instances_{folder}.json")
        if published and len(coco.imgs) != PUBLISHED_IMAGES[folder]:
            raise PrepareError(f"{annotations / f'instances_{folder}.json'} lists {len(coco.imgs)} images, the "
                               f"published {folder} has {PUBLISHED_IMAGES[folder]}")
        kept, split_labels = split_contents(coco, out / "JPEGImages")
        labels.update(split_labels)
        write_masks(coco, kept, out / "SegmentationClass", crowd, workers, desc=f"{folder} masks")
        lists[split] = [image_id(coco, i) for i in kept]
        summary[split] = {"images": len(coco.imgs), "kept": len(kept), "without_annotations": len(coco.imgs) - len(kept),
                          "crowd_annotations": sum(a.get("iscrowd", 0) for a in coco.anns.values())}
        del coco
    write_json(out / "cls_labels.json", labels)
    for split, ids in lists.items():
        with atomic_path(out / "ImageSets" / "Segmentation" / f"{split}.txt") as tmp:
            tmp.write_text("".join(f"{i}\n" for i in ids))
    write_json(out / DONE, summary)
    log.info("COCO 2014 ready: %s", summary)
    return out


def check_crowd_policy(out: Path, crowd: str) -> None:
    """Record the crowd policy before the first mask is drawn, and refuse to resume masks drawn with another."""
    record = out / ".crowd"
    if record.exists() and record.read_text().strip() != crowd:
        raise PrepareError(f"the masks in {out / 'SegmentationClass'} were started with --crowd "
                           f"{record.read_text().strip()}; run again with it, or delete that folder and {record} "
                           f"to draw them with --crowd {crowd}")
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(record) as tmp:
        tmp.write_text(crowd)


def load_annotations(path: Path):
    """pycocotools' COCO index of an instance annotation file, its category ids checked."""
    from pycocotools.coco import COCO

    if not path.exists():
        raise PrepareError(f"annotation file {path} is missing: the annotations archive must hold "
                           f"annotations/{path.name}")
    try:
        coco = COCO(str(path))
    except (OSError, ValueError, KeyError) as e:
        raise PrepareError(f"annotation file {path} is unreadable ({e})") from e
    known = set(coco.cats)
    for ann in coco.anns.values():
        if ann["category_id"] not in known:
            raise PrepareError(f"{path}: annotation {ann['id']} (image {ann['image_id']}) has category_id "
                               f"{ann['category_id']}, which is not among the file's categories {sorted(known)}")
    names = [coco.cats[c]["name"] for c in sorted(known)]
    if names != CLASS_NAMES:
        log.warning("%s has categories %s, not COCO's 80: set dataset.class_names to them (in id order)", path, names)
    return coco


def image_id(coco, index: int) -> str:
    return Path(coco.imgs[index]["file_name"]).stem


def split_contents(coco, images: Path) -> tuple[list[int], dict[str, list[str]]]:
    """The images with at least one annotation (sorted by COCO id), checked to be on disk, and their labels."""
    kept = sorted(i for i in coco.imgs if coco.imgToAnns.get(i))
    missing = [coco.imgs[i]["file_name"] for i in kept if not (images / f"{image_id(coco, i)}.jpg").exists()]
    if missing:
        raise PrepareError(f"{len(missing)} images listed in the annotations are not in {images} (e.g. "
                           f"{missing[0]}): the image archive does not match the annotation file")
    labels = {image_id(coco, i): [coco.cats[c]["name"] for c in sorted({a["category_id"] for a in coco.imgToAnns[i]})]
              for i in kept}
    return kept, labels


def semantic_mask(height: int, width: int, anns: list[tuple[int, dict]], crowd: str) -> np.ndarray:
    """One image's label map from its (label 1..N, annotation) pairs in the file's order: later instances over
    earlier ones; crowd regions skipped (background) or 255 under every instance (ignore)."""
    mask = np.zeros((height, width), np.uint8)
    index = one_image_index(height, width, anns)
    if crowd == "ignore":
        for _, ann in anns:
            if ann.get("iscrowd", 0):
                mask[index.annToMask(ann) > 0] = 255
    for label, ann in anns:
        if not ann.get("iscrowd", 0):
            mask[index.annToMask(ann) > 0] = label
    return mask


def one_image_index(height: int, width: int, anns: list[tuple[int, dict]]):
    """A pycocotools index that holds only this image's size, for its annToMask (polygons, RLE, uncompressed
    RLE): a worker gets its image's annotations, not the whole file's index."""
    from pycocotools.coco import COCO

    index = COCO()
    index.imgs = {ann["image_id"]: {"height": height, "width": width} for _, ann in anns}
    return index


def mask_tasks(coco, kept: list[int], masks: Path, crowd: str) -> list[tuple]:
    """One self-contained task per image: (height, width, [(label, annotation)], crowd, target)."""
    label_of = {c: k + 1 for k, c in enumerate(sorted(coco.cats))}  # ids 1..90 with gaps → 1..80 in id order
    return [(coco.imgs[i]["height"], coco.imgs[i]["width"],
             [(label_of[a["category_id"]], a) for a in coco.imgToAnns[i]], crowd, masks / f"{image_id(coco, i)}.png")
            for i in kept]


def _write_mask(height: int, width: int, anns: list, crowd: str, target: Path) -> None:
    save_label_png(target, semantic_mask(height, width, anns, crowd))


def write_masks(coco, kept: list[int], masks: Path, crowd: str, workers: int, desc: str) -> int:
    """The masks of `kept`, in worker processes. The index is frozen out of the garbage collector's reach first,
    so that forked workers, which never touch it, do not copy its pages either."""
    gc.freeze()
    try:
        return map_files(_write_mask, mask_tasks(coco, kept, masks, crowd), workers, desc)
    finally:
        gc.unfreeze()
