"""Benchmark tables from the `metrics.json` of runs and sweeps (contract.md; local files only).

    python scripts/make_tables.py DIR... [--format md|csv|latex] [--per-class eval_cam/train]

Every run directory below the given ones (a directory holding `metrics.json`) is one run. Runs
with the same settings (their Hydra overrides, minus `seed` and paths) form one row, labelled by the
overrides that set it apart (those all rows share are printed above the table): the mean ±
sample standard deviation over seeds of each headline metric, n the number of distinct seeds, the paper's
figure where the experiment preset records one (`paper:` block; "?" marks unconfirmed ones), and
protocol columns (split, τ source, CRF, scales/flip, backbone, initialisation).

Runs of one setting with the same seed are one measurement: each figure is the latest run's that has it (a
re-run that reused everything from the store repeats, it does not measure again; stderr says which runs were
merged). Timings (seconds) of a stage a run reused from the store are left out: they are the timing of the
run that made it, under whatever load that run had. Figures the ground truth helped choose (the sweep's best
τ and its scores; with `pseudo.threshold_source=swept` everything downstream of that τ) say "GT-tuned".
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from pathlib import Path

import yaml

from wsss.keys import is_tuned_on_gt

HEADLINE = ["eval_cam/{split}/miou", "eval_cam/{split}/miou_best", "eval_cam/{split}/threshold_best",
            "make_cam/seconds_per_image", "make_pseudo/{split}/miou", "eval_seg/{split}/miou"]
NOT_A_SETTING = ("seed=", "stages=", "paths.", "trainer.enable_progress_bar", "trainer.enable_model_summary",
                 "hydra.", "dataset.root=", "dataset.sbd_root=", "force=", "num_workers=", "refine.workers=",
                 "refine.ir_labels.workers=",
                 "logger", "eval_cam.num_overlays=", "pseudo.num_overlays=", "hydra/", "resume_every_n_steps=")


LATEX = {"\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "{": r"\{", "}": r"\}",
         "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "$": r"\$", "±": r"$\pm$", "τ": r"$\tau$"}


def find_runs(dirs) -> list[Path]:
    runs = []
    for d in dirs:
        d = Path(d)
        if not d.exists():
            sys.exit(f"make_tables: {d} does not exist")
        runs += sorted(p.parent.resolve() for p in d.rglob("metrics.json"))
    runs = list(dict.fromkeys(runs))  # overlapping arguments: each run once
    if not runs:
        sys.exit(f"make_tables: no metrics.json under {', '.join(map(str, dirs))}; pass run or sweep directories")
    return runs


def load_run(run: Path) -> dict:
    hydra = run / ".hydra"
    overrides = yaml.safe_load((hydra / "overrides.yaml").read_text()) if (hydra / "overrides.yaml").exists() else []
    config = (yaml.safe_load((hydra / "config.yaml").read_text()) if (hydra / "config.yaml").exists() else {}) or {}
    setting = tuple(sorted(o for o in overrides if not o.lstrip("+~").startswith(NOT_A_SETTING)))
    metrics = json.loads((run / "metrics.json").read_text())
    used = json.loads((run / "artifacts.json").read_text()) if (run / "artifacts.json").exists() else {}
    reused = {stage for stage, entry in used.items() if isinstance(entry, dict) and entry.get("reused")}
    metrics = {k: v for k, v in metrics.items() if not (is_timing(k) and stage_of(k) in reused)}
    return {"dir": run, "metrics": metrics, "setting": setting, "paper": config.get("paper") or {},
            "seed": run_seed(config, overrides, metrics, run), "mtime": (run / "metrics.json").stat().st_mtime,
            "class_names": (config.get("dataset") or {}).get("class_names") or []}


def run_seed(config: dict, overrides: list[str], metrics: dict, run: Path):
    """The run's seed (its config, else its overrides, else its metrics); a run that says none is its own."""
    if "seed" in config:
        return config["seed"]
    given = [o.split("=", 1)[1] for o in overrides if o.startswith("seed=")]
    if given:
        return int(given[-1])
    return metrics.get("protocol/seed", f"unknown ({run})")


def is_timing(key: str) -> bool:
    return key.startswith("time/") or "seconds" in key.split("/")[-1]


def stage_of(key: str) -> str:
    return key.split("/")[1] if key.startswith("time/") else key.split("/")[0]


def one_per_seed(members: list[dict]) -> list[dict]:
    """The runs of one setting merged per seed: each figure from the latest run that has it."""
    by_seed: dict = {}
    for r in sorted(members, key=lambda r: r["mtime"]):
        by_seed.setdefault(r["seed"], []).append(r)
    merged = []
    for seed, runs in by_seed.items():
        if len(runs) > 1:
            print(f"make_tables: {len(runs)} runs of one setting with seed {seed} count once (latest figure of each "
                  f"key): {', '.join(str(r['dir']) for r in runs)}", file=sys.stderr)
        metrics: dict = {}
        for r in runs:
            metrics.update(r["metrics"])
        merged.append({**runs[-1], "metrics": metrics})
    return merged


def mean_std(values: list[float]) -> tuple[float, float | None]:
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, None
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def fmt(m: float, s: float | None, digits: int = 1) -> str:
    return f"{m:.{digits}f}" if s is None else f"{m:.{digits}f} ± {s:.{digits}f}"


def digits(key: str) -> int:
    """Decimals of a column: mIoU in % to 0.1, thresholds and seconds to 0.01."""
    return 2 if key.endswith(("threshold_best", "seconds_per_image")) else 1


def protocol(metrics: dict) -> dict:
    g = metrics.get
    source = g("protocol/make_pseudo/threshold_source") or "fixed"
    split = g("protocol/eval_cam/split") or (g("protocol/make_pseudo/splits") or "?").split(",")[0]
    return {"method": g("protocol/cam/method", "?"), "split": split,
            "τ source": "GT-swept" if source == "swept" else "stated",
            "refine": g("protocol/make_pseudo/refine", "—"), "scales+flip": g("protocol/cam/scales", "?"),
            "backbone": g("protocol/backbone", "?"), "init": g("protocol/init", "?")}


def group_runs(runs: list[dict]) -> tuple[dict[str, list[dict]], list[str]]:
    """Runs grouped by setting, each labelled by what sets it apart; and the overrides all share."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault(r["setting"], []).append(r)
    common = set.intersection(*(set(k) for k in groups)) if len(groups) > 1 else set()
    labelled = {", ".join(o for o in k if o not in common) or "(defaults)": one_per_seed(v) for k, v in groups.items()}
    return labelled, sorted(common)


def build_rows(runs: list[dict]) -> tuple[list[str], list[list[str]]]:
    groups, _ = group_runs(runs)
    split = next((r["metrics"]["protocol/eval_cam/split"] for r in runs if "protocol/eval_cam/split" in r["metrics"]),
                 "train")
    keys = [k.format(split=split) for k in HEADLINE]
    keys += [k.replace(f"/{split}/", "/val/") for k in keys if k.startswith("eval_seg")]
    keys = [k for k in dict.fromkeys(keys) if any(k in r["metrics"] for r in runs)]
    header = ["setting", "n"] + [f"{k} (GT-tuned)" if is_tuned_on_gt(k) else k for k in keys] + ["paper"]
    header += list(protocol({}).keys())
    rows = []
    for label, members in groups.items():
        cells = [label, str(len(members))]
        for k in keys:
            values = [r["metrics"][k] for r in members if k in r["metrics"]]
            tuned = not is_tuned_on_gt(k) and any(is_tuned_on_gt(k, r["metrics"]) for r in members)
            cells.append((fmt(*mean_std(values), digits(k)) + (" GT-tuned" if tuned else "")) if values else "—")
        cells.append(_paper(members[0]["paper"], keys))
        cells += list(protocol(members[0]["metrics"]).values())
        rows.append(cells)
    return header, rows


def _paper(paper: dict, keys: list[str]) -> str:
    out = []
    for k in keys:
        entry = paper.get(k)
        if isinstance(entry, dict) and "value" in entry:
            out.append(f"{k.split('/')[0]} {entry['value']}{'' if entry.get('confirmed') else '?'}")
    return ", ".join(out) or "—"


def per_class_rows(runs: list[dict], prefix: str) -> tuple[list[str], list[list[str]]]:
    """One row per class (background first, then the dataset's order), one column per setting: readable at
    COCO's 80 classes as at VOC's 20."""
    found = dict.fromkeys(k.split("/iou/")[1] for r in runs for k in r["metrics"] if k.startswith(f"{prefix}/iou/"))
    order = ["background", *next((r["class_names"] for r in runs if r["class_names"]), [])]
    names = [n for n in order if n in found] + [n for n in found if n not in order]  # metrics.json is key-sorted
    if not names:
        sys.exit(f"make_tables: no per-class IoU under {prefix}/iou/ in these runs")
    groups, _ = group_runs(runs)
    rows = []
    for n in names:
        row = [n]
        for members in groups.values():
            values = [r["metrics"][f"{prefix}/iou/{n}"] for r in members if f"{prefix}/iou/{n}" in r["metrics"]]
            row.append(f"{mean_std(values)[0]:.1f}" if values else "—")
        rows.append(row)
    return [f"{prefix} IoU"] + list(groups), rows


def render(header: list[str], rows: list[list[str]], kind: str) -> str:
    if kind == "csv":
        buf = io.StringIO()
        csv.writer(buf).writerows([header, *rows])
        return buf.getvalue()
    if kind == "latex":
        esc = lambda s: "".join(LATEX.get(c, c) for c in s)  # noqa: E731
        lines = [r"\begin{tabular}{" + "l" * len(header) + "}", r"\toprule", " & ".join(map(esc, header)) + r" \\",
                 r"\midrule", *[" & ".join(map(esc, r)) + r" \\" for r in rows], r"\bottomrule", r"\end{tabular}"]
        return "\n".join(lines) + "\n"
    cell = lambda s: s.replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(cell, r)) + " |" for r in rows]) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dirs", nargs="+", help="run or sweep directories (searched recursively for metrics.json)")
    ap.add_argument("--format", choices=["md", "csv", "latex"], default="md")
    ap.add_argument("--per-class", metavar="STAGE/SPLIT", help="also a per-class IoU table, e.g. eval_cam/train")
    args = ap.parse_args(argv)
    runs = [load_run(r) for r in find_runs(args.dirs)]
    common = group_runs(runs)[1]
    if common and args.format != "csv":
        note = "common settings: " + ", ".join(common)
        print(f"% {note}" if args.format == "latex" else f"{note}\n")
    print(render(*build_rows(runs), args.format), end="")
    if args.per_class:
        print()
        print(render(*per_class_rows(runs, args.per_class), args.format), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
