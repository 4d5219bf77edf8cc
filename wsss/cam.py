"""Class activation maps exactly as algorithms.md §3 (IRN/ReCAM `make_cam`), and the same combination
for every other seed method (wsss/seed_methods/).

Per scale s: features F of the image and of its flip; A = ReLU(W·F) per flip copy; M_s = A(img) +
flip_back(A(flipped)). strided = Σ_s bilinear(M_s → ⌈H/4⌉×⌈W/4⌉); high_res = Σ_s bilinear(M_s →
16⌈H/16⌉×16⌈W/16⌉) cropped top-left to H×W (keeps the stride-16 grid aligned with the pixels).
Only present classes; each map divided by its own max + 1e-5 after summing the scales.
Another method's raw maps A (on a grid of stride r: 16 for the trunk output, 1 for input gradients)
are combined the same way, with r⌈H/r⌉×r⌈W/r⌉ in place of the 16-pixel padding.
"""
from __future__ import annotations

import math
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import nn

from wsss.io import artifact_files, save_seed


def strided_size(h: int, w: int) -> tuple[int, int]:
    return math.ceil(h / 4), math.ceil(w / 4)


def padded_size(h: int, w: int, stride: int = 16) -> tuple[int, int]:
    """The image size rounded up to whole cells of a stride-`stride` grid (what its maps cover)."""
    return stride * math.ceil(h / stride), stride * math.ceil(w / stride)


def activation(features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """ReLU(W·F) per location: features [B,D,h,w], weights [K,D] → [B,K,h,w]."""
    return F.relu(torch.einsum("bdhw,kd->bkhw", features, weights))


def normalize_max(maps: torch.Tensor) -> torch.Tensor:
    """Per-class max normalisation: cam / (max + 1e-5) (algorithms.md §3.6)."""
    return maps / (maps.flatten(1).max(1).values[:, None, None] + 1e-5)


def multiscale_cam(backbone: nn.Module, weights: torch.Tensor, views, size) -> tuple[torch.Tensor, torch.Tensor]:
    """(strided [K,⌈H/4⌉,⌈W/4⌉], high_res [K,H,W]) from per-scale [2,3,h,w] image+flip batches."""
    with torch.no_grad():
        return multiscale_maps(lambda batch: (activation(backbone(batch), weights), 16), len(weights), views, size)


def multiscale_maps(raw_maps, num_keys: int, views, size, upsample: str = "bilinear",
                    sigma: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(strided, high_res) as `multiscale_cam`, for any method: `raw_maps(batch)` gives one scale's
    (maps [2,K,h',w'] ≥ 0 of the image and its flip, grid stride); flip-summed, resized (`upsample`:
    bilinear, the references', or Extended-CAM's gaussian with `sigma` cells, `gaussian_resize`), summed over
    the scales, then per-class max-normalised. `raw_maps` may backpropagate; the combination does not."""
    h, w = size
    if num_keys == 0:  # no present class (an unlabelled image): empty maps, nothing to compute
        return torch.zeros(0, *strided_size(h, w)), torch.zeros(0, h, w)
    strided = high = None
    for batch in views:
        a, stride = raw_maps(batch)
        with torch.no_grad():
            a = a.float()  # under autocast (trainer.precision=16-mixed) the maps come in half precision
            m = (a[0] + a[1].flip(-1))[None]  # the method's ReLU before the flip-sum
            if upsample == "gaussian":
                s = gaussian_resize(m[0], strided_size(h, w), sigma)
                r = gaussian_resize(m[0], padded_size(h, w, stride), sigma)
            else:
                s = F.interpolate(m, strided_size(h, w), mode="bilinear", align_corners=False)[0]
                r = F.interpolate(m, padded_size(h, w, stride), mode="bilinear", align_corners=False)[0]
            strided, high = (s, r) if strided is None else (strided + s, high + r)
    return normalize_max(strided), normalize_max(high[:, :h, :w])


def gaussian_resize(maps: torch.Tensor, size: tuple[int, int], sigma: float) -> torch.Tensor:
    """Extended-CAM's Gaussian upsampling (Kim et al., arXiv 2001.05153): every cell of the map [K,h,w] spreads
    its value over the output [K,H,W] as a Gaussian centred on the cell's centre, of standard deviation `sigma`
    cells, summed over the cells: out(p) = Σ_ij A_ij · exp(−|p − c_ij|² / (2 (σ·cell)²)), positions in cell units of
    the input grid (pixel and cell centres at half-integers). Separable: G_rows · A · G_colsᵀ. σ relative to the
    cell is our statement of "the receptive field" (docs/methods.md): the per-class max normalisation after the
    scale sum makes any constant factor of the kernel irrelevant."""
    (h, w), (out_h, out_w) = maps.shape[-2:], size
    g_rows = _gaussian_weights(out_h, h, sigma, maps)
    g_cols = _gaussian_weights(out_w, w, sigma, maps)
    return torch.einsum("yi,kij,xj->kyx", g_rows, maps, g_cols)


def _gaussian_weights(n_out: int, n_in: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    """[n_out, n_in] weights exp(−d² / 2σ²), d the distance in input cells between output position y's centre and
    cell i's (the output spans the same extent as the input grid: n_out positions over n_in cells)."""
    centres_out = (torch.arange(n_out, dtype=like.dtype, device=like.device) + 0.5) * n_in / n_out
    centres_in = torch.arange(n_in, dtype=like.dtype, device=like.device) + 0.5
    d = centres_out[:, None] - centres_in[None]
    return torch.exp(-0.5 * (d / sigma) ** 2)


class SeedPredictor(L.LightningModule):
    """Wraps a classifier and a seed method for `trainer.predict` over MultiScaleDataset.

    `maps(model, images, keys)` is a method's raw maps at one scale (wsss/seed_methods/), combined over the
    scales by `multiscale_maps` with `upsample` / `sigma`; or, for a method that owns the multi-scale loop
    (`image_maps`), `image_maps(model, item, keys)` gives (strided, high_res) itself from the item (its views
    and uint8 image). A method that backpropagates (`needs_grad`) runs with gradients on; its trainer must be
    built with `inference_mode=False`, since tensors made in inference mode cannot enter autograd."""

    def __init__(self, model: nn.Module, maps, needs_grad: bool, upsample: str = "bilinear", sigma: float = 1.0,
                 image_maps=None):
        super().__init__()
        self.model, self.maps, self.needs_grad = model, maps, needs_grad
        self.upsample, self.sigma, self.image_maps = upsample, sigma, image_maps

    def predict_step(self, item, batch_idx):
        device = next(self.model.parameters()).device
        keys = torch.as_tensor(item["keys"], dtype=torch.long, device=device)
        views = [v.to(device) for v in item["views"]]
        with torch.enable_grad() if self.needs_grad else torch.no_grad():
            if self.image_maps is not None:
                item = {**item, "views": views, "upsample": self.upsample, "sigma": self.sigma}
                strided, high = self.image_maps(self.model, item, keys)
            else:
                strided, high = multiscale_maps(lambda batch: self.maps(self.model, batch, keys), len(keys), views,
                                                item["size"], self.upsample, self.sigma)
        return {"id": item["id"], "keys": item["keys"],
                "strided": strided.float().cpu().numpy(), "high_res": high.float().cpu().numpy()}


class SeedWriter(BasePredictionWriter):
    """Writes each image's seeds as `<out_dir>/<id>.npz` (atomic) on a background thread: compressing and
    writing one image overlaps the next one's forward passes (zlib releases the GIL). At most `pending`
    images wait in memory; a failed write raises in the predict loop at the next image or at the end."""

    def __init__(self, out_dir: Path, pending: int = 4):
        super().__init__(write_interval="batch")
        self.out_dir, self.pending = Path(out_dir), pending
        self._pool: ThreadPoolExecutor | None = None
        self._writes: deque[Future] = deque()

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="seed-writer")
        while len(self._writes) >= self.pending or (self._writes and self._writes[0].done()):
            self._writes.popleft().result()
        self._writes.append(self._pool.submit(save_seed, seed_file(self.out_dir, prediction["id"]),
                                              prediction["keys"], prediction["high_res"], prediction["strided"]))

    def on_predict_end(self, trainer, pl_module):
        self.flush()

    def on_exception(self, trainer, pl_module, exception):
        self.flush(raise_errors=False)  # the files written so far stay; the run is resumable

    def flush(self, raise_errors: bool = True) -> None:
        """Wait for every pending write (re-raising the first failure)."""
        try:
            while self._writes:
                write = self._writes.popleft()
                if raise_errors:
                    write.result()
                else:
                    write.exception()
        finally:
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None


def seed_file(out_dir: Path, img_id: str) -> Path:
    return Path(out_dir) / f"{img_id}.npz"


def seed_files(out_dir: Path) -> list[Path]:
    """The finished seed files of a make_cam artifact, sorted (never a writer's temporary file)."""
    return artifact_files(out_dir, "*.npz")


def missing_ids(out_dir: Path, ids) -> list[str]:
    """Ids whose seed file is not there yet (files are written atomically, so present = complete)."""
    return [i for i in ids if not seed_file(out_dir, i).exists()]
