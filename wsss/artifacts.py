"""The artifact store (contract.md, Artifacts).

Each stored stage writes to `paths.artifacts_dir/<stage>/<key>/`, where the key hashes everything
that determines the output: the stage's own config slice, its format version, and the keys of
its inputs. An output is complete once its `manifest.json` exists (written last, atomically);
a complete output is reused unless `force=true`. A file lock makes parallel jobs that need the
same output wait for one writer. Each run directory lists the artifacts it used in
`artifacts.json`.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from wsss import __version__
from wsss.errors import UserError
from wsss.io import (
    artifact_files,
    exclusive_lock,
    make_dirs,
    read_json,
    remove_empty_dirs,
    remove_empty_subdirs,
    sweep_temporary,
    write_json,
)


@dataclass(frozen=True)
class Artifact:
    stage: str
    key: str
    path: Path

    @property
    def manifest(self) -> Path:
        return self.path / "manifest.json"

    @property
    def complete(self) -> bool:
        return self.manifest.exists()


class MissingArtifact(UserError):
    pass


def _plain(value: dict) -> dict:
    """A dict that may hold config nodes, as plain resolved Python values."""
    return OmegaConf.to_container(OmegaConf.create(value), resolve=True)


def identity(cfg, stage: str) -> dict:
    """What determines `stage`'s output: its own slice, its version and its inputs' keys."""
    from wsss.stages import STAGES

    module = STAGES[stage]
    return {"stage": stage, "version": module.VERSION, "config": _plain(module.identity(cfg)),
            "inputs": {up: locate(cfg, up).key for up in module.upstream(cfg)}}


def locate(cfg, stage: str) -> Artifact:
    blob = json.dumps(identity(cfg, stage), sort_keys=True, default=str).encode()
    key = hashlib.sha1(blob).hexdigest()[:12]
    return Artifact(stage, key, Path(cfg.paths.artifacts_dir) / stage / key)


def require(cfg, stage: str, needed_by: str) -> Artifact:
    """The complete output of an upstream stage, or a clear error saying how to make it."""
    art = locate(cfg, stage)
    if not art.complete:
        raise MissingArtifact(
            f"{needed_by} needs the output of {stage} for this configuration ({art.path}), which is "
            f"not complete; add {stage} to stages (e.g. stages=[{stage},{needed_by}]) or use the same "
            "overrides as the run that made it")
    return art


def global_rank() -> int:
    """This process's rank in a multi-process (DDP) run; 0 when there is a single process.

    Lightning's DDP launcher re-runs the whole program in one process per extra device, so every
    rank walks the pipeline; only rank 0 owns the store (locks, writes, seals).
    """
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def produce(cfg, stage: str, run_fn, run_dir: Path, distributed: bool = False) -> dict:
    """Reuse the stage's complete output, or run `run_fn(cfg, out_dir)` and seal it with a manifest.

    With several processes (DDP), a `distributed` stage runs on every rank (Lightning shards the
    work) and rank 0 seals it; any other stage runs on rank 0 alone while the others wait.
    """
    art = locate(cfg, stage)
    if global_rank() > 0:
        barrier()  # rank 0 has taken the lock and decided (and, with force, cleared the output)
        if distributed and not art.complete:
            run_fn(cfg, art.path)
        barrier()  # rank 0 has sealed the output
        return read_json(art.manifest)["metrics"]
    make_dirs(art.path.parent)  # races with a failed parallel job's clean-up of the same folders
    try:
        with exclusive_lock(str(art.path) + ".lock"):
            if cfg.force and art.path.exists():  # complete or not: recompute from scratch
                shutil.rmtree(art.path)
            reused = art.complete
            if not reused:  # before the barrier: the other ranks' shards write (and stat) it at once
                make_dirs(art.path)
                sweep_temporary(art.path)  # a killed writer's half file; under the lock, nobody writes now
            barrier()
            if not reused:
                start = time.time()
                try:
                    metrics = run_fn(cfg, art.path)
                except BaseException:
                    remove_empty_subdirs(art.path)  # what it wrote before failing stays, to resume from
                    remove_empty_dirs(art.path, art.path)
                    raise
                write_json(art.manifest, {
                    "stage": stage, "key": art.key, "identity": identity(cfg, stage), "metrics": metrics,
                    "files": [str(p.relative_to(art.path)) for p in artifact_files(art.path, "**/*")],
                    "code_version": code_version(), "started": start, "seconds": time.time() - start})
    except BaseException:  # no empty folder left behind by a failed first run (parents up to the store)
        remove_empty_dirs(art.path.parent, cfg.paths.artifacts_dir)
        raise
    barrier()  # every rank passes here once per stage, reused or not
    record_used(run_dir, art, reused=reused)
    return read_json(art.manifest)["metrics"]


def record_used(run_dir: Path, art: Artifact | None = None, reused: bool = False) -> None:
    """Add `art` to the run's `artifacts.json` (stage → key, path, reused); with no artifact, make sure the
    file exists (a run that stores nothing still says so)."""
    used_file = Path(run_dir) / "artifacts.json"
    used = read_json(used_file) if used_file.exists() else {}
    if art is not None:
        used[art.stage] = {"key": art.key, "path": str(art.path), "reused": reused}
    if art is not None or not used_file.exists():
        write_json(used_file, used)


def code_version() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__}+{commit}" if commit else __version__
