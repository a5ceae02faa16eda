"""IterTimer (mmcv IterTimerHook): data_time / time per iteration, key order, clock restarts."""

from __future__ import annotations

import time
import types
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from logging_tiny import TinyModule, make_trainer, uneven_loader
from torch.utils.data import DataLoader, TensorDataset

from detlight.callbacks import iter_timer
from detlight.callbacks.iter_timer import IterTimer

SIZES = [1, 2, 3, 4, 1, 2, 3]


class Clock:
    """A clock that only moves when the test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def perf_counter(self) -> float:
        return self.now


class ClockedModule(TinyModule):
    """Training takes 1 s and each validation 10 s on the fake clock."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(grad_norm=True)
        self.clock = clock

    def training_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.clock.now += 1.0
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> None:
        self.clock.now += 10.0


def _clocked_loader(clock: Clock, sizes: Sequence[int]) -> DataLoader:
    """Loading a batch takes 0.25 s on the fake clock."""
    values = torch.arange(1, sum(sizes) + 1, dtype=torch.float32).unsqueeze(1)
    batches, start = [], 0
    for size in sizes:
        batches.append(list(range(start, start + size)))
        start += size

    def collate(items: list[tuple[torch.Tensor]]) -> list[torch.Tensor]:
        clock.now += 0.25
        return [torch.stack([item[0] for item in items])]

    return DataLoader(TensorDataset(values), batch_sampler=batches, collate_fn=collate)


def test_keys_in_mmcv_order_with_count_one(tmp_path: Path) -> None:
    module = TinyModule(grad_norm=True)
    make_trainer(tmp_path, [IterTimer()]).fit(module, uneven_loader(SIZES))
    buffer = module.log_buffer  # no logger callback: nothing cleared, one entry per iteration
    assert list(buffer.val_history) == ["data_time", "loss_a", "loss", "grad_norm", "time"]
    for key in ("data_time", "time"):
        assert buffer.n_history[key] == [1] * len(SIZES)
        assert all(type(v) is float and v >= 0 for v in buffer.val_history[key])  # host floats: no device sync
    assert all(t >= d for t, d in zip(buffer.val_history["time"], buffer.val_history["data_time"]))


def test_time_and_data_time_on_a_controlled_clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(iter_timer, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))
    module = ClockedModule(clock)
    trainer = make_trainer(tmp_path, [IterTimer()], max_epochs=1, val_check_interval=3)
    trainer.fit(module, _clocked_loader(clock, SIZES), _clocked_loader(clock, [1]))
    data_time, iter_time = module.log_buffer.val_history["data_time"], module.log_buffer.val_history["time"]
    # every iteration: 0.25 s loading + 1 s training. The 10 s validations after iterations 3 and 6 (and the
    # 0.25 s of loading their batch) are not charged to the next iteration: the clock restarts after validation.
    assert iter_time == pytest.approx([1.25] * len(SIZES))
    assert data_time == pytest.approx([0.25] * len(SIZES))


def test_real_clock_measures_loading_and_step(tmp_path: Path) -> None:
    class Slow(TinyModule):
        def training_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor:
            time.sleep(0.03)
            return super().training_step(batch, batch_idx)

    module = Slow()
    make_trainer(tmp_path, [IterTimer()], max_epochs=1).fit(module, uneven_loader([2, 2, 2]))
    steps = [t - d for t, d in zip(module.log_buffer.val_history["time"], module.log_buffer.val_history["data_time"])]
    assert min(steps) >= 0.03


def test_module_without_log_buffer_is_rejected(tmp_path: Path) -> None:
    class Plain(TinyModule):
        def __init__(self) -> None:
            super().__init__()
            self.log_buffer = {}  # a dict is not a LogBuffer

    with pytest.raises(TypeError, match="IterTimer needs a LightningModule with a `log_buffer`.*type dict"):
        make_trainer(tmp_path, [IterTimer()]).fit(Plain(), uneven_loader(SIZES))
