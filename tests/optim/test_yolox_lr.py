"""mmdet 2.x ``YOLOXLrUpdaterHook`` (``lr_config.policy='YOLOX'``): per-iteration values, by hand and through a run."""

from __future__ import annotations

import math
import warnings

import pytest

from detlight.callbacks.lr_updater import LrUpdater
from detlight.optim.lr import Progress, YoloxLr, build_lr_policy


def mmdet_yolox_lr(base: float, it: int, per_epoch: int, max_epochs: int, warmup_epochs: int, last_epochs: int,
                   ratio: float = 0.05) -> float:
    """mmdet 2.28 yolox_lrupdater_hook.py + mmcv 1.7 LrUpdaterHook.before_train_iter (by_epoch=False), by hand."""
    warmup_iters = warmup_epochs * per_epoch  # warmup_by_epoch: converted in before_train_epoch
    if it < warmup_iters:  # get_warmup_lr: exp scheme on the *base* lr, warmup_ratio=1
        return base * (1 * ((it + 1) / float(warmup_iters)) ** 2)
    last_iter = per_epoch * last_epochs
    progress, max_progress = it + 1, per_epoch * max_epochs
    target = base * ratio
    if progress >= max_progress - last_iter:
        return target
    factor = (progress - warmup_iters) / (max_progress - warmup_iters - last_iter)
    return target + 0.5 * (base - target) * (math.cos(math.pi * factor) + 1)


CFG = dict(policy="YOLOX", warmup="exp", by_epoch=False, warmup_by_epoch=True, warmup_ratio=1, warmup_iters=2,
           num_last_epochs=2, min_lr_ratio=0.05)


def test_values_match_the_mmdet_formula_at_every_iteration() -> None:
    policy = build_lr_policy(**CFG)
    assert isinstance(policy, YoloxLr)
    per_epoch, epochs = 5, 10
    values = [policy.value_at(0.01, Progress(i // per_epoch, i, epochs, per_epoch * epochs, per_epoch))
              for i in range(per_epoch * epochs)]
    assert values == [mmdet_yolox_lr(0.01, i, per_epoch, epochs, 2, 2) for i in range(per_epoch * epochs)]
    # landmarks: quadratic warm-up from base/100, full base at the end of the warm-up, flat target at the end
    assert values[0] == pytest.approx(0.01 * (1 / 10) ** 2) and values[9] == pytest.approx(0.01)
    assert values[10] == pytest.approx(0.0005 + 0.5 * 0.0095 * (math.cos(math.pi / 30) + 1))
    assert values[39:] == [pytest.approx(0.0005)] * 11


def test_values_through_the_trainer() -> None:
    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    seen: list[float] = []

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(1, 1)

        def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
            seen.append(self.trainer.optimizers[0].param_groups[0]["lr"])
            return self.layer(batch[0]).sum()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)

    trainer = pl.Trainer(max_epochs=10, callbacks=[LrUpdater(**CFG)], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(Module(), DataLoader(TensorDataset(torch.ones(5, 1)), batch_size=1))
    assert seen == [pytest.approx(mmdet_yolox_lr(0.01, i, 5, 10, 2, 2), rel=1e-12) for i in range(50)]


def test_num_last_epochs_is_required_and_checked() -> None:
    with pytest.raises(ValueError, match="num_last_epochs"):
        build_lr_policy(policy="YOLOX", min_lr_ratio=0.05)
    with pytest.raises(ValueError, match="lr_config.num_last_epochs"):
        build_lr_policy(policy="YOLOX", min_lr_ratio=0.05, num_last_epochs=-1)
