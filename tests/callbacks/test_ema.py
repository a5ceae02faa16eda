"""EMA: mmcv EMAHook / mmdet Exp- and LinearMomentumEMAHook momentum sequences, swap for eval/checkpoint, resume."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from det_tiny import loader, module, trainer
from lightning.pytorch.callbacks import Callback

from detlight.callbacks.checkpoint import MMCheckpoint
from detlight.callbacks.ema import EMA, ema_momentum
from detlight.exceptions import CheckpointError


def _tracked(pl_module, params_only: bool) -> dict[str, torch.Tensor]:  # noqa: ANN001
    model = pl_module.model
    items = model.named_parameters() if params_only else model.state_dict().items()
    return {k: v.detach().clone() for k, v in items if v.is_floating_point()}


class _Before(Callback):
    """Placed before EMA: the values the EMA update of each batch reads."""

    def __init__(self, params_only: bool) -> None:
        self.params_only = params_only
        self.initial: dict[str, torch.Tensor] = {}
        self.values: list[dict[str, torch.Tensor]] = []

    def on_fit_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        self.initial = _tracked(pl_module, self.params_only)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self.values.append(_tracked(pl_module, self.params_only))


class _After(Callback):
    """Placed after EMA: its averages after each batch, and what the model holds at each hook."""

    def __init__(self, ema: EMA) -> None:
        self.ema = ema
        self.averages: list[dict[str, torch.Tensor]] = []
        self.val_checks: list[bool] = []
        self.batch_start_swapped: list[bool] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        self.batch_start_swapped.append(self.ema.swapped)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self.averages.append(self.ema.averaged_state())

    def on_validation_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        live = dict(pl_module.model.named_parameters())
        avg = self.ema.averaged_state()
        self.val_checks.append(self.ema.swapped and all(torch.equal(live[k], v) for k, v in avg.items()))


# Golden values worked out by hand from docs/mmcv-semantics.md §2.8.
@pytest.mark.parametrize(
    ("schedule", "it", "kwargs", "expected"),
    [
        ("mmcv", 0, {"momentum": 0.6, "warm_up": 3}, 1 / 3),
        ("mmcv", 1, {"momentum": 0.6, "warm_up": 3}, 0.5),
        ("mmcv", 5, {"momentum": 0.6, "warm_up": 3}, 0.6),
        ("mmcv", 9, {"momentum": 0.6, "interval": 2, "warm_up": 3}, 0.36),  # momentum ** interval
        ("mmcv", 1000, {"momentum": 2e-4}, 2e-4),  # mmcv defaults: the warm-up term never binds
        ("linear", 2, {"momentum": 0.9, "warm_up": 8}, 0.3),
        ("exp", 0, {"momentum": 0.1, "total_iter": 1}, 0.9 * math.exp(-1) + 0.1),
        ("exp", 3, {"momentum": 0.1, "total_iter": 2}, 0.9 * math.exp(-2) + 0.1),
    ],
)
def test_momentum_formulas(schedule: str, it: int, kwargs: dict, expected: float) -> None:
    assert ema_momentum(schedule, it, **kwargs) == pytest.approx(expected)  # type: ignore[arg-type]


def _hand_momentum(schedule: str, it: int, momentum: float, interval: int, warm_up: int, total_iter: int) -> float:
    if schedule == "exp":  # mmdet ExpMomentumEMAHook
        return (1 - momentum) * math.exp(-(1 + it) / total_iter) + momentum
    return min(momentum**interval, (1 + it) / (warm_up + it))  # mmcv EMAHook / mmdet LinearMomentumEMAHook


@pytest.mark.parametrize(
    ("schedule", "interval"), [("mmcv", 1), ("mmcv", 2), ("linear", 2), ("exp", 1), ("exp", 3)],
)
def test_ema_sequence_matches_mmcv_and_mmdet(tmp_path: Path, schedule: str, interval: int) -> None:
    cfg = {"momentum": 0.6, "interval": interval, "warm_up": 3, "total_iter": 4}
    ema = EMA(momentum_schedule=schedule, **cfg)  # type: ignore[arg-type]
    before, after = _Before(params_only=schedule == "mmcv"), _After(ema)
    trainer(tmp_path, [before, ema, after], max_epochs=2, enable_checkpointing=False).fit(module(), loader(3))

    expected = dict(before.initial)
    assert set(after.averages[0]) == set(expected)  # mmcv: parameters only; mmdet: BN statistics too
    for it, (values, got) in enumerate(zip(before.values, after.averages)):
        update = it % interval == 0 if schedule == "mmcv" else (it + 1) % interval == 0
        if update:
            m = _hand_momentum(schedule, it, **cfg)
            expected = {k: (1 - m) * expected[k] + m * values[k] for k in expected}
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], msg=f"{schedule} it={it} {key}")


def test_eval_and_checkpoint_see_ema_weights(tmp_path: Path) -> None:
    ema = EMA(momentum=0.5, warm_up=1)
    before, after = _Before(params_only=True), _After(ema)
    model = module()
    cbs = [before, ema, after, MMCheckpoint(interval=1)]
    trainer(tmp_path, cbs, max_epochs=2).fit(model, loader(3), loader(1, seed=1))
    assert after.val_checks == [True, True]
    assert after.batch_start_swapped == [False] * 6  # raw weights are trained
    ckpt = torch.load(tmp_path / "epoch_1.ckpt", weights_only=True)
    ema_state = next(v for k, v in ckpt["callbacks"].items() if k.startswith("EMA"))
    assert ema_state["swapped"] is True
    for key, value in after.averages[2].items():  # average after the last batch of epoch 1
        torch.testing.assert_close(ckpt["state_dict"][f"model.{key}"], value)
        torch.testing.assert_close(ema_state["ema"][key], before.values[2][key])  # the raw weights
    for key, value in ema.averaged_state().items():  # after fit the model keeps the EMA weights
        torch.testing.assert_close(dict(model.model.named_parameters())[key].detach(), value)


def test_resume_restores_the_ema_exactly(tmp_path: Path) -> None:
    def run(directory: Path, epochs: int, ckpt: str | None = None, seed: int = 0) -> tuple[EMA, torch.nn.Module]:
        ema, model = EMA(momentum=0.3, warm_up=2, momentum_schedule="linear"), module(seed=seed)
        trainer(directory, [ema, MMCheckpoint(interval=1)], max_epochs=epochs).fit(model, loader(3), ckpt_path=ckpt)
        return ema, model.model

    ema_full, full = run(tmp_path / "a", 2)
    run(tmp_path / "b", 1)
    ema_resumed, resumed = run(tmp_path / "b", 2, ckpt=str(tmp_path / "b" / "epoch_1.ckpt"), seed=1)
    for key, value in ema_full.averaged_state().items():
        torch.testing.assert_close(ema_resumed.averaged_state()[key], value)
    for key, value in full.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value)


def test_mismatched_ema_state_is_reported() -> None:
    ema = EMA()
    ema._names, ema._live, ema._ema = ["fc.weight"], [torch.zeros(1)], [torch.zeros(1)]
    with pytest.raises(CheckpointError, match=r"missing \['fc.weight'\], unexpected \['other'\]"):
        ema.load_state_dict({"ema": {"other": torch.zeros(1)}, "swapped": False})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"momentum": 1.0}, "momentum"), ({"interval": 0}, "interval"), ({"momentum_schedule": "cosine"}, "schedule"),
     ({"warm_up": 0}, "warm_up"), ({"momentum_schedule": "exp", "total_iter": 0}, "total_iter")],
)
def test_bad_arguments_are_rejected(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EMA(**kwargs)
