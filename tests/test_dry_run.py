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
    assert rows["train_cls"]["action"] == "reuse" and rows["make_cam"]["action"] == "resume"
    forced = {r["stage"]: r for r in plan(tiny_cfg("force=true"), ["train_cls"])}
    assert forced["train_cls"]["action"] == "recompute (force=true)"
