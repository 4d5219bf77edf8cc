"""`dry_run=true` (wsss/dry_run.py): per stage reuse / resume / compute / skipped, images, where; nothing written."""
from wsss import artifacts
from wsss.dry_run import plan
from wsss.pipeline import run_pipeline


def test_dry_run_writes_nothing_and_reads_the_store(tiny_cfg, tmp_path, capsys):
    cfg = tiny_cfg("dry_run=true")
    assert run_pipeline(cfg) == {}
    out = capsys.readouterr().out
    assert "dry run: nothing computed or written" in out
    assert not (tmp_path / "artifacts").exists() and not (tmp_path / "data").exists() and not (tmp_path / "run").exists()
    rows = {r["stage"]: r for r in plan(cfg, ["train_cls", "train_recam", "make_cam", "eval_cam", "eval_seg"])}
    assert rows["train_cls"]["action"] == "compute" and rows["train_cls"]["images"] == 24  # train_aug, generator's count
    assert rows["make_cam"]["images"] == 8 and rows["eval_seg"]["images"] == 8
    assert rows["train_recam"]["action"] == "skipped (not needed)"  # cam=cam
    assert rows["eval_cam"]["action"].startswith("compute (in the run directory)")
    assert rows["make_cam"]["where"] == str(artifacts.locate(cfg, "make_cam").path)

    run_pipeline(tiny_cfg("stages=[train_cls]"))  # now the classifier is stored
    artifacts.locate(cfg, "make_cam").path.mkdir(parents=True)  # and make_cam begun, not sealed
    rows = {r["stage"]: r for r in plan(cfg, ["train_cls", "make_cam"])}
    assert rows["train_cls"]["action"] == "reuse" and rows["make_cam"]["action"] == "resume (8 images left)"
    # files already written count as done: a few of each per-image stage's, touched
    from wsss.cam import seed_file
    from wsss.data import open_dataset
    from wsss.stages import eval_seg, make_prototypes, make_pseudo

    layout = open_dataset(cfg)
    seeds = artifacts.locate(cfg, "make_cam").path
    for i in layout.ids_of(cfg.cam.splits)[:3]:
        seed_file(seeds, i).touch()
    assert {r["stage"]: r for r in plan(cfg, ["make_cam"])}["make_cam"]["action"] == "resume (5 images left)"
    lpcam = tiny_cfg("cam=lpcam")
    split = cfg.seg.eval.split
    for module, c, ids, done in (
            (make_pseudo, cfg, layout.ids_of(cfg.pseudo.splits), make_pseudo.label_file),
            (make_prototypes, lpcam, make_prototypes.prototype_ids(lpcam, layout), make_prototypes.feature_file),
            (eval_seg, cfg, layout.ids(split), lambda d, i: eval_seg.pred_file(d, split, i))):
        out = tmp_path / module.__name__
        for i in ids[:2]:
            done(out, i).parent.mkdir(parents=True, exist_ok=True)
            done(out, i).touch()
        assert len(ids) > 2 and module.images_left(c, out) == len(ids) - 2, module.__name__
    forced = {r["stage"]: r for r in plan(tiny_cfg("force=true"), ["train_cls"])}
    assert forced["train_cls"]["action"] == "recompute (force=true)"
