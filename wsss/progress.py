"""Progress that a log file can hold.

On a terminal a bar redraws itself in place. Written to a file (a SLURM log, `wsss > out.log 2>&1`), each
redraw is kept, megabytes per stage. So every progress bar of the pipeline (its own per-image loops and
Lightning's training / prediction bars, wsss/training.py) prints, when its stream is not a terminal, one
complete line every `EVERY_PERCENT` % of the work or every `EVERY_SECONDS` seconds, whichever comes first, and
one when it ends (with its totals and rate). The run's own log file (`<run dir>/wsss.log`) stays the full
record of stages and results.
"""
from __future__ import annotations

import time

from tqdm import tqdm

EVERY_PERCENT = 10
EVERY_SECONDS = 60.0


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or foreign stream
        return False


class LinesWhenLogged:
    """A tqdm mixin: on a terminal tqdm's own redraws; otherwise whole lines, throttled (the module's docstring)."""

    def _lines(self) -> bool:
        if "_log_lines" not in self.__dict__:
            self._log_lines = not _is_terminal(self.fp)
            self._rearm(time.time())
        return self._log_lines

    def _rearm(self, now: float) -> None:
        self._line_time, self._line_pct = now, 0.0

    def display(self, msg=None, pos=None):
        if not self._lines():
            return super().display(msg, pos)
        now = time.time()
        pct = 100.0 * self.n / self.total if self.total else None
        if self.n and (now - self._line_time >= EVERY_SECONDS or (pct is not None and pct >= self._line_pct + EVERY_PERCENT)):
            self._write_line(now, pct)
        return True

    def _write_line(self, now: float, pct: float | None) -> None:
        self.fp.write(self.format_meter(**{**self.format_dict, "ncols": 100}).rstrip() + "\n")
        self.fp.flush()
        self._line_time = now
        if pct is not None:
            self._line_pct = pct - pct % EVERY_PERCENT

    def reset(self, total=None):
        if self._lines():  # a bar reused for the next epoch: counted from its start again
            self._rearm(time.time())
        return super().reset(total)

    def close(self):
        if self.disable or not self._lines():
            return super().close()
        if self.n and (self.total is None or self._line_pct < 100):
            self._write_line(time.time(), 100.0 * self.n / self.total if self.total else None)
        # tqdm's close would redraw once more and end with a bare newline (or a carriage return): done here
        self.disable = True
        self._decr_instances(self)
        return None


class LineTqdm(LinesWhenLogged, tqdm):
    pass


def progress(iterable=None, **kwargs) -> tqdm:
    """tqdm for the pipeline's loops: a bar on a terminal, throttled whole lines in a log file."""
    return LineTqdm(iterable, **kwargs)
