"""Guided backpropagation (Springenberg et al., ICLR-W 2015): the input gradient with every ReLU (and ReLU6,
EfficientNet-Lite's) passing back only positive gradients where its input was positive; the map is, as
saliency's, the max over colour channels of |·| at every input pixel (stride 1).

Done with backward hooks on the activation modules, set and removed around each call (their in-place flag
is switched off meanwhile: a backward hook cannot see an in-place output). pytorch-grad-cam's
GuidedBackpropReLUModel replaces nn.ReLU only, so it would leave Lite0's ReLU6 plain; torchcam has none."""
from __future__ import annotations

from contextlib import contextmanager

from torch import nn

from wsss.errors import UserError
from wsss.seed_methods.saliency import input_gradient_maps

NEEDS_GRAD = True
RELUS = (nn.ReLU, nn.ReLU6)


def positive_gradients(module, grad_input, grad_output):
    """The guided rule: the module's own backward masks by its input (> 0, and < 6 for ReLU6); keep > 0."""
    return tuple(None if g is None else g.clamp(min=0) for g in grad_input)


@contextmanager
def guided_relus(model: nn.Module):
    """Every ReLU/ReLU6 of `model` guided inside the block; restored on leaving it."""
    relus = [m for m in model.modules() if isinstance(m, RELUS)]
    if not relus:
        raise UserError(f"cam=guided_backprop: {type(model).__name__} has no nn.ReLU/ReLU6 modules to guide")
    inplace = [m.inplace for m in relus]
    for m in relus:
        m.inplace = False
    handles = [m.register_full_backward_hook(positive_gradients) for m in relus]
    try:
        yield len(relus)
    finally:
        for h in handles:
            h.remove()
        for m, flag in zip(relus, inplace, strict=True):
            m.inplace = flag


def maps(model, images, keys):
    with guided_relus(model):
        return input_gradient_maps(model, images, keys), 1
