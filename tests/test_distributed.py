"""The per-image stages across 2 CPU DDP processes (wsss/distributed.py): each rank writes its shard, each file
once, and the files are byte-identical to a single process's."""
import filecmp
import shutil
import subprocess
import sys

import pytest

from tests.conftest import TINY
from wsss.distributed import shard, worker_share
from wsss.io import artifact_files

IRN = ["refine.train.crop_size=80", "refine.train.batch_size=4", "refine.train.epochs=1", "refine.train.radius=5"]
DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true"]


def test_one_process_takes_every_image_and_the_whole_pool():
    ids = [f"i{k}" for k in range(7)]
    assert shard(ids) == ids
    assert worker_share(3) == 3 and worker_share(None) >= 1


def wsss(root, *overrides, ddp=False):
    base = [o for o in TINY if o != "trainer=cpu"] + (DDP if ddp else ["trainer=cpu"]) + ["cam=gradcampp"]
    res = subprocess.run([sys.executable, "-m", "wsss", f"paths.root={root}", *base, *overrides],
                         capture_output=True, text=True, timeout=600, cwd=root)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return res.stdout + res.stderr


def files(root, stage, pattern):
    return {p.relative_to(root / "artifacts" / stage): p for p in artifact_files(root / "artifacts" / stage, pattern)}


def assert_same_bytes(a, b):
    assert a.keys() == b.keys() and a
    for k in a:
        assert filecmp.cmp(a[k], b[k], shallow=False), k


@pytest.mark.slow
def test_per_image_stages_shard_over_two_processes_byte_identical(tmp_path):
    ddp_root, one_root = tmp_path / "ddp", tmp_path / "one"
    ddp_root.mkdir()
    # the classifier and the seeds on 2 processes (Lightning's DDP; a gradient method, whose predict loop leaves
    # inference mode on every rank); only rank 0 locks, writes and seals
    out = wsss(ddp_root, "stages=[train_cls,make_cam]", ddp=True)
    assert out.count("run directory:") == 1
    assert len(files(ddp_root, "make_cam", "*/*.npz")) == 8  # both ranks' shards
    # 2 processes again: Fabric starts them at train_irn (no Lightning stage has in this run); the IR labels,
    # the walk and eval_seg are sharded by rank, train_irn and train_seg trained by Lightning's DDP
    out = wsss(ddp_root, "refine=irn", *IRN, ddp=True)
    assert "rank 1 of 2" in out and "rank 0 of 2" in out
    out = wsss(ddp_root, "refine=crf", "stages=[make_pseudo]", ddp=True)  # the CRF's make_pseudo, sharded
    assert "rank 1 of 2" in out
    assert len(list((ddp_root / "artifacts").glob("*/*/manifest.json"))) == 7  # cls, cam, irn, 2 pseudo, seg, eval
    stored = {s: files(ddp_root, s, p) for s, p in (("train_irn", "*/ir_labels/*.png"),
                                                    ("make_pseudo", "*/labels/*.png"), ("eval_seg", "*/pred/*.png"))}
    assert len(stored["train_irn"]) == 8 and len(stored["make_pseudo"]) == 16 and len(stored["eval_seg"]) == 8

    # one process recomputes the same stages from the same stored inputs (force: written again from scratch)
    shutil.copytree(ddp_root, one_root)
    wsss(one_root, "refine=irn", *IRN, "stages=[make_pseudo,eval_seg]", "force=true")
    wsss(one_root, "refine=crf", "stages=[make_pseudo]", "force=true")
    assert_same_bytes(stored["make_pseudo"], files(one_root, "make_pseudo", "*/labels/*.png"))
    assert_same_bytes(stored["eval_seg"], files(one_root, "eval_seg", "*/pred/*.png"))
    from tests.conftest import compose_cfg
    from wsss import artifacts
    from wsss.data import open_dataset
    from wsss.stages.train_irn import make_ir_labels

    cfg = compose_cfg(one_root, *TINY, "cam=gradcampp", "refine=irn", *IRN)
    art = artifacts.locate(cfg, "train_irn")
    again = one_root / "ir_again"
    layout = open_dataset(cfg)
    make_ir_labels(cfg, layout, layout.ids_of(cfg.pseudo.splits), again)
    recomputed = {p.relative_to(again): p for p in artifact_files(again, "ir_labels/*.png")}
    ddp_art = ddp_root / "artifacts" / "train_irn" / art.key
    ddp_ir = {p.relative_to(ddp_art): p for p in artifact_files(ddp_art, "ir_labels/*.png")}
    assert_same_bytes(ddp_ir, recomputed)
