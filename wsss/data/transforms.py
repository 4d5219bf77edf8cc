"""Image transforms of the reference data pipeline (algorithms.md §2.3, §3, pitfalls 6-7).

Normalisation is the trunk's own, `norm = (mean, std)` in [0, 1] RGB units, as stored in the
checkpoint of the model that sees the images (ImageNet's for the ResNets, 0.5 / 0.5 for
EfficientNet-Lite): there is no global default, so no stage can feed a trunk the wrong one.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def rescale(image: np.ndarray, scale: float) -> np.ndarray:
    """PIL bicubic resize of a uint8 image to (round(H·s), round(W·s)), before normalisation."""
    if scale == 1:
        return image
    h, w = image.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC))


def normalize(image: np.ndarray, norm) -> np.ndarray:
    """uint8 RGB → float32 (x/255 − mean)/std with the trunk's `norm = (mean, std)`."""
    mean, std = (np.asarray(v, np.float32) for v in norm)
    return (image.astype(np.float32) / 255.0 - mean) / std


def random_crop(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Crop (or pad) to size×size, filling with 0 (the mean colour after normalisation).

    Per axis: a larger image gives a random window; a smaller one is placed at a random offset.
    """
    return random_crops([image], [0], size, rng)[0]


def random_crops(arrays: list[np.ndarray], fills: list, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """`random_crop` of several same-size arrays with one window, each container filled with its own value."""
    h, w = arrays[0].shape[:2]
    (src_y, dst_y, ch), (src_x, dst_x, cw) = _window(h, size, rng), _window(w, size, rng)
    outs = []
    for a, fill in zip(arrays, fills, strict=True):
        out = np.full((size, size) + a.shape[2:], fill, a.dtype)
        out[dst_y:dst_y + ch, dst_x:dst_x + cw] = a[src_y:src_y + ch, src_x:src_x + cw]
        outs.append(out)
    return outs


def _window(n: int, size: int, rng) -> tuple[int, int, int]:
    if n > size:
        return int(rng.integers(0, n - size + 1)), 0, size
    return 0, int(rng.integers(0, size - n + 1)), n


def top_left_pad(image: np.ndarray, size: int) -> np.ndarray:
    """Validation layout: the image at the top-left of a size×size container filled with 0."""
    out = np.zeros((size, size) + image.shape[2:], image.dtype)
    h, w = min(size, image.shape[0]), min(size, image.shape[1])
    out[:h, :w] = image[:h, :w]
    return out


def train_view(image: np.ndarray, long_range: tuple[int, int], crop: int, rng, norm) -> torch.Tensor:
    """Random long-side resize → normalise → flip p=0.5 → random crop with mean fill → CHW."""
    long_side = int(rng.integers(long_range[0], long_range[1] + 1))
    x = normalize(rescale(image, long_side / max(image.shape[:2])), norm)
    if rng.random() < 0.5:
        x = x[:, ::-1]
    return to_chw(random_crop(x, crop, rng))


def to_chw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def multiscale_views(image: np.ndarray, scales, norm) -> list[torch.Tensor]:
    """Per scale a [2,3,h,w] batch: the rescaled image and its horizontal flip (algorithms.md §3)."""
    views = []
    for s in scales:
        x = to_chw(normalize(rescale(image, s), norm))
        views.append(torch.stack([x, x.flip(-1)]))
    return views


def rescale_pair(image: np.ndarray, label: np.ndarray, scale: float, resample) -> tuple[np.ndarray, np.ndarray]:
    """A uint8 image (PIL `resample`) and its label map (nearest) resized to (round(H·s), round(W·s))."""
    h, w = label.shape
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return (np.asarray(Image.fromarray(image).resize(size, resample)),
            np.asarray(Image.fromarray(label).resize(size, Image.NEAREST)))


def seg_train_view(image: np.ndarray, label: np.ndarray, scales, crop: int, rng, norm) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepLab-v2 augmentation: a random scale from `scales` (bilinear image, nearest label), pad
    bottom/right to the crop (mean colour / 255), a random crop, horizontal flip p=0.5."""
    image, label = rescale_pair(image, label, float(rng.choice(list(scales))), Image.BILINEAR)
    x = normalize(image, norm)
    ph, pw = max(crop - x.shape[0], 0), max(crop - x.shape[1], 0)
    x = np.pad(x, ((0, ph), (0, pw), (0, 0)))
    label = np.pad(label, ((0, ph), (0, pw)), constant_values=255)
    y0, x0 = int(rng.integers(0, x.shape[0] - crop + 1)), int(rng.integers(0, x.shape[1] - crop + 1))
    x, label = x[y0:y0 + crop, x0:x0 + crop], label[y0:y0 + crop, x0:x0 + crop]
    if rng.random() < 0.5:
        x, label = x[:, ::-1], label[:, ::-1]
    return to_chw(x), torch.from_numpy(np.ascontiguousarray(label)).long()


def irn_train_view(image: np.ndarray, label: np.ndarray, scale_range, crop: int, rng,
                   norm) -> tuple[torch.Tensor, torch.Tensor]:
    """IRN's augmentation (algorithms.md §7.1): one scale s ~ U(scale_range) (bicubic image, nearest label),
    normalise, joint flip p=0.5, joint random crop (image fill 0, label fill 255), label reduced to stride 4
    by `irn_reduce_label` (IRN's ×0.25 nearest resize, after the crop as in IRN)."""
    s = scale_range[0] + rng.random() * (scale_range[1] - scale_range[0])
    image, label = rescale_pair(image, label, s, Image.BICUBIC)
    x = normalize(image, norm)
    if rng.random() < 0.5:
        x, label = x[:, ::-1], label[:, ::-1]
    x, label = random_crops([x, label], [0, 255], crop, rng)
    return to_chw(x), torch.from_numpy(irn_reduce_label(label)).long()


def irn_reduce_label(label: np.ndarray) -> np.ndarray:
    """The stride-4 label the boundary network trains on, as IRN makes it (`imutils.pil_rescale(label, 0.25, 0)`
    in VOC12AffinityDataset): target side `np.round(n · 0.25)` (half to even) per axis, then PIL's nearest resize.

    PIL's nearest resize takes, for output pixel i, input pixel floor((i + 0.5) · n / m): the centre of its
    cell. On a side that is a multiple of 4 that is pixel 4i + 2 (not 4i, which `label[::4]` would take); on
    any other side the cells are n / m wide and the same rule applies, so this function follows IRN on every
    crop size (train_irn's crops are multiples of 4; the function does not need them to be).
    """
    h, w = label.shape
    size = (max(1, int(np.round(w * 0.25))), max(1, int(np.round(h * 0.25))))
    if size == (w, h):
        return np.ascontiguousarray(label)
    return np.array(Image.fromarray(np.ascontiguousarray(label)).resize(size, Image.NEAREST))
