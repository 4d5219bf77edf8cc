"""Pictures for people: CAM overlays, label maps, the threshold curve."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from wsss.io import atomic_path, palette  # noqa: E402

_PAL = np.array(palette(), np.uint8).reshape(256, 3)


VOID = (224, 224, 192)     # 255 in a ground truth: void (object borders), ignored in scoring: VOC's own colour
UNSURE = (255, 0, 255)     # 255 in a pseudo-label: unsure, ignored in training: a colour no class has (magenta)
VOID_NAME, UNSURE_NAME = "255: void (ignored)", "255: unsure (ignored in training)"


def colour_labels(label: np.ndarray, colour_255=VOID) -> np.ndarray:
    """A label map in the VOC palette; 255 in `colour_255` (VOID for ground truth, UNSURE for pseudo-labels)."""
    pal = _PAL.copy()
    pal[255] = colour_255
    return pal[label]


def legend(labels: list[np.ndarray], class_names: list[str], name_255: dict | None = None) -> list[tuple]:
    """(colour, name) of every value the label maps hold, background first; 255 named by `name_255`
    (colour → name: both kinds of 255 when a panel shows a pseudo-label and a ground truth)."""
    values = sorted(set().union(*(np.unique(lab).tolist() for lab in labels)))
    names = ["background", *class_names]
    entries = [(tuple(int(c) for c in _PAL[v]), names[v]) for v in values if v < len(names)]
    if 255 in values:
        entries += [(colour, name) for colour, name in (name_255 or {VOID: VOID_NAME}).items()]
    return entries


def heatmap(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Jet-coloured map in [0,1] blended over the image."""
    jet = (plt.get_cmap("jet")(np.clip(cam, 0, 1))[..., :3] * 255).astype(np.float32)
    return (image * (1 - alpha) + jet * alpha).astype(np.uint8)


def boundary_picture(boundary: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A stride-4 boundary map in [0, 1] as a grey picture of the image's size (white = boundary)."""
    grey = (np.clip(boundary, 0, 1) * 255).astype(np.uint8).repeat(4, 0).repeat(4, 1)[: size[0], : size[1]]
    return np.repeat(grey[..., None], 3, axis=2)


def save_panel(path: Path, tiles: list[np.ndarray], captions: list[str], entries: list[tuple] | None = None,
               heat_tau: float | None = None) -> None:
    """Tiles side by side with captions, and below them a legend of the label colours (`entries`: (rgb, name)),
    as one PNG. With `heat_tau`, the heat maps' colour scale too (0 to 1, the map divided by its maximum), τ marked."""
    from matplotlib.patches import Patch

    fig, axes = plt.subplots(1, len(tiles), figsize=(2.6 * len(tiles), 3.2 if entries else 2.8))
    for ax, tile, cap in zip(np.atleast_1d(axes), tiles, captions, strict=True):
        ax.imshow(tile)
        ax.set_title(cap, fontsize=8)
        ax.axis("off")
    if entries:
        handles = [Patch(facecolor=np.array(rgb) / 255, edgecolor="0.3", label=name) for rgb, name in entries]
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), max(2, len(tiles) + 1)), fontsize=7,
                   frameon=False)
        fig.tight_layout(rect=(0, 0.06 * (1 + (len(handles) - 1) // max(2, len(tiles) + 1)), 1, 1))
    else:
        fig.tight_layout()
    if heat_tau is not None:
        colour_scale(fig, heat_tau)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def colour_scale(fig, tau: float) -> None:
    """A small jet bar at the bottom left: what a heat map's colours mean, with the seed threshold τ marked."""
    ax = fig.add_axes((0.02, 0.075, 0.15, 0.03))
    ax.imshow(np.linspace(0, 1, 256)[None], cmap="jet", aspect="auto", extent=(0, 1, 0, 1))
    ax.axvline(tau, color="k", lw=1.2)
    ax.set_xticks([0, 0.5, 1], ["0", "0.5", "1"], fontsize=6)
    ax.set_yticks([])
    ax.set_title(f"map ÷ its max; black line: τ {tau:.2f}", fontsize=6, pad=2, loc="left")


def save_curve(path: Path, thresholds, mious, fixed: tuple[float, float], title: str) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(thresholds, mious, lw=1.5)
    best = int(np.nanargmax(mious))
    ax.scatter([thresholds[best]], [mious[best]], c="r", zorder=3, label=f"best {mious[best]:.1f} @ {thresholds[best]:.2f}")
    ax.scatter([fixed[0]], [fixed[1]], c="k", marker="x", zorder=3, label=f"stated τ {fixed[1]:.1f} @ {fixed[0]:.2f}")
    ax.set_xlabel("background threshold τ")
    ax.set_ylabel("mIoU (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


