"""Callbacks and datasets the fault tests put into real runs (importable by ``class_path`` from a child process)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl


class SlowBatches(pl.Callback):
    """Sleeps ``pause`` seconds after every training batch and writes the batches done to ``progress`` (if given), so
    a test can signal a run at a known point."""

    def __init__(self, pause: float = 0.2, progress: str = "") -> None:
        self.pause = pause
        self.progress = progress

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.progress:
            Path(self.progress).write_text(str(trainer.fit_loop.epoch_loop.total_batch_idx + 1))
        time.sleep(self.pause)


class KillWorkerBeforeStep(pl.Callback):
    """SIGKILLs one live DataLoader worker of the train loader (as the out-of-memory killer does) right before the
    optimizer step of global batch ``at``, then waits there: torch's SIGCHLD handler raises inside this hook."""

    def __init__(self, at: int = 1, wait: float = 10.0) -> None:
        self.at = at
        self.wait = wait

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        if trainer.fit_loop.epoch_loop.total_batch_idx != self.at:
            return
        pids = live_processes(parent=os.getpid())
        assert pids, "no DataLoader worker to kill"
        os.kill(pids[0], signal.SIGKILL)
        deadline = time.monotonic() + self.wait
        while time.monotonic() < deadline:  # torch's SIGCHLD handler raises in here
            time.sleep(0.05)


def live_processes(*, parent: int | None = None, session: int | None = None) -> list[int]:
    """The live processes whose parent is ``parent`` or whose session id is ``session`` (Linux /proc), sorted."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] in ("Z", "X"):
            continue
        if (parent is not None and int(fields[1]) == parent) or (session is not None and int(fields[3]) == session):
            pids.append(int(entry))
    return sorted(pids)
