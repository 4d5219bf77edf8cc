"""`wsss [OVERRIDES]` / `python -m wsss`: the Hydra app (configs in conf/, contract.md)."""
from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from wsss.pipeline import run_pipeline

# conf/ sits beside the package in a source checkout (editable install), as the layout prescribes
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    run_pipeline(cfg)


if __name__ == "__main__":
    main()
