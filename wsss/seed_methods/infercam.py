"""Infer-CAM (Sun, Zhang & Barnes, "Inferring the Class Conditional Response Map for Weakly Supervised Semantic
Segmentation", WACV 2022, arXiv 2110.14309; the authors' code `weixuansun/InferCam`, `split_img.py` and
`infer_cam.py`): inference only, on the classifier's CAM. The method owns the multi-scale loop:

1. The image's multi-scale + flip CAM (as cam=cam) gives each present class's centre of mass (scipy's
   `center_of_mass` of its map, rounded down; the image centre for an all-zero map).
2. The image is split into four overlapping crops around those centres (`split_boxes`): with r/c the largest and
   smallest centre row/column, top-left [0, r_max + b) × [0, c_max + b), top-right [0, r_max + b) × [c_min − b, W),
   bottom-left [r_min − b, H) × [0, c_max + b), bottom-right [r_min − b, H) × [c_min − b, W), buffer b = 10 px for
   one class and 20 px for two; with more than `max_classes_to_split` (2) classes no split: every crop is the
   image (computed once here: the four would be identical).
3. On each crop, erase and repeat (`erase_and_repeat`): the crop's multi-scale + flip CAM, max-normalised per
   class, is the first map; the pixels whose best class reaches `activation_threshold` (0.7) count as covered;
   then up to `max_iterations` (5) passes in all, each on the crop's views with the covered pixels replaced by the
   view's mean colour (per channel, of the normalised view), keeping the element-wise maximum of the maps; it stops
   when a pass covers less than `min_new_area` (1 %) of the crop's pixels more than the pass before.
4. The crops' maps are placed back and merged by the element-wise maximum (the seed's per-class max
   normalisation follows, as for every method).

Deviations, each forced or a fix: a crop bound below 0 is clipped to 0 (the authors' numpy slice with a negative
start wraps around to the image's far side); the covered-pixel mask is flipped for the flipped view (the authors
apply the unflipped mask to it); the strided maps (stride 4, IRN's input) are the merged high-res maps reduced by
area averaging (the authors write only full-size maps); CAM's own resize protocol (wsss/cam.py) instead of the
authors' direct upsampling; the maps use the classifier's CAM weights (cam=recam's W_bce ⊙ W_sce is not offered).
The paper's saliency-aware loss belongs to its segmentation stage, not to the seeds, and is not here.
Cost: up to 4 crops × 5 passes of CAM at every scale: ~4-12 × CAM's time (docs/methods.md).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from wsss.cam import activation, multiscale_maps, normalize_max, strided_size
from wsss.data.transforms import multiscale_views

NEEDS_GRAD = False


def maps(model, images, keys, **options):
    """The CAM of one view batch: Infer-CAM's building block (image_maps owns the scales)."""
    return activation(model.backbone(images), model.cam_weights()[keys]), 16


def image_maps(model, item: dict, keys: torch.Tensor, activation_threshold: float = 0.7, min_new_area: float = 0.01,
               max_iterations: int = 5, buffer_one_class: int = 10, buffer_two_classes: int = 20,
               max_classes_to_split: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """(strided [K,⌈H/4⌉,⌈W/4⌉], high_res [K,H,W]) of one image (`item`: its uint8 `image`, `scales`, `norm`,
    `views`, `size`, and cam.upsample's `upsample` / `sigma`), max-normalised per class."""
    h, w = item["size"]
    if len(keys) == 0:
        return torch.zeros(0, *strided_size(h, w)), torch.zeros(0, h, w)
    device = item["views"][0].device

    def crop_cam(views, size):
        return multiscale_maps(lambda batch: maps(model, batch, keys), len(keys), views, size,
                               item.get("upsample", "bilinear"), item.get("sigma", 1.0))[1]

    whole = crop_cam(item["views"], (h, w))
    buffer = buffer_one_class if len(keys) == 1 else buffer_two_classes
    boxes = split_boxes(mass_centres(whole), (h, w), buffer, len(keys) > max_classes_to_split)
    merged = torch.zeros(len(keys), h, w, device=device)
    for y0, y1, x0, x1 in dict.fromkeys(boxes):  # identical crops (no split) computed once
        crop = np.ascontiguousarray(item["image"][y0:y1, x0:x1])
        is_whole = (y0, y1, x0, x1) == (0, h, 0, w)  # its views and first pass are the ones above
        views = item["views"] if is_whole else [v.to(device) for v in multiscale_views(crop, item["scales"],
                                                                                          item["norm"])]
        found = erase_and_repeat(lambda vs, size=crop.shape[:2]: crop_cam(vs, size), views, activation_threshold,
                                 min_new_area, max_iterations, first=whole if is_whole else None)
        merged[:, y0:y1, x0:x1] = torch.maximum(merged[:, y0:y1, x0:x1], found)
    strided = F.interpolate(merged[None], strided_size(h, w), mode="area")[0]
    return normalize_max(strided), normalize_max(merged)


def mass_centres(maps: torch.Tensor) -> list[tuple[int, int]]:
    """(row, column) of each map's centre of mass, rounded down; the map's centre when it is all zero."""
    h, w = maps.shape[-2:]
    out = []
    for m in maps.cpu().numpy():
        r, c = ndimage.center_of_mass(m) if m.sum() > 0 else (h / 2, w / 2)
        out.append((int(r), int(c)))
    return out


def split_boxes(centres, size: tuple[int, int], buffer: int, whole: bool) -> list[tuple[int, int, int, int]]:
    """The four overlapping crops (y0, y1, x0, x1) around the classes' centres (module docstring, step 2)."""
    h, w = size
    if whole:
        return [(0, h, 0, w)] * 4
    rows, cols = [r for r, _ in centres], [c for _, c in centres]
    top, bottom = min(h, max(rows) + buffer), max(0, min(rows) - buffer)
    left, right = min(w, max(cols) + buffer), max(0, min(cols) - buffer)
    top, left = max(top, 1), max(left, 1)  # never an empty crop (a centre on row 0 with no buffer)
    bottom, right = min(bottom, h - 1), min(right, w - 1)
    return [(0, top, 0, left), (0, top, right, w), (bottom, h, 0, left), (bottom, h, right, w)]


def erase_and_repeat(cam_of, views: list[torch.Tensor], threshold: float, min_new_area: float,
                     max_iterations: int, first: torch.Tensor | None = None) -> torch.Tensor:
    """Element-wise maximum of the maps [K,h,w] of up to `max_iterations` passes, each on the views with the
    pixels covered so far (best class ≥ `threshold`) filled with the view's mean colour; `cam_of(views)` gives a
    pass's max-normalised maps (`first`: the first pass's, when already computed). Stops when a pass covers less
    than `min_new_area` of the pixels more."""
    found, uncovered = None, None
    for i in range(max_iterations):
        if i == 0:
            maps_i = cam_of(views) if first is None else first
        else:
            maps_i = cam_of([fill_covered(v, uncovered) for v in views])
        found = maps_i if found is None else torch.maximum(found, maps_i)
        before = found[0].numel() if uncovered is None else int(uncovered.sum())
        uncovered = found.max(0).values < threshold
        if (before - int(uncovered.sum())) / uncovered.numel() < min_new_area:
            break
    return found


def fill_covered(view: torch.Tensor, uncovered: torch.Tensor) -> torch.Tensor:
    """A [2,3,h,w] view batch (image, flip) with the covered pixels (`uncovered` False, at the crop's size) set to
    each copy's mean colour; the mask is resized by nearest neighbour and flipped for the flipped copy."""
    keep = F.interpolate(uncovered[None, None].float(), view.shape[-2:], mode="nearest")[0]
    keep = torch.stack([keep, keep.flip(-1)])
    mean = view.mean((2, 3), keepdim=True)
    return keep * view + (1 - keep) * mean
