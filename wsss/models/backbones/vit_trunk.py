"""Vision transformer trunks (timm ViT / DeiT by name) as stride-16 feature maps, and their attention.

`cls.backbone=deit_small_patch16_224` (or any timm model built by timm's `vision_transformer` or `deit`
modules, patch size 16): the patch tokens of the last block (after timm's final norm) reshaped to the
patch grid, [B, D, ⌈H/16⌉, ⌈W/16⌉], so CAM and every seed method read them as a CNN trunk's stride-16
features. Choices, stated:
- Any image size: timm's `dynamic_img_size` interpolates the position embeddings to the image's patch grid
  and `dynamic_img_pad` pads the image at the right and bottom to whole patches, the same top-left-aligned
  grid the CNN trunks' maps are cropped from (wsss/cam.py `padded_size`).
- The class token (and any register token) is left out of the map: the classifier is GAP over the patch
  tokens + the bias-free 1×1 head, as for the CNNs; the methods that read attention choose per method
  (AD-CAM reads patch-to-patch attention, wsss/seed_methods/adcam.py).
- `freeze_stem` freezes the patch embedding (the ViT's stem); a ViT has no BatchNorm to freeze.
- Weights: `imagenet` (timm's download), a local state dict, or none (random: tests). None ship offline,
  so no ViT figure is measured on this machine (docs/methods.md).

`attention_maps` records each block's attention matrices during the forwards inside it (timm's own softmax,
computed on timm's non-fused path while recording), and removes its hooks on leaving.
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import torch
from torch import nn

from wsss.errors import UserError
from wsss.models.backbones.timm_trunk import check_timm_name, create_timm, load_state  # noqa: F401

VIT_MODULES = ("timm.models.vision_transformer", "timm.models.deit")


def is_vit(name: str) -> bool:
    """Whether timm builds `name` as a plain ViT / DeiT (the trunks this module reshapes)."""
    import timm
    from timm.models import model_entrypoint

    return timm.is_model(name) and model_entrypoint(name).__module__ in VIT_MODULES


class ViTTrunk(nn.Module):
    """A timm ViT's patch tokens as a stride-16 map [B, D, ⌈H/16⌉, ⌈W/16⌉]."""

    def __init__(self, name: str, weights=None, freeze_bn_stats: bool = True, freeze_stem: bool = True,
                 detach_after_layer2: bool = False):
        super().__init__()
        if detach_after_layer2:
            raise UserError(f"detach_after_layer2 is defined for ResNets and EfficientNets, not the ViT {name}")
        self.net = create_timm(name, weights, dynamic_img_size=True, dynamic_img_pad=True)
        self.net.reset_classifier(0)
        patch = self.net.patch_embed.patch_size
        if tuple(patch) != (16, 16):
            raise UserError(f"{name} has {patch[0]}×{patch[1]} patches; the pipeline's maps are on a stride-16 grid: "
                            "choose a patch16 model (e.g. deit_small_patch16_224)")
        cfg = self.net.pretrained_cfg
        self.mean, self.std = tuple(cfg["mean"]), tuple(cfg["std"])
        self.out_channels = self.net.num_features
        self.prefix_tokens = self.net.num_prefix_tokens
        if freeze_stem:
            self.net.patch_embed.requires_grad_(False)

    def grid(self, x: torch.Tensor) -> tuple[int, int]:
        """The patch grid of an input [B, 3, H, W]: ⌈H/16⌉ × ⌈W/16⌉ (padded to whole patches)."""
        return math.ceil(x.shape[-2] / 16), math.ceil(x.shape[-1] / 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.net.forward_features(x)
        return tokens_to_map(tokens[:, self.prefix_tokens:], self.grid(x))

    def stage_names(self, min_stride: int = 8) -> list[str]:
        """No stage outputs on a map before the last: a ViT's blocks give tokens (LayerCAM reads the output only)."""
        return []

    def stage_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise UserError("IRN's boundary network reads a CNN trunk's stride-4/8/16 stages, which a ViT does not "
                        "have: set refine.train.backbone to a CNN (e.g. tf_efficientnet_lite0 with "
                        "refine.train.weights=packaged) or use refine=crf")


def tokens_to_map(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Patch tokens [B, h·w, D] in timm's row-major order → [B, D, h, w]."""
    b, n, d = tokens.shape
    if n != grid[0] * grid[1]:
        raise ValueError(f"{n} patch tokens do not fill a {grid[0]}×{grid[1]} grid")
    return tokens.transpose(1, 2).reshape(b, d, *grid)


@contextmanager
def attention_maps(trunk: ViTTrunk, blocks=None):
    """Inside the block, the attention matrices [B, heads, N, N] (N with the prefix tokens) of the chosen
    `blocks` (indices; None = every block) of the forwards run there, the last forward's per block, in block
    order. timm computes attention in one fused kernel that never forms the matrix; while recording, each
    chosen block runs timm's own unfused path (the same softmax(q·kᵀ·scale)), whose probabilities pass through
    its `attn_drop` module, where a hook keeps them. Hooks and the fused setting are restored on leaving."""
    if not isinstance(trunk, ViTTrunk):
        raise UserError(f"attention needs a ViT trunk (cls.backbone=deit_small_patch16_224, …), not "
                        f"{type(trunk).__name__}; with a CNN trunk use adcam's affinity=features")
    all_blocks = list(trunk.net.blocks)
    chosen = range(len(all_blocks)) if blocks is None else [range(len(all_blocks))[i] for i in blocks]
    recorded: list[torch.Tensor | None] = [None] * len(chosen)
    handles, fused = [], []

    def keeper(i):
        def hook(module, inputs, output):
            recorded[i] = output
        return hook

    try:
        for i, b in enumerate(chosen):
            attn = all_blocks[b].attn
            fused.append((attn, attn.fused_attn))
            attn.fused_attn = False
            handles.append(attn.attn_drop.register_forward_hook(keeper(i)))
        yield recorded
    finally:
        for h in handles:
            h.remove()
        for attn, was in fused:
            attn.fused_attn = was
