"""Command-line overrides that would change nothing: keys added with `+` / `++` that no stage reads.

Hydra's advice for a mistyped key (`cam.treshold=0.2`: "Key 'treshold' is not in struct") is to add it with
`+cam.treshold=0.2`; that runs, changes nothing, and the typo becomes a "setting" in the tables. Every key a
stage reads is declared in conf/ (optional ones with `null`), so an added key is read by nobody, except under
the groups that are passed whole to a constructor (`trainer`: Lightning's Trainer; `logger`: the logger class),
whose signature refuses a key it does not take. A `+group=option` adds a config group and is fine.
"""
from __future__ import annotations

import difflib
from functools import cache
from pathlib import Path

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from wsss.errors import UserError

CONF = Path(__file__).resolve().parent.parent / "conf"
PASSED_WHOLE = ("trainer.", "logger.")  # instantiated: the class's own arguments decide what is valid


def check_added_keys(overrides: list[str], cfg: DictConfig) -> None:
    """Raise a one-line UserError naming the first added key that no stage reads, and the nearest real key."""
    for o in OverridesParser.create().parse_overrides(overrides):
        key = o.key_or_group
        if not (o.is_add() or o.is_force_add()) or key.startswith(PASSED_WHOLE) or is_group(key):
            continue
        if o.is_force_add() and is_declared(key):
            continue  # `++` on a key conf/ declares somewhere: an ordinary override
        real = [k for k in flat_keys(cfg) if k != key]
        near = difflib.get_close_matches(key, real, n=1, cutoff=0.6)
        hint = f"; did you mean {near[0]}={o.value()}?" if near else "; `wsss --help` lists the groups and keys"
        raise UserError(f"{o.input_line}: no stage reads the key {key} (added with "
                        f"{'++' if o.is_force_add() else '+'}, it would change nothing){hint}")


def is_group(key: str) -> bool:
    return (CONF / key.replace(".", "/")).is_dir()


def flat_keys(cfg) -> list[str]:
    """Every dotted key of a config (values unresolved: interpolations are not evaluated)."""
    def walk(node, prefix):
        for k, v in node.items():
            path = f"{prefix}{k}"
            yield path
            if isinstance(v, dict):
                yield from walk(v, f"{path}.")
    container = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else cfg
    return list(walk(container, ""))


@cache
def declared_keys() -> frozenset[str]:
    """Dotted keys declared by any file of conf/: a group's files under the group's name, the primary config
    and `@package _global_` presets at the top, and a file used inside another (`crf@ir_labels`) under any
    prefix of its own group's name (so refine.ir_labels.label_crf.gt_prob is declared by refine/crf.yaml)."""
    keys = set()
    for path in CONF.rglob("*.yaml"):
        text = path.read_text()
        data = yaml.safe_load(text) or {}
        group = path.parent.relative_to(CONF).as_posix().replace("/", ".")
        for k in flat_keys(data):
            if k == "defaults" or k.startswith("defaults."):
                continue
            keys.add(k)
            if group != "." and "@package _global_" not in text:
                keys.add(f"{group}.{k}")
                keys.add(f"{group}.*.{k}")
    return frozenset(keys)


def is_declared(key: str) -> bool:
    """A key some file of conf/ declares, at its place or one level down inside its group (`group.X.key`)."""
    if key in declared_keys():
        return True
    head, _, rest = key.partition(".")
    _, _, tail = rest.partition(".")  # group.<anything>.tail
    return bool(tail) and f"{head}.*.{tail}" in declared_keys()
