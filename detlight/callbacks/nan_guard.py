"""Catch non-finite losses and never write a checkpoint with non-finite weights.

Replaces: nothing in mmcv (a NaN loss there trained on until the end, saving NaN checkpoints; its fp16
``OptimizerHook`` only skipped steps with overflowing gradients).

Cost, decided and measured (see :class:`NanGuard`): the ``stop`` policy adds a few on-device tensor ops per step and
no host sync; the flag is read on the host at the check interval (default: the trainer's ``log_every_n_steps``, when
the logging callbacks sync anyway), at every epoch end, before every checkpoint save and at the end of training. The
``skip`` policy must decide on the host whether to run ``optimizer.step()``, so it reads one boolean per step (the
same per-step sync that ``torch.amp.GradScaler`` does).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from detlight.exceptions import ConfigError, NonFiniteLossError

__all__ = ["NanGuard", "NonFiniteLossError", "last_checkpoint_path"]

log = logging.getLogger(__name__)

Policy = Literal["stop", "skip"]




def last_checkpoint_path(trainer: pl.Trainer) -> str | None:
    """The most recently written checkpoint file known to the trainer's checkpoint callbacks, or ``None``."""
    paths: set[str] = set()
    for callback in trainer.callbacks:  # type: ignore[attr-defined]
        for attr in ("_last_checkpoint_saved", "last_model_path", "best_model_path", "last_ckpt", "saved_path"):
            value = getattr(callback, attr, None)
            if isinstance(value, str) and value and os.path.isfile(value):
                paths.add(os.path.realpath(value))
    return max(paths, key=lambda p: os.stat(p).st_mtime_ns) if paths else None


class NanGuard(Callback):
    """Detect a NaN/Inf training loss at the step it appears; stop (default) or skip that optimizer step.

    The losses checked are the detector's ``log_vars`` (every loss key and ``loss``) of
    :class:`~detlight.module.DetectorModule`, else the ``loss`` returned by ``training_step``.

    - ``policy="stop"``: every step writes ``stack(log_vars)`` into a preallocated on-device row (no host sync). The
      host reads the rows every ``check_interval`` batches, at each epoch end, before each checkpoint save and at the
      end of training, and raises :class:`NonFiniteLossError` naming the loss key(s) and values, the epoch /
      iteration where they first went non-finite and the last checkpoint written. Measured on a busy 2-core CPU:
      about 50 us per step for 5 loss keys (one bare ``torch.stack`` costs 16 us there); ``skip`` about 300 us.
    - ``policy="skip"``: before each optimizer step the finiteness of the losses is read on the host (one sync per
      step); a bad step has its gradients dropped (``grad = None``, so the optimizer leaves weights, momentum and
      step counts alone) and is logged as a warning. ``max_skips`` consecutive skips turn into ``stop``.
      The step's values still enter the log buffer, so that interval's logged average is non-finite.

    Either way, ``on_save_checkpoint`` checks the weights and raises rather than let a checkpoint with a non-finite
    parameter be written.

    Args:
        policy: ``"stop"`` or ``"skip"``.
        check_interval: host read period in batches for ``"stop"``; ``0`` uses ``trainer.log_every_n_steps``.
        max_skips: consecutive skipped steps tolerated by ``"skip"`` before stopping; ``0`` means no limit.
    """

    def __init__(self, policy: Policy = "stop", check_interval: int = 0, max_skips: int = 100) -> None:
        if policy not in ("stop", "skip"):
            raise ConfigError(f"NanGuard `policy` must be 'stop' or 'skip', got {policy!r}")
        if not isinstance(check_interval, int) or check_interval < 0:
            raise ConfigError(f"NanGuard `check_interval` must be an int >= 0, got {check_interval!r}")
        if not isinstance(max_skips, int) or max_skips < 0:
            raise ConfigError(f"NanGuard `max_skips` must be an int >= 0, got {max_skips!r}")
        self.policy: Policy = policy
        self.check_interval = check_interval
        self.max_skips = max_skips
        self.skipped = 0
        self._consecutive = 0
        self._keys: tuple[str, ...] = ()
        self._rows: torch.Tensor | None = None  # loss values of the steps since the last check, one row each
        self._count = 0
        self._where: list[tuple[int, int]] = []  # (epoch, iteration) of each recorded row

    # ------------------------------------------------------------------ what is checked
    @staticmethod
    def _losses(pl_module: pl.LightningModule, outputs: Any) -> dict[str, torch.Tensor]:
        last = getattr(pl_module, "last_outputs", None)
        log_vars = last.get("log_vars") if isinstance(last, Mapping) else None
        if isinstance(log_vars, Mapping) and log_vars:
            return {k: v for k, v in log_vars.items() if isinstance(v, torch.Tensor)}
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        return {"loss": loss} if isinstance(loss, torch.Tensor) else {}

    @staticmethod
    def _stack(losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack([v.detach().float().reshape(-1)[0] if v.numel() else v.new_zeros(()).float()
                            for v in losses.values()])

    # ------------------------------------------------------------------ stop policy (no per-step sync)
    @override
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.policy != "stop":
            return
        losses = self._losses(pl_module, outputs)
        if not losses:
            return
        keys = tuple(losses)
        interval = self.check_interval or max(int(getattr(trainer, "log_every_n_steps", 50)), 1)
        if keys != self._keys or self._rows is None or len(self._rows) != interval:
            self.check(trainer)  # settle the rows recorded so far before the layout changes
            self._keys = keys
            first = next(iter(losses.values()))
            self._rows = torch.zeros(interval, len(keys), dtype=torch.float32, device=first.device)
        # One stack written into a preallocated row: the cheapest record that still tells, at check time, the exact
        # step, keys and values of the first non-finite loss.
        parts = [v.detach() if v.dim() == 0 else v.detach().reshape(-1)[0] for v in losses.values()]
        torch.stack([v if v.dtype == torch.float32 else v.float() for v in parts], out=self._rows[self._count])
        self._where.append((trainer.current_epoch, trainer.fit_loop.epoch_loop.total_batch_idx))
        self._count += 1
        if self._count == interval:
            self.check(trainer)

    def check(self, trainer: pl.Trainer) -> None:
        """Read the rows recorded since the last check (one host sync) and raise if a loss went non-finite.

        Raises:
            NonFiniteLossError: naming the keys, values, epoch / iteration and the last checkpoint.
        """
        count, self._count = self._count, 0
        where, self._where = self._where, []
        if self._rows is None or count == 0:
            return
        rows = self._rows[:count]
        if bool(torch.isfinite(rows).all()):
            return
        values = rows.tolist()
        first = next(i for i, row in enumerate(values) if not all(math.isfinite(v) for v in row))
        bad = {k: v for k, v in zip(self._keys, values[first]) if not math.isfinite(v)}
        raise NonFiniteLossError(_message(bad, where[first][0], where[first][1], trainer, "stop"))

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.check(trainer)

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.check(trainer)

    # ------------------------------------------------------------------ skip policy (one read per step)
    @override
    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        if self.policy != "skip":
            return
        losses = self._losses(pl_module, None)
        if not losses:
            return
        values = self._stack(losses)
        if bool(torch.isfinite(values).all()):  # the documented per-step sync of this policy
            self._consecutive = 0
            return
        self.skipped += 1
        self._consecutive += 1
        bad = {k: v for k, v in zip(losses, values.tolist()) if not torch.isfinite(torch.tensor(v))}
        it, epoch = trainer.fit_loop.epoch_loop.total_batch_idx, trainer.current_epoch
        if self.max_skips and self._consecutive > self.max_skips:
            raise NonFiniteLossError(_message(bad, epoch, it, trainer, f"skip (more than {self.max_skips} in a row)"))
        log.warning("Skipping the optimizer step at epoch %d iteration %d: non-finite %s", epoch + 1, it + 1,
                    ", ".join(f"{k}={v}" for k, v in bad.items()))
        for group in optimizer.param_groups:
            for param in group["params"]:
                param.grad = None

    # ------------------------------------------------------------------ checkpoints
    @override
    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        if self.policy == "stop":
            self.check(trainer)
        params = [p.detach() for p in pl_module.parameters()]
        if params and not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
            names = [n for n, p in pl_module.named_parameters() if not bool(torch.isfinite(p).all())]
            raise NonFiniteLossError(
                f"Refusing to write a checkpoint at epoch {trainer.current_epoch + 1} iteration "
                f"{trainer.fit_loop.epoch_loop.total_batch_idx + 1}: non-finite weights in {names[:5]}"
                f"{' ...' if len(names) > 5 else ''}. Last good checkpoint: {last_checkpoint_path(trainer) or 'none'}."
            )


def _message(bad: Mapping[str, float], epoch: int, it: int, trainer: pl.Trainer, policy: str) -> str:
    keys = ", ".join(f"{k}={v}" for k, v in bad.items()) or "loss"
    return (f"Non-finite loss at epoch {epoch + 1}, iteration {it + 1}: {keys} (NanGuard policy: {policy}). "
            f"Last good checkpoint: {last_checkpoint_path(trainer) or 'none written yet'}. Lower the learning rate, "
            "set `model.grad_clip`, or use NanGuard(policy='skip').")
