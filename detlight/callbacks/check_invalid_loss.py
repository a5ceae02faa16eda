"""Stop on a non-finite loss, naming the key.

Replaces: mmdet ``CheckInvalidLossHook`` (docs/mmcv-semantics.md §2.9).
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from detlight.callbacks.checkpoint import every_n
from detlight.exceptions import ConfigError

__all__ = ["CheckInvalidLoss"]


class CheckInvalidLoss(Callback):
    """mmdet ``CheckInvalidLossHook``: stop when a loss is NaN or infinite, naming the key(s), epoch and iteration.

    Checks ``pl_module.last_outputs["log_vars"]`` (mmcv ``runner.outputs``; falls back to the training step's
    ``loss``) after every ``interval``-th training batch only, so the host sync happens only then. Runs after the
    optimizer step, as mmdet's NORMAL-priority hook did.

    Args:
        interval: check period in training batches (mmcv ``every_n_iters``).

    Raises:
        FloatingPointError: from ``on_train_batch_end`` when a checked value is not finite.
    """

    def __init__(self, interval: int = 50) -> None:
        if not isinstance(interval, int) or interval <= 0:
            raise ConfigError(f"`interval` must be a positive int, got {interval!r}")
        self.interval = interval

    @override
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        it = trainer.fit_loop.epoch_loop.total_batch_idx
        if not every_n(it, self.interval):
            return
        values = _loss_values(pl_module, outputs)
        if not values:
            return
        names = list(values)
        finite = torch.stack([v.detach().float().reshape(()) for v in values.values()]).isfinite().tolist()
        bad = [n for n, ok in zip(names, finite) if not ok]
        if bad:
            shown = {n: float(values[n]) for n in bad}
            raise FloatingPointError(
                f"Non-finite loss at epoch {trainer.current_epoch + 1}, iter {it + 1}: {shown}. Lower the learning "
                "rate, enable `grad_clip`, or check the data of this batch."
            )


def _loss_values(pl_module: pl.LightningModule, outputs: Any) -> dict[str, torch.Tensor]:
    last = getattr(pl_module, "last_outputs", None)
    if isinstance(last, dict) and isinstance(last.get("log_vars"), dict):
        return {k: torch.as_tensor(v) for k, v in last["log_vars"].items()}
    if isinstance(outputs, dict) and "loss" in outputs:
        return {"loss": torch.as_tensor(outputs["loss"])}
    if isinstance(outputs, torch.Tensor):
        return {"loss": outputs}
    return {}
