"""The segmentation stages: models, the whole pipeline on tiny data, the test-server export."""
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from wsss import artifacts
from wsss.data import open_dataset
from wsss.errors import UserError
from wsss.io import artifact_files
from wsss.models.segmenter import SegmentationModule, build_segmenter, msc_outputs
from wsss.pipeline import run_pipeline
from wsss.stages.eval_seg import pred_file


@pytest.mark.parametrize("arch", ["cls_aspp", "small", "deeplabv2_resnet50", "deeplabv3_resnet50"])
def test_models_give_logits_per_class_at_image_size(arch):
    model = SegmentationModule(num_classes=5, arch=arch, weights=None).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 67, 90))
    assert out.shape == (1, 5, 67, 90)


def test_deeplabv2_is_stride_8_with_four_summed_dilated_branches():
    net = build_segmenter("deeplabv2_resnet50", 4)
    assert [b.dilation for b in net.head.branches] == [(6, 6), (12, 12), (18, 18), (24, 24)]
    assert net(torch.randn(1, 3, 64, 64)).shape[2:] == (8, 8)


def test_msc_outputs_native_sizes_and_max_fusion():
    net = build_segmenter("small", 3).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        native, fused = msc_outputs(net, x)
        half = net(torch.nn.functional.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False))
    assert [tuple(o.shape[2:]) for o in native] == [(8, 8), (4, 4), (6, 6)]
    assert torch.allclose(native[1], half)
    up = [torch.nn.functional.interpolate(o, size=(8, 8), mode="bilinear", align_corners=False) for o in native[1:]]
    expected = torch.maximum(native[0], torch.maximum(up[0], up[1]))
    assert torch.allclose(fused, expected)


def test_label_resize_matches_pil_nearest():
    from wsss.models.segmenter import _resize_labels

    y = torch.randint(0, 21, (1, 321, 321))
    ours = _resize_labels(y, (41, 41))[0].numpy()
    pil = np.asarray(Image.fromarray(y[0].numpy().astype(np.uint8)).resize((41, 41), Image.NEAREST))
    assert (ours == pil).all()


def test_seg_train_view_keeps_image_and_label_aligned():
    """Label = a function of the colour; after scale/pad/crop/flip it still is; padding is 255."""
    from wsss.data.transforms import seg_train_view
    from wsss.models.backbones import IMAGENET_MEAN as MEAN
    from wsss.models.backbones import IMAGENET_STD as STD

    rng = np.random.default_rng(0)
    label = np.zeros((40, 50), np.uint8)
    label[:, 25:] = 1
    image = np.where(label[..., None] == 1, 255, 0).astype(np.uint8).repeat(3, 2)
    for _ in range(10):
        x, y = seg_train_view(image, label, [0.5, 1.0, 1.5], 48, rng, (MEAN, STD))
        assert x.shape == (3, 48, 48) and y.shape == (48, 48)
        pixel = x.numpy().transpose(1, 2, 0) * STD + MEAN  # back to [0, 1]
        pad = (y == 255).numpy()
        assert np.allclose(pixel[pad], MEAN, atol=1e-4)  # padding is the mean colour
        white, black = pixel[(y == 1).numpy()], pixel[(y == 0).numpy()]
        # bilinear blends one column at the edge; a shift, a lone flip or a wrong scale would not
        assert (white > 0.45).all() and (black < 0.55).all()
        assert (white > 0.9).mean() > 0.9 and (black < 0.1).mean() > 0.9


def test_optimizer_groups_follow_deeplab():
    model = SegmentationModule(num_classes=3, arch="deeplabv2_resnet50", lr=1e-3, head_lr_mult=10,
                               head_bias_lr_mult=20, weight_decay=5e-4, momentum=0.9, optimizer="sgd", msc=True)
    trainer = type("T", (), {"estimated_stepping_batches": 10})()
    model.trainer = trainer  # what configure_optimizers reads
    opt = model.configure_optimizers()["optimizer"]
    lrs = [g["lr"] for g in opt.param_groups]
    assert lrs == [1e-3, 1e-2, 2e-2]
    assert opt.param_groups[2]["weight_decay"] == 0 and opt.param_groups[0]["weight_decay"] == 5e-4
    assert opt.defaults["momentum"] == 0.9
    bn = [p for m in model.net.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()]
    assert bn and not any(p.requires_grad for p in bn)  # frozen BN: γ/β too
    assert not any(p is q for p in opt.param_groups[0]["params"] for q in bn)


def test_msc_training_step_sums_four_losses():
    model = SegmentationModule(num_classes=3, arch="small", msc=True, optimizer="adamw")
    model.log = lambda *a, **k: None
    x, y = torch.randn(2, 3, 64, 64), torch.randint(0, 3, (2, 64, 64))
    y[:, :8] = 255
    loss = model.training_step((x, y), 0)
    native, fused = msc_outputs(model.net, x)
    from wsss.models.segmenter import _resize_labels

    expected = sum(torch.nn.functional.cross_entropy(o, _resize_labels(y, o.shape[2:]), ignore_index=255)
                   for o in [*native, fused])
    assert torch.allclose(loss, expected)


def test_small_model_refuses_pretrained_weights():
    with pytest.raises(UserError, match="no pretrained"):
        build_segmenter("small", 3, weights="imagenet")


def test_whole_pipeline_on_tiny_data(tiny_cfg, tmp_path):
    cfg = tiny_cfg()  # stages=all
    m = run_pipeline(cfg)
    for key in ("eval_cam/train/miou", "make_pseudo/train/miou", "eval_seg/val/miou", "eval_seg/val/iou/background",
                "time/train_seg", "time/eval_seg"):
        assert key in m
    assert m["train_seg/steps"] == 3
    out = artifacts.locate(cfg, "eval_seg").path
    voc = open_dataset(cfg)
    for img_id in voc.ids("val"):
        pred = Image.open(pred_file(out, "val", img_id))
        assert pred.mode == "P" and pred.size[::-1] == voc.read_mask(img_id).shape
        assert np.asarray(pred).max() <= voc.num_classes
    assert len(artifact_files(out / "overlays", "*.png")) == 6
    # the checkpoint rebuilds on its own, safely
    raw = torch.load(artifacts.locate(cfg, "train_seg").path / "model.ckpt", weights_only=True)
    hp = raw["hyper_parameters"]
    assert hp["arch"] == "cls_aspp" and hp["trunk"] == "tf_efficientnet_lite0"
    assert hp["mean"] == hp["std"] == [0.5] * 3  # the classifier's normalisation, kept for eval_seg


def test_cls_aspp_starts_from_the_classifier_trunk(tiny_cfg):
    from wsss.models.classifier import load_classifier
    from wsss.stages.train_seg import build_model
    from wsss.training import checkpoint_path

    cfg = tiny_cfg("stages=[train_cls]")
    run_pipeline(cfg)
    cls = load_classifier(checkpoint_path(artifacts.locate(cfg, "train_cls").path))
    model = build_model(cfg, 13)
    for (name, a), b in zip(cls.backbone.state_dict().items(), model.net.backbone.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert model.normalization == cls.normalization
    assert "train_cls" in artifacts.identity(cfg, "train_seg")["inputs"]  # a new classifier → a new model


def test_eval_with_flip_scales_and_crf(tiny_cfg):
    cfg = tiny_cfg("stages=[train_cls,make_cam,make_pseudo,train_seg,eval_seg]", "seg.eval.flip=true",
                   "seg.eval.scales=[1.0,0.75]", "seg.eval.crf=true")
    m = run_pipeline(cfg)
    assert m["protocol/eval_seg/crf"] is True and m["protocol/eval_seg/flip"] is True
    assert 0 <= m["eval_seg/val/miou"] <= 100


def test_predict_flip_of_a_symmetric_model_is_symmetric():
    from wsss.stages.eval_seg import predict

    model = SegmentationModule(num_classes=3, arch="small").eval()
    image = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    prob = predict(model, image, [1.0, 0.5], flip=True)
    assert prob.shape == (3, 40, 30) and np.allclose(prob.sum(0), 1, atol=1e-5)
    mirrored = predict(model, image[:, ::-1].copy(), [1.0, 0.5], flip=True)
    assert np.allclose(prob, mirrored[:, :, ::-1], atol=1e-5)  # flip-averaging is mirror-equivariant


def test_test_split_export_layout(tiny_cfg):
    cfg = tiny_cfg("stages=[train_cls,make_cam,make_pseudo,train_seg]")
    run_pipeline(cfg)
    voc = open_dataset(cfg)
    test_ids = voc.ids("val")[:3]
    (voc.root / "ImageSets/Segmentation/test.txt").write_text("\n".join(test_ids) + "\n")
    m = run_pipeline(tiny_cfg("stages=[eval_seg]", "seg.eval.split=test"))
    assert m["eval_seg/images"] == 3 and not any(k.startswith("eval_seg/test/miou") for k in m)
    out = artifacts.locate(tiny_cfg("seg.eval.split=test"), "eval_seg").path
    with tarfile.open(out / "results.tar.gz") as tar:
        names = sorted(tar.getnames())
    expected = [f"results/VOC2012/Segmentation/comp6_test_cls/{i}.png" for i in test_ids]
    assert [n for n in names if n.endswith(".png")] == sorted(expected)
    assert Image.open(out / expected[0]).mode == "P"
