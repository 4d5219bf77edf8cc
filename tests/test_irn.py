"""IRN's boundary network, its training data and the stages train_irn / make_pseudo with refine=irn."""
import numpy as np
import pytest
import torch

from wsss import artifacts
from wsss.data.transforms import irn_reduce_label, irn_train_view
from wsss.io import artifact_files, load_label_png
from wsss.models.irn import IRNModule, load_irn
from wsss.pipeline import run_pipeline
from wsss.stages.make_pseudo import label_file
from wsss.stages.train_irn import ir_label_file
from wsss.training import checkpoint_path

IRN = ["refine=irn", "refine.train.crop_size=80", "refine.train.batch_size=4", "refine.train.epochs=1",
       "refine.workers=1", "refine.ir_labels.workers=1"]


@pytest.mark.parametrize("backbone,channels", [("resnet18", [64, 64, 128, 256, 512]),
                                               ("tf_efficientnet_lite0", [24, 40, 112, 320])])
def test_boundary_net_reads_every_stage_from_stride_4_and_trains_only_its_branch(backbone, channels):
    model = IRNModule(backbone, weights=None)
    net = model.net
    assert [b[0].in_channels for b in net.branches] == channels
    assert net.fuse.in_channels == 32 * len(channels) and net.fuse.bias is not None
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("net.branches.", "net.fuse.")) for n in trainable)
    model.train()
    assert not net.trunk.training and all(not m.training for m in net.trunk.modules())
    logits = net(torch.randn(2, 3, 75, 101))
    assert logits.shape == (2, 1, 19, 26)  # ⌈75/4⌉ × ⌈101/4⌉
    logits.sum().backward()
    assert all(p.grad is None for p in net.trunk.parameters())
    b = model.boundary(torch.randn(3, 75, 101))
    assert b.shape == (19, 26) and 0 <= float(b.min()) and float(b.max()) <= 1


def test_boundary_of_a_symmetric_image_is_symmetric():
    """B = sigmoid(½ logit(x) + ½ flip(logit(flip(x)))): a mirror-symmetric image gives a symmetric map."""
    model = IRNModule("resnet18", weights=None).eval()
    half = torch.randn(3, 64, 32)
    b = model.boundary(torch.cat([half, half.flip(-1)], -1))
    torch.testing.assert_close(b, b.flip(-1), atol=1e-5, rtol=1e-5)


def test_irn_view_keeps_image_and_label_aligned_at_stride_4():
    """The label encodes each pixel's column band; after scale, flip and crop the label at stride 4 still
    names the band the image shows there, and the padding is 255."""
    rng = np.random.default_rng(0)
    bands = np.repeat(np.arange(1, 9, dtype=np.uint8), 12)[None].repeat(60, 0)  # 60 × 96, 8 bands of 12 px
    image = np.stack([bands * 30] * 3, -1).astype(np.uint8)
    seen_pad = False
    for _ in range(20):
        x, label = irn_train_view(image, bands, (0.5, 1.5), 128, rng, ((0, 0, 0), (1 / 255, 1 / 255, 1 / 255)))
        assert x.shape == (3, 128, 128) and label.shape == (32, 32) and label.dtype == torch.long
        sampled = x[0, 2::4, 2::4]  # the label's cell centres (irn_reduce_label)
        inside = label != 255
        seen_pad |= bool((~inside).any())
        # bicubic resizing blurs the band edges: most samples, not all
        same = (sampled[inside] / 30).round() == label[inside].float()
        assert same.float().mean() > 0.8
        assert (x[:, 2::4, 2::4][:, ~inside] == 0).all()  # padding: the mean colour in the image, 255 in the label
    assert seen_pad


def test_stride_4_label_is_sampled_at_cell_centres_as_irns_pil_resize():
    """IRN reduces the crop's label by `pil_rescale(label, 0.25, 0)`: PIL's nearest resize, which takes the pixel
    at the centre of each 4×4 cell. A label whose value is its column number gives 2, 6, 10, … (not 0, 4, 8)."""
    columns = np.tile(np.arange(128, dtype=np.uint8), (128, 1))
    reduced = irn_reduce_label(columns)
    assert reduced.shape == (32, 32) and reduced.dtype == np.uint8
    assert (reduced == np.arange(2, 128, 4, dtype=np.uint8)).all()
    assert (irn_reduce_label(columns.T) == np.arange(2, 128, 4, dtype=np.uint8)[:, None]).all()


@pytest.mark.parametrize("h,w", [(130, 126), (129, 131), (6, 10)])
def test_stride_4_label_of_a_side_not_a_multiple_of_4_follows_irn(h, w):
    """IRN's target side is numpy's round(n / 4) (half to even: 130 → 32, 126 → 32, 10 → 2) and PIL's nearest
    takes input pixel floor((i + 0.5) · n / m): written out here by hand, independently of PIL."""
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    label = (rows * 1000 + cols).astype(np.int32)  # every pixel its own value (PIL mode I)
    m_h, m_w = int(np.round(h / 4)), int(np.round(w / 4))
    src_r = np.floor((np.arange(m_h) + 0.5) * h / m_h).astype(int)
    src_c = np.floor((np.arange(m_w) + 0.5) * w / m_w).astype(int)
    reduced = irn_reduce_label(label)
    assert reduced.shape == (m_h, m_w)
    np.testing.assert_array_equal(reduced, label[np.ix_(src_r, src_c)])


def test_irn_view_label_is_the_column_at_each_cell_centre():
    """After flip and crop, the stride-4 label of a column-number label is the column the image shows at pixel
    4i + 2 of the crop: the boundary network's targets sit where IRN puts them."""
    rng = np.random.default_rng(1)
    columns = np.tile(np.arange(200, dtype=np.uint8), (150, 1))
    image = np.stack([columns] * 3, -1)
    for _ in range(10):
        x, label = irn_train_view(image, columns, (1.0, 1.0), 128, rng, ((0, 0, 0), (1 / 255, 1 / 255, 1 / 255)))
        inside = label != 255
        assert inside.any()
        np.testing.assert_array_equal(x[0, 2::4, 2::4][inside].round().long().numpy(), label[inside].numpy())


def test_train_irn_does_nothing_without_refine_irn(tiny_cfg):
    assert "time/train_irn" not in run_pipeline(tiny_cfg("stages=[train_irn]"))


@pytest.mark.slow
def test_irn_stages_end_to_end_resume_and_reuse_the_crf_ir_labels(tiny_cfg):
    cfg = tiny_cfg("stages=[train_cls,make_cam,train_irn,make_pseudo]", *IRN)
    metrics = run_pipeline(cfg)
    irn = artifacts.locate(cfg, "train_irn").path
    ids = sorted(p.stem for p in artifact_files(irn / "ir_labels", "*.png"))
    assert len(ids) == metrics["train_irn/train/images"] == 8
    for key in ("train_irn/train/ir_miou", "train_irn/train/ir_ignore_pct", "train_irn/train/loss",
                "train_irn/train/neg", "make_pseudo/train/miou", "make_pseudo/sem_seg_bg_threshold"):
        assert key in metrics
    assert metrics["train_irn/steps"] == 2  # 8 images, batch 4, drop_last, 1 epoch
    assert metrics["protocol/make_pseudo/refine"] == "irn"
    assert metrics["make_pseudo/train/ignore_pct"] == 0  # the walk leaves no unsure pixel
    assert load_irn(checkpoint_path(irn)).hparams.backbone == cfg.cls.backbone
    out = artifacts.locate(cfg, "make_pseudo").path
    assert len(artifact_files(out / "overlays", "*.png")) == 6
    # the IR labels are refine=crf's pseudo-labels for the same seeds and thresholds, byte for byte
    crf = tiny_cfg("stages=[make_pseudo]", "refine=crf", "refine.workers=1")
    run_pipeline(crf)
    crf_out = artifacts.locate(crf, "make_pseudo").path
    assert all(np.array_equal(load_label_png(ir_label_file(irn, i)), load_label_png(label_file(crf_out, i)))
               for i in ids)
    # interrupted make_pseudo: two labels and the manifest gone → only those two are made, identically
    before = {i: label_file(out, i).read_bytes() for i in ids}
    (out / "manifest.json").unlink()
    for i in ids[:2]:
        label_file(out, i).unlink()
    again = run_pipeline(tiny_cfg("stages=[make_pseudo]", *IRN))
    assert again["make_pseudo/computed"] == 2
    assert {i: label_file(out, i).read_bytes() for i in ids} == before


def test_irn_preset_and_threshold_come_from_the_dataset(tmp_path):
    from tests.conftest import compose_cfg

    voc = compose_cfg(tmp_path, "dataset=voc12", "refine=irn")
    assert voc.refine.sem_seg_bg_threshold == 0.25
    assert compose_cfg(tmp_path, "dataset=voc12", "refine=irn", "cam=recam").refine.sem_seg_bg_threshold == 0.28
    assert (voc.refine.beta, voc.refine.exp_times, voc.refine.radius, voc.refine.train.radius) == (10, 8, 5, 10)
    assert voc.refine.ir_labels.label_crf == compose_cfg(tmp_path, "refine=crf").refine.label_crf
    # the synthetic images' grids are ~3.5× smaller a side: 2^4 steps (docs/methods.md, IRN)
    assert compose_cfg(tmp_path, "refine=irn").refine.exp_times == 4


def test_irn_presets_pin_the_reference_recipes(tmp_path):
    from tests.conftest import compose_cfg
    from wsss.pipeline import validate

    for preset, ir, bg, paper in (("cam_voc12_irn", (0.30, 0.05), 0.25, 66.5), ("recam_voc12_irn", (0.35, 0.10), 0.28, 70.5)):
        cfg = compose_cfg(tmp_path, f"experiment={preset}", "dataset.root=/data/voc")
        validate(cfg)
        r = cfg.refine
        assert (r.method, r.ir_labels.fg_threshold, r.ir_labels.bg_threshold, r.sem_seg_bg_threshold) == ("irn", *ir, bg)
        t = r.train
        assert (t.backbone, t.weights, t.crop_size, t.batch_size, t.epochs, t.lr, list(t.scale_range)) == \
            ("resnet50", "imagenet", 512, 32, 3, 0.1, [0.5, 1.5])
        assert "train_aug" in cfg.pseudo.splits and cfg.paper["make_pseudo/train/miou"]["value"] == paper
    assert compose_cfg(tmp_path, "experiment=cam_voc12_irn", "dataset.root=/d").cls.detach_after_layer2  # IRN's CAM net
