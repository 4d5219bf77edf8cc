"""Torch datasets and the Lightning DataModule over a VOCLayout."""
from __future__ import annotations

import multiprocessing as mp

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from wsss.data.transforms import (
    irn_train_view,
    multiscale_views,
    normalize,
    rescale,
    seg_train_view,
    to_chw,
    top_left_pad,
    train_view,
)
from wsss.data.voc import VOCLayout
from wsss.errors import UserError
from wsss.io import load_label_png, load_rgb


def loader(dataset, batch_size: int, num_workers: int, persistent: bool = False, **kwargs) -> DataLoader:
    """A DataLoader whose worker processes are forked where fork exists (torch's own default on Linux), named
    explicitly: inside a joblib sweep job (hydra/launcher=joblib) the default context is loky's, whose
    processes the DataLoader cannot start ("'Process' object has no attribute 'env'")."""
    context = "fork" if num_workers > 0 and "fork" in mp.get_all_start_methods() else None
    return DataLoader(dataset, batch_size, num_workers=num_workers, multiprocessing_context=context,
                      persistent_workers=persistent and num_workers > 0, **kwargs)


def item_rng() -> np.random.Generator:
    """A generator for one item's augmentation. torch seeds the main process and every worker
    from the global seed, so drawing the seed from torch makes this reproducible."""
    return np.random.default_rng(torch.randint(0, 2**31, (1,)).item())


class ClassificationDataset(Dataset):
    """(image tensor, multi-hot label); random augmentation when `train`, else top-left padding."""

    def __init__(self, layout: VOCLayout, ids, train: bool, norm, long_range=(320, 640), crop=512):
        self.layout, self.ids, self.train, self.norm = layout, list(ids), train, norm
        self.long_range, self.crop = tuple(long_range), crop

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        img_id = self.ids[i]
        image = load_rgb(self.layout.image_path(img_id))
        label = torch.from_numpy(self.layout.labels(img_id))
        if self.train:
            return train_view(image, self.long_range, self.crop, item_rng(), self.norm), label
        return to_chw(top_left_pad(normalize(image, self.norm), self.crop)), label


class ResizedDataset(Dataset):
    """(image tensor [3,h,w], multi-hot label): each image resized to one long side, no crop, no flip.
    Deterministic views for the head's linear probe (wsss/models/linear_probe.py): every DDP rank
    computes the same features, hence the same head."""

    def __init__(self, layout: VOCLayout, ids, long_side: int, norm):
        self.layout, self.ids, self.long_side, self.norm = layout, list(ids), int(long_side), norm

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        img_id = self.ids[i]
        image = load_rgb(self.layout.image_path(img_id))
        x = normalize(rescale(image, self.long_side / max(image.shape[:2])), self.norm)
        return to_chw(x)[None], torch.from_numpy(self.layout.labels(img_id))[None]


def image_and_label(layout: VOCLayout, label_path, img_id: str) -> tuple[np.ndarray, np.ndarray]:
    """An image and its label map (`label_path(id)`: pseudo-labels, IR labels or ground truth), which must
    have the image's size."""
    image = load_rgb(layout.image_path(img_id))
    label = load_label_png(label_path(img_id))
    if label.shape != image.shape[:2]:
        raise UserError(f"label map {label_path(img_id)} is {label.shape} but image "
                        f"{layout.image_path(img_id)} is {image.shape[:2]}")
    return image, label


class SegmentationDataset(Dataset):
    """(image, label map) pairs; `label_path(id)` gives the PNG (pseudo-labels or ground truth).

    Training items are DeepLab-v2 augmented crops; evaluation items are the full image (batch 1).
    """

    def __init__(self, layout: VOCLayout, ids, label_path, train: bool, norm, scales=(1.0,), crop: int = 321):
        self.layout, self.ids, self.label_path, self.train, self.norm = layout, list(ids), label_path, train, norm
        self.scales, self.crop = tuple(scales), crop

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        image, label = image_and_label(self.layout, self.label_path, self.ids[i])
        if self.train:
            return seg_train_view(image, label, self.scales, self.crop, item_rng(), self.norm)
        return to_chw(normalize(image, self.norm)), torch.from_numpy(label.astype(np.int64))


class AffinityDataset(Dataset):
    """(image crop, IR label at stride 4) pairs for IRN's boundary branch; `label_path(id)` gives the IR label."""

    def __init__(self, layout: VOCLayout, ids, label_path, norm, scale_range=(0.5, 1.5), crop: int = 512):
        self.layout, self.ids, self.label_path, self.norm = layout, list(ids), label_path, norm
        self.scale_range, self.crop = tuple(scale_range), crop

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        image, label = image_and_label(self.layout, self.label_path, self.ids[i])
        return irn_train_view(image, label, self.scale_range, self.crop, item_rng(), self.norm)


class MultiScaleDataset(Dataset):
    """For CAM inference: the id, the uint8 image size, present classes and the ms+flip views (and, with
    `with_image`, the uint8 image itself, for a method that makes views of its own: Infer-CAM's crops)."""

    def __init__(self, layout: VOCLayout, ids, scales, norm, with_image: bool = False):
        self.layout, self.ids, self.scales, self.norm = layout, list(ids), list(scales), norm
        self.with_image = with_image

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        img_id = self.ids[i]
        image = load_rgb(self.layout.image_path(img_id))
        keys = np.nonzero(self.layout.labels(img_id))[0]
        item = {"id": img_id, "size": image.shape[:2], "keys": keys,
                "views": multiscale_views(image, self.scales, self.norm)}
        if self.with_image:
            item.update(image=image, scales=self.scales, norm=self.norm)
        return item


def single_item(batch):
    """Collate for batch_size=1 datasets whose items differ in size: the item itself."""
    return batch[0]


class ClassificationDataModule(L.LightningDataModule):
    def __init__(self, layout: VOCLayout, train_ids, val_ids, batch_size: int, num_workers: int,
                 long_range, crop: int, norm):
        super().__init__()
        self.layout, self.train_ids, self.val_ids, self.norm = layout, train_ids, val_ids, norm
        self.batch_size, self.num_workers = batch_size, num_workers
        self.long_range, self.crop = long_range, crop

    def train_dataloader(self):
        ds = ClassificationDataset(self.layout, self.train_ids, True, self.norm, self.long_range, self.crop)
        return loader(ds, self.batch_size, self.num_workers, persistent=True, shuffle=True, drop_last=True)

    def val_dataloader(self):
        ds = ClassificationDataset(self.layout, self.val_ids, False, self.norm, self.long_range, self.crop)
        return loader(ds, self.batch_size, self.num_workers, persistent=True)
