"""A deterministic synthetic WSSS dataset, written in VOC layout (contract.md, Datasets on disk).

What makes it a WSSS problem rather than a toy:
- 12 classes in 6 pairs. Both classes of a pair share one body (shape + colour); they differ only
  in a small coloured *part*. The classifier needs the part to tell them apart, so CAMs peak on
  the part and under-cover the body (partial activation).
- Each pair usually sits on its own context region (sky band, water, road, grass, floor) that is
  labelled background. The context predicts the pair, so CAMs spill onto it (false positives).
- Pairs co-occur (pair k often appears with pair k+1), 1–3 objects an image, background clutter,
  textured surfaces, varied image sizes, and a 255 "ignore" band around object borders as in VOC.
- `Annotations/<id>.xml` with VOC-style objects and boxes, so both label paths are exercised.

What it is not: a stand-in for real images. Absolute numbers say nothing about VOC; use it to
check that the pipeline works and that a method's effect (ReCAM, CRF) shows in the right direction.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image
from scipy import ndimage

from wsss.errors import UserError
from wsss.io import exclusive_lock, save_label_png, write_json
from wsss.progress import progress

SHAPES = ["ellipse", "box", "triangle", "diamond", "cross", "ring"]
PARTS = ["dot", "bar"]
BODY_COLOURS = [(200, 60, 50), (60, 150, 60), (70, 90, 200), (200, 160, 40), (150, 70, 170), (40, 170, 170)]
PART_COLOURS = [(255, 255, 255), (20, 20, 20)]
# context regions: (name, colour, band) — band "top" or "bottom"; None = no context (indoor wall)
CONTEXTS = [("floor", (150, 110, 70), "bottom"), ("road", (110, 110, 115), "bottom"),
            ("water", (40, 70, 140), "bottom"), ("sky", (150, 190, 235), "top"),
            ("grass", (90, 160, 60), "bottom"), None]
CLASS_NAMES = [f"{s}_{p}" for s in SHAPES for p in PARTS]
FORMAT_VERSION = 2


def dataset_dir(data_dir: str | Path, gen_cfg: dict) -> Path:
    """Directory of the tree for this generator config: the config's hash is in the name."""
    blob = json.dumps({"v": FORMAT_VERSION, **gen_cfg}, sort_keys=True).encode()
    return Path(data_dir) / f"synthetic_{hashlib.sha1(blob).hexdigest()[:10]}"


def ensure(data_dir: str | Path, gen_cfg: dict, class_names: list[str]) -> Path:
    """Write the dataset on first use (atomically: a temporary tree renamed into place)."""
    if list(class_names) != CLASS_NAMES:
        raise UserError(f"dataset.class_names must be the generator's classes {CLASS_NAMES}")
    root = dataset_dir(data_dir, gen_cfg)
    if (root / "DONE").exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(str(root) + ".lock"):
        if (root / "DONE").exists():
            return root
        tmp = Path(tempfile.mkdtemp(prefix=root.name + ".", dir=root.parent))
        try:
            _write_tree(tmp, gen_cfg)
            (tmp / "DONE").write_text("complete\n")
            if root.exists():
                shutil.rmtree(root)
            tmp.rename(root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def _write_tree(root: Path, g: dict) -> None:
    n_aug, n_train, n_val = g["num_train_aug"], g["num_train"], g["num_val"]
    if n_train > n_aug:
        raise UserError("synthetic: num_train must not exceed num_train_aug (train ⊂ train_aug)")
    for sub in ("JPEGImages", "SegmentationClass", "Annotations", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    ids = [f"s{i:05d}" for i in range(n_aug + n_val)]
    for i, img_id in enumerate(progress(ids, desc="writing synthetic dataset", leave=False)):
        rng = np.random.default_rng([g["seed"], i])
        image, label, objects = render(rng, g)
        Image.fromarray(image).save(root / "JPEGImages" / f"{img_id}.jpg", quality=95)
        save_label_png(root / "SegmentationClass" / f"{img_id}.png", label)
        (root / "Annotations" / f"{img_id}.xml").write_text(_xml(img_id, image.shape, objects))
    lists = {"train_aug": ids[:n_aug], "train": ids[:n_train], "val": ids[n_aug:]}
    for name, members in lists.items():
        (root / "ImageSets/Segmentation" / f"{name}.txt").write_text("\n".join(members) + "\n")
    write_json(root / "generator.json", {"format_version": FORMAT_VERSION, **g, "class_names": CLASS_NAMES})


def _xml(img_id: str, shape, objects) -> str:
    objs = "".join(
        f"<object><name>{escape(CLASS_NAMES[c])}</name><difficult>0</difficult><bndbox>"
        f"<xmin>{x0 + 1}</xmin><ymin>{y0 + 1}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        for c, (y0, x0, y1, x1) in objects)
    return (f"<annotation><filename>{img_id}.jpg</filename><size><width>{shape[1]}</width>"
            f"<height>{shape[0]}</height><depth>3</depth></size>{objs}</annotation>\n")


def render(rng: np.random.Generator, g: dict):
    """One image: (RGB uint8 H×W×3, label uint8 H×W with 255 borders, [(class, box)])."""
    h, w = (int(v) for v in rng.integers(g["min_size"], g["max_size"] + 1, size=2))
    classes = _pick_classes(rng, g)
    image = _background(rng, h, w)
    pairs = {c // 2 for c, _ in classes}
    drawn_ctx = set()
    for k in range(len(CONTEXTS)):
        p = g["context_prob"] if k in pairs else g["context_noise_prob"]
        if CONTEXTS[k] is not None and rng.random() < p and CONTEXTS[k][2] not in drawn_ctx:
            _draw_context(rng, image, CONTEXTS[k])
            drawn_ctx.add(CONTEXTS[k][2])
    _draw_clutter(rng, image, g["clutter"])
    label = np.zeros((h, w), np.uint8)
    objects = []
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    placed = []  # (cy, cx, r) of each object, for partners drawn touching their anchor
    for c, anchor in classes:
        touch = anchor is not None and g.get("touch_prob", 0.0) > 0 and rng.random() < g["touch_prob"]
        body, part, where = _object_masks(rng, yy, xx, c, g, placed[anchor] if touch else None)
        placed.append(where)
        image[body] = _texture(rng, BODY_COLOURS[c // 2], int(body.sum()), 18)
        image[part] = _texture(rng, PART_COLOURS[c % 2], int(part.sum()), 10)
        label[body | part] = c + 1
    final = _ignore_borders(label, g["ignore_width"])
    for c in sorted({c for c, _ in classes}):  # boxes of what is visible after occlusion and the void band
        if (final == c + 1).any():
            ys, xs = np.nonzero(label == c + 1)
            objects.append((c, (int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1)))
    image = ndimage.uniform_filter(image.astype(np.float32), size=(2, 2, 1))  # soften hard edges
    image = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
    return image, final, objects


def _pick_classes(rng, g) -> list[tuple[int, int | None]]:
    """[(class, index of the object it accompanies or None)] for one image."""
    n = int(rng.choice([1, 2, 3], p=g["objects_prob"]))
    classes = [(int(rng.integers(len(CLASS_NAMES))), None)]
    while len(classes) < n:
        prev = classes[-1][0]
        if rng.random() < g["cooccur_prob"]:  # the next pair's classes co-occur with this one
            part = prev % 2 if g.get("partner_same_part", False) else int(rng.integers(2))
            classes.append((2 * ((prev // 2 + 1) % len(SHAPES)) + part, len(classes) - 1))
        else:
            classes.append((int(rng.integers(len(CLASS_NAMES))), None))
    return classes


def _background(rng, h, w) -> np.ndarray:
    base = rng.integers(120, 200, size=3).astype(np.float32)
    grad = np.linspace(-25, 25, h, dtype=np.float32)[:, None, None] * rng.choice([-1, 1])
    return np.clip(base + grad + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.float32)


def _draw_context(rng, image, ctx) -> None:
    _, colour, band = ctx
    h, w = image.shape[:2]
    edge = int(h * rng.uniform(0.4, 0.6))
    wave = (np.sin(np.arange(w) / rng.uniform(4, 9)) * rng.uniform(0, 3)).astype(int)
    rows = np.arange(h)[:, None]
    region = rows >= edge + wave[None] if band == "bottom" else rows < edge + wave[None]
    image[region] = _texture(rng, colour, int(region.sum()), 15)


def _draw_clutter(rng, image, count) -> None:
    h, w = image.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(int(rng.integers(count[0], count[1] + 1))):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(2, 6)
        m = (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2
        image[m] = rng.integers(60, 220, size=3)


def _texture(rng, colour, n, sigma) -> np.ndarray:
    return np.clip(np.asarray(colour, np.float32) + rng.normal(0, sigma, (n, 3)), 0, 255)


def _object_masks(rng, yy, xx, c, g, anchor=None):
    """Body and part masks of one object of class c (the part: a small blob at one end), and its
    (cy, cx, r). With an anchor (cy, cx, r) the object touches and overlaps it, as a rider its horse."""
    h, w = yy.shape
    r = rng.uniform(*g["object_scale"]) * min(h, w)
    if anchor is None:
        cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
    else:
        angle, gap = rng.uniform(0, 2 * np.pi), rng.uniform(0.4, 0.7) * (anchor[2] + r)
        cy = float(np.clip(anchor[0] + gap * np.sin(angle), r, h - r))
        cx = float(np.clip(anchor[1] + gap * np.cos(angle), r, w - r))
    dy, dx = (yy - cy) / r, (xx - cx) / r
    shape = SHAPES[c // 2]
    if shape == "ellipse":
        body = dy ** 2 + (dx / 1.4) ** 2 < 1
    elif shape == "box":
        body = (np.abs(dy) < 0.75) & (np.abs(dx) < 1.1)
    elif shape == "triangle":
        body = (dy < 0.8) & (dy > -0.9 + 1.6 * np.abs(dx))
    elif shape == "diamond":
        body = np.abs(dy) + np.abs(dx) / 1.3 < 1
    elif shape == "cross":
        body = ((np.abs(dy) < 0.3) & (np.abs(dx) < 1.1)) | ((np.abs(dx) < 0.3) & (np.abs(dy) < 1.0))
    else:  # ring
        rad = dy ** 2 + dx ** 2
        body = (rad < 1) & (rad > 0.3)
    side = rng.choice([-1, 1])
    py, px = cy - 0.55 * r, cx + side * 0.55 * r
    pr = g["part_scale"] * r
    part = ((yy - py) ** 2 + (xx - px) ** 2 < pr ** 2) & body
    if not part.any():  # tiny or clipped objects still carry their part
        part = (yy - cy) ** 2 + (xx - cx) ** 2 < pr ** 2
    return body & ~part, part, (cy, cx, r)


def _ignore_borders(label: np.ndarray, width: int) -> np.ndarray:
    """VOC-style void band: pixels within `width` of a boundary between two labels become 255."""
    if width <= 0:
        return label
    edge = np.zeros(label.shape, bool)
    edge[:, 1:] |= label[:, 1:] != label[:, :-1]
    edge[1:, :] |= label[1:, :] != label[:-1, :]
    band = ndimage.binary_dilation(edge, iterations=width)
    out = label.copy()
    out[band] = 255
    return out
