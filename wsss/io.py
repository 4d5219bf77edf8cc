"""The on-disk artifact contract (contract.md): seeds, label maps, JSON; every write atomic.

Atomic means: write to a temporary name in the same directory, then `os.replace`, so a reader
(or a resumed run) never sees a half-written file.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from wsss.errors import UserError

TEMP_SUFFIX = ".wsss-tmp"


def is_temporary(path: str | os.PathLike) -> bool:
    """True for the name of a file still being written (or left by a killed writer).

    Temporary names are `.<final name>.<random>.wsss-tmp`: they end in no artifact extension, so no
    `*.npz` / `*.png` pattern matches them.
    """
    return Path(path).name.endswith(TEMP_SUFFIX)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# read once at import, while one thread runs: os.umask can only be read by setting it (the seed writer is a thread)
FILE_MODE = 0o666 & ~_current_umask()


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds. The file's
    mode is the one a plain open() would give (0666 less the umask), not mkstemp's private 0600.

    Writers must not infer the format from the temporary name: pass an open file or the format
    (np.savez to a file object, PIL with format=...).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.fchmod(fd, FILE_MODE)  # mkstemp makes 0600; the file gets what open() would give it (the umask's)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def artifact_files(directory: str | os.PathLike, pattern: str = "*") -> list[Path]:
    """The finished files of `directory` matching `pattern` (rglob-style for "**/..."), sorted;
    temporary files of writers (running or killed) are never among them."""
    return sorted(p for p in Path(directory).glob(pattern) if p.is_file() and not is_temporary(p))


def sweep_temporary(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporary files a killed writer left anywhere below `directory`.

    Only safe while nobody else writes there: the artifact store calls it under the artifact's lock,
    before the stage starts. A killed writer's temporary file is never completed later.
    """
    stale = [p for p in Path(directory).rglob(f"*{TEMP_SUFFIX}") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


@contextmanager
def exclusive_lock(path: str | os.PathLike):
    """Hold an exclusive lock on the file `path` (created if needed) and delete the file on release, so that no
    lock file outlives its users. Safe to delete because every holder checks, once it has the lock, that the file
    it locked is still the one at `path` (a waiter that locked a deleted file starts again): the classic
    lock-then-verify of flock, which the filelock package does not do (its lock files stay). POSIX only."""
    import fcntl

    path = Path(path)
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        except FileNotFoundError:  # its folder was just removed by a failed job's clean-up
            make_dirs(path.parent)
            continue
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            break
        os.close(fd)  # we locked a file its last holder deleted: take the current one
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # still held: a waiter on this file will see it is gone and retry
        os.close(fd)


def make_dirs(path: str | os.PathLike) -> None:
    """`mkdir -p` that survives a parallel job's `remove_empty_dirs` of the same folders: Path.mkdir(parents=True,
    exist_ok=True) raises FileExistsError or FileNotFoundError when a folder on its way is removed between its
    steps; try again until the folder is there."""
    for _ in range(100):
        try:
            Path(path).mkdir(parents=True, exist_ok=True)
            return
        except (FileExistsError, FileNotFoundError):
            continue
    Path(path).mkdir(parents=True, exist_ok=True)  # the same error, raised this time


def remove_empty_subdirs(path: str | os.PathLike) -> None:
    """Remove the empty folders below `path`, deepest first (a failed stage's folders that hold nothing)."""
    for sub in sorted((p for p in Path(path).rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        try:
            sub.rmdir()
        except OSError:  # not empty, or gone
            pass


def remove_empty_dirs(path: str | os.PathLike, stop: str | os.PathLike) -> None:
    """Remove `path` and then its parents up to and including `stop` while they are empty (a failed job's
    folders, which hold nothing to resume)."""
    path, stop = Path(path), Path(stop)
    while True:
        try:
            path.rmdir()
        except OSError:  # not empty, or gone
            return
        if path == stop or stop not in path.parents:
            return
        path = path.parent


def write_json(path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path) -> dict:
    with open(path) as f:
        return json.load(f)


# ---------------------------------------------------------------- seeds (CAM / ReCAM maps)
def save_seed(path, keys: np.ndarray, high_res: np.ndarray, strided: np.ndarray) -> None:
    """One image's seeds: `keys` int64 [K] (0-based classes), maps float16 [K,H,W] / [K,H/4,W/4]."""
    keys = np.asarray(keys, dtype=np.int64)
    if high_res.shape[0] != len(keys) or strided.shape[0] != len(keys):
        raise ValueError(f"{path}: {len(keys)} keys but maps of shape {high_res.shape}, {strided.shape}")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: numpy appends no ".npz"
        np.savez_compressed(f, keys=keys, high_res=high_res.astype(np.float16),
                            strided=strided.astype(np.float16))


def load_seed(path) -> dict[str, np.ndarray]:
    """Load a seed file without pickle; a truncated or foreign file raises a clear error."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in ("keys", "high_res", "strided")}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
        raise UserError(f"seed file {path} is unreadable ({e}); delete it and re-run make_cam "
                         "(add force=true to recompute everything)") from e


# ---------------------------------------------------------------- label maps
def palette(num_entries: int = 256) -> list[int]:
    """The VOC colour map (bit-interleaved), 255 rendered as the VOC border colour."""
    pal = []
    for i in range(num_entries):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    pal[255 * 3: 255 * 3 + 3] = [224, 224, 192]
    return pal


def save_label_png(path, label: np.ndarray) -> None:
    """A label map as a palette ("P") PNG: pixel values are class indices, 255 = ignore."""
    if label.ndim != 2:
        raise ValueError(f"{path}: a label map must be 2-D, got shape {label.shape}")
    img = Image.fromarray(label.astype(np.uint8), mode="P")
    img.putpalette(palette())
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def load_label_png(path) -> np.ndarray:
    """Read a label PNG as class indices. Palette and greyscale PNGs are indices; RGB is refused."""
    try:
        img = Image.open(path)
        img.load()
    except (OSError, ValueError) as e:
        raise UserError(f"label map {path} is unreadable ({e}); replace or delete the file") from e
    if img.mode not in ("P", "L"):
        raise UserError(f"label map {path} is in mode {img.mode}; expected a palette (P) or "
                         "greyscale (L) PNG whose pixel values are class indices")
    return np.asarray(img, dtype=np.uint8)


def load_rgb(path) -> np.ndarray:
    """Read an image as H×W×3 uint8 RGB, failing with the file's name if it is broken."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError) as e:
        raise UserError(f"image {path} is unreadable ({e}); replace the file or drop its id "
                         "from the split list") from e
