"""The three figures of a WSSS paper, from the stored artifacts of finished runs and sweeps (local files only).

    python scripts/make_figure.py DIR... [--ids ID ...] [--num-ids N] [--stage eval_cam|make_pseudo|eval_seg]
                                  [--format png|pdf] [--out FILE_OR_DIR]

Every directory below the given ones that holds `metrics.json` is one job, labelled as scripts/make_tables.py
labels its rows: by the overrides that set it apart from the others (a setting run with several seeds gives one
column per seed). One command writes, atomically, and prints the paths of:

1. `qualitative_<stage>.<format>`: a grid. Rows are images, columns the image, its ground truth, then one column
   per job showing, for `--stage eval_cam` (default), the job's seeds (its make_cam artifact) thresholded at the
   job's stated τ (`cam.threshold`, the value eval_cam used); for `make_pseudo` its pseudo-labels; for `eval_seg`
   its predictions. Label maps are in the VOC palette, 255 in the ground truth as "void", 255 in a pseudo-label as
   "unsure" (magenta), with a legend of the classes shown. Each job's cell is captioned with that image's mIoU:
   one image's confusion against its ground truth, GT 255 ignored, a pseudo-label's 255 counted as background
   (as make_pseudo's `miou`), classes absent from both skipped. The rows are, unless `--ids` names them, the
   first N (`--num-ids`, 4) ids of the evaluated split in list order: a fixed choice, not the best-looking ids.
2. `threshold_curves.<format>`: each job's seed mIoU against the background threshold τ (eval_cam's curve.json,
   swept on the ground truth), one line per job, a dot on each at its stated τ.
3. `per_class_iou_<stage>.<format>`: per-class IoU (%) of the stage's metrics (`<stage>/<split>/iou/<class>`),
   classes as rows (background first, the dataset's order), jobs as columns.

Default output folder: `<first DIR>/figures/`; `--out FILE.png` names the grid (the other two go beside it),
`--out DIR` the folder. Jobs without the stage's artifact (or figures) are left out with a note on stderr.
"""
from __future__ import annotations

import argparse
import re
import sys
import textwrap
import warnings
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_tables  # noqa: E402

from wsss.cam import seed_file  # noqa: E402
from wsss.data import dataset_identity, open_dataset  # noqa: E402
from wsss.errors import UserError  # noqa: E402
from wsss.io import atomic_path, load_label_png, load_rgb, load_seed, read_json  # noqa: E402
from wsss.metrics import IGNORE, confusion, scores, threshold_cams  # noqa: E402
from wsss.stages.eval_seg import pred_file  # noqa: E402
from wsss.stages.make_pseudo import label_file  # noqa: E402
from wsss.viz import UNSURE, UNSURE_NAME, VOID, VOID_NAME, colour_labels, legend  # noqa: E402

STAGES = ("eval_cam", "make_pseudo", "eval_seg")
ARTIFACT_OF = {"eval_cam": "make_cam", "make_pseudo": "make_pseudo", "eval_seg": "eval_seg"}
CELL_WHAT = {"eval_cam": "seeds thresholded at its stated τ (cam.threshold)", "make_pseudo": "pseudo-labels",
             "eval_seg": "segmentation predictions"}
NUM_IDS = 4
TILE_HEIGHT = 120  # px: every tile is scaled to this height (nearest for label maps), which keeps the files small
DPI = 100
HYDRA_VALUE = re.compile(r"\$\{hydra:([^}]+)\}")
PATH_KEYS = ("paths.root", "paths.data_dir", "paths.artifacts_dir", "dataset.root", "dataset.sbd_root")


def note(message: str) -> None:
    print(f"make_figure: {message}", file=sys.stderr)


# ---------------------------------------------------------------- jobs
@dataclass
class Job:
    label: str
    dir: Path
    cfg: DictConfig
    metrics: dict
    used: dict  # artifacts.json: stage → {"path", "reused", ...}
    cwd: Path   # where the job was launched: relative paths in its config are relative to it (no chdir)


def natural_key(path: Path) -> list:
    """Sweep jobs in their order (2_... before 10_...)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def find_job_dirs(dirs: list[str]) -> list[Path]:
    for d in dirs:
        if not Path(d).exists():
            sys.exit(f"make_figure: {d} does not exist; pass run or sweep directories (outputs/runs/<time>, "
                     "outputs/multirun/<time>)")
    if not any(next(Path(d).rglob("metrics.json"), None) for d in dirs):
        sys.exit(f"make_figure: no metrics.json under {', '.join(dirs)}; pass the directories of finished runs or "
                 "sweeps (outputs/runs/<time>, outputs/multirun/<time>)")
    return sorted(make_tables.find_runs(dirs), key=natural_key)


def load_jobs(dirs: list[str]) -> list[Job]:
    """Every run below `dirs`, labelled by the overrides that set it apart (make_tables' rows, one per seed)."""
    runs = [make_tables.load_run(d) for d in find_job_dirs(dirs)]
    groups, _ = make_tables.group_runs(runs)
    jobs = []
    for label, members in groups.items():
        for r in members:
            if not (r["dir"] / ".hydra" / "config.yaml").exists():
                note(f"{r['dir']}: no .hydra/config.yaml (not a wsss run directory); left out")
                continue
            cfg, cwd = load_config(r["dir"])
            used = read_json(r["dir"] / "artifacts.json") if (r["dir"] / "artifacts.json").exists() else {}
            name = label if len(members) == 1 else f"{label}, seed={r['seed']}"
            jobs.append(Job(name, r["dir"], cfg, r["metrics"], used, cwd))
    return jobs


def load_config(run: Path) -> tuple[DictConfig, Path]:
    """The run's saved config, usable outside a Hydra app: its `${hydra:...}` values (paths.root is
    `${hydra:runtime.cwd}`) taken from .hydra/hydra.yaml, and its relative paths made absolute against the
    directory the run was launched from (the pipeline does not chdir). Returns it and that directory."""
    raw = OmegaConf.to_container(OmegaConf.load(run / ".hydra" / "config.yaml"), resolve=False)
    hydra_file = run / ".hydra" / "hydra.yaml"
    hydra = OmegaConf.load(hydra_file) if hydra_file.exists() else OmegaConf.create(
        {"hydra": {"runtime": {"cwd": str(Path.cwd()), "output_dir": str(run)}}})
    if not hydra_file.exists():
        note(f"{run}: no .hydra/hydra.yaml; its relative paths are taken as relative to {Path.cwd()}")
    cfg = OmegaConf.create(_fill_hydra_values(raw, hydra, run))
    cwd = Path(OmegaConf.select(hydra, "hydra.runtime.cwd") or Path.cwd())
    for key in PATH_KEYS:
        value = OmegaConf.select(cfg, key, default=None)
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            OmegaConf.update(cfg, key, str(cwd / Path(value).expanduser()))
    return cfg, cwd


def _fill_hydra_values(node, hydra: DictConfig, run: Path):
    if isinstance(node, dict):
        return {k: _fill_hydra_values(v, hydra, run) for k, v in node.items()}
    if isinstance(node, list):
        return [_fill_hydra_values(v, hydra, run) for v in node]
    if not isinstance(node, str):
        return node

    def value(match: re.Match) -> str:
        found = OmegaConf.select(hydra, f"hydra.{match.group(1)}", default=None)
        if found is None:
            sys.exit(f"make_figure: {run}/.hydra/hydra.yaml has no hydra.{match.group(1)}, which its config uses")
        return str(found)

    return HYDRA_VALUE.sub(value, node)


def split_of(cfg: DictConfig, stage: str) -> str:
    """The split a stage scores (and the grid shows)."""
    return {"eval_cam": cfg.eval_cam.split, "make_pseudo": cfg.pseudo.eval_split, "eval_seg": cfg.seg.eval.split}[stage]


def artifact_dir(job: Job, stage: str) -> Path | None:
    """The stored artifact whose files the stage's cells show, or None (with a note) when the job has none."""
    name = ARTIFACT_OF[stage]
    entry = job.used.get(name)
    path = Path(entry["path"]) if isinstance(entry, dict) and entry.get("path") else None
    if path is not None and not path.is_absolute():
        path = job.cwd / path
    if path is None or not path.is_dir():
        missing = "has no" if path is None else f"names {path}, which is gone, as its"
        note(f"{job.dir}: artifacts.json {missing} {name} artifact; left out of the grid (run the job with "
             f"{name} among its stages)")
        return None
    return path


# ---------------------------------------------------------------- the grid, as data
@dataclass
class Cell:
    tile: np.ndarray  # H×W×3 uint8, TILE_HEIGHT rows
    caption: str


@dataclass
class Grid:
    ids: list[str]
    titles: list[str]         # "image", "ground truth", then one per job
    cells: list[list[Cell]]   # [row][column]
    legend: list[tuple]       # (rgb, name) of every colour shown
    split: str = ""
    note: str = ""            # how the rows and cells were chosen, for the footnote


def fit_height(rgb: np.ndarray, height: int = TILE_HEIGHT, nearest: bool = True) -> np.ndarray:
    """`rgb` scaled to `height` rows; nearest keeps a label map's colours exact."""
    h, w = rgb.shape[:2]
    size = (max(1, round(w * height / h)), height)
    method = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(rgb).resize(size, method))


def label_tile(label: np.ndarray, colour_255=VOID, height: int = TILE_HEIGHT) -> np.ndarray:
    return fit_height(colour_labels(label, colour_255), height)


def image_miou(gt: np.ndarray, pred: np.ndarray, num_labels: int) -> float:
    """One image's mIoU (%): GT 255 ignored, a prediction's 255 (unsure) counted as background, as make_pseudo's
    `miou` does; classes absent from both are nan and left out (wsss.metrics.scores). nan when all GT is 255."""
    conf = confusion(gt, np.where(pred == IGNORE, 0, pred), num_labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of no class: an image whose GT is all 255
        return 100 * scores(conf)["miou"]


def build_grid(ids: list[str], images: dict, gts: dict, columns: dict[str, dict], class_names: list[str],
               colour_255=VOID) -> Grid:
    """The grid's tiles and captions: per id the image, its ground truth, then each column's label map
    (`columns`: title → {id → label map, or None where the job has no file}), captioned with its mIoU."""
    num_labels = len(class_names) + 1
    cells, preds = [], []
    for img_id in ids:
        gt = gts[img_id]
        row = [Cell(fit_height(images[img_id], nearest=False), img_id), Cell(label_tile(gt), "")]
        for labels in columns.values():
            pred = labels.get(img_id)
            row.append(method_cell(pred, gt, num_labels, colour_255, row[0].tile.shape[1], img_id))
            preds += [] if pred is None else [pred]
        cells.append(row)
    entries = legend_entries([gts[i] for i in ids], preds, class_names, colour_255)
    return Grid(list(ids), ["image", "ground truth", *columns], cells, entries)


def method_cell(pred: np.ndarray | None, gt: np.ndarray, num_labels: int, colour_255, width: int,
                img_id: str) -> Cell:
    """A job's tile (grey, "no file", where it has none for the image) captioned with the image's mIoU."""
    if pred is None:
        return Cell(np.full((TILE_HEIGHT, width, 3), 200, np.uint8), "no file")
    if pred.shape != gt.shape:
        raise UserError(f"image {img_id}: a label map of shape {pred.shape} for a ground truth of shape {gt.shape}")
    miou = image_miou(gt, pred, num_labels)
    return Cell(label_tile(pred, colour_255), "mIoU —" if np.isnan(miou) else f"mIoU {miou:.1f}")


def legend_entries(gts: list[np.ndarray], preds: list[np.ndarray], class_names: list[str], colour_255) -> list[tuple]:
    """Every class shown, background first; 255 named as what it is where it shows (void, unsure)."""
    name_255 = {}
    if any((g == IGNORE).any() for g in gts):
        name_255[VOID] = VOID_NAME
    if any((p == IGNORE).any() for p in preds):
        name_255[tuple(colour_255)] = UNSURE_NAME if tuple(colour_255) == UNSURE else VOID_NAME
    return legend([*gts, *preds], class_names, name_255)


# ---------------------------------------------------------------- the grid, from the jobs
def stage_labels(job: Job, stage: str, artifact: Path, ids: list[str]) -> dict[str, np.ndarray | None]:
    """The label maps a job's cells show, per id; None where the artifact has no file for the image."""
    tau = stated_tau(job) if stage == "eval_cam" else None
    return {img_id: one_label_map(job, stage, artifact, img_id, tau) for img_id in ids}


def one_label_map(job: Job, stage: str, artifact: Path, img_id: str, tau: float | None) -> np.ndarray | None:
    if stage == "eval_cam":
        path = seed_file(artifact, img_id)
        if not path.exists():
            return None
        seed = load_seed(path)
        return threshold_cams(seed["high_res"].astype(np.float32), seed["keys"], tau).astype(np.uint8)
    path = label_file(artifact, img_id) if stage == "make_pseudo" else pred_file(artifact, split_of(job.cfg, stage),
                                                                                    img_id)
    return load_label_png(path) if path.exists() else None


def stated_tau(job: Job) -> float:
    """cam.threshold of the job's config: the τ its eval_cam scored (and its metrics record)."""
    tau = float(job.cfg.cam.threshold)
    recorded = job.metrics.get(f"eval_cam/{split_of(job.cfg, 'eval_cam')}/threshold")
    if recorded is not None and abs(recorded - tau) > 1e-9:
        note(f"{job.dir}: config says τ {tau} but eval_cam recorded {recorded}; the grid uses the config's")
    return tau


def usable_jobs(jobs: list[Job], stage: str) -> list[tuple[Job, Path]]:
    """Jobs that have the stage's artifact, on the same data as the first of them (ids name the same images)."""
    found = [(job, art) for job in jobs if (art := artifact_dir(job, stage)) is not None]
    if not found:
        sys.exit(f"make_figure: no job under {', '.join(str(j.dir) for j in jobs[:3])}"
                 f"{' ...' if len(jobs) > 3 else ''} has a {ARTIFACT_OF[stage]} artifact for --stage {stage}; "
                 f"run the jobs with {ARTIFACT_OF[stage]} among their stages or choose another --stage")
    first = dataset_identity(found[0][0].cfg)
    for job, _ in found[1:]:
        if dataset_identity(job.cfg) != first:
            note(f"{job.dir}: another dataset than {found[0][0].dir}'s; left out of the grid")
    return [(job, art) for job, art in found if dataset_identity(job.cfg) == first]


def collect_grid(jobs: list[Job], stage: str = "eval_cam", ids: list[str] | None = None,
                 num_ids: int = NUM_IDS) -> Grid:
    """The qualitative grid of `stage` for the jobs: the given ids, else the first `num_ids` of the split."""
    found = usable_jobs(jobs, stage)
    cfg = found[0][0].cfg
    split = split_of(cfg, stage)
    if split == "test":
        sys.exit(f"make_figure: {found[0][0].dir} evaluates the test split, which has no ground truth to compare with")
    layout = open_dataset(cfg)
    chosen = list(ids) if ids else layout.ids(split)[:num_ids]
    for img_id in chosen:
        if not layout.image_path(img_id).exists():
            sys.exit(f"make_figure: --ids {img_id}: no image {layout.image_path(img_id)} in the dataset of "
                     f"{found[0][0].dir}; give ids of its {split} split")
    images = {i: load_rgb(layout.image_path(i)) for i in chosen}
    gts = {i: layout.read_mask(i) for i in chosen}
    columns = {job.label: stage_labels(job, stage, art, chosen) for job, art in found}
    grid = build_grid(chosen, images, gts, columns, list(cfg.dataset.class_names),
                      UNSURE if stage == "make_pseudo" else VOID)
    grid.split = split
    rule = "the ids given (--ids)" if ids else f"the first {len(chosen)} ids of the {split} split, in list order"
    grid.note = (f"Rows: {rule}. Columns: each job's {CELL_WHAT[stage]}. Captions: the image's mIoU (%) vs the "
                 "ground truth (GT 255 ignored" + (", pseudo-label 255 as background" if stage == "make_pseudo"
                                                    else "") + ", classes absent from both skipped).")
    return grid


# ---------------------------------------------------------------- drawing
def save_figure(fig, path: Path, fmt: str, tight: bool = False) -> Path:
    with atomic_path(path) as tmp:  # the temporary name has no extension: the format is passed
        fig.savefig(tmp, format=fmt, dpi=DPI, **({"bbox_inches": "tight", "pad_inches": 0.1} if tight else {}))
    plt.close(fig)
    return path


def wrap(text: str, width_px: float, font_px: float = 6.2) -> str:
    """Prose broken into lines that fit `width_px` at about `font_px` per character."""
    return textwrap.fill(text, max(8, int(width_px / font_px)))


def wrap_label(label: str, width: int) -> str:
    """A job label (overrides joined by ", "; its own line breaks kept) in lines of about `width` characters:
    broken between overrides, and inside one longer than a line only after `=`, `_`, `/` or a `.` that is not a
    decimal point."""
    lines = []
    for text in label.split("\n"):
        line = ""
        for override in text.split(", "):
            pieces = [override] if len(override) <= width else re.findall(r".+?(?:[=_/]|\.(?!\d)|$)", override)
            for i, piece in enumerate(pieces):
                glue = ", " if line and i == 0 else ""
                if line and len(line) + len(glue) + len(piece) > width:
                    lines.append(line + glue.rstrip())
                    line, glue = "", ""
                line += glue + piece
        lines.append(line)
    return "\n".join(lines)


def draw_grid(grid: Grid, title: str, path: Path, fmt: str) -> Path:
    """Lay the tiles out in pixels (1 tile pixel = 1 figure pixel at DPI): titles on top, captions under
    each tile, the legend and the footnote below."""
    tile_w = max(c.tile.shape[1] for row in grid.cells for c in row)
    col_w, side, row_h = tile_w + 14, 12, TILE_HEIGHT + 24
    width = 2 * side + col_w * len(grid.titles)
    heads = [wrap_label(t, max(8, (col_w - 6) // 7)) for t in grid.titles]
    head_h = 13 * max(h.count("\n") + 1 for h in heads) + 8
    ncol = max(1, (width - 2 * side) // 190)
    legend_h = 17 * -(-len(grid.legend) // ncol) + 10
    foot = wrap(grid.note, width - 2 * side, 5.6)
    foot_h = 12 * (foot.count("\n") + 1) + 10
    top = 34 + head_h
    height = top + row_h * len(grid.cells) + legend_h + foot_h
    fig = plt.figure(figsize=(width / DPI, height / DPI))
    px = lambda x, y: (x / width, 1 - y / height)  # noqa: E731  (figure fraction of a pixel position from the top)
    fig.text(*px(side, 10), title, fontsize=10, weight="bold", va="top")
    for c, head in enumerate(heads):
        fig.text(*px(side + col_w * (c + 0.5), top - 4), head, fontsize=7.5, ha="center", va="bottom",
                 linespacing=1.15)
    for r, row in enumerate(grid.cells):
        for c, cell in enumerate(row):
            draw_cell(fig, cell, side + col_w * (c + 0.5), top + r * row_h, (width, height))
    handles = [Patch(facecolor=np.array(rgb) / 255, edgecolor="0.3", label=name) for rgb, name in grid.legend]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=px(width / 2, top + row_h * len(grid.cells)),
               ncol=ncol, fontsize=7.5, frameon=False, handlelength=1.2, columnspacing=1.2, borderaxespad=0)
    fig.text(*px(side, height - foot_h + 4), foot, fontsize=7, va="top", color="0.25")
    return save_figure(fig, path, fmt)


def draw_cell(fig, cell: Cell, centre_x: float, top_y: float, size: tuple[int, int]) -> None:
    width, height = size
    w, h = cell.tile.shape[1], cell.tile.shape[0]
    ax = fig.add_axes(((centre_x - w / 2) / width, 1 - (top_y + h) / height, w / width, h / height))
    ax.imshow(cell.tile, interpolation="nearest", aspect="auto")
    ax.axis("off")
    fig.text(centre_x / width, 1 - (top_y + h + 3) / height, cell.caption, fontsize=7.5, ha="center", va="top")


def draw_curves(curves: list[tuple[str, dict]], split: str, path: Path, fmt: str) -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colours = plt.get_cmap("tab10" if len(curves) <= 10 else "tab20").colors  # one colour per job up to 20
    for i, (label, curve) in enumerate(curves):
        line, = ax.plot(curve["thresholds"], curve["miou"], lw=1.4, color=colours[i % len(colours)],
                        label=f"{label}  (stated τ {curve['threshold']:.2f}: {curve['miou_at_threshold']:.1f})")
        ax.plot([curve["threshold"]], [curve["miou_at_threshold"]], "o", color=line.get_color(), mec="k", ms=6,
                zorder=3)
    ax.set_xlabel("background threshold τ")
    ax.set_ylabel("seed mIoU (%)")
    ax.set_title(f"Seed mIoU against the background threshold τ (eval_cam, {split})\n"
                 "dots: each job's stated τ; the curves are swept on the ground truth (their maxima are GT-tuned)",
                 fontsize=8.5)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1 if len(curves) > 6 else 2, fontsize=7.5,
              frameon=False)
    return save_figure(fig, path, fmt, tight=True)


def draw_heatmap(classes: list[str], labels: list[str], values: np.ndarray, title: str, path: Path,
                 fmt: str) -> Path:
    n_rows, n_cols = values.shape
    chars = min(24, max(14, *(len(p) for lab in labels for p in re.split(r", |\n", lab))))
    heads = [wrap_label(lab, chars) for lab in labels]  # column labels across, on top, as wide as a column
    fig, ax = plt.subplots(figsize=(2.2 + 0.068 * chars * n_cols, 1.4 + 0.27 * n_rows))
    cmap = plt.get_cmap("viridis").with_extremes(bad="0.85")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0, vmax=100, aspect="auto")
    for (r, c), v in np.ndenumerate(values):
        ax.text(c, r, "—" if np.isnan(v) else f"{v:.1f}", ha="center", va="center", fontsize=7,
                color="k" if np.isnan(v) or v >= 55 else "w")
    ax.set_yticks(range(n_rows), classes, fontsize=7.5)
    ax.set_xticks(range(n_cols), heads, fontsize=7.5)
    ax.xaxis.tick_top()
    fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02).set_label("IoU (%)", fontsize=8)
    ax.set_title(title + "\n— : class in neither the ground truth nor the prediction (IoU undefined)", fontsize=8.5,
                 pad=8)
    return save_figure(fig, path, fmt, tight=True)


# ---------------------------------------------------------------- the three figures
def write_grid(jobs: list[Job], stage: str, ids, num_ids: int, path: Path, fmt: str) -> Path:
    grid = collect_grid(jobs, stage, ids, num_ids)
    what = {"eval_cam": "Seeds at the stated τ", "make_pseudo": "Pseudo-labels", "eval_seg": "Predictions"}[stage]
    title = f"{what} ({stage}), {len(grid.titles) - 2} jobs, {grid.split} split"
    return draw_grid(grid, title, path, fmt)


def write_curves(jobs: list[Job], path: Path, fmt: str) -> Path | None:
    curves = []
    for job in jobs:
        file = job.dir / "eval_cam" / "curve.json"
        if file.exists():
            curves.append((job.label, read_json(file)))
        else:
            note(f"{job.dir}: no eval_cam/curve.json (eval_cam did not run); no τ curve for it")
    if not curves:
        note(f"no τ curves: no job ran eval_cam; {path.name} not written")
        return None
    return draw_curves(curves, split_of(jobs[0].cfg, "eval_cam"), path, fmt)


def per_class_table(jobs: list[Job], stage: str) -> tuple[list[str], list[str], np.ndarray]:
    """(classes, job labels, IoU [class, job]) from `<stage>/<split>/iou/<class>`: background first, then the
    dataset's order; nan where a job lacks a class. Jobs without any are left out with a note."""
    kept = []
    for job in jobs:
        prefix = f"{stage}/{split_of(job.cfg, stage)}/iou/"
        if any(k.startswith(prefix) for k in job.metrics):
            kept.append((job, prefix))
        else:
            note(f"{job.dir}: no {prefix}* in metrics.json; no heat-map column for it")
    if not kept:
        return [], [], np.zeros((0, 0))
    found = dict.fromkeys(k[len(p):] for job, p in kept for k in job.metrics if k.startswith(p))
    order = ["background", *kept[0][0].cfg.dataset.class_names]
    classes = [c for c in order if c in found] + [c for c in found if c not in order]
    values = np.array([[job.metrics.get(p + c, np.nan) for job, p in kept] for c in classes], np.float64)
    labels = [column_label(job, stage) for job, _ in kept]
    return classes, labels, values


def column_label(job: Job, stage: str) -> str:
    miou = job.metrics.get(f"{stage}/{split_of(job.cfg, stage)}/miou")
    return job.label if miou is None else f"{job.label}\nmIoU {miou:.1f}"


def write_heatmap(jobs: list[Job], stage: str, path: Path, fmt: str) -> Path | None:
    classes, labels, values = per_class_table(jobs, stage)
    if not classes:
        note(f"no per-class IoU of {stage} in any job; {path.name} not written")
        return None
    split = split_of(jobs[0].cfg, stage)
    at = {"eval_cam": " at the stated τ", "make_pseudo": ", 255 as background", "eval_seg": ""}[stage]
    return draw_heatmap(classes, labels, values, f"Per-class IoU (%), {stage} on {split}{at}", path, fmt)


def names_a_file(out: str | None) -> bool:
    """--out names the grid's file when it ends in .png or .pdf and is no existing folder; else it is a folder."""
    return bool(out) and Path(out).suffix.lower() in (".png", ".pdf") and not Path(out).is_dir()


def output_paths(out: str | None, first_dir: str, stage: str, fmt: str) -> dict[str, Path]:
    if names_a_file(out):
        grid = Path(out)
        folder = grid.parent
    else:
        folder = Path(out) if out else Path(first_dir) / "figures"
        grid = folder / f"qualitative_{stage}.{fmt}"
    return {"grid": grid, "curves": folder / f"threshold_curves.{fmt}",
            "heatmap": folder / f"per_class_iou_{stage}.{fmt}"}


def output_format(given: str | None, out: str | None) -> str:
    """--format, else the --out file's extension, else png."""
    suffix = Path(out).suffix.lstrip(".").lower() if names_a_file(out) else ""
    if given and suffix and given != suffix:
        sys.exit(f"make_figure: --format {given} but --out {out}; make them agree")
    return given or suffix or "png"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dirs", nargs="+", help="run or sweep directories (searched recursively for metrics.json)")
    ap.add_argument("--ids", nargs="+", metavar="ID", help="image ids of the grid's rows (default: the first N of "
                    "the evaluated split, in list order)")
    ap.add_argument("--num-ids", type=int, default=NUM_IDS, metavar="N", help=f"rows without --ids (default {NUM_IDS})")
    ap.add_argument("--stage", choices=STAGES, default="eval_cam", help="what the grid's cells and the heat map show")
    ap.add_argument("--format", choices=["png", "pdf"], help="default: --out's extension, else png")
    ap.add_argument("--out", metavar="FILE_OR_DIR", help="the grid's file (the others beside it) or a folder "
                    "(default: <first DIR>/figures/)")
    args = ap.parse_args(argv)
    fmt = output_format(args.format, args.out)
    jobs = load_jobs(args.dirs)
    if not jobs:
        sys.exit(f"make_figure: no wsss run directory (with .hydra/config.yaml) under {', '.join(args.dirs)}")
    paths = output_paths(args.out, args.dirs[0], args.stage, fmt)
    try:
        written = [write_grid(jobs, args.stage, args.ids, args.num_ids, paths["grid"], fmt),
                   write_curves(jobs, paths["curves"], fmt), write_heatmap(jobs, args.stage, paths["heatmap"], fmt)]
    except UserError as e:
        sys.exit(f"make_figure: {e}")
    for path in written:
        if path is not None:
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
