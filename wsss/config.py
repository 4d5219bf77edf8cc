"""The project's Hydra configs (conf/), composed outside the `wsss` app: for scripts/ and tests/."""
from __future__ import annotations

from pathlib import Path

# conf/ sits beside the package in a source checkout (editable install), as the layout prescribes
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def compose(overrides: list[str]):
    """The config `wsss OVERRIDES` would run with (without Hydra's runtime: no run directory is made)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides))
