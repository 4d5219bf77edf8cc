"""make_prototypes: LPCAM's class and context prototypes (wsss/seed_methods/lpcam.py), for cam=lpcam.

Runs only when `cam=lpcam`. Two steps:
1. Per image of `cam.prototype_splits` (resumable: an image whose file exists is skipped), `features/<id>.npz`:
   the trunk's stride-16 features at scale 1 (float16 [D,h,w]), and its present classes' CAM (multi-scale + flip,
   max-normalised, as make_cam's) resized to that grid by nearest neighbour (float16 [K,h,w]), with `keys`.
2. Per class, its foreground and other features (CAM above / below `cam.select_threshold`) clustered, and the
   centres the classifier gives to the class (or, for context, somewhat) kept: `prototypes.npz`, arrays
   `class_<c>` [n_c, D] and `context_<c>` [m_c, D] for every class (float32; n_c or m_c may be 0).
In:  train_cls's classifier, the images and their labels.  Out: the two above; every make_cam with cam=lpcam
on this classifier and these settings reads the same artifact.
Disk: the feature files hold D × h × w float16 values per image (Lite0 on a 500×375 photo: 1280 × 24 × 32, 2 MB).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from wsss import artifacts
from wsss.cam import multiscale_cam
from wsss.data import open_dataset
from wsss.data.transforms import multiscale_views, normalize, to_chw
from wsss.io import atomic_path, load_rgb
from wsss.models.classifier import load_classifier
from wsss.progress import progress
from wsss.seed_methods.lpcam import PROTOTYPE_FILE, PROTOTYPE_KEYS, class_prototypes
from wsss.training import checkpoint_path

VERSION = 1
STORED = True


def needed(cfg) -> bool:
    return cfg.cam.method == "lpcam"


def prototype_options(cfg) -> dict:
    c = cfg.cam
    out = {k: c[k] for k in PROTOTYPE_KEYS}
    out["prototype_splits"] = list(out["prototype_splits"])
    return out


def identity(cfg) -> dict:
    return {"options": prototype_options(cfg), "scales": list(cfg.cam.scales), "seed": cfg.seed}


def upstream(cfg) -> list[str]:
    return ["train_cls"]


def feature_file(out_dir: Path, img_id: str) -> Path:
    return Path(out_dir) / "features" / f"{img_id}.npz"


def image_features(model, image: np.ndarray, keys: np.ndarray, scales, norm) -> tuple[torch.Tensor, torch.Tensor]:
    """(features [D,h,w] at scale 1, the present classes' CAM [K,h,w] at that grid by nearest neighbour)."""
    with torch.no_grad():
        feats = model.backbone(to_chw(normalize(image, norm))[None])[0]
        weights = model.cam_weights()[torch.as_tensor(keys, dtype=torch.long)]
        _, high = multiscale_cam(model.backbone, weights, multiscale_views(image, scales, norm), image.shape[:2])
        cams = F.interpolate(high[None], feats.shape[-2:], mode="nearest")[0]
    return feats, cams


def ids_left(out_dir: Path, ids) -> list[str]:
    """Ids whose features are not written yet (written atomically: present = complete)."""
    return [i for i in ids if not feature_file(out_dir, i).exists()]


def write_features(cfg, layout, model, ids, out_dir: Path) -> None:
    todo = ids_left(out_dir, ids)
    for img_id in progress(todo, desc="make_prototypes: features", unit="img"):
        keys = np.nonzero(layout.labels(img_id))[0]
        feats, cams = image_features(model, load_rgb(layout.image_path(img_id)), keys, cfg.cam.scales,
                                     model.normalization)
        with atomic_path(feature_file(out_dir, img_id)) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, features=feats.numpy().astype(np.float16), cams=cams.numpy().astype(np.float16),
                                keys=keys.astype(np.int64))


def split_features(out_dir: Path, ids, num_classes: int, threshold: float) -> dict:
    """class → (features where its CAM > threshold, features where it is < threshold), over the images."""
    fg: dict[int, list] = {c: [] for c in range(num_classes)}
    rest: dict[int, list] = {c: [] for c in range(num_classes)}
    for img_id in ids:
        with np.load(feature_file(out_dir, img_id), allow_pickle=False) as f:
            feats = torch.from_numpy(f["features"].astype(np.float32))
            cams, keys = f["cams"].astype(np.float32), f["keys"]
        flat = feats.flatten(1).T  # [h·w, D]
        for c, cam in zip(keys.tolist(), cams, strict=True):
            m = torch.from_numpy(cam.reshape(-1))
            fg[c].append(flat[m > threshold])
            rest[c].append(flat[m < threshold])
    empty = torch.zeros(0, 0)
    return {c: (torch.cat(fg[c]) if fg[c] else empty, torch.cat(rest[c]) if rest[c] else empty)
            for c in range(num_classes)}


def prototype_ids(cfg, layout) -> list[str]:
    """The images whose features make the prototypes: those of the prototype splits with a class."""
    return [i for i in layout.ids_of(prototype_options(cfg)["prototype_splits"]) if layout.labels(i).any()]


def images_left(cfg, out_dir: Path) -> int:
    """Images whose features a resumed run still has to compute (the dry run's count)."""
    return len(ids_left(out_dir, prototype_ids(cfg, open_dataset(cfg))))


def run(cfg, out_dir: Path) -> dict:
    layout = open_dataset(cfg)
    model = load_classifier(checkpoint_path(artifacts.require(cfg, "train_cls", "make_prototypes").path)).eval()
    options = prototype_options(cfg)
    ids = prototype_ids(cfg, layout)
    write_features(cfg, layout, model, ids, out_dir)
    features = split_features(out_dir, ids, layout.num_classes, options["select_threshold"])
    weights = model.cam_weights().detach().float()
    protos = class_prototypes(features, weights, options, cfg.seed)
    dim = weights.shape[1]
    arrays = {}
    for c in range(layout.num_classes):
        centres, context = protos.get(c, (torch.zeros(0, dim), torch.zeros(0, dim)))
        arrays[f"class_{c}"] = centres.reshape(-1, dim).numpy().astype(np.float32)
        arrays[f"context_{c}"] = context.reshape(-1, dim).numpy().astype(np.float32)
    with atomic_path(out_dir / PROTOTYPE_FILE) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    counts = [len(arrays[f"class_{c}"]) for c in range(layout.num_classes)]
    context = [len(arrays[f"context_{c}"]) for c in range(layout.num_classes)]
    return {"make_prototypes/images": len(ids), "make_prototypes/class_prototypes_mean": float(np.mean(counts)),
            "make_prototypes/context_prototypes_mean": float(np.mean(context)),
            "make_prototypes/classes_without_prototype": int(sum(n == 0 for n in counts))}
