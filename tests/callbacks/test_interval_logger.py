"""IntervalLogger (mmcv LoggerHook + TensorboardLoggerHook) and the cross-rank reduction helper."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
import torch.multiprocessing as mp
from lightning.pytorch.loggers import TensorBoardLogger
from logging_ddp_worker import reduce_worker
from logging_tiny import TinyModule, batch_values, make_trainer, uneven_loader, weighted_mean
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from detlight.callbacks._reduce import cached_averages, invalidate
from detlight.callbacks.interval_logger import IntervalLogger, max_iters
from detlight.callbacks.iter_timer import IterTimer
from detlight.callbacks.text_logger import TextLogger
from detlight.logbuffer import LogBuffer

SIZES = [1, 2, 3, 4, 1, 2, 3]  # 7 uneven batches per epoch, values 1..16


def _fit_tb(tmp_path: Path, logger_cb: IntervalLogger, module: pl.LightningModule | None = None,
            sizes: list[int] = SIZES, max_epochs: int = 2, **kwargs: Any) -> dict[str, list[tuple[int, float]]]:
    """Fit, then read every scalar series back from the TensorBoard event file: {tag: [(step, value), ...]}."""
    tb = TensorBoardLogger(str(tmp_path), name="tb", version="")
    trainer = make_trainer(tmp_path, [IterTimer(), logger_cb], max_epochs=max_epochs, logger=tb, **kwargs)
    trainer.fit(module or TinyModule(), uneven_loader(sizes), uneven_loader([2, 1]))
    acc = EventAccumulator(tb.log_dir, size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _expected(sizes: list[int], ends: list[int], n: int, offset: float = 0.0) -> list[float]:
    """Hand computation: sample-weighted mean of the batches (ends[i] - n, ends[i]] of one epoch."""
    values = [[v + offset for v in batch] for batch in batch_values(sizes)]
    return [weighted_mean(values[max(0, end - n + 1): end + 1]) for end in ends]


def test_weighted_interval_averages_tags_and_steps(tmp_path: Path) -> None:
    scalars = _fit_tb(tmp_path, IntervalLogger(interval=3), TinyModule(epoch_offset=100.0))
    # by_epoch, ignore_last: batches 2 and 5 of each epoch; mmcv step = runner.iter + 1
    assert [s for s, _ in scalars["train/loss_a"]] == [3, 6, 10, 13]
    want = _expected(SIZES, [2, 5], 3) + _expected(SIZES, [2, 5], 3, offset=100.0)
    assert [v for _, v in scalars["train/loss_a"]] == pytest.approx(want, rel=1e-6)
    assert want[0] == pytest.approx((1 + 2 + 3 + 4 + 5 + 6) / 6)  # the weighting really is by sample
    assert [v for _, v in scalars["train/loss"]] == pytest.approx([2 * w for w in want], rel=1e-6)
    assert not {"train/time", "train/data_time", "time", "data_time"} & set(scalars)
    assert [v for _, v in scalars["learning_rate"]] == pytest.approx([0.1] * 6)  # 4 train logs + 2 evals
    assert [v for _, v in scalars["momentum"]] == pytest.approx([0.9] * 6)
    # eval results after each epoch at step iters_done + 1, as mmcv logged them after the epoch
    assert scalars["val/bbox_mAP"] == [(8, pytest.approx(0.5)), (15, pytest.approx(0.625))]
    assert "learning_rate/group0" not in scalars


@pytest.mark.parametrize(("ignore_last", "steps"), [(True, [3, 6]), (False, [3, 6, 7])])
def test_ignore_last(tmp_path: Path, ignore_last: bool, steps: list[int]) -> None:
    scalars = _fit_tb(tmp_path, IntervalLogger(interval=3, ignore_last=ignore_last), max_epochs=1)
    assert [s for s, _ in scalars["train/loss_a"]] == steps
    if not ignore_last:  # mmcv: the last, short interval is still averaged over the last `interval` entries
        assert scalars["train/loss_a"][-1][1] == pytest.approx(_expected(SIZES, [6], 3)[0], rel=1e-6)


def test_buffer_cleared_at_each_epoch_start(tmp_path: Path) -> None:
    # 2 batches per epoch, interval 5: the end-of-epoch average may only see this epoch's batches
    sizes = [1, 3]
    scalars = _fit_tb(tmp_path, IntervalLogger(interval=5, ignore_last=False), TinyModule(epoch_offset=100.0),
                      sizes=sizes, max_epochs=3)
    want = [_expected(sizes, [1], 5, offset=100.0 * e)[0] for e in range(3)]
    assert scalars["train/loss_a"] == [(2, pytest.approx(want[0])), (4, pytest.approx(want[1])),
                                       (6, pytest.approx(want[2]))]


def test_by_iter_counts_over_the_run(tmp_path: Path) -> None:
    logger = IntervalLogger(interval=3, by_epoch=False)
    scalars = _fit_tb(tmp_path, logger, max_epochs=2)
    assert [s for s, _ in scalars["train/loss_a"]] == [3, 6, 9, 12]


def test_per_group_lr_tags_when_groups_differ(tmp_path: Path) -> None:
    class TwoGroups(TinyModule):
        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam([{"params": [self.layer.weight], "lr": 0.01},
                                     {"params": [self.layer.bias], "lr": 0.002}], betas=(0.8, 0.99))

    scalars = _fit_tb(tmp_path, IntervalLogger(interval=3), TwoGroups(), max_epochs=1)
    assert [v for _, v in scalars["learning_rate"]] == pytest.approx([0.01] * 3)
    assert [v for _, v in scalars["learning_rate/group1"]] == pytest.approx([0.002] * 3)
    assert [v for _, v in scalars["momentum"]] == pytest.approx([0.8] * 3)  # betas[0]


def test_log_eval_false_keeps_val_tags_out(tmp_path: Path) -> None:
    scalars = _fit_tb(tmp_path, IntervalLogger(interval=3, log_eval=False), max_epochs=1)
    assert not [tag for tag in scalars if tag.startswith("val/")]


def test_no_host_sync_on_non_logging_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: dict[int, list[str]] = {}
    current: list[int | None] = [None]

    def counting(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if current[0] is not None:
                calls.setdefault(current[0], []).append(name)
            return original(self, *args, **kwargs)
        return wrapper

    for name in ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__"):
        monkeypatch.setattr(torch.Tensor, name, counting(name, getattr(torch.Tensor, name)))

    class Open(pl.Callback):
        def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
            current[0] = batch_idx

    class Close(pl.Callback):
        def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, i: int) -> None:
            current[0] = None

    callbacks = [Open(), IterTimer(), TextLogger(interval=3), IntervalLogger(interval=3), Close()]
    tb = TensorBoardLogger(str(tmp_path), name="tb", version="")
    make_trainer(tmp_path, callbacks, logger=tb).fit(TinyModule(grad_norm=True), uneven_loader(SIZES))
    assert {i: names for i, names in calls.items() if i not in (2, 5)} == {}
    # a logging step copies to the host exactly once, shared by both loggers (the counter does see it)
    assert calls[2] == ["tolist"] and calls[5] == ["tolist"]


def test_module_without_log_buffer_is_rejected(tmp_path: Path) -> None:
    class Plain(TinyModule):
        def __init__(self) -> None:
            super().__init__()
            del self.log_buffer

    trainer = make_trainer(tmp_path, [IntervalLogger()])
    with pytest.raises(TypeError, match="needs a LightningModule with a `log_buffer`.*Plain has none"):
        trainer.fit(Plain(), uneven_loader(SIZES))


def test_timer_after_logger_is_rejected(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, [IntervalLogger(), IterTimer()])
    with pytest.raises(ValueError, match="Put IterTimer\\(\\) before IntervalLogger"):
        trainer.fit(TinyModule(), uneven_loader(SIZES))


@pytest.mark.parametrize("interval", [0, -1, 2.5, True])
def test_bad_interval(interval: Any) -> None:
    with pytest.raises(ValueError, match="`interval` must be a positive integer"):
        IntervalLogger(interval=interval)


@pytest.mark.parametrize(("kwargs", "want"), [
    ({"max_epochs": 3}, 21), ({"max_epochs": -1, "max_steps": 10}, 10), ({"max_epochs": 3, "max_steps": 10}, 10),
    ({"max_epochs": -1, "max_steps": 4, "accumulate_grad_batches": 2}, 8),
])
def test_max_iters(tmp_path: Path, kwargs: dict[str, int], want: int) -> None:
    seen: list[int | None] = []

    class Probe(pl.Callback):
        def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
            seen.append(max_iters(trainer))
            raise _Stop  # nothing to train: the bound is all this test needs

    epochs = kwargs.pop("max_epochs")
    with pytest.raises(_Stop):
        make_trainer(tmp_path, [Probe()], max_epochs=epochs, **kwargs).fit(TinyModule(), uneven_loader(SIZES))
    assert seen == [want]


class _Stop(Exception):
    pass


# ---------------------------------------------------------------------- reduction helper
def test_cached_averages_once_per_iteration_and_interval() -> None:
    buffer = LogBuffer()
    buffer.update({"loss": torch.tensor(1.0)}, 1)
    buffer.update({"loss": torch.tensor(4.0)}, 3)
    assert cached_averages(buffer, 2, iteration=7) == {"loss": pytest.approx(3.25)}
    buffer.update({"loss": torch.tensor(100.0)}, 1)
    assert cached_averages(buffer, 2, iteration=7)["loss"] == pytest.approx(3.25)  # same step: shared result
    assert cached_averages(buffer, 2, iteration=8)["loss"] == pytest.approx(28.0)  # (4 * 3 + 100 * 1) / 4
    buffer.clear()
    invalidate(buffer)
    assert cached_averages(buffer, 2, iteration=8) == {}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.ddp
def test_ddp_union_of_keys_reduction(tmp_path: Path) -> None:
    # fork (where there is one) starts the workers without re-importing torch; the worker only needs CPU ops
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    mp.start_processes(reduce_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True, start_method=method)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    # global sample-weighted means: sum(v * n) / sum(n) over both ranks' entries
    want_all = {"loss_cls": (1 * 2 + 3 * 2 + 5 * 4 + 9 * 1) / 9, "loss": (2 * 2 + 4 * 2 + 6 * 4 + 10 * 1) / 9,
                "loss_extra": 7.0}
    assert dict(r0["all"]) == pytest.approx(want_all) and dict(r1["all"]) == pytest.approx(want_all)
    assert [k for k, _ in r0["all"]] == ["loss_cls", "loss", "loss_extra"]  # rank 0's order, then the extra key
    want_last = {"loss_cls": (3 * 2 + 9 * 1) / 3, "loss": (4 * 2 + 10 * 1) / 3, "loss_extra": 7.0}
    assert dict(r0["last"]) == pytest.approx(want_last)
    assert len(r0["warnings"]) == 1 and "'loss_extra'" in r0["warnings"][0]
    assert "rank(s) [1]" in r0["warnings"][0] and "not by rank(s) [0]" in r0["warnings"][0]
    assert r1["warnings"] == []
