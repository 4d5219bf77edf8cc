"""logger=wandb, offline: one finished run per job, grouped per sweep, with metrics, config, images."""
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY


def records(path: Path):
    """The protobuf records of an offline `.wandb` file (W&B's LevelDB-style log: 7-byte file header,
    32 KiB blocks, records with a 7-byte header: crc32, little-endian length, type full/first/middle/last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a W&B offline log"
    pos, block, chunk = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer padding
            pos += left
            continue
        length, kind = struct.unpack("<HB", data[pos + 4: pos + 7])
        if length == 0 and kind == 0:
            break
        chunk += data[pos + 7: pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # full or last
            rec = pb.Record()
            rec.ParseFromString(chunk)
            chunk = b""
            yield rec


def summarise(run_file: Path) -> dict:
    out = {"group": None, "exit": None, "config": set(), "history": set(), "images": 0}
    for rec in records(run_file):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out["group"] = rec.run.run_group
            out["config"] |= {u.key for u in rec.run.config.update}
        elif kind == "config":
            out["config"] |= {u.key for u in rec.config.update}
        elif kind == "history":
            out["history"] |= {i.key or "/".join(i.nested_key) for i in rec.history.item}
        elif kind == "exit":
            out["exit"] = rec.exit.exit_code
    media = run_file.parent / "files" / "media" / "images"
    out["images"] = len([p for p in media.rglob("*.png") if "mask" not in p.relative_to(media).parts])
    return out


@pytest.mark.slow
def test_offline_sweep_leaves_two_finished_runs_in_one_group(tmp_path):
    cmd = [sys.executable, "-m", "wsss", "-m", "seed=0,1", "logger=wandb", "logger.max_images=2", *TINY]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path,
                         env={**__import__("os").environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    assert res.returncode == 0, res.stderr[-3000:]
    runs = sorted((tmp_path / "outputs" / "multirun").glob("*/*/wandb/offline-run-*/run-*.wandb"))
    assert len(runs) == 2
    info = [summarise(r) for r in runs]
    assert info[0]["group"] and info[0]["group"] == info[1]["group"]
    for i in info:
        assert i["exit"] == 0  # finished, not crashed
        assert {"dataset", "cls", "cam", "seed"} <= i["config"]
        assert {"eval_cam/train/miou", "make_pseudo/train/miou", "eval_seg/val/miou"} <= i["history"]
        assert {"trainer/global_step", "train_cls/train/loss_epoch", "train_seg/train/loss_epoch"} <= i["history"]  # WandbLogger
        assert i["images"] == 2 * 3  # overlays, pseudo-labels, predictions (capped at 2 each)


@pytest.mark.slow
def test_failed_job_marks_its_run_failed_and_the_key_is_nowhere(tmp_path):
    key = "0123456789abcdef" * 2 + "feedbeef"  # a fake 40-character API key
    cmd = [sys.executable, "-m", "wsss", "logger=wandb", "stages=[make_cam]", *TINY]  # no classifier: fails
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env={**__import__("os").environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true",
                              "WANDB_API_KEY": key})
    assert res.returncode != 0
    run = next((tmp_path / "outputs" / "runs").glob("*/wandb/offline-run-*/run-*.wandb"))
    assert summarise(run)["exit"] == 1
    leaked = [p for p in tmp_path.rglob("*") if p.is_file() and key.encode() in p.read_bytes()]
    assert not leaked and key not in res.stdout + res.stderr


def test_mode_is_offline_without_an_api_key(monkeypatch, tmp_path):
    from wsss import tracking

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    assert tracking._mode(None) == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert tracking._mode(None) == "online"
    assert tracking._mode("disabled") == "disabled"
