"""The terminal output: detlight's progress bar, log lines through tqdm, and the Lightning messages silenced."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import lightning.pytorch as pl
import pytest
from det_tiny import loader, module, trainer
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from tqdm import tqdm

from detlight.callbacks import IterTimer, ProgressBar, TextLogger
from detlight.callbacks.progress_bar import TqdmLoggingHandler, quiet_lightning, use_detlight_progress_bar


def test_bar_shows_one_based_epochs_and_the_loss(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trainer(tmp_path, [IterTimer(), ProgressBar(refresh_rate=1, terminal_only=False)], max_epochs=2,
            enable_progress_bar=True, enable_checkpointing=False).fit(module(), loader(2))
    out = capsys.readouterr().out
    assert "Epoch 1/2" in out and "Epoch 2/2" in out and "Epoch 0" not in out
    assert "loss=" in out and "v_num" not in out


OFF_TERMINAL_RUN = """
import sys
from det_tiny import loader, module, trainer
from detlight.callbacks import IterTimer, ProgressBar, TextLogger
bar = ProgressBar(refresh_rate=1)
trainer(sys.argv[1], [IterTimer(), TextLogger(interval=1), bar], max_epochs=2, enable_progress_bar=True,
        enable_checkpointing=False).fit(module(), loader(3), loader(2))
assert not bar.is_enabled
"""


def test_off_a_terminal_only_the_log_lines_are_printed(tmp_path: Path) -> None:
    # stdout and stderr into one file, as a SLURM .out file or `2>&1 | tee` has them
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    with open(tmp_path / "slurm.out", "w") as out:
        subprocess.run([sys.executable, "-c", OFF_TERMINAL_RUN, str(tmp_path)], stdout=out, stderr=subprocess.STDOUT,
                       env=env, check=True, timeout=120)
    text = (tmp_path / "slurm.out").read_text()
    assert "\r" not in text and "\x1b[" not in text and "Epoch 1/2" not in text  # no bar, no repaints
    heads = [line.split(" - INFO - ")[1].split("\t")[0] for line in text.splitlines() if " - INFO - Epoch" in line]
    assert heads == [f"Epoch{head}" for head in (" [1][1/3]", " [1][2/3]", " [1][3/3]", "(val) [1][2]",
                                                 " [2][1/3]", " [2][2/3]", " [2][3/3]", "(val) [2][2]")]


def test_on_a_terminal_the_bar_is_drawn(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    bar = ProgressBar()
    monkeypatch.setattr("sys.stdout", io.StringIO())
    assert not bar.is_enabled
    monkeypatch.setattr("sys.stdout", Tty())
    assert bar.is_enabled
    bar.disable()  # enable_progress_bar: false still wins
    assert not bar.is_enabled


def test_a_plain_tqdm_bar_is_replaced_with_its_settings(tmp_path: Path) -> None:
    tr = pl.Trainer(default_root_dir=str(tmp_path), callbacks=[TQDMProgressBar(refresh_rate=7)], logger=False)
    use_detlight_progress_bar(tr)
    bars = [cb for cb in tr.callbacks if isinstance(cb, TQDMProgressBar)]
    assert len(bars) == 1 and type(bars[0]) is ProgressBar and bars[0].refresh_rate == 7


def test_log_lines_go_above_the_bar_not_onto_its_line() -> None:
    def lines_with(handler_cls: type[logging.Handler]) -> list[str]:
        stream = io.StringIO()
        bar = tqdm(total=10, file=stream, ascii=True)
        bar.update(3)
        logger = logging.getLogger("detlight.test_progress_bar")
        handler = handler_cls(stream)  # type: ignore[call-arg]
        logger.addHandler(handler)
        try:
            logger.warning("Epoch [1][3/10]")
        finally:
            logger.removeHandler(handler)
            bar.close()
        return [line.split("\r")[-1] for line in stream.getvalue().split("\n")]

    assert "Epoch [1][3/10]" in lines_with(TqdmLoggingHandler)
    assert "Epoch [1][3/10]" not in lines_with(logging.StreamHandler)  # the plain handler writes onto the bar


def test_messages_that_do_not_apply_are_silenced(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from lightning.pytorch.utilities._pytree import _tree_flatten

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_lightning()
        with caplog.at_level(logging.INFO):
            pl.Trainer(default_root_dir=str(tmp_path), logger=False)
        _tree_flatten(1)
        text = TextLogger(interval=1)  # detlight logs by its own interval: no log_every_n_steps warning
        trainer(tmp_path, [IterTimer(), text], max_epochs=1, log_every_n_steps=50, logger=CSVLogger(str(tmp_path)),
                enable_checkpointing=False).fit(module(), loader(2))
    assert "Tip:" not in caplog.text
    messages = [str(w.message) for w in seen]
    assert not [m for m in messages if "LeafSpec" in m or "log_every_n_steps" in m], messages


def test_a_loss_on_an_accelerator_is_copied_to_the_host_once_per_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace
    from unittest import mock

    import torch


    reads: list[int] = []

    def device_loss(value: float) -> mock.MagicMock:
        loss = mock.MagicMock(spec=torch.Tensor)  # stands in for a CUDA tensor: float() would sync the device
        loss.device = torch.device("cuda", 0)
        loss.__float__ = lambda self: reads.append(1) or value
        return loss

    monkeypatch.setattr(TQDMProgressBar, "get_metrics", lambda self, trainer, pl_module: {})
    bar = ProgressBar()
    module_ = SimpleNamespace(log_buffer=SimpleNamespace(val_history={"loss": [device_loss(2.0)]}))
    shown = []
    for step in range(0, 120):
        module_.log_buffer.val_history["loss"] = [device_loss(2.0 + step)]
        shown.append(bar.get_metrics(SimpleNamespace(global_step=step), module_)["loss"])  # type: ignore[arg-type]
    assert len(reads) == 3  # steps 0, 50 and 100 only
    assert shown[0] == shown[49] == "2.0000" and shown[50] == "52.0000" and shown[119] == "102.0000"
    host = {"loss": [torch.tensor(7.0)]}
    module_.log_buffer.val_history = host
    assert bar.get_metrics(SimpleNamespace(global_step=121), module_)["loss"] == "7.0000"  # type: ignore[arg-type]
