"""Writing many files in worker processes, with a progress bar, skipping those already written.

Every writer writes atomically (a temporary name, then a rename), so a file that exists is complete: a killed
run resumes with the files it had not written, and a second run writes nothing.
"""
from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from wsss.io import sweep_temporary
from wsss.progress import progress


def map_files(write, tasks: list[tuple], workers: int, desc: str) -> int:
    """`write(*task)` for every task whose last element (the target path) does not exist yet, in `workers`
    forked processes (1 = this process); returns how many were written. `write` must be a module-level
    function; what it needs besides its task can be set in module globals before the call (fork shares them)."""
    for folder in {Path(t[-1]).parent for t in tasks}:
        if folder.is_dir():
            sweep_temporary(folder)  # a killed writer's half file (nobody else writes here)
    todo = [t for t in tasks if not Path(t[-1]).exists()]
    bar = progress(total=len(todo), desc=desc, unit="file")
    if workers <= 1 or len(todo) <= 1:
        for task in todo:
            write(*task)
            bar.update()
    else:
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        chunk = max(1, min(64, len(todo) // (8 * workers)))
        with ctx.Pool(workers) as pool:
            for _ in pool.imap_unordered(_Call(write), todo, chunksize=chunk):
                bar.update()
    bar.close()
    return len(todo)


class _Call:
    """A picklable `write(*task)` for the pool."""

    def __init__(self, write):
        self.write = write

    def __call__(self, task):
        self.write(*task)
