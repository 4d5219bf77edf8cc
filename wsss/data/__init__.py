"""Datasets: every dataset is read through the VOC-layout reader; the synthetic one is written first."""
from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from wsss.data.voc import VOCLayout
from wsss.errors import UserError


def dataset_root(cfg) -> Path:
    d = cfg.dataset
    if d.name == "synthetic":
        from wsss.data import synthetic

        return synthetic.ensure(cfg.paths.data_dir, OmegaConf.to_container(d.generator, resolve=True),
                                list(d.class_names))
    if not d.root:
        raise UserError(f"dataset={d.name} needs dataset.root=PATH (the directory holding JPEGImages/)")
    return Path(d.root).expanduser().resolve()


def open_dataset(cfg) -> VOCLayout:
    return VOCLayout(dataset_root(cfg), list(cfg.dataset.class_names), cfg.dataset.get("sbd_root"))


def dataset_identity(cfg) -> dict:
    """The part of the dataset config that determines the data (not where it is cached)."""
    d = cfg.dataset
    ident = {"name": d.name, "class_names": list(d.class_names)}
    if d.name == "synthetic":
        ident["generator"] = OmegaConf.to_container(d.generator, resolve=True)
    else:
        ident["root"] = str(Path(d.root).expanduser().resolve()) if d.root else None
        ident["sbd_root"] = d.get("sbd_root")
    return ident
