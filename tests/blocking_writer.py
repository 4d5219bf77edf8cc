"""`wsss` with one file writer replaced by a stand-in that stops in the middle of a write.

    python tests/blocking_writer.py MODULE.FUNCTION N MARKER [wsss overrides ...]

The N-th call (1-based) of MODULE.FUNCTION(path, ...) creates its temporary file through
`atomic_path`, writes half a file into it, creates MARKER and sleeps until it is killed; the calls
before it write normally. The kill tests wait for MARKER, so the SIGKILL lands during a write every
time, not by chance.
"""
from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path


def install(target: str, n: int, marker: Path) -> None:
    from wsss.io import atomic_path

    module_name, name = target.rsplit(".", 1)
    module = importlib.import_module(module_name)
    real = getattr(module, name)
    calls = 0

    def stand_in(path, *args, **kwargs):
        nonlocal calls
        calls += 1
        if calls < n:
            return real(path, *args, **kwargs)
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"PK\x03\x04 half a file")  # what a writer has put down when the kill comes
            marker.touch()
            time.sleep(3600)

    setattr(module, name, stand_in)


if __name__ == "__main__":
    target, n, marker, *overrides = sys.argv[1:]
    install(target, int(n), Path(marker))
    from wsss.__main__ import main

    sys.argv = [sys.argv[0], *overrides]
    main()
