"""Progress that a log file can hold (wsss/progress.py): whole lines, throttled, when the stream is not a terminal;
Lightning's bars the same (wsss/training.py); Lightning's tip and its _pytree deprecation warning not shown."""
import io
import logging
import warnings

import lightning as L
import torch
from torch import nn

from wsss import progress as progress_module
from wsss.progress import progress
from wsss.training import StageProgressBar, quiet_lightning


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_log_gets_a_line_per_tenth_and_one_at_the_end(monkeypatch):
    monkeypatch.setattr(progress_module, "EVERY_SECONDS", 3600.0)
    out = io.StringIO()
    for _ in progress(range(1000), desc="make_pseudo", file=out, mininterval=0):
        pass
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and out.getvalue().endswith("\n")
    assert 2 <= len(lines) <= 10 and all(line.startswith("make_pseudo:") for line in lines)
    assert "100/1000" in lines[0] and "1000/1000" in lines[-1]
    assert sum("1000/1000" in line for line in lines) == 1  # the end once


def test_a_line_every_m_seconds_on_a_slow_loop(monkeypatch):
    clock = iter(range(0, 10_000, 7))  # each call to time.time() advances 7 s
    monkeypatch.setattr(progress_module.time, "time", lambda: float(next(clock)))
    monkeypatch.setattr(progress_module, "EVERY_SECONDS", 20.0)
    out = io.StringIO()
    bar = progress(total=10_000, desc="slow", file=out, mininterval=0)
    for _ in range(30):  # 30 updates of 0.01 %: no 10 % step, only time
        bar.update()
    bar.close()
    n = len(out.getvalue().splitlines())
    assert 5 <= n <= 15  # ~ every third update (21 s), not one per update


def test_a_terminal_keeps_tqdms_redraws():
    out = Terminal()
    for _ in progress(range(50), desc="x", file=out, mininterval=0):
        pass
    assert out.getvalue().count("\r") >= 50


class Predictor(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 1)

    def predict_step(self, batch, batch_idx):
        return self.lin(batch)


def test_lightnings_bars_are_lines_in_a_log_and_its_tip_is_gone(capsys, caplog):
    quiet_lightning()
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_model_summary=False,
                        callbacks=[StageProgressBar("make_cam")])
    with caplog.at_level(logging.INFO):
        trainer.predict(Predictor(), torch.utils.data.DataLoader(torch.randn(400, 2), batch_size=1))
        logging.getLogger("lightning.pytorch.utilities.rank_zero").info("💡 Tip: try our cloud")
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("make_cam")]
    assert "\r" not in out and 2 <= len(lines) <= 10 and "400/400" in lines[-1]
    assert not any("Tip:" in r.getMessage() for r in caplog.records if r.name.startswith("lightning"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        quiet_lightning()  # the filter goes first again
        warnings.warn_explicit("`isinstance(treespec, LeafSpec)` is deprecated", FutureWarning,
                               "_pytree.py", 21, module="lightning.pytorch.utilities._pytree")
        warnings.warn_explicit("`isinstance(treespec, LeafSpec)` is deprecated", FutureWarning, "ours.py", 1,
                               module="wsss.something")
    assert [str(w.message) for w in caught] == ["`isinstance(treespec, LeafSpec)` is deprecated"]  # ours still shows
