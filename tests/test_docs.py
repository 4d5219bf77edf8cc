"""README.md and docs/: every relative link resolves (file and heading), and every config key or override they
show in backticks, and every `wsss` command of their code blocks, composes with the real config."""
from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tests.conftest import compose_cfg

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
TICKS = re.compile(r"`([^`\n]+)`")
TOP_KEYS = ("dataset", "cls", "cam", "refine", "pseudo", "seg", "trainer", "logger", "eval_cam", "paths", "stages",
            "seed", "force", "num_workers", "channels_last", "resume_every_n_steps", "experiment")
# options that bring keys of their own; a key or override is fine when it composes under one of them
VARIANTS = [(), *((f"cam={p.stem}",) for p in sorted((ROOT / "conf" / "cam").glob("*.yaml"))),
            ("refine=crf",), ("refine=irn",), ("logger=wandb",), ("logger=csv",), ("seg=deeplabv2_resnet101",),
            ("dataset=voc12", "dataset.root=/data/voc"), ("dataset=coco14", "dataset.root=/data/coco"),
            ("experiment=voc_small", "dataset.root=/data/voc"), ("experiment=recam_coco14", "dataset.root=/data/coco"),
            ("experiment=cam_voc12_irn", "dataset.root=/data/voc")]
PLACEHOLDER = re.compile(r"\.\.\.|<|>|…|\||PATH|DIR|\bN\b|\bS\b")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", path.read_text(), re.M)}


def links():
    for doc in DOCS:
        for target in LINK.findall(doc.read_text()):
            if not target.startswith(("http://", "https://", "mailto:")):
                yield doc, target


@pytest.mark.parametrize("doc,target", list(links()), ids=lambda v: v if isinstance(v, str) else v.name)
def test_relative_links_resolve(doc, target):
    path, _, anchor = target.partition("#")
    dest = (doc.parent / path).resolve() if path else doc
    assert dest.exists(), f"{doc.name}: link to {target}: no such file"
    if anchor:
        assert anchor in anchors(dest), f"{doc.name}: link to {target}: no such heading in {dest.name}"


def split_outside_brackets(text: str, sep: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += ch == "["
        depth -= ch == "]"
        if ch == sep and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    return [*parts, current]


def is_config_key(key: str) -> bool:
    return bool(re.fullmatch(r"[a-z_]+(\.[a-z_0-9]+)*", key)) and key.split(".")[0] in TOP_KEYS


def overrides_of_command(line: str) -> list[str]:
    """The overrides of a `wsss ...` command line (a sweep's first value of each list), comments dropped."""
    words = line.split("#")[0].split()[1:]
    out = []
    for w in words:
        if w == "-m" or w.startswith("-") or "=" not in w or PLACEHOLDER.search(w) or w.startswith(("hydra", "+")):
            continue
        key, value = w.split("=", 1)
        if is_config_key(key):
            out.append(f"{key}={split_outside_brackets(value, ',')[0]}")
    return out


def shown_config():
    """(doc, kind, text) of every backticked key / override and every `wsss` command line of the docs."""
    for doc in DOCS:
        text = doc.read_text()
        for block in re.findall(r"```(?:bash)?\n(.*?)```", text, re.S):
            for line in block.splitlines():
                if line.startswith("wsss "):
                    yield doc, "command", line
        for tick in TICKS.findall(re.sub(r"```.*?```", "", text, flags=re.S)):
            token = tick.strip()
            if token.startswith("wsss "):
                yield doc, "command", token
            elif re.fullmatch(r"[a-z_]+(\.[a-z_0-9]+)*=\S+", token) and not PLACEHOLDER.search(token):
                key, value = token.split("=", 1)
                if is_config_key(key):  # a sweep's list: its first value
                    yield doc, "override", f"{key}={split_outside_brackets(value, ',')[0]}"
            elif re.fullmatch(r"[a-z_]+(\.[a-z_0-9]+)+", token) and token.split(".")[0] in TOP_KEYS:
                yield doc, "key", token


@cache
def variant_cfg(tmp: str, variant: tuple[str, ...]):
    return compose_cfg(Path(tmp), *variant)


def has_key(cfg, key: str) -> bool:
    missing = object()
    return OmegaConf.select(cfg, key, default=missing, throw_on_missing=False) is not missing


def composes(tmp: Path, overrides: list[str]) -> bool:
    for variant in VARIANTS:
        try:
            cfg = compose_cfg(tmp, *variant, *overrides)
            OmegaConf.resolve(cfg)
            return True
        except (HydraException, OmegaConfBaseException, ValueError):
            continue
    return False


def test_every_key_override_and_command_in_the_docs_composes(tmp_path):
    failures = []
    for doc, kind, text in dict.fromkeys(shown_config()):
        if kind == "key":
            ok = any(has_key(variant_cfg(str(tmp_path), v), text) for v in VARIANTS)
        elif kind == "override":
            ok = composes(tmp_path, [text])
        else:
            ok = composes(tmp_path, overrides_of_command(text))
        if not ok:
            failures.append(f"{doc.name}: {kind} {text}")
    assert not failures, "\n".join(failures)
