"""Every config option and preset composes, and the contract's keys are there."""
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.conftest import compose_cfg
from wsss.config import CONFIG_DIR as CONF
from wsss.pipeline import ConfigError, selected_stages, validate

GROUPS = {g: sorted(p.stem for p in (Path(CONF) / g).glob("*.yaml")) for g in
          ("dataset", "cls", "cam", "refine", "seg", "trainer", "logger", "experiment")}


def test_contract_keys_in_primary_config(tmp_path):
    cfg = compose_cfg(tmp_path)
    for key in ("stages", "dataset", "cam", "trainer", "logger", "paths", "seed", "force"):
        assert key in cfg
    assert cfg.stages == "all" and cfg.dataset.name == "synthetic"
    assert "data_dir" in cfg.paths and "artifacts_dir" in cfg.paths


@pytest.mark.parametrize("group,option", [(g, o) for g, opts in GROUPS.items() for o in opts])
def test_every_option_composes(tmp_path, group, option):
    extra = ["dataset.root=/data/voc"] if option in ("voc12",) or group == "experiment" else []
    cfg = compose_cfg(tmp_path, f"{group}={option}", *extra)
    OmegaConf.resolve(cfg)
    assert "???" not in OmegaConf.to_yaml(cfg)
    validate(cfg)
    if group == "trainer":
        assert cfg.trainer._target_.endswith("Trainer")
    if group == "logger" and cfg.logger.get("_target_"):
        assert instantiate(cfg.logger, name="x") is not None


def test_experiment_presets_pin_the_reference_recipe(tmp_path):
    cfg = compose_cfg(tmp_path, "experiment=cam_voc12", "dataset.root=/data/voc")
    c = cfg.cls
    assert (c.backbone, c.weights, c.freeze_bn_stats, c.momentum, c.lr, c.head_lr_mult) == \
        ("resnet50", "imagenet", True, 1e-4, 0.1, 10)
    assert (c.batch_size, c.epochs, c.crop_size, list(c.resize_long)) == (16, 5, 512, [320, 640])
    assert list(cfg.cam.scales) == [1.0, 0.5, 1.5, 2.0] and cfg.cam.threshold == 0.15
    assert "eval_cam/train/miou" in cfg.paper


def test_stage_selection_orders_and_rejects_unknown():
    assert selected_stages("all") == ["train_cls", "train_recam", "make_prototypes", "make_cam", "eval_cam", "train_irn",
                                      "make_pseudo", "train_seg", "eval_seg"]  # contract.md order, train_irn added
    # before make_pseudo, make_prototypes (LPCAM's) before make_cam
    assert selected_stages(["eval_cam", "train_cls"]) == ["train_cls", "eval_cam"]
    with pytest.raises(ConfigError, match="unknown stage"):
        selected_stages(["train_cls", "make_cams"])


@pytest.mark.parametrize("override,match", [("cam.threshold=1.5", "threshold"), ("cam.scales=[1.0,-0.5]", "scales"),
                                            ("eval_cam.sweep.step=0", "sweep"),
                                            ("pseudo.splits=[val]", "must be among cam.splits"),
                                            ("seg.train_split=train_aug", "has no pseudo-labels"),
                                            ("seg.eval.scales=[0.0]", "seg.eval.scales"),
                                            ("refine=crf refine.fg_threshold=1.5", "fg_threshold"),
                                            ("pseudo.threshold_source=best", "threshold_source")])
def test_out_of_range_values_are_refused(tmp_path, override, match):
    with pytest.raises(ConfigError, match=match):
        validate(compose_cfg(tmp_path, *override.split()))


def test_split_rules_apply_only_to_the_stages_that_run(tmp_path):
    # seeds made and scored on a subset: no pseudo or seg key needs changing while those stages do not run
    cfg = compose_cfg(tmp_path, "cam.splits=[val]", "eval_cam.split=val")
    validate(cfg, ["train_cls", "make_cam", "eval_cam"])
    for stages, match in ((["make_cam", "make_pseudo"], "must be among cam.splits"),
                          (["make_cam", "train_irn"], "must be among cam.splits")):
        with pytest.raises(ConfigError, match=match):
            validate(cfg, stages)
    cfg = compose_cfg(tmp_path, "seg.train_split=val")
    validate(cfg, ["train_cls", "make_cam", "eval_cam", "make_pseudo"])
    with pytest.raises(ConfigError, match="has no pseudo-labels"):
        validate(cfg, ["make_pseudo", "train_seg"])


def test_sweep_dirnames_are_bounded_and_flat():
    from wsss.__main__ import short_dirname

    assert short_dirname("cam=recam,seed=1") == "cam=recam,seed=1"
    long = short_dirname("x=" + "a/b" * 100)
    assert len(long) <= 96 and "/" not in long and long != short_dirname("x=" + "a/b" * 101)


def test_recam_preset_pins_the_reference_recipe(tmp_path):
    cfg = compose_cfg(tmp_path, "experiment=recam_voc12", "dataset.root=/data/voc")
    t = cfg.cam.train
    assert (cfg.cam.method, cfg.cam.threshold, cfg.cam.map_weights) == ("recam", 0.21, "product")
    assert (t.optimizer, t.lr, t.head_lr_mult, t.sce_lr, t.loss_weight, t.epochs, t.momentum) == \
        ("sgd", 5e-5, 1, 5e-4, 1.0, 4, 1e-4)
    assert cfg.cls.backbone == "resnet50" and cfg.cls.detach_after_layer2 is False
    assert cfg.paper["eval_cam/train/miou"]["value"] == 54.8


def test_crf_and_segmentation_presets(tmp_path):
    cfg = compose_cfg(tmp_path, "experiment=recam_voc12_crf", "dataset.root=/data/voc")
    validate(cfg)
    assert (cfg.refine.method, cfg.refine.mode, cfg.refine.fg_threshold, cfg.refine.bg_threshold) == \
        ("crf", "label", 0.35, 0.10)
    assert "train_aug" in cfg.pseudo.splits and "train_aug" in cfg.cam.splits
    cfg = compose_cfg(tmp_path, "experiment=deeplabv2_voc12", "dataset.root=/data/voc")
    validate(cfg)
    s = cfg.seg
    assert (s.arch, s.weights, s.optimizer, s.lr, s.head_lr_mult, s.head_bias_lr_mult, s.momentum) == \
        ("deeplabv2_resnet101", "imagenet", "sgd", 2.5e-4, 10, 20, 0.9)
    assert (s.batch_size * s.accumulate, s.max_steps, s.crop_size, s.msc, s.freeze_bn, s.eval.crf) == \
        (10, 20000, 321, True, True, True)
    assert s.train_split == "train_aug" and cfg.paper["eval_seg/val/miou"]["value"] == 68.5


@pytest.mark.parametrize("launcher", ["joblib", "submitit_slurm", "basic"])
def test_hydra_launchers_compose(launcher):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("config", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert launcher.split("_")[0] in cfg.hydra.launcher._target_.lower()


@pytest.mark.parametrize("dataset,method", [("voc12", "cam"), ("voc12", "recam"), ("synthetic", "cam"),
                                            ("synthetic", "recam")])
def test_stated_threshold_and_scales_come_from_the_dataset(tmp_path, dataset, method):
    cfg = compose_cfg(tmp_path, f"dataset={dataset}", f"cam={method}", "dataset.root=/data/voc")
    assert cfg.cam.threshold == cfg.dataset.seeds.threshold[method]
    assert list(cfg.cam.scales) == list(cfg.dataset.seeds.scales)
    if dataset == "voc12":  # the references' values (algorithms.md §3-4)
        assert cfg.cam.threshold == {"cam": 0.15, "recam": 0.21}[method]
        assert list(cfg.cam.scales) == [1.0, 0.5, 1.5, 2.0]
    cfg = compose_cfg(tmp_path, f"dataset={dataset}", f"cam={method}", "cam.threshold=0.3", "cam.scales=[1.0]")
    assert cfg.cam.threshold == 0.3 and list(cfg.cam.scales) == [1.0]


def test_ir_label_offsets_come_from_the_dataset_and_voc_small_pins_its_calibration(tmp_path):
    cfg = compose_cfg(tmp_path, "dataset=voc12", "refine=crf", "dataset.root=/data/voc")
    assert (cfg.refine.fg_offset, cfg.refine.bg_offset) == (0.15, 0.10)  # IRN's 0.30 / 0.05 at τ 0.15
    for method, tau in (("cam", 0.34), ("recam", 0.43)):
        cfg = compose_cfg(tmp_path, "experiment=voc_small", f"cam={method}", "refine=crf", "dataset.root=/data/voc")
        assert cfg.cam.threshold == tau and list(cfg.cam.scales) == [1.0, 0.5, 1.5]
        assert (cfg.refine.fg_offset, cfg.refine.bg_offset) == (0.0, 0.10)
    t = cfg.cam.train
    assert (t.sce_init, t.sce_init_steps, t.optimizer, t.momentum, t.epochs) == ("sgd", 2644, "sgd", 1e-4, 4)
    cfg = compose_cfg(tmp_path, "experiment=voc_small", "refine=crf", "refine.fg_threshold=0.3",
                      "dataset.root=/data/voc")
    assert cfg.refine.fg_threshold == 0.3  # absolute thresholds still win


def test_a_root_given_to_the_synthetic_dataset_is_an_error_naming_the_fix(tmp_path):
    """Before, `dataset.root=...` without `dataset=voc12` ran on the synthetic data (and reused its classifier)."""
    with pytest.raises(ConfigError, match=r"dataset=synthetic .* reads no root: add dataset=voc12"):
        validate(compose_cfg(tmp_path, "dataset.root=/data/voc"))
    validate(compose_cfg(tmp_path, "dataset=voc12", "dataset.root=/data/voc"))


def test_added_keys_that_no_stage_reads_are_refused_with_the_nearest_real_key(tmp_path):
    from wsss.errors import UserError
    from wsss.overrides import check_added_keys

    cfg = compose_cfg(tmp_path, "cam=recam", "+cam.treshold=0.2")
    with pytest.raises(UserError, match=r"\+cam.treshold=0.2: no stage reads .* did you mean cam.threshold=0.2\?"):
        check_added_keys(["cam=recam", "+cam.treshold=0.2"], cfg)
    with pytest.raises(UserError, match="did you mean cam.threshold"):
        check_added_keys(["++cam.treshold=0.2"], compose_cfg(tmp_path, "++cam.treshold=0.2"))
    # read: Trainer / logger arguments (their constructors check them), config groups, `++` on declared keys
    fine = ["+trainer.enable_progress_bar=false", "+experiment=voc_small", "++cam.train.epochs=1", "cam=recam",
            "++refine.ir_labels.label_crf.gt_prob=0.8", "++cls.min_steps=10", "~cam.precision"]
    check_added_keys(fine, compose_cfg(tmp_path))


def test_no_tracked_file_is_ignored_by_gitignore():
    """A .gitignore line that matches a tracked file (conf/config.yaml was reported) hides its edits from `git add`."""
    import shutil
    import subprocess

    root = Path(CONF).parent
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    res = subprocess.run(["git", "ls-files", "-ci", "--exclude-standard"], cwd=root, capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout == ""
