"""Seed methods: how a trained classifier's evidence for each present class becomes a map.

One small module per method, all with CAM's interface (wsss/seed_methods/cam.py):

    NEEDS_GRAD: bool    whether the method backpropagates (make_cam then leaves inference mode)
    maps(model, images, keys, **options) -> (maps, stride)

and, where a method cannot work one scale at a time, one of two extensions:

    image_maps(model, item, keys, **options) -> (strided, high_res)
        the method owns the multi-scale loop (Infer-CAM: crops of the image, erased and re-fed): `item` holds
        the uint8 `image`, its `views`, `scales`, `norm` and `size`; the maps it returns are final (max-normalised)
    PREPARED_BY: str    the stage whose stored artifact the method reads (LPCAM's prototypes, made once from the
        training images): make_cam passes its directory as the option `prepared`

`images` is one scale's batch of views (the image and its horizontal flip, [2,3,h,w]), `keys` the
present classes; `maps` [2,K,h',w'] are the method's raw maps (never min-max normalised, the method's
own ReLU applied) on a grid of `stride` input pixels per cell. wsss.cam.multiscale_maps combines them
exactly as CAM's: flip-sum, resize, sum over scales, per-class max normalisation. `options` are the
method's keys in its `conf/cam/<method>.yaml`.

The explainability libraries compute maps for one image at one scale, min-max normalised and resized to
the input; a seed needs raw maps summed over scales and flips first. Where torchcam computes a method's
maps correctly we call it with `normalized=False` (Grad-CAM, XGrad-CAM, LayerCAM's per-layer maps);
each other module says why it does not.
"""
from __future__ import annotations

import importlib

from wsss.errors import UserError

METHODS = ("cam", "recam", "gradcam", "gradcampp", "xgradcam", "layercam", "scorecam", "reciprocam", "saliency",
           "guided_backprop", "infercam", "lpcam", "fdcam", "clustercam", "adcam")
# cam.* keys every method has, or train_recam's: not a method's own options
NOT_OPTIONS = ("method", "scales", "threshold", "splits", "precision", "train", "upsample", "gaussian_sigma")


def method_module(name: str):
    """The module of seed method `name` (recam shares CAM's: only the weights differ)."""
    if name not in METHODS:
        raise UserError(f"cam={name}: unknown seed method; choose one of {', '.join(METHODS)}")
    return importlib.import_module(f"wsss.seed_methods.{'cam' if name == 'recam' else name}")


def options(cam_cfg) -> dict:
    """The method's own settings as plain values: the keys of its cam config beyond those every method has."""
    from omegaconf import OmegaConf

    return {k: v for k, v in OmegaConf.to_container(cam_cfg, resolve=True).items() if k not in NOT_OPTIONS}
