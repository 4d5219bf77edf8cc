"""Pictures for people: CAM overlays, label maps, the threshold curve."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from wsss.io import atomic_path, palette  # noqa: E402

_PAL = np.array(palette(), np.uint8).reshape(256, 3)


def colour_labels(label: np.ndarray) -> np.ndarray:
    return _PAL[label]


def heatmap(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Jet-coloured map in [0,1] blended over the image."""
    jet = (plt.get_cmap("jet")(np.clip(cam, 0, 1))[..., :3] * 255).astype(np.float32)
    return (image * (1 - alpha) + jet * alpha).astype(np.uint8)


def boundary_picture(boundary: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A stride-4 boundary map in [0, 1] as a grey picture of the image's size (white = boundary)."""
    grey = (np.clip(boundary, 0, 1) * 255).astype(np.uint8).repeat(4, 0).repeat(4, 1)[: size[0], : size[1]]
    return np.repeat(grey[..., None], 3, axis=2)


def save_panel(path: Path, tiles: list[np.ndarray], captions: list[str]) -> None:
    """Tiles side by side with captions, as one PNG."""
    fig, axes = plt.subplots(1, len(tiles), figsize=(2.6 * len(tiles), 2.8))
    for ax, tile, cap in zip(np.atleast_1d(axes), tiles, captions, strict=True):
        ax.imshow(tile)
        ax.set_title(cap, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


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


