"""NanGuard: a non-finite loss stops the run with a precise message (or skips the step); no NaN checkpoint is written."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader

from detlight.callbacks.nan_guard import NanGuard, NonFiniteLossError
from detlight.module import DetectorModule


class Net(nn.Module):
    """Two losses; ``loss_bad`` becomes NaN at the global batches listed in ``bad_at``."""

    def __init__(self, bad_at: tuple[int, ...]) -> None:
        super().__init__()
        self.num_classes = 1
        self.fc = nn.Linear(3, 1)
        self.bad_at = bad_at
        self.calls = 0

    def forward_train(self, img: torch.Tensor, img_metas: list, **kwargs: Any) -> dict[str, torch.Tensor]:
        out = self.fc(img.mean(dim=(2, 3)))
        bad = out.mean() * (float("nan") if self.calls in self.bad_at else 1.0)
        self.calls += 1
        return {"loss_good": out.pow(2).mean(), "loss_bad": bad.abs()}


def _batches(n: int) -> DataLoader:
    data = [{"img": torch.randn(2, 3, 4, 4), "img_metas": [{}, {}]} for _ in range(n)]
    return DataLoader(data, batch_size=None)


def _fit(tmp_path, guard: NanGuard, bad_at: tuple[int, ...], batches: int = 8) -> tuple[DetectorModule, ModelCheckpoint]:
    module = DetectorModule(Net(bad_at), optimizer={"type": "SGD", "lr": 0.1, "momentum": 0.9})
    ckpt = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=1, save_top_k=-1, filename="{step}")
    trainer = pl.Trainer(max_epochs=1, logger=False, callbacks=[guard, ckpt], enable_progress_bar=False,
                         enable_model_summary=False, log_every_n_steps=4, accelerator="cpu")
    trainer.fit(module, train_dataloaders=_batches(batches))
    return module, ckpt


def test_stop_names_key_iteration_and_last_good_checkpoint(tmp_path):
    with pytest.raises(NonFiniteLossError) as err:
        _fit(tmp_path, NanGuard(), bad_at=(2,))
    message = str(err.value)
    assert "loss_bad=nan" in message and "loss=nan" in message and "loss_good" not in message
    assert "epoch 1, iteration 3" in message
    # checkpoints after the bad step were refused: the last one on disk is from step 2 and is named
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == ["step=1.ckpt", "step=2.ckpt"]
    assert "step=2.ckpt" in message


def test_stop_reads_the_flag_only_at_the_check_interval(tmp_path):
    """With check_interval=4 a NaN at batch 5 is found at batch 8 (no checkpoint in between gets written)."""
    guard = NanGuard(check_interval=4)
    with pytest.raises(NonFiniteLossError, match="iteration 5"):
        _fit(tmp_path, guard, bad_at=(4,), batches=8)
    assert max(int(p.stem.split("=")[1]) for p in tmp_path.glob("*.ckpt")) == 4


def test_skip_policy_drops_the_bad_steps_and_finishes_with_finite_weights(tmp_path):
    guard = NanGuard(policy="skip")
    module, _ = _fit(tmp_path, guard, bad_at=(1, 3))
    assert guard.skipped == 2
    assert all(torch.isfinite(p).all() for p in module.parameters())
    assert len(list(tmp_path.glob("*.ckpt"))) == 8


def test_skip_policy_stops_after_too_many_consecutive_skips(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"more than 2 in a row"):
        _fit(tmp_path, NanGuard(policy="skip", max_skips=2), bad_at=(1, 2, 3, 4))


@pytest.mark.parametrize("kwargs", [{"policy": "ignore"}, {"check_interval": -1}, {"max_skips": -2}])
def test_bad_arguments_are_rejected(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        NanGuard(**kwargs)


def test_stop_policy_does_no_host_sync_between_checks(monkeypatch):
    """The per-step record stays on the device: no .item()/.tolist()/bool() until the check interval."""
    guard = NanGuard(check_interval=64)  # above the 21 records below; the rows are preallocated (64 x 5 floats)

    class Stub:
        log_every_n_steps = 50
        current_epoch = 0

        class fit_loop:  # noqa: N801 - mimics trainer.fit_loop.epoch_loop.total_batch_idx
            class epoch_loop:  # noqa: N801
                total_batch_idx = 0

    module = type("M", (), {"last_outputs": {"log_vars": {f"loss_{i}": torch.tensor(1.0) for i in range(5)}}})()
    guard.on_train_batch_end(Stub(), module, None, None, 0)  # type: ignore[arg-type]
    syncs: list[str] = []
    for name in ("item", "tolist", "__bool__", "__float__", "cpu", "numpy"):
        original = getattr(torch.Tensor, name)

        def spy(self, *args, _name=name, _original=original, **kwargs):
            syncs.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, spy)
    for _ in range(20):
        guard.on_train_batch_end(Stub(), module, None, None, 0)  # type: ignore[arg-type]
    assert syncs == []
