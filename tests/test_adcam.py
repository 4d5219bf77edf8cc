"""AD-CAM (wsss/seed_methods/adcam.py) on hand-made affinities, and the ViT trunk it reads attention from
(wsss/models/backbones/vit_trunk.py) on a tiny random timm ViT."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from wsss.cam import multiscale_maps
from wsss.errors import UserError
from wsss.models.backbones import build_backbone
from wsss.models.backbones.vit_trunk import ViTTrunk, attention_maps, is_vit, tokens_to_map
from wsss.seed_methods import adcam

VIT = "test_vit"  # timm's tiny test ViT (patch 16, 64 dims, 6 blocks), random weights


def rows(*r):
    a = torch.tensor(r, dtype=torch.float32)
    return (a / a.sum(-1, keepdim=True))[None]


def test_refinement_by_common_neighbours_known_answer():
    # positions 0 and 1 attend alike (cos 1); 2 attends to 0 and itself, sharing only position 0 with row 0
    a = rows([1, 1, 0], [1, 1, 0], [1, 0, 1])
    r = adcam.refine_affinity(a)[0]
    cos02 = 0.5  # (0.5·0.5) / (|(.5,.5,0)|·|(.5,0,.5)|) = 0.25 / 0.5
    expected = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.5 * cos02, 0.0, 0.5]])
    assert torch.allclose(r, expected, atol=1e-6)


def test_two_blocks_without_shared_neighbours_stay_apart_and_symmetry_is_kept():
    g = torch.Generator().manual_seed(0)
    block = torch.rand(3, 3, generator=g)
    block = block + block.T
    a = torch.block_diag(block, block * 2)[None]
    a[0, 0, 4] = a[0, 4, 0] = 0.3  # 0 and 4 attend to each other, but share no other neighbour ...
    r = adcam.refine_affinity(a)[0]
    assert torch.allclose(r, r.T, atol=1e-6)  # symmetric in, symmetric out
    cos04 = F.cosine_similarity(a[0, 0], a[0, 4], dim=0)
    assert r[0, 4] == pytest.approx(0.3 * float(cos04), rel=1e-5) and r[0, 4] < 0.3 * 0.2  # ... so it shrinks
    clean = adcam.refine_affinity(torch.block_diag(block, block * 2)[None])[0]
    assert torch.all(clean[:3, 3:] == 0) and torch.all(clean[3:, :3] == 0)


def test_diffusion_conserves_each_class_total_and_stays_inside_a_closed_block():
    g = torch.Generator().manual_seed(1)
    aff = torch.block_diag(torch.rand(4, 4, generator=g), torch.rand(2, 2, generator=g))[None]
    p = adcam.diffusion_matrix(adcam.refine_affinity(aff))
    assert torch.allclose(p.sum(-1), torch.ones(1, 6))
    cams = torch.zeros(1, 2, 2, 3)
    cams[0, 0, 0, 1] = 2.0  # class 0 seeded at position 1 (block {0..3}), class 1 at position 5 (block {4, 5})
    cams[0, 1, 1, 2] = 1.0
    for steps in (0, 1, 3, 20):
        out = adcam.diffuse(cams, p, steps).flatten(2)[0]
        assert torch.allclose(out.sum(-1), torch.tensor([2.0, 1.0]), atol=1e-5)  # conserved
        assert torch.all(out[0, 4:] == 0) and torch.all(out[1, :4] == 0)  # never leaves its block
    assert torch.equal(adcam.diffuse(cams, p, 0), cams)
    assert (adcam.diffuse(cams, p, 3).flatten(2)[0, 0, :4] > 0).all()  # spread over its whole block


def test_feature_affinity_rows_are_attention_like_and_sharpened_by_the_temperature():
    f = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]).T.reshape(1, 2, 1, 3)
    soft, sharp = adcam.feature_affinity(f, 1.0)[0], adcam.feature_affinity(f, 0.05)[0]
    assert torch.allclose(soft.sum(-1), torch.ones(3)) and (soft >= 0).all()
    assert sharp[0, 2] < soft[0, 2] and sharp[0, 1] > soft[0, 1] > soft[0, 2]
    with pytest.raises(UserError, match="temperature"):
        adcam.feature_affinity(f, 0.0)


class Stride16(nn.Module):
    """A cheap stride-16 trunk for a large photo: 16×16 average pooling of the colours."""

    out_channels = 3

    def forward(self, x):
        return F.avg_pool2d(x, 16, ceil_mode=True)


class Pooled(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone, self.head = Stride16(), nn.Conv2d(3, 2, 1, bias=False)

    def cam_weights(self):
        return self.head.weight.flatten(1)


def test_memory_is_bounded_on_a_large_photo(monkeypatch):
    """A 2000×3000 photo (125×188 = 23,500 cells at stride 16): the affinity is formed on a pooled grid of at
    most max_positions cells (23,500² float32 would be 2.2 GB per view), and the maps come back on the full grid."""
    seen = []
    real = adcam.refine_affinity
    monkeypatch.setattr(adcam, "refine_affinity", lambda a: seen.append(a.shape) or real(a))
    images = torch.rand(2, 3, 2000, 3000)
    out, stride = adcam.maps(Pooled(), images, torch.tensor([0, 1]), max_positions=1024)
    assert stride == 16 and out.shape == (2, 2, 125, 188) and (out >= 0).all()
    assert seen and seen[0][-1] <= 1024 and seen[0][-1] == seen[0][-2]
    small, _ = adcam.maps(Pooled(), images[..., :320, :480], torch.tensor([0, 1]), max_positions=1024)
    assert seen[1][-1] == 20 * 30  # a grid that fits is used as it is


def test_vit_names_are_recognised_and_tokens_reshape_row_major():
    assert is_vit("deit_small_patch16_224") and is_vit("vit_small_patch16_224") and is_vit(VIT) and not is_vit("tf_efficientnet_lite0")
    tokens = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(1, 12, 2)  # [B, N, D], token n has value 2n, 2n+1
    m = tokens_to_map(tokens, (3, 4))
    assert m.shape == (1, 2, 3, 4) and m[0, 0, 1, 2] == 2 * (1 * 4 + 2) and m[0, 1, 2, 3] == 2 * 11 + 1
    with pytest.raises(ValueError, match="grid"):
        tokens_to_map(tokens, (3, 3))


@pytest.fixture(scope="module")
def vit():
    return build_backbone(VIT, None).eval()


def test_vit_trunk_gives_a_stride16_map_at_any_size(vit):
    assert isinstance(vit, ViTTrunk) and vit.out_channels == 64
    with torch.no_grad():
        for h, w in ((64, 96), (100, 150), (224, 224)):
            assert vit(torch.randn(1, 3, h, w)).shape == (1, 64, -(-h // 16), -(-w // 16))
    assert not any(p.requires_grad for p in vit.net.patch_embed.parameters())
    with pytest.raises(UserError, match="boundary network"):
        vit.stage_features(torch.zeros(1, 3, 64, 64))


def test_attention_hook_records_timms_attention_and_leaves_nothing_behind(vit):
    x = torch.randn(2, 3, 64, 96)
    block0 = vit.net.blocks[0]
    fused_before = [b.attn.fused_attn for b in vit.net.blocks]
    inputs = []
    pre = block0.attn.register_forward_pre_hook(lambda m, a: inputs.append(a[0]))
    with torch.no_grad():
        plain = vit(x)
        with attention_maps(vit, [0, -1]) as recorded:
            again = vit(x)
    pre.remove()
    assert torch.allclose(plain, again, atol=1e-5)  # the unfused path computes the same tokens
    heads = block0.attn.num_heads
    assert len(recorded) == 2 and recorded[0].shape == (2, heads, 1 + 4 * 6, 1 + 4 * 6)
    assert torch.allclose(recorded[1].sum(-1), torch.ones(2, heads, 25), atol=1e-5)
    attn = block0.attn  # by hand: softmax(q·kᵀ·scale) from the block's own qkv projection
    qkv = attn.qkv(inputs[-1]).reshape(2, 25, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
    assert torch.allclose(recorded[0], (q @ k.transpose(-2, -1) * attn.scale).softmax(-1), atol=1e-5)
    assert [b.attn.fused_attn for b in vit.net.blocks] == fused_before  # every block back to its own setting
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in vit.modules()) == 0
    with pytest.raises(UserError, match="ViT trunk"), attention_maps(Stride16()):
        pass


def test_cam_and_adcam_on_a_vit_are_flip_equivariant(vit):
    from wsss.models.classifier import ClassifierModule

    model = ClassifierModule(3, VIT, None).eval()
    x, keys = torch.randn(3, 64, 96), torch.tensor([0, 2])

    def combined(img, options):
        with torch.no_grad():
            return multiscale_maps(lambda batch: adcam.maps(model, batch, keys, **options), 2,
                                   [torch.stack([img, img.flip(-1)])], (64, 96))[1]

    for options in ({"affinity": "attention"}, {"affinity": "attention", "attention_blocks": [-2, -1]},
                    {"affinity": "features"}):
        a, b = combined(x, options), combined(x.flip(-1), options)
        assert a.shape == (2, 64, 96) and torch.allclose(a, b.flip(-1), atol=1e-5)
    with pytest.raises(UserError, match="affinity"):
        adcam.maps(model, torch.randn(2, 3, 64, 96), keys, affinity="cosine")


def test_base_method_is_diffused_and_unfit_bases_refused():
    from tests.test_seed_methods import Tiny, views
    from wsss.seed_methods import fdcam

    model, x, keys = Tiny(squared=True), views(), torch.tensor([0, 2])
    with torch.enable_grad():
        base, _ = fdcam.maps(model, x, keys)
    p = adcam.diffusion_matrix(adcam.refine_affinity(adcam.feature_affinity(model.backbone(x), 0.1)))
    out, stride = adcam.maps(model, x, keys, base="fdcam", steps=3)
    assert stride == 16 and torch.allclose(out, adcam.diffuse(base, p, 3), atol=1e-5)
    for name in ("infercam", "lpcam", "adcam"):
        with pytest.raises(UserError, match="base"):
            adcam.maps(model, x, keys, base=name)


def test_a_vit_trunk_runs_the_whole_pipeline_and_adcam_reads_its_attention(tiny_cfg):
    """The acceptance: a random-weight ViT through every stage on the synthetic data (classifier, CAM seeds,
    pseudo-labels, segmentation network on the same trunk, its evaluation), then cam=adcam affinity=attention
    on the same classifier."""
    import json

    from wsss import artifacts
    from wsss.pipeline import run_pipeline

    vit = (f"cls.backbone={VIT}", "cls.weights=null", "cls.head_init=random")
    metrics = run_pipeline(tiny_cfg(*vit))
    for key in ("eval_cam/train/miou", "make_pseudo/train/miou", "eval_seg/val/miou"):
        assert 0 <= metrics[key] <= 100, key
    cfg = tiny_cfg(*vit, "cam=adcam", "cam.affinity=attention", "stages=[train_cls,make_cam,eval_cam]")
    out = run_pipeline(cfg)
    seeds = artifacts.locate(cfg, "make_cam")
    ident = json.loads((seeds.path / "manifest.json").read_text())["identity"]
    assert ident["config"]["method"] == "adcam" and ident["config"]["options"]["affinity"] == "attention"
    assert ident["inputs"]["train_cls"] == artifacts.locate(tiny_cfg(*vit), "train_cls").key  # one classifier
    assert 0 <= out["eval_cam/train/miou"] <= 100
