"""Target layers (by module name within the classifier) and the helpers the methods share."""
from __future__ import annotations

import difflib
import math
from contextlib import contextmanager

import torch
from torch import nn

from wsss.errors import UserError

TRUNK = "backbone"  # the trunk's output: the stride-16 features the classifier's head reads


def resolve_layers(model: nn.Module, names) -> list[str]:
    """`names` (default: the trunk's output) checked against the classifier's modules."""
    names = list(names) if names else [TRUNK]
    modules = dict(model.named_modules())
    for n in names:
        if n not in modules:
            close = difflib.get_close_matches(n, modules, n=4, cutoff=0.6)
            raise UserError(f"cam.target_layers: the classifier has no module {n!r}"
                            + (f" (close: {', '.join(close)})" if close else "")
                            + f"; `{TRUNK}` is the trunk's output, `{TRUNK}.…` a module inside it")
    return names


def one_layer(model: nn.Module, names) -> str:
    layers = resolve_layers(model, names)
    if len(layers) != 1:
        raise UserError(f"cam.target_layers={layers}: this method reads one layer (LayerCAM fuses several)")
    return layers[0]


def stage_layers(model: nn.Module) -> list[str]:
    """LayerCAM's default: the trunk's stage outputs at strides 8 and 16, shallow to deep, then the trunk output."""
    return [f"{TRUNK}.{n}" for n in model.backbone.stage_names(min_stride=8)] + [TRUNK]


@contextmanager
def captured(model: nn.Module, names: list[str]):
    """The outputs of the named modules during the forwards inside the block (the last forward's);
    the hooks are removed on leaving it, whatever happens."""
    modules = dict(model.named_modules())
    outputs: list[torch.Tensor | None] = [None] * len(names)

    def keeper(i):
        def hook(module, inputs, output):
            outputs[i] = output
        return hook

    handles = [modules[n].register_forward_hook(keeper(i)) for i, n in enumerate(names)]
    try:
        yield outputs
    finally:
        for h in handles:
            h.remove()


def per_class(class_map, keys: torch.Tensor) -> torch.Tensor:
    """[B,K,h,w] from `class_map(c, retain_graph)` → [B,h,w] for each present class; the graph is kept
    until the last class has backpropagated."""
    keys = [int(k) for k in keys]
    return torch.stack([class_map(c, i < len(keys) - 1).detach() for i, c in enumerate(keys)], 1)


def torchcam_maps(extractor_class, model: nn.Module, images: torch.Tensor, keys: torch.Tensor, layers: list[str],
                  combine=lambda cams: cams[0]):
    """Raw maps [B,K,h,w] by a torchcam extractor on `layers` (`normalized=False`: no min-max), the per-layer
    maps of each class made one by `combine` (default: the only layer's), and their stride; the extractor's
    hooks live only inside the `with`."""
    with extractor_class(model, layers) as extractor:
        scores = model(images)
        out = per_class(lambda c, keep: combine(extractor(c, scores, normalized=False, retain_graph=keep)), keys)
    return out, grid_stride(images, out)


def grid_stride(images: torch.Tensor, maps: torch.Tensor) -> int:
    """Input pixels per map cell: the power of two s with ⌈H/s⌉×⌈W/s⌉ = the map's size."""
    (h, w), (mh, mw) = images.shape[-2:], maps.shape[-2:]
    for s in (1, 2, 4, 8, 16, 32, 64):
        if (math.ceil(h / s), math.ceil(w / s)) == (mh, mw):
            return s
    raise ValueError(f"a {mh}×{mw} map of a {h}×{w} input is on no power-of-two grid")


def probabilities(logits: torch.Tensor, kind: str) -> torch.Tensor:
    """The classifier's class probabilities: softmax over classes (the papers', single-label ImageNet
    classifiers) or sigmoid (the multi-label loss this classifier was trained with)."""
    if kind == "softmax":
        return logits.softmax(-1)
    if kind == "sigmoid":
        return logits.sigmoid()
    raise UserError(f"cam.probability={kind!r}: choose softmax or sigmoid")
