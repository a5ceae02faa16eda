"""LrUpdater / MomentumUpdater inside a real Lightning Trainer: per-iteration values, resume, monitors, YAML."""

from __future__ import annotations

import csv
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from detlight.callbacks.lr_updater import LrUpdater, MomentumUpdater, lr_log_values, momentum_log_values
from detlight.optim.builder import build_optimizer
from detlight.optim.lr import Progress

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # Lightning's small-loader / mid-epoch notes

OptimizerFn = Callable[[torch.nn.Module], torch.optim.Optimizer]


def sgd(module: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(module.parameters(), lr=0.02, momentum=0.9)


class Tiny(pl.LightningModule):
    def __init__(self, make_optimizer: OptimizerFn = sgd) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.make_optimizer = make_optimizer

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.layer(batch[0]).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.make_optimizer(self)


class Recorder(pl.Callback):
    """Reads what the optimizer holds when each batch starts (after the updaters, which come first)."""

    def __init__(self) -> None:
        self.rows: dict[int, tuple[list[float], list[float]]] = {}

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, idx: int) -> None:
        groups = trainer.optimizers[0].param_groups
        moms = [g["momentum"] if "momentum" in g else g["betas"][0] for g in groups]
        self.rows[trainer.fit_loop.epoch_loop.total_batch_idx] = ([g["lr"] for g in groups], moms)


def fit(
    callbacks: list[pl.Callback],
    max_epochs: int = 3,
    batches: int = 10,
    make_optimizer: OptimizerFn = sgd,
    root: Path | None = None,
    ckpt_path: str | None = None,
    **trainer_kwargs: Any,
) -> Recorder:
    recorder = Recorder()
    trainer = pl.Trainer(
        max_epochs=max_epochs, callbacks=[*callbacks, recorder], logger=trainer_kwargs.pop("logger", False),
        enable_checkpointing=root is not None, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, default_root_dir=root, **trainer_kwargs,
    )
    loader = DataLoader(TensorDataset(torch.ones(batches, 1)), batch_size=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(Tiny(make_optimizer), loader, ckpt_path=ckpt_path)
    return recorder


def expected(callback: LrUpdater | MomentumUpdater, base: float, iters: range, per_epoch: int, epochs: int) -> list[float]:
    max_iters = per_epoch * epochs
    return [callback.policy.value_at(base, Progress(i // per_epoch, i, epochs, max_iters, per_epoch)) for i in iters]


def test_mmdet_1x_golden_values_through_the_trainer(check_golden: Callable[[float, str], None]) -> None:
    updater = LrUpdater(policy="step", step=[8, 11], warmup="linear", warmup_iters=500, warmup_ratio=0.001)
    rows = fit([updater], max_epochs=12, batches=100).rows
    assert sorted(rows) == list(range(1200))
    golden = {0: "=2e-05", 1: "=5.996e-05", 250: "=0.01001", 499: "0.01996", 500: "=0.02", 799: "=0.02",
              800: "=0.002", 1100: "=2e-4"}
    for i, value in golden.items():
        check_golden(rows[i][0][0], value)
    assert [rows[i][0][0] for i in range(1200)] == expected(updater, 0.02, range(1200), 100, 12)
    assert updater.current_lr() == [rows[1199][0][0]]


RESUME_CASES = {
    "per-iter cosine + warmup": (
        {"policy": "CosineAnnealing", "by_epoch": False, "min_lr_ratio": 0.01, "warmup": "exp", "warmup_iters": 12},
        {"policy": "CosineAnnealing", "by_epoch": False, "min_momentum": 0.5},
    ),
    "epoch step + warmup over epochs": (
        {"policy": "step", "step": [1, 2], "warmup": "linear", "warmup_iters": 18, "warmup_ratio": 0.01},
        {"policy": "step", "step": 2, "gamma": 0.9},
    ),
}


@pytest.mark.parametrize("case", sorted(RESUME_CASES))
@pytest.mark.parametrize("resume_step", [15, 10])
def test_resume_continues_the_same_sequence(case: str, resume_step: int, tmp_path: Path) -> None:
    lr_cfg, mom_cfg = RESUME_CASES[case]

    def callbacks() -> list[pl.Callback]:
        return [LrUpdater(**lr_cfg), MomentumUpdater(**mom_cfg)]

    ckpt = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=5, save_top_k=-1, filename="{step}")
    full = fit([*callbacks(), ckpt], root=tmp_path).rows
    assert sorted(full) == list(range(30))
    lr_updater, mom_updater = callbacks()
    assert [full[i][0][0] for i in range(30)] == expected(lr_updater, 0.02, range(30), 10, 3)
    assert [full[i][1][0] for i in range(30)] == expected(mom_updater, 0.9, range(30), 10, 3)

    resumed = fit([lr_updater, mom_updater], root=tmp_path / "r", ckpt_path=str(tmp_path / f"step={resume_step}.ckpt"))
    assert sorted(resumed.rows) == list(range(resume_step, 30))
    assert resumed.rows == {i: full[i] for i in range(resume_step, 30)}


def test_learning_rate_monitor_sees_the_scheduled_values(tmp_path: Path) -> None:
    updater = LrUpdater(policy="poly", by_epoch=False, power=1.0, min_lr=0.0, warmup="constant", warmup_iters=3)
    monitor = LearningRateMonitor(logging_interval="step", log_momentum=True)
    logger = CSVLogger(tmp_path, name="", version="")
    rows = fit([updater, MomentumUpdater(policy="LinearAnnealing", by_epoch=False, min_momentum=0.0), monitor],
               max_epochs=2, batches=5, logger=logger, log_every_n_steps=1).rows
    with open(Path(logger.log_dir) / "metrics.csv") as f:
        logged = [row for row in csv.DictReader(f) if row.get("lr-SGD")]
    assert [float(r["lr-SGD"]) for r in logged] == pytest.approx([rows[i][0][0] for i in range(10)], rel=1e-12)
    assert [float(r["lr-SGD-momentum"]) for r in logged] == pytest.approx([rows[i][1][0] for i in range(10)])
    assert float(logged[0]["lr-SGD"]) == pytest.approx(0.02 * 0.1)


def test_adamw_cyclic_lr_and_beta1(check_golden: Callable[[float, str], None]) -> None:
    def adamw(module: torch.nn.Module) -> torch.optim.Optimizer:
        return torch.optim.AdamW(module.parameters(), lr=0.001, betas=(0.95, 0.99), weight_decay=0.01)

    lr_cb = LrUpdater(policy="cyclic", target_ratio=[10, 1e-4], cyclic_times=1, step_ratio_up=0.4)
    mom_cb = MomentumUpdater(policy="cyclic", target_ratio=[0.85 / 0.95, 1], cyclic_times=1, step_ratio_up=0.4)
    rows = fit([lr_cb, mom_cb], max_epochs=2, batches=25, make_optimizer=adamw).rows
    # 50 iterations, 20 up: the PointPillars shape at 1/160 of the length
    check_golden(rows[0][0][0], "=0.001")
    check_golden(rows[10][0][0], "=0.0055")
    check_golden(rows[10][1][0], "=0.90")
    check_golden(rows[35][0][0], "=0.00500005")
    assert [rows[i][1][0] for i in range(50)] == expected(mom_cb, 0.95, range(50), 25, 2)
    assert mom_cb.current_momentum() == [rows[49][1][0]]


def test_iteration_based_run_length_counts_batches() -> None:
    updater = LrUpdater(policy="poly", by_epoch=False, power=1.0, min_lr=0.0)
    rows = fit([updater], max_epochs=-1, batches=10, max_steps=15, accumulate_grad_batches=2).rows
    assert sorted(rows) == list(range(30))
    assert rows[29][0][0] == pytest.approx(0.02 / 30)  # max_iters = 15 steps x 2 batches


def test_one_cycle_sets_initial_lr_and_param_group_tags() -> None:
    def paramwise(module: torch.nn.Module) -> torch.optim.Optimizer:
        return build_optimizer(module, {"type": "SGD", "lr": 0.02, "momentum": 0.9, "weight_decay": 1e-4,
                                        "paramwise_cfg": {"bias_lr_mult": 2.0}})

    updater = LrUpdater(policy="OneCycle", max_lr=[0.1, 0.2])
    rows = fit([updater], max_epochs=1, batches=10, make_optimizer=paramwise).rows
    assert rows[0][0] == pytest.approx([0.004, 0.008])  # max_lr / div_factor, replacing the optimizer's lr
    optimizer = updater._optimizers[0]
    assert [g["initial_lr"] for g in optimizer.param_groups] == pytest.approx([0.004, 0.008])
    values = lr_log_values(optimizer)
    assert set(values) == {"learning_rate", "learning_rate/group0", "learning_rate/group1"}
    assert values["learning_rate"] == values["learning_rate/group0"] == optimizer.param_groups[0]["lr"]
    assert momentum_log_values(optimizer) == {"momentum": 0.9}


def test_plain_optimizer_log_values() -> None:
    adam = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=0.1, betas=(0.8, 0.9))
    assert lr_log_values(adam) == {"learning_rate": 0.1}
    assert momentum_log_values(adam) == {"momentum": 0.8}


def test_momentum_updater_rejects_optimizer_without_momentum() -> None:
    def adagrad(module: torch.nn.Module) -> torch.optim.Optimizer:
        return torch.optim.Adagrad(module.parameters(), lr=0.1)

    with pytest.raises(ValueError, match="momentum_config: Adagrad has neither"):
        fit([MomentumUpdater(policy="step", step=1)], max_epochs=1, batches=2, make_optimizer=adagrad)


def test_from_config_and_constructor_errors() -> None:
    assert LrUpdater.from_config({"policy": "step", "step": [8, 11]}).policy.by_epoch is True
    assert LrUpdater.from_config({"policy": "cyclic"}).policy.by_epoch is False
    with pytest.raises(ValueError, match=r"lr_config\.foo.*accepted keys"):
        LrUpdater.from_config({"policy": "step", "step": 3, "foo": 1})
    with pytest.raises(ValueError, match=r"lr_config\.min_lr.*both"):
        LrUpdater(policy="CosineAnnealing", min_lr=0.0, min_lr_ratio=0.1)
    with pytest.raises(ValueError, match=r"lr_config\.by_epoch"):
        LrUpdater(policy="OneCycle", max_lr=0.1, by_epoch=True)
    with pytest.raises(ValueError, match=r"lr_config\.policy.*known policies"):
        LrUpdater(policy="Linear")
    with pytest.raises(ValueError, match=r"momentum_config\.min_momentum"):
        MomentumUpdater.from_config({"policy": "CosineAnnealing"})


def test_yaml_is_validated_by_jsonargparse() -> None:
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--callbacks", type=list[pl.Callback])
    yaml = """
callbacks:
  - class_path: detlight.callbacks.lr_updater.LrUpdater
    init_args: {policy: step, step: [8, 11], warmup: linear, warmup_iters: 500, warmup_ratio: 0.001}
  - class_path: detlight.callbacks.lr_updater.MomentumUpdater
    init_args: {policy: cyclic, target_ratio: [0.8947, 1.0]}
"""
    callbacks = parser.instantiate(parser.parse_string(yaml)).callbacks
    assert isinstance(callbacks[0], LrUpdater) and callbacks[0].policy.step == [8, 11]
    assert isinstance(callbacks[1], MomentumUpdater) and callbacks[1].policy.target_ratio == (0.8947, 1.0)
    with pytest.raises(Exception, match="warmup"):
        parser.parse_string(yaml.replace("warmup: linear", "warmup: cosine"))
