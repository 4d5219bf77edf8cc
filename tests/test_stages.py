"""Each stage on a tiny synthetic set, in-process, through the artifact store."""
import json

import numpy as np
import pytest
import torch

from wsss import artifacts
from wsss.cam import seed_file, seed_files
from wsss.data import open_dataset
from wsss.io import artifact_files, load_seed
from wsss.models.classifier import ClassifierModule, load_checkpoint, load_classifier
from wsss.models.recam import ReCAMModule
from wsss.pipeline import run_pipeline
from wsss.training import checkpoint_path


def test_train_cls_make_cam_eval_cam(tiny_cfg, tmp_path, capsys):
    cfg = tiny_cfg("stages=[train_cls,make_cam,eval_cam]")
    metrics = run_pipeline(cfg)
    out = capsys.readouterr().out
    assert "eval_cam/train/miou" in out and "run directory" in out
    # contract keys, in percent
    for key in ("miou", "threshold", "miou_best", "threshold_best"):
        assert f"eval_cam/train/{key}" in metrics
    assert 0 <= metrics["eval_cam/train/miou"] <= metrics["eval_cam/train/miou_best"] <= 100
    assert metrics["eval_cam/train/threshold"] == cfg.dataset.seeds.threshold.cam == 0.63  # the synthetic data's
    assert 0 < metrics["train_cls/probe/loss"] < 1  # cls=lite0 starts from a linear probe of the head
    for suffix in ("", "_best"):  # the error split: percent of scored pixels
        errors = sum(metrics[f"eval_cam/train/error_{k}{suffix}"] for k in ("bg_as_fg", "fg_as_bg", "confusion"))
        assert 0 <= errors <= 100
    assert "eval_cam/train/iou/background" in metrics and "eval_cam/train/iou/ring_bar" in metrics
    on_disk = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert on_disk["eval_cam/train/miou"] == metrics["eval_cam/train/miou"]
    # checkpoint: loads on its own, with weights_only=True
    ckpt = checkpoint_path(artifacts.locate(cfg, "train_cls").path)
    raw = torch.load(ckpt, weights_only=True)
    assert raw["hyper_parameters"]["backbone"] == "tf_efficientnet_lite0"
    assert raw["hyper_parameters"]["weights"] == "packaged" and raw["hyper_parameters"]["mean"] == [0.5] * 3
    assert isinstance(load_classifier(ckpt), ClassifierModule)
    # seeds follow the contract for every train image
    voc = open_dataset(cfg)
    seeds = artifacts.locate(cfg, "make_cam").path
    for img_id in voc.ids("train"):
        s = load_seed(seed_file(seeds, img_id))
        h, w = voc.read_mask(img_id).shape
        k = int(voc.labels(img_id).sum())
        assert s["keys"].tolist() == np.nonzero(voc.labels(img_id))[0].tolist()
        assert s["high_res"].shape == (k, h, w) and s["strided"].shape == (k, -(-h // 4), -(-w // 4))
        assert s["high_res"].dtype == np.float16 and s["high_res"].min() >= 0 and s["high_res"].max() <= 1  # < 1 before float16 rounding
    # pictures for people
    run = tmp_path / "run" / "eval_cam"
    assert (run / "curve.png").exists() and len(artifact_files(run / "overlays", "*.png")) == 6
    curve = json.loads((run / "curve.json").read_text())
    assert len(curve["thresholds"]) == 91 and max(curve["miou"]) == metrics["eval_cam/train/miou_best"]


def test_artifacts_are_reused_and_force_recomputes(tiny_cfg, tmp_path, capsys):
    cfg = tiny_cfg("stages=[train_cls]")
    run_pipeline(cfg)
    art = artifacts.locate(cfg, "train_cls")
    stamp = art.manifest.stat().st_mtime_ns
    capsys.readouterr()
    run_pipeline(cfg)
    assert "\ntrain_cls  (reused from the store (force=true recomputes)" in capsys.readouterr().out
    used = json.loads((tmp_path / "run" / "artifacts.json").read_text())
    assert used["train_cls"]["reused"] is True and art.manifest.stat().st_mtime_ns == stamp
    run_pipeline(tiny_cfg("stages=[train_cls]", "force=true"))
    assert art.manifest.stat().st_mtime_ns != stamp
    # a different classifier config is a different artifact
    assert artifacts.locate(tiny_cfg("cls.lr=0.05"), "train_cls").key != art.key
    # make_cam's key follows its input's key
    assert artifacts.locate(tiny_cfg("cls.lr=0.05"), "make_cam").key != artifacts.locate(cfg, "make_cam").key


def test_make_cam_without_classifier_says_what_to_run(tiny_cfg):
    import pytest

    with pytest.raises(artifacts.MissingArtifact, match="stages=\\[train_cls,make_cam\\]"):
        run_pipeline(tiny_cfg("stages=[make_cam]"))


def test_make_cam_resumes_missing_images_only(tiny_cfg):
    cfg = tiny_cfg("stages=[train_cls,make_cam]")
    run_pipeline(cfg)
    art = artifacts.locate(cfg, "make_cam")
    files = seed_files(art.path)
    before = {p.name: p.read_bytes() for p in files}
    files[0].unlink()
    art.manifest.unlink()  # as if killed before sealing
    metrics = run_pipeline(tiny_cfg("stages=[make_cam]"))
    assert metrics["make_cam/computed"] == 1
    assert {p.name: p.read_bytes() for p in seed_files(art.path)} == before


def test_recam_stage_and_maps(tiny_cfg, tmp_path):
    cfg = tiny_cfg("cam=recam", "stages=[train_cls,train_recam,make_cam,eval_cam]", "cam.train.epochs=1")
    metrics = run_pipeline(cfg)
    assert metrics["eval_cam/train/threshold"] == 0.80  # the synthetic data's ReCAM τ (conf/dataset/synthetic.yaml)
    assert "train_recam/train/sce" in metrics and metrics["protocol/cam/method"] == "recam"
    recam = artifacts.locate(cfg, "train_recam")
    assert recam.complete and artifacts.locate(cfg, "make_cam").key != artifacts.locate(tiny_cfg(), "make_cam").key
    # the seeds come from the ReCAM checkpoint's product weights
    from wsss.stages.make_cam import load_maps_model

    loaded, norm = load_maps_model(cfg)
    assert norm == ((0.5,) * 3, (0.5,) * 3)  # EfficientNet-Lite's normalisation, from the checkpoint
    model = load_checkpoint(recam.path / "model.ckpt", ReCAMModule)
    assert torch.equal(loaded.cam_weights(cfg.cam.map_weights),
                       model.classifier.weight.flatten(1) * model.sce_head.weight.flatten(1))


def test_recam_sce_head_from_a_probe(tiny_cfg):
    """cam.train.sce_init=probe: the SCE head starts as the softmax probe of the frozen trunk's masked
    class features (no fine-tuning here: 0 epochs, so the checkpoint holds the probe itself)."""
    from wsss.data import open_dataset
    from wsss.models.linear_probe import fit_softmax_head, masked_class_rows
    from wsss.stages.train_cls import probe_loader

    cfg = tiny_cfg("cam=recam", "stages=[train_cls,train_recam]", "cam.train.sce_init=probe", "cam.train.epochs=0")
    metrics = run_pipeline(cfg)
    assert 0 < metrics["train_recam/probe/sce"] < 10
    model = load_checkpoint(artifacts.locate(cfg, "train_recam").path / "model.ckpt", ReCAMModule)
    layout = open_dataset(cfg)
    ids = [i for i in layout.ids(cfg.dataset.splits.cls_train) if layout.labels(i).any()]
    rows, targets, _ = masked_class_rows(model.backbone, model.classifier.weight.flatten(1),
                                      probe_loader(cfg, layout, ids, model.normalization))
    expected, _ = fit_softmax_head(rows, targets, layout.num_classes)
    assert torch.allclose(model.sce_head.weight.flatten(1), expected, atol=1e-5)


def test_recam_sce_head_from_the_reference_sgd_schedule(tiny_cfg):
    """cam.train.sce_init=sgd: the SCE head starts as the reference's SGD schedule replayed on the frozen
    trunk's masked class features (0 fine-tuning epochs: the checkpoint holds that head)."""
    from wsss.data import open_dataset
    from wsss.models.linear_probe import masked_class_rows, replay_sce_sgd
    from wsss.stages.train_cls import probe_loader

    cfg = tiny_cfg("cam=recam", "stages=[train_cls,train_recam]", "cam.train.sce_init=sgd",
                   "cam.train.sce_init_steps=40", "cam.train.epochs=0")
    metrics = run_pipeline(cfg)
    assert 0 < metrics["train_recam/probe/sce"] < 10 and 0 <= metrics["train_recam/probe/sce_acc"] <= 100
    model = load_checkpoint(artifacts.locate(cfg, "train_recam").path / "model.ckpt", ReCAMModule)
    layout = open_dataset(cfg)
    ids = [i for i in layout.ids(cfg.dataset.splits.cls_train) if layout.labels(i).any()]
    rows, targets, images = masked_class_rows(model.backbone, model.classifier.weight.flatten(1),
                                              probe_loader(cfg, layout, ids, model.normalization))
    t = cfg.cam.train
    expected, _, _ = replay_sce_sgd(rows, targets, images, layout.num_classes, 40, t.sce_lr, t.momentum,
                                    t.weight_decay, t.poly_power, cfg.cls.batch_size, cfg.seed)
    assert torch.allclose(model.sce_head.weight.flatten(1), expected, atol=1e-5)


def test_train_recam_does_nothing_for_cam(tiny_cfg):
    metrics = run_pipeline(tiny_cfg("stages=[train_cls,train_recam]"))
    assert "time/train_recam" not in metrics and "time/train_cls" in metrics


def test_threshold_does_not_change_the_seeds_key(tiny_cfg):
    assert artifacts.locate(tiny_cfg("cam.threshold=0.3"), "make_cam").key == artifacts.locate(tiny_cfg(), "make_cam").key


@pytest.mark.parametrize("cls", ["cls=resnet", "cls=lite0"])
def test_frozen_bn_statistics_survive_a_lightning_fit(tiny_cfg, cls):
    """Lightning restores per-module training flags itself; frozen statistics must hold regardless,
    also for timm's fused BN + activation layers (BatchNormAct2d)."""
    cfg = tiny_cfg(cls, "stages=[train_cls]", "cls.freeze_bn_stats=true")
    run_pipeline(cfg)
    raw = torch.load(checkpoint_path(artifacts.locate(cfg, "train_cls").path), weights_only=True)
    hp, state = raw["hyper_parameters"], raw["state_dict"]
    fresh = ClassifierModule(12, hp["backbone"], hp["weights"]).state_dict()  # the initial statistics
    checked = 0
    for k, v in state.items():
        if k.endswith(("running_mean", "running_var")):
            assert torch.equal(v, fresh[k]), k
            checked += 1
    assert checked >= 20
    moved = [k for k, v in state.items() if k.endswith(".weight") and "bn" in k and not torch.equal(v, fresh[k])]
    assert moved  # γ/β still learn


def test_output_directory_exists_before_the_other_ranks_are_released(tiny_cfg, tmp_path, monkeypatch):
    """Under DDP the other ranks start a distributed stage right after the first barrier and write
    (and stat, for the disk-space check) its directory: rank 0 must have made it by then."""
    cfg = tiny_cfg("stages=[eval_cam]")
    art = artifacts.locate(cfg, "train_cls")
    seen = []
    monkeypatch.setattr(artifacts, "barrier", lambda: seen.append(art.path.is_dir()))
    artifacts.produce(cfg, "train_cls", lambda c, out: {}, tmp_path, distributed=True)
    assert seen == [True, True]


def test_min_steps_adds_whole_epochs_until_the_schedule_has_that_many_steps():
    """voc_small: 5 epochs of 502 images in batches of 16 are 31 × 5 = 155 steps; 300 images give 18 a epoch, so
    155 steps need 9 epochs; 2 ranks halve the batches per epoch; no minimum keeps the epochs."""
    from wsss.training import epochs_with_min_steps

    assert epochs_with_min_steps(5, 155, 502, 16) == 5
    assert epochs_with_min_steps(5, 155, 300, 16) == 9
    assert epochs_with_min_steps(5, 155, 300, 16, world_size=2) == 18  # 150 images a rank: 9 batches
    assert epochs_with_min_steps(5, None, 300, 16) == 5
    assert epochs_with_min_steps(5, 155, 10, 16) == 155  # fewer images than a batch: one batch an epoch
