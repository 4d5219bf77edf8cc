import json

import numpy as np
import pytest
from PIL import Image

from wsss.io import TEMP_SUFFIX, load_label_png, load_seed, read_json, save_label_png, save_seed, write_json


def test_seed_round_trip_is_float16_without_pickle(tmp_path):
    keys = np.array([2, 5])
    high = np.random.default_rng(0).random((2, 13, 17)).astype(np.float32)
    strided = high[:, ::4, ::4]
    save_seed(tmp_path / "a.npz", keys, high, strided)
    with np.load(tmp_path / "a.npz", allow_pickle=False) as z:
        assert set(z.files) == {"keys", "high_res", "strided"}
        assert z["keys"].dtype == np.int64 and z["high_res"].dtype == np.float16
    s = load_seed(tmp_path / "a.npz")
    np.testing.assert_array_equal(s["keys"], keys)
    np.testing.assert_allclose(s["high_res"], high, atol=1e-3)
    assert s["strided"].shape == (2, 4, 5)


def test_truncated_seed_names_the_file(tmp_path):
    save_seed(tmp_path / "a.npz", np.array([1]), np.ones((1, 4, 4)), np.ones((1, 1, 1)))
    data = (tmp_path / "a.npz").read_bytes()
    (tmp_path / "a.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="a.npz"):
        load_seed(tmp_path / "a.npz")


def test_seed_keys_must_match_maps(tmp_path):
    with pytest.raises(ValueError):
        save_seed(tmp_path / "a.npz", np.array([1, 2]), np.ones((1, 4, 4)), np.ones((1, 1, 1)))


def test_label_png_is_palette_and_keeps_255(tmp_path):
    label = np.array([[0, 1, 20], [255, 3, 0]], np.uint8)
    save_label_png(tmp_path / "l.png", label)
    img = Image.open(tmp_path / "l.png")
    assert img.mode == "P"
    assert img.getpalette()[3:6] == [128, 0, 0]  # VOC colour of class 1
    np.testing.assert_array_equal(load_label_png(tmp_path / "l.png"), label)


def test_rgb_label_png_is_refused(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="mode RGB"):
        load_label_png(tmp_path / "rgb.png")


def test_json_write_is_atomic_and_leaves_no_temp(tmp_path):
    write_json(tmp_path / "m.json", {"a/b": 1.5})
    assert read_json(tmp_path / "m.json") == {"a/b": 1.5}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_temporary_names_never_match_an_artifact_pattern(tmp_path):
    from wsss.io import artifact_files, atomic_path, is_temporary, sweep_temporary  # noqa: I001

    for name in ("a.npz", "labels/b.png", "model.ckpt"):
        with pytest.raises(RuntimeError), atomic_path(tmp_path / name) as tmp:
            assert is_temporary(tmp) and tmp.parent == (tmp_path / name).parent
            assert not tmp.match("*.npz") and not tmp.match("*.png") and not tmp.match("*.ckpt")
            raise RuntimeError("the writer fails")  # the context removes its temporary file
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]

    save_seed(tmp_path / "s.npz", np.array([1]), np.zeros((1, 4, 4)), np.zeros((1, 1, 1)))
    stale = tmp_path / "labels" / f".x.png.abc123{TEMP_SUFFIX}"  # what a killed writer leaves
    stale.write_bytes(b"PK half")
    assert artifact_files(tmp_path, "**/*") == [tmp_path / "s.npz"]
    assert sweep_temporary(tmp_path) == [stale] and not stale.exists()
    assert (tmp_path / "s.npz").exists()


def _bump_under_lock(lock, counter, times):
    from wsss.io import exclusive_lock

    for _ in range(times):
        with exclusive_lock(lock):
            n = int(counter.read_text())
            counter.write_text(str(n + 1))


def test_exclusive_lock_excludes_and_leaves_no_lock_file(tmp_path):
    """Three processes, each deleting the lock file on release, never hold the lock at once (no lost update)."""
    import multiprocessing as mp

    counter, lock = tmp_path / "n", tmp_path / "x.lock"
    counter.write_text("0")
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_bump_under_lock, args=(lock, counter, 200)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert counter.read_text() == "600" and not lock.exists()


def test_failed_run_leaves_no_empty_artifact_folder_and_no_lock_file(tmp_path):
    from tests.conftest import compose_cfg
    from wsss.errors import UserError
    from wsss.pipeline import run_pipeline

    cfg = compose_cfg(tmp_path, "dataset=voc12", f"dataset.root={tmp_path}/nope", "stages=[train_cls]")
    with pytest.raises(UserError, match="does not exist"):
        run_pipeline(cfg)
    assert not (tmp_path / "artifacts").exists()
    assert not list(tmp_path.rglob("*.lock"))
    assert json.loads((tmp_path / "run" / "artifacts.json").read_text()) == {}  # every run has one


def _remove_and_recreate(root, rounds, failures):
    from wsss.io import make_dirs, remove_empty_dirs

    for _ in range(rounds):
        try:
            make_dirs(root / "store" / "stage")
            remove_empty_dirs(root / "store" / "stage", root / "store")
        except OSError as e:  # what Path.mkdir(parents=True, exist_ok=True) raised here before make_dirs
            failures.put(repr(e))


def test_make_dirs_survives_a_parallel_clean_up_of_the_same_folders(tmp_path):
    """One job's failed first run removes the empty store folders while another creates them (a joblib sweep on a
    fresh store): the creator must not fail."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    failures = ctx.Queue()
    procs = [ctx.Process(target=_remove_and_recreate, args=(tmp_path, 1500, failures)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert failures.empty() and all(p.exitcode == 0 for p in procs)


def test_a_failed_stage_keeps_its_files_and_drops_its_empty_folders(tmp_path):
    from wsss.io import remove_empty_subdirs

    (tmp_path / "labels" / "deep").mkdir(parents=True)
    (tmp_path / "overlays").mkdir()
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "a.png").write_bytes(b"x")
    remove_empty_subdirs(tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["kept", "kept/a.png"]


def test_atomic_files_get_the_umasks_mode_not_mkstemps_0600(tmp_path):
    """metrics.json, artifacts.json and the PNGs were 0600: unreadable to a group sharing the results."""
    import os
    import stat

    from wsss.io import FILE_MODE, atomic_path

    with atomic_path(tmp_path / "metrics.json") as tmp:
        tmp.write_text("{}")
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # what open() gives under this process's umask
    assert stat.S_IMODE(os.stat(tmp_path / "metrics.json").st_mode) == stat.S_IMODE(os.stat(plain).st_mode) == FILE_MODE
