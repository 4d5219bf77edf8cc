"""`wsss ... dry_run=true`: what a run would do, computing nothing.

Per selected stage: whether it would be reused from the store, resumed (a stored output begun but not sealed;
for the per-image stages, with the images still to do), computed, or skipped (not needed for this config); on
how many images; and where its output lives. Nothing is written: no artifact, no synthetic dataset (its images
are counted from the generator's settings), no W&B run.
"""
from __future__ import annotations

from pathlib import Path

from wsss import artifacts
from wsss.stages import STAGES


def split_sizes(cfg) -> dict[str, int] | None:
    """Images per split, read from the split lists; the synthetic data's from its generator when it is not
    written yet; None when the dataset cannot be read (a missing root: the run itself would say so)."""
    from omegaconf import OmegaConf

    from wsss.data.voc import read_list

    d = cfg.dataset
    if d.name == "synthetic":
        from wsss.data import synthetic

        g = OmegaConf.to_container(d.generator, resolve=True)
        root = synthetic.dataset_dir(cfg.paths.data_dir, g)
        if not (root / "DONE").exists():
            return {"train_aug": g["num_train_aug"], "train": g["num_train"], "val": g["num_val"]}
    else:
        root = Path(d.root).expanduser() if d.get("root") else None
    lists = root / "ImageSets" / "Segmentation" if root else None
    if lists is None or not lists.is_dir():
        return None
    return {p.stem: len(read_list(p)) for p in sorted(lists.glob("*.txt"))}


def stage_splits(cfg, name: str) -> list[str]:
    """The splits whose images a stage goes through."""
    splits = {
        "train_cls": [cfg.dataset.splits.cls_train],
        "train_recam": [cfg.dataset.splits.cls_train],
        "make_prototypes": list(cfg.cam.get("prototype_splits") or []),
        "make_cam": list(cfg.cam.splits),
        "eval_cam": [cfg.eval_cam.split],
        "train_irn": list(cfg.pseudo.splits),
        "make_pseudo": list(cfg.pseudo.splits),
        "train_seg": [cfg.seg.train_split],
        "eval_seg": [cfg.seg.eval.split],
    }
    return splits[name]


def plan(cfg, stages: list[str]) -> list[dict]:
    """One row per selected stage: stage, action, images, where."""
    sizes = split_sizes(cfg)
    rows = []
    for name in stages:
        module = STAGES[name]
        splits = stage_splits(cfg, name)
        images = sum(sizes.get(s, 0) for s in splits) if sizes is not None else None
        if not getattr(module, "needed", lambda _: True)(cfg):
            rows.append({"stage": name, "action": "skipped (not needed)", "images": None, "where": ""})
            continue
        if module.STORED:
            art = artifacts.locate(cfg, name)
            action = ("recompute (force=true)" if cfg.force and art.path.exists() else
                      "reuse" if art.complete else "resume" if art.path.exists() else "compute")
            if action == "resume" and hasattr(module, "images_left"):  # per-image stages: what is still to do
                action = f"resume ({module.images_left(cfg, art.path)} images left)"
            where = str(art.path)
        else:
            action, where = "compute (in the run directory)", str(Path(cfg.paths.run_dir) / name)
        rows.append({"stage": name, "action": action, "images": images, "splits": splits, "where": where})
    return rows


def describe(rows: list[dict]) -> str:
    lines = ["dry run: nothing computed or written",
             f"  {'stage':<16}{'would':<32}{'images':>8}  output"]
    for r in rows:
        n = "?" if r["images"] is None and r["action"] != "skipped (not needed)" else (r["images"] or "")
        split = f" ({'+'.join(r['splits'])})" if r.get("splits") else ""
        lines.append(f"  {r['stage']:<16}{r['action']:<32}{n!s:>8}  {r['where']}{split if r['where'] else ''}")
    return "\n".join(lines)
