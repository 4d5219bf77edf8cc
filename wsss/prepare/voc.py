"""`wsss-prepare voc12`: PASCAL VOC 2012 trainval + SBD into the tree `dataset=voc12` reads, train_aug included.

Steps, each resumable and skipped once done (users.md §1.4):
1. VOCtrainval_11-May-2012.tar and SBD's benchmark.tgz, with the URLs and MD5s torchvision publishes for them;
2. unpacked to ROOT/VOCdevkit/VOC2012 and ROOT/benchmark_RELEASE;
3. VOC2012/SegmentationClassAug/<id>.png for VOC's masks and SBD's: VOC's own fine mask where VOC has one
   (with its 255 void borders), SBD's cls/<id>.mat converted to a palette PNG (0 background, 1..20) for the
   rest — each file written atomically, those already there skipped;
4. ImageSets/Segmentation/train_aug.txt = VOC train ∪ SBD train ∪ SBD val − VOC val (10,582 ids on the real
   lists, checked), and any of its images missing from JPEGImages/ copied from SBD's img/.
Seeds are still scored on VOC train's SegmentationClass/ (algorithms.md §1.3); SegmentationClassAug/ serves
fully supervised comparisons and the label fallback of images without XML.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

from wsss.data.voc import TRAIN_AUG_SIZE, _sbd_values, read_list, train_aug_ids
from wsss.io import atomic_path, read_json, save_label_png, write_json
from wsss.prepare.archives import Archive, PrepareError, unpack
from wsss.prepare.workers import map_files

log = logging.getLogger(__name__)
DONE = ".wsss-prepared.json"


def published_archives() -> dict[str, Archive]:
    """The archives and checksums torchvision's VOCSegmentation and SBDataset download."""
    from torchvision.datasets import SBDataset
    from torchvision.datasets.voc import DATASET_YEAR_DICT

    voc = DATASET_YEAR_DICT["2012"]
    return {"voc": Archive(voc["url"], voc["filename"], voc["md5"]),
            "sbd": Archive(SBDataset.url, SBDataset.filename, SBDataset.md5)}


def prepare(root: Path, workers: int, archives: dict[str, Archive] | None = None) -> Path:
    """The prepared VOC 2012 tree under `root` (`dataset.root` for dataset=voc12)."""
    archives = archives or published_archives()
    root = Path(root).resolve()
    voc = root / "VOCdevkit" / "VOC2012"
    if (voc / DONE).exists():
        log.info("%s is prepared already (%s): nothing to do", voc, read_json(voc / DONE))
        return voc
    downloads = root / "downloads"
    voc = unpack(archives["voc"], downloads, "VOCdevkit/VOC2012", voc)
    sbd = unpack(archives["sbd"], downloads, "benchmark_RELEASE", root / "benchmark_RELEASE") / "dataset"
    for need in (sbd / "cls", sbd / "train.txt", sbd / "val.txt", voc / "SegmentationClass"):
        if not need.exists():
            raise PrepareError(f"{need} is missing from the unpacked archives; delete {root} and start again")
    aug = voc / "SegmentationClassAug"
    voc_masks = sorted((voc / "SegmentationClass").glob("*.png"))
    map_files(copy_voc_mask, [(p, aug / p.name) for p in voc_masks], workers, "VOC masks → SegmentationClassAug")
    sbd_masks = [p for p in sorted((sbd / "cls").glob("*.mat")) if not (voc / "SegmentationClass" / f"{p.stem}.png").exists()]
    map_files(convert_sbd_mask, [(p, aug / f"{p.stem}.png") for p in sbd_masks], workers,
              "SBD cls/*.mat → SegmentationClassAug")
    ids = write_train_aug(voc, sbd)
    copied = copy_missing_images(voc, sbd, ids)
    if copied:
        log.info("%d images of train_aug copied from %s", copied, sbd / "img")
    summary = {"train_aug": len(ids), "masks_from_voc": len(voc_masks), "masks_from_sbd": len(sbd_masks)}
    write_json(voc / DONE, summary)
    log.info("VOC 2012 + SBD ready: %s", summary)
    return voc


def copy_voc_mask(source: Path, target: Path) -> None:
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def convert_sbd_mask(source: Path, target: Path) -> None:
    """SBD's GTcls segmentation (0 background, 1..20) as a palette PNG."""
    values = _sbd_values(source)
    if values.ndim != 2 or values.max() > 20:
        raise PrepareError(f"{source} is not an SBD class mask (shape {values.shape}, max {values.max()})")
    save_label_png(target, values)


def write_train_aug(voc: Path, sbd: Path) -> list[str]:
    lists = voc / "ImageSets" / "Segmentation"
    voc_train, voc_val = read_list(lists / "train.txt"), read_list(lists / "val.txt")
    ids = train_aug_ids(voc_train, voc_val, read_list(sbd / "train.txt") + read_list(sbd / "val.txt"))
    if len(voc_train) == 1464 and len(voc_val) == 1449 and len(ids) != TRAIN_AUG_SIZE:
        raise PrepareError(f"train_aug from {sbd}/train.txt and val.txt has {len(ids)} ids, not the references' "
                           f"{TRAIN_AUG_SIZE}: the SBD archive is not the published one")
    with atomic_path(lists / "train_aug.txt") as tmp:
        tmp.write_text("".join(f"{i}\n" for i in ids))
    return ids


def copy_missing_images(voc: Path, sbd: Path, ids) -> int:
    """Images of train_aug that VOC's JPEGImages/ lacks, from SBD's img/ (none with the published archives)."""
    copied = 0
    for img_id in ids:
        target = voc / "JPEGImages" / f"{img_id}.jpg"
        if target.exists():
            continue
        source = sbd / "img" / f"{img_id}.jpg"
        if not source.exists():
            raise PrepareError(f"image {img_id} of train_aug is in neither {target.parent} nor {source.parent}")
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
        copied += 1
    return copied
