"""wsss-prepare on archives the tests build: VOC 2012 + SBD (train_aug, SegmentationClassAug) and COCO 2014 (masks
from instance annotations), resumable after a kill, idempotent, with clear errors on bad input."""
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from tests.conftest import TINY, compose_cfg
from wsss.data import open_dataset
from wsss.data.voc import VOC_CLASSES, VOCLayout, train_aug_ids
from wsss.errors import UserError
from wsss.io import load_label_png, palette
from wsss.prepare import coco, voc
from wsss.prepare.archives import Archive, unpack

TESTS = Path(__file__).resolve().parent
RNG = np.random.default_rng(0)


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def jpeg(h: int = 12, w: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(RNG.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def png(label: np.ndarray) -> bytes:
    img = Image.fromarray(label.astype(np.uint8), mode="P")
    img.putpalette(palette())
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def xml(names) -> bytes:
    objects = "".join(f"<object><name>{n}</name></object>" for n in names)
    return f"<annotation>{objects}</annotation>".encode()


# ------------------------------------------------------------------ VOC + SBD
VOC_TRAIN, VOC_VAL = ["2008_000001", "2008_000002"], ["2008_000003"]
SBD_TRAIN, SBD_VAL = ["2008_000002", "2008_000003", "2008_000004"], ["2008_000005"]  # 000003: a VOC val leak


def sbd_mask(img_id: str) -> np.ndarray:
    m = np.zeros((12, 16), np.uint8)
    m[2:8, 3:10] = int(img_id[-1]) + 10  # class 11..15
    return m


def voc_mask(img_id: str) -> np.ndarray:
    m = np.zeros((12, 16), np.uint8)
    m[1:6, 1:6] = int(img_id[-1])
    m[6, :] = 255
    return m


def voc_archives(folder: Path) -> dict[str, Archive]:
    """A VOC-like tar (VOCdevkit/VOC2012) and an SBD-like tgz (benchmark_RELEASE/dataset) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(folder / "voc.tar", "w") as tar:
        base = "VOCdevkit/VOC2012"
        for i in VOC_TRAIN + VOC_VAL + ["2008_000004"]:  # 000005 is in SBD only
            add(tar, f"{base}/JPEGImages/{i}.jpg", jpeg())
            add(tar, f"{base}/Annotations/{i}.xml", xml(["dog"]))
        for i in VOC_TRAIN + VOC_VAL:
            add(tar, f"{base}/SegmentationClass/{i}.png", png(voc_mask(i)))
        add(tar, f"{base}/ImageSets/Segmentation/train.txt", "\n".join(VOC_TRAIN).encode())
        add(tar, f"{base}/ImageSets/Segmentation/val.txt", "\n".join(VOC_VAL).encode())
    sbd = folder / "sbd_src"
    (sbd / "cls").mkdir(parents=True)
    for i in SBD_TRAIN + SBD_VAL:
        savemat(sbd / "cls" / f"{i}.mat", {"GTcls": {"Segmentation": sbd_mask(i), "CategoriesPresent": [1]}})
    with tarfile.open(folder / "sbd.tgz", "w:gz") as tar:
        base = "benchmark_RELEASE/dataset"
        for i in SBD_TRAIN + SBD_VAL:
            tar.add(sbd / "cls" / f"{i}.mat", f"{base}/cls/{i}.mat")
            add(tar, f"{base}/img/{i}.jpg", jpeg())
        add(tar, f"{base}/train.txt", "\n".join(SBD_TRAIN).encode())
        add(tar, f"{base}/val.txt", "\n".join(SBD_VAL).encode())
    return {"voc": Archive("http://unreachable.invalid/voc.tar", "voc.tar", md5(folder / "voc.tar")),
            "sbd": Archive("http://unreachable.invalid/sbd.tgz", "sbd.tgz", md5(folder / "sbd.tgz"))}


def staged(tmp_path: Path, name: str = "data") -> tuple[Path, dict[str, Archive]]:
    """A --root whose downloads/ already holds the archives (the machines have no internet)."""
    root = tmp_path / name
    return root, voc_archives(root / "downloads")


def tree_contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_train_aug_arithmetic_on_made_up_lists():
    assert train_aug_ids(["a", "b"], ["c"], ["b", "c", "d", "e"]) == ["a", "b", "d", "e"]  # c: VOC val, left out
    assert train_aug_ids([], ["x"], ["x"]) == []


def test_voc_preparation_yields_a_tree_that_voc12_reads_with_train_aug(tmp_path):
    root, archives = staged(tmp_path)
    tree = voc.prepare(root, workers=2, archives=archives)
    assert tree == root.resolve() / "VOCdevkit" / "VOC2012"
    assert (tree / "ImageSets/Segmentation/train_aug.txt").read_text().split() == \
        ["2008_000001", "2008_000002", "2008_000004", "2008_000005"]
    aug = tree / "SegmentationClassAug"
    for i in VOC_TRAIN + VOC_VAL:  # VOC's own fine masks win (with their 255 borders)
        np.testing.assert_array_equal(load_label_png(aug / f"{i}.png"), voc_mask(i))
    for i in ("2008_000004", "2008_000005"):  # SBD's .mat converted
        np.testing.assert_array_equal(load_label_png(aug / f"{i}.png"), sbd_mask(i))
    assert (tree / "JPEGImages/2008_000005.jpg").exists()  # copied from SBD's img/
    layout = VOCLayout(tree, VOC_CLASSES)
    assert layout.ids("train_aug")[-1] == "2008_000005"
    assert np.flatnonzero(layout.labels("2008_000005")).tolist() == [14]  # from SegmentationClassAug (value 15)
    cfg = compose_cfg(tmp_path, "dataset=voc12", f"dataset.root={tree}")
    assert open_dataset(cfg).ids(cfg.dataset.splits.cls_train) == layout.ids("train_aug")


def test_voc_second_run_does_nothing(tmp_path, caplog):
    root, archives = staged(tmp_path)
    tree = voc.prepare(root, workers=1, archives=archives)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    caplog.set_level("INFO")
    voc.prepare(root, workers=1, archives=archives)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before
    assert "nothing to do" in caplog.text and (tree / voc.DONE).exists()


def kill_in_the_middle_then_rerun(tmp_path, dataset, archives_in, prepare, tree_of) -> None:
    """A reference run; a copy of its archives prepared by a process SIGKILLed inside its 2nd mask write; a re-run
    of that: the same files as the reference, no temporary file left."""
    reference_root = tmp_path / "reference"
    archives = archives_in(reference_root / "downloads")
    reference = prepare(reference_root, archives)
    root = tmp_path / "killed"
    (root / "downloads").mkdir(parents=True)
    for a in archives.values():
        (root / "downloads" / a.filename).write_bytes((reference_root / "downloads" / a.filename).read_bytes())
    marker = tmp_path / "writing"
    listed = json.dumps({k: [a.url, a.filename, a.md5] for k, a in archives.items()})
    script = (f"import sys; sys.path.insert(0, {str(TESTS)!r}); from pathlib import Path\n"
              f"from blocking_writer import install\n"
              f"install('wsss.prepare.{dataset}.save_label_png', 2, Path({str(marker)!r}))\n"
              f"from wsss.prepare import {dataset}; from wsss.prepare.archives import Archive\n"
              f"{dataset}.prepare(Path({str(root)!r}), 1, archives={{k: Archive(*v) for k, v in {listed}.items()}})")
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    end = time.time() + 120
    while not marker.exists():
        assert proc.poll() is None and time.time() < end, "the preparation ended before the kill"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    tree = tree_of(root)
    assert not (tree / ".wsss-prepared.json").exists()
    prepare(root, archives)
    assert tree_contents(tree) == tree_contents(reference)


@pytest.mark.slow
def test_voc_kill_during_a_conversion_then_rerun_gives_the_same_files(tmp_path):
    kill_in_the_middle_then_rerun(tmp_path, "voc", voc_archives, lambda r, a: voc.prepare(r, 2, archives=a),
                                  lambda r: r / "VOCdevkit" / "VOC2012")


@pytest.mark.slow
def test_coco_kill_during_the_masks_then_rerun_gives_the_same_files(tmp_path):
    kill_in_the_middle_then_rerun(tmp_path, "coco", lambda d: coco_archives(d, coco_files(SMALL)),
                                  lambda r, a: coco.prepare(r, 2, archives=a), lambda r: r / "coco2014")


def test_cli_names_a_corrupt_archive_once_and_exits_2(tmp_path):
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "annotations_trainval2014.zip").write_bytes(b"not the archive")
    res = subprocess.run([sys.executable, "-m", "wsss.prepare", "coco14", "--root", str(tmp_path)],
                         capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.count("does not have the published MD5 0a379cfc70b0e71301e0f377548639bd") == 1
    assert "Traceback" not in res.stderr


def test_voc_corrupt_archive_is_named(tmp_path):
    root, archives = staged(tmp_path)
    bad = {**archives, "sbd": Archive(archives["sbd"].url, "sbd.tgz", "0" * 32)}
    with pytest.raises(UserError, match=r"sbd.tgz does not have the published MD5 0{32}.*delete it"):
        voc.prepare(root, workers=1, archives=bad)


def test_missing_archive_without_internet_says_where_to_put_it(tmp_path):
    root = tmp_path / "data"
    archives = {"voc": Archive("http://unreachable.invalid/voc.tar", "voc.tar", "0" * 32),
                "sbd": Archive("http://unreachable.invalid/sbd.tgz", "sbd.tgz", "0" * 32)}
    with pytest.raises(UserError, match=r"place voc.tar in .*downloads"):
        voc.prepare(root, workers=1, archives=archives)
    assert not list((root / "downloads").glob("*.part"))


# ------------------------------------------------------------------ COCO
H, W = 10, 12
CATEGORY_IDS = [*range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66), 67, 70, *range(72, 83),
                *range(84, 91)]  # COCO's 80 category ids, with its gaps
CATEGORIES = [{"id": c, "name": n, "supercategory": "x"} for c, n in zip(CATEGORY_IDS, coco.CLASS_NAMES, strict=True)]


def rect(x0, y0, x1, y1) -> list[list[float]]:
    """A polygon whose pixels are rows y0..y1-1, columns x0..x1-1 (pycocotools' rasterisation)."""
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's crowd encoding: run lengths of the column-major mask, starting with a run of zeros."""
    flat = mask.flatten(order="F")
    counts, value, run = [], 0, 0
    for v in flat:
        if v == value:
            run += 1
        else:
            counts.append(run)
            value, run = v, 1
    counts.append(run)
    return {"counts": counts, "size": [int(mask.shape[0]), int(mask.shape[1])]}


CROWD = np.zeros((H, W), np.uint8)
CROWD[4:9, 0:3] = 1


def coco_files(images: dict[str, list[dict]]) -> dict:
    """{split folder: annotation dict}; `images` maps a folder to [{id, anns}], anns as (category, polygon|RLE, crowd)."""
    out = {}
    ann_id = 1
    for folder, items in images.items():
        d = {"images": [], "annotations": [], "categories": CATEGORIES}
        for item in items:
            d["images"].append({"id": item["id"], "file_name": f"COCO_{folder}_{item['id']:012d}.jpg",
                                "height": H, "width": W})
            for cat, seg, crowd in item["anns"]:
                d["annotations"].append({"id": ann_id, "image_id": item["id"], "category_id": cat,
                                         "segmentation": seg, "iscrowd": crowd, "area": 1.0, "bbox": [0, 0, 1, 1]})
                ann_id += 1
        out[folder] = d
    return out


SMALL = {
    "train2014": [{"id": 9, "anns": [(1, rect(1, 1, 6, 5), 0), (18, rect(4, 3, 9, 8), 0),
                                     (1, uncompressed_rle(CROWD), 1)]},
                  {"id": 25, "anns": []}],  # no annotation: left out
    "val2014": [{"id": 42, "anns": [(90, rect(0, 0, 12, 2), 0)]}, {"id": 43, "anns": [(62, rect(0, 0, 2, 2), 0)]}],
}


def coco_archives(folder: Path, annotations: dict, skip_images=(), skip_json=()) -> dict[str, Archive]:
    folder.mkdir(parents=True, exist_ok=True)
    for split, d in annotations.items():
        with zipfile.ZipFile(folder / f"{split}.zip", "w") as z:
            for img in d["images"]:
                if img["file_name"] not in skip_images:
                    z.writestr(f"{split}/{img['file_name']}", jpeg(H, W))
    with zipfile.ZipFile(folder / "annotations_trainval2014.zip", "w") as z:
        for split, d in annotations.items():
            if split not in skip_json:
                z.writestr(f"annotations/instances_{split}.json", json.dumps(d))
    return {k: Archive(f"http://unreachable.invalid/{a.filename}", a.filename, md5(folder / a.filename))
            for k, a in coco.PUBLISHED.items()}


def test_coco_masks_equal_hand_computed_ones_for_both_crowd_policies(tmp_path):
    expected = np.zeros((H, W), np.uint8)
    expected[1:5, 1:6] = 1            # person (id 1 → 1)
    expected[3:8, 4:9] = 17           # dog (id 18 → 17), drawn after the person: it wins where they overlap
    for crowd in coco.CROWD_POLICIES:
        root = tmp_path / crowd
        archives = coco_archives(root / "downloads", coco_files(SMALL))
        tree = coco.prepare(root, workers=2, crowd=crowd, archives=archives)
        got = load_label_png(tree / "SegmentationClass" / "COCO_train2014_000000000009.png")
        want = expected.copy()
        if crowd == "ignore":  # 255 where no instance covers the crowd region
            want[(CROWD == 1) & (expected == 0)] = 255
        np.testing.assert_array_equal(got, want)
        val = load_label_png(tree / "SegmentationClass" / "COCO_val2014_000000000042.png")
        assert (val[:2] == 80).all() and (val[2:] == 0).all()  # toothbrush (id 90) → 80
        lists = tree / "ImageSets" / "Segmentation"
        assert lists.joinpath("train.txt").read_text().split() == ["COCO_train2014_000000000009"]
        assert lists.joinpath("val.txt").read_text().split() == ["COCO_val2014_000000000042",
                                                                 "COCO_val2014_000000000043"]
        assert not (tree / "SegmentationClass" / "COCO_train2014_000000000025.png").exists()
        layout = VOCLayout(tree, coco.CLASS_NAMES)
        assert np.flatnonzero(layout.labels("COCO_train2014_000000000009")).tolist() == [0, 16]
        summary = json.loads((tree / coco.DONE).read_text())
        assert summary["train"] == {"images": 2, "kept": 1, "without_annotations": 1, "crowd_annotations": 1}


def test_coco_resume_with_another_crowd_policy_stops(tmp_path):
    archives = coco_archives(tmp_path / "downloads", coco_files(SMALL))
    tree = coco.prepare(tmp_path, workers=1, crowd="ignore", archives=archives)
    (tree / coco.DONE).unlink()  # as if killed among the masks
    with pytest.raises(UserError, match="started with --crowd ignore"):
        coco.prepare(tmp_path, workers=1, crowd="background", archives=archives)
    assert coco.prepare(tmp_path, workers=1, crowd="ignore", archives=archives) == tree


def test_coco_lists_and_labels_are_written_last(tmp_path, monkeypatch):
    """A run killed among val's masks leaves no split list and no cls_labels.json: nothing that looks usable."""
    archives = coco_archives(tmp_path / "downloads", coco_files(SMALL))
    write = coco.write_masks

    def fail_on_val(coco_index, kept, masks, crowd, workers, desc):
        if desc.startswith("val2014"):
            raise KeyboardInterrupt
        return write(coco_index, kept, masks, crowd, workers, desc)

    monkeypatch.setattr(coco, "write_masks", fail_on_val)
    with pytest.raises(KeyboardInterrupt):
        coco.prepare(tmp_path, workers=1, archives=archives)
    out = tmp_path / "coco2014"
    assert (out / "SegmentationClass" / "COCO_train2014_000000000009.png").exists()
    assert not (out / "ImageSets").exists() and not (out / "cls_labels.json").exists()


def test_a_resumed_run_needs_no_archive_it_has_unpacked(tmp_path):
    """Archives deleted after unpacking (to free disk), then a run killed before the end: the re-run goes on
    without them (nothing is downloaded, nothing re-hashed)."""
    root, archives = staged(tmp_path)
    tree = voc.prepare(root, workers=1, archives=archives)
    (tree / voc.DONE).unlink()
    for a in archives.values():
        (root / "downloads" / a.filename).unlink()
    assert voc.prepare(root, workers=1, archives=archives) == tree


def test_unpack_killed_between_the_move_and_its_marker_resumes(tmp_path):
    root, archives = staged(tmp_path)
    dest = unpack(archives["sbd"], root / "downloads", "benchmark_RELEASE", root / "benchmark_RELEASE")
    (root / f".{archives['sbd'].filename}.unpacked").unlink()
    staging = root / f".unpacking-{archives['sbd'].filename}"
    staging.mkdir()
    (staging / ".complete").touch()  # what the kill leaves: the folder moved into place, no marker yet
    assert unpack(archives["sbd"], root / "downloads", "benchmark_RELEASE", dest) == dest
    assert (dest / "dataset" / "train.txt").exists() and not staging.exists()


def test_coco14_config_names_coco_categories(tmp_path):
    cfg = compose_cfg(tmp_path, "dataset=coco14", "dataset.root=/x")
    assert list(cfg.dataset.class_names) == coco.CLASS_NAMES and len(CATEGORY_IDS) == 80


@pytest.mark.parametrize("case, message", [
    ("no_json", r"annotation file .*instances_val2014.json is missing"),
    ("no_image", r"1 images listed in the annotations are not in .*JPEGImages"),
    ("bad_category", r"category_id 12, which is not among the file's categories"),
    ("corrupt", r"val2014.zip does not have the published MD5"),
])
def test_coco_bad_input_gets_a_clear_error(tmp_path, case, message):
    files = coco_files(SMALL)
    if case == "bad_category":
        files["val2014"]["annotations"][0]["category_id"] = 12
    archives = coco_archives(tmp_path / "downloads", files,
                             skip_images={"COCO_val2014_000000000042.jpg"} if case == "no_image" else (),
                             skip_json={"val2014"} if case == "no_json" else ())
    if case == "corrupt":
        archives["val2014"] = Archive(archives["val2014"].url, "val2014.zip", "1" * 32)
    with pytest.raises(UserError, match=message):
        coco.prepare(tmp_path, workers=1, archives=archives)


def pipeline_set(n_train: int = 24, n_val: int = 8) -> dict:
    """Images with one or two rectangles of three categories, for the whole pipeline."""
    rng = np.random.default_rng(1)
    out, next_id = {}, 1
    for folder, n in (("train2014", n_train), ("val2014", n_val)):
        items = []
        for _ in range(n):
            anns = []
            for cat in rng.choice([1, 18, 62], size=int(rng.integers(1, 3)), replace=False):
                x0, y0 = int(rng.integers(0, W - 4)), int(rng.integers(0, H - 4))
                anns.append((int(cat), rect(x0, y0, x0 + 4, y0 + 4), 0))
            items.append({"id": next_id, "anns": anns})
            next_id += 1
        out[folder] = items
    return out


@pytest.mark.slow
def test_whole_pipeline_runs_on_a_generated_coco_set(tmp_path):
    global H, W
    size = (H, W)
    H, W = 56, 64
    try:
        archives = coco_archives(tmp_path / "data" / "downloads", coco_files(pipeline_set()))
        tree = coco.prepare(tmp_path / "data", workers=2, archives=archives)
    finally:
        H, W = size
    tiny = [o for o in TINY if not o.startswith("dataset.generator")]
    common = [*tiny, "dataset=coco14", f"dataset.root={tree}", "cls.batch_size=4", "seg.val_split=val"]
    from wsss.pipeline import run_pipeline

    metrics = run_pipeline(compose_cfg(tmp_path, *common, "refine=crf"))
    for key in ("eval_cam/train/miou", "make_pseudo/train/miou", "eval_seg/val/miou"):
        assert 0 <= metrics[key] <= 100, key
    assert "eval_cam/train/iou/toothbrush" in metrics and "eval_seg/val/iou/dining table" in metrics
    walked = run_pipeline(compose_cfg(tmp_path, *common, "refine=irn", "stages=[train_irn,make_pseudo]",
                                      "refine.train.crop_size=80", "refine.train.batch_size=4",
                                      "refine.train.epochs=1"))
    assert 0 <= walked["make_pseudo/train/miou"] <= 100
