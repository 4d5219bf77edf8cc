from __future__ import annotations

from pathlib import Path

import pytest

from wsss.config import compose

VOC200 = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "voc200"

# a dataset and recipe small enough for a stage to run in seconds on CPU
TINY = [
    "dataset.generator.num_train_aug=24", "dataset.generator.num_train=8", "dataset.generator.num_val=8",
    "dataset.generator.min_size=48", "dataset.generator.max_size=64",
    "cls.batch_size=4", "cls.epochs=1", "cls.crop_size=64", "cls.resize_long=[48,80]",
    "cam.scales=[1.0,0.5]", "seg.max_steps=3", "seg.batch_size=4", "seg.crop_size=48", "seg.val_every_n_epochs=1",
    "num_workers=0", "trainer=cpu", "+trainer.enable_progress_bar=false",
    "+trainer.enable_model_summary=false",
]


def compose_cfg(tmp_path: Path, *overrides: str):
    """The real config, composed with paths inside tmp_path (no Hydra runtime needed)."""
    return compose([f"paths.root={tmp_path}", f"paths.run_dir={tmp_path}/run", *overrides])


def pytest_addoption(parser):
    parser.addoption("--heavy", action="store_true",
                     help="also run the tests marked heavy (outside CI's 10-minute budget)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--heavy"):
        return
    skip = pytest.mark.skip(reason="heavy: outside CI's 10-minute budget; run with --heavy")
    for item in items:
        if "heavy" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def tiny_cfg(tmp_path):
    return lambda *o: compose_cfg(tmp_path, *TINY, *o)


@pytest.fixture
def voc200():
    if not (VOC200 / "JPEGImages").is_dir():
        pytest.skip("../shared/data/voc200 is not present")
    return VOC200
