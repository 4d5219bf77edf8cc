"""Per-image stages across the ranks of a DDP run (make_pseudo, train_irn's IR labels, eval_seg).

Lightning's DDP launcher runs the whole program once per rank (wsss/artifacts.py `produce`): make_cam's predict
loop shards through Lightning; the stages whose per-image work runs outside Lightning shard here the same way.
Each rank takes every `world`-th image of the stage's list in list order (`shard`; the list, not what is left to
do, so that ranks agree whatever another rank has already written), writes those images' files, each once and
atomically, in its own worker pool sized to its share of the node's cores (`worker_share`); then every rank
waits for every other (`wait_for_all`), and rank 0 scores the whole split and writes what covers all images
(metrics, overlays). An image's file depends on that image alone, so the output is byte-identical to one
process's (tests/test_distributed.py).
"""
from __future__ import annotations

import os

from wsss import artifacts


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def ensure_processes(cfg) -> None:
    """Start the run's DDP processes for a per-image stage when no Lightning stage has started them in this run
    (e.g. make_pseudo after a make_cam reused from the store): Lightning Fabric's launcher, the one the Trainer
    uses, re-runs the program per rank, and every rank joins here. Nothing to do in one process or when the
    processes exist."""
    t = cfg.trainer
    if _dist() is not None or "ddp" not in str(t.get("strategy") or ""):
        return
    from lightning.fabric import Fabric

    fabric = Fabric(accelerator=t.accelerator, devices=t.devices, num_nodes=t.get("num_nodes") or 1, strategy="ddp")
    if fabric.world_size > 1:
        fabric.launch()


def world_size() -> int:
    dist = _dist()
    return dist.get_world_size() if dist else 1


def rank() -> int:
    return artifacts.global_rank() if world_size() > 1 else 0


def shard(ids: list[str]) -> list[str]:
    """This rank's images: every world-th of the list from its rank on (all of them in one process)."""
    return list(ids)[rank()::world_size()]


def ranks_on_this_node() -> int:
    """DDP ranks sharing this node's cores: LOCAL_WORLD_SIZE where the launcher sets it (torchrun, SLURM
    through Lightning), else every rank (one node)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE") or 0) or world_size()


def worker_share(setting) -> int:
    """A per-image worker pool's size on this rank: `setting`, else this job's cores ÷ the ranks on the node."""
    from wsss.threads import share

    return int(setting) if setting else max(1, share() // ranks_on_this_node())


def device_index() -> int:
    """The GPU this rank uses (Lightning's LOCAL_RANK), 0 in one process."""
    return int(os.environ.get("LOCAL_RANK", 0) or 0) if world_size() > 1 else 0


def wait_for_all() -> None:
    """Every rank has finished its shard."""
    artifacts.barrier()


def total(count: int) -> int:
    """The sum of a count over the ranks (e.g. images computed)."""
    dist = _dist()
    if not dist:
        return count
    import torch

    t = torch.tensor([count], dtype=torch.long)
    if dist.get_backend() == "nccl":
        t = t.cuda(device_index())
    dist.all_reduce(t)
    return int(t.item())
