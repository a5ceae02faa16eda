"""Exponential moving average of the detector's weights, with mmcv's and mmdet's momentum schedules.

Replaces: mmcv ``EMAHook``, mmdet ``ExpMomentumEMAHook`` and ``LinearMomentumEMAHook`` (docs/mmcv-semantics.md §2.8).

Why not Lightning's ``WeightAveraging``: it deep-copies the whole LightningModule (evaluator state included) into an
``AveragedModel``, passes the number of averaged models (not mmcv's global iteration) to the averaging function,
counts optimizer steps instead of batches, and copies the average over the live weights at the end of training
instead of swapping. The mmcv formulas need the global batch index, so the EMA here is a small port.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from detlight.callbacks.checkpoint import bare_model
from detlight.exceptions import CheckpointError, ConfigError
from detlight.upstream_internals import callback_state_key

__all__ = ["EMA", "ema_momentum"]

Schedule = Literal["mmcv", "exp", "linear"]


def ema_momentum(schedule: Schedule, it: int, momentum: float, interval: int = 1, warm_up: int = 100,
                 total_iter: int = 2000) -> float:
    """Weight of the new value at 0-based global batch ``it`` (``ema = (1 - m) * ema + m * param``).

    - ``mmcv`` (``EMAHook``) and ``linear`` (``LinearMomentumEMAHook``):
      ``min(momentum ** interval, (1 + it) / (warm_up + it))``.
    - ``exp`` (``ExpMomentumEMAHook``): ``(1 - momentum) * exp(-(1 + it) / total_iter) + momentum``.

    Example:
        >>> round(ema_momentum("mmcv", 0, 0.5, warm_up=4), 4), ema_momentum("mmcv", 10, 0.5, warm_up=4)
        (0.25, 0.5)
    """
    if schedule == "exp":
        return (1 - momentum) * math.exp(-(1 + it) / total_iter) + momentum
    return min(momentum**interval, (1 + it) / (warm_up + it))


class EMA(Callback):
    """mmcv ``EMAHook`` / mmdet ``ExpMomentumEMAHook`` / ``LinearMomentumEMAHook`` as one callback.

    After every training batch whose 0-based global index ``it`` is selected (``mmcv``: ``it % interval == 0``;
    ``exp``/``linear``: ``(it + 1) % interval == 0``) the average is updated with
    ``ema = (1 - m) * ema + m * value``, ``m = ema_momentum(...)``. ``mmcv`` averages the parameters only; ``exp`` and
    ``linear`` average every floating-point entry of the ``state_dict`` (BN statistics included) unless
    ``skip_buffers``. Integer buffers are never averaged nor swapped (mmdet swaps ``num_batches_tracked`` with a stale
    copy; that quirk is not reproduced).

    Swap (what evaluation and checkpoints see): as mmcv swaps weights and averages in ``after_train_epoch`` and back
    in ``before_train_epoch``, the model holds the EMA weights from the end of each epoch's last batch (before
    Lightning's epoch-end validation and ``on_train_epoch_end`` checkpoints) until the next training batch. A
    validation in the middle of an epoch also runs on EMA weights. After ``fit`` the model keeps the EMA weights.

    Checkpoints: the averages are callback state (``checkpoint["callbacks"]``, plain tensors keyed by parameter
    name, plus whether they are swapped in), so ``fit(ckpt_path=...)`` restores them exactly; the model's own
    ``state_dict`` holds whatever the model held at save time (EMA weights for epoch-end checkpoints, as in mmcv).

    Args:
        momentum: mmcv ``momentum`` (the weight of the *new* value, e.g. ``2e-4``).
        interval: update period in training batches.
        warm_up: warm-up length of the ``mmcv`` and ``linear`` schedules.
        total_iter: time constant of the ``exp`` schedule.
        momentum_schedule: ``'mmcv'`` (EMAHook), ``'exp'`` (ExpMomentumEMAHook) or ``'linear'``
            (LinearMomentumEMAHook).
        skip_buffers: average parameters only. Default: ``True`` for ``mmcv``, ``False`` for the mmdet schedules.
    """

    def __init__(
        self,
        momentum: float = 2e-4,
        interval: int = 1,
        warm_up: int = 100,
        total_iter: int = 2000,
        momentum_schedule: Schedule = "mmcv",
        skip_buffers: bool | None = None,
    ) -> None:
        if not 0 < momentum < 1:
            raise ConfigError(f"EMA `momentum` must be in (0, 1), got {momentum!r}")
        if not isinstance(interval, int) or interval <= 0:
            raise ConfigError(f"EMA `interval` must be a positive int, got {interval!r}")
        if momentum_schedule not in ("mmcv", "exp", "linear"):
            raise ConfigError(f"`momentum_schedule` must be 'mmcv', 'exp' or 'linear', got {momentum_schedule!r}")
        if momentum_schedule != "exp" and warm_up <= 0:
            raise ConfigError(f"EMA `warm_up` must be > 0 for the {momentum_schedule!r} schedule, got {warm_up!r}")
        if momentum_schedule == "exp" and total_iter <= 0:
            raise ConfigError(f"EMA `total_iter` must be > 0, got {total_iter!r}")
        self.momentum = momentum
        self.interval = interval
        self.warm_up = warm_up
        self.total_iter = total_iter
        self.schedule: Schedule = momentum_schedule
        self.skip_buffers = (momentum_schedule == "mmcv") if skip_buffers is None else skip_buffers
        self._names: list[str] = []
        self._live: list[torch.Tensor] = []
        self._ema: list[torch.Tensor] | None = None
        self._swapped = False
        self._pending: dict[str, Any] | None = None

    @property
    @override
    def state_key(self) -> str:
        return callback_state_key(self, schedule=self.schedule, momentum=self.momentum, interval=self.interval)

    # ------------------------------------------------------------------ set-up
    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # on_fit_start, not setup: the strategy has moved the model to its device by now.
        model = bare_model(pl_module)
        if self.skip_buffers:
            entries = list(model.named_parameters())
        else:
            entries = list(model.state_dict(keep_vars=True).items())
        entries = [(n, t) for n, t in entries if t.is_floating_point()]
        self._names = [n for n, _ in entries]
        self._live = [t.detach() for _, t in entries]
        self._ema = [t.clone() for t in self._live]
        self._swapped = False
        if self._pending is not None:
            self._apply_state(self._pending)
            self._pending = None

    def momentum_at(self, it: int) -> float:
        """The momentum used after global batch ``it`` (0-based)."""
        return ema_momentum(self.schedule, it, self.momentum, self.interval, self.warm_up, self.total_iter)

    def should_update(self, it: int) -> bool:
        """mmcv updates when ``it % interval == 0``; mmdet when ``(it + 1) % interval == 0``."""
        return it % self.interval == 0 if self.schedule == "mmcv" else (it + 1) % self.interval == 0

    # ------------------------------------------------------------------ training
    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._swap_to(ema=False)

    @override
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._swap_to(ema=False)

    @override
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        it = trainer.fit_loop.epoch_loop.total_batch_idx
        if self._ema is not None and self.should_update(it):
            m = self.momentum_at(it)
            with torch.no_grad():
                torch._foreach_mul_(self._ema, 1 - m)
                torch._foreach_add_(self._ema, self._live, alpha=m)
        if batch_idx + 1 == trainer.num_training_batches:
            self._swap_to(ema=True)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Covers epochs that end early (max_steps, unsized loaders), where the last-batch swap did not happen.
        self._swap_to(ema=True)

    @override
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._swap_to(ema=True)

    def _swap_to(self, ema: bool) -> None:
        if self._ema is None or self._swapped == ema:
            return
        with torch.no_grad():
            for live, avg in zip(self._live, self._ema):
                tmp = live.clone()
                live.copy_(avg)
                avg.copy_(tmp)
        self._swapped = ema

    # ------------------------------------------------------------------ inspection / state
    def averaged_state(self) -> dict[str, torch.Tensor]:
        """The EMA values by parameter (state_dict) name, wherever they currently live (copies)."""
        if self._ema is None:
            return {}
        source = self._live if self._swapped else self._ema
        return {n: t.detach().clone() for n, t in zip(self._names, source)}

    @property
    def swapped(self) -> bool:
        """Whether the model currently holds the EMA weights."""
        return self._swapped

    @override
    def state_dict(self) -> dict[str, Any]:
        if self._ema is None:
            return dict(self._pending) if self._pending is not None else {}
        return {"ema": dict(zip(self._names, self._ema)), "swapped": self._swapped, "schedule": self.schedule}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        if self._ema is None:
            self._pending = dict(state_dict)  # applied in on_fit_start, once the tensors exist
        else:
            self._apply_state(state_dict)

    def _apply_state(self, state: dict[str, Any]) -> None:
        saved = state.get("ema", {})
        missing, unexpected = set(self._names) - set(saved), set(saved) - set(self._names)
        if missing or unexpected:
            raise CheckpointError(
                f"The checkpoint's EMA state does not match the model: missing {sorted(missing)[:5]}, unexpected "
                f"{sorted(unexpected)[:5]}. Was it saved with another model or another `skip_buffers` setting?"
            )
        assert self._ema is not None
        with torch.no_grad():
            for name, avg in zip(self._names, self._ema):
                avg.copy_(saved[name])
        # The model's weights were restored as saved, i.e. with the EMA values swapped in if they were then.
        self._swapped = bool(state.get("swapped", False))
