"""One decision per epoch / batch on whether Lightning's validation loop runs, shared by the callbacks that need it.

mmcv ran its ``('val', n)`` workflow phase and its ``EvalHook`` on separate cadences. detlight runs both through
Lightning's single validation loop, so :class:`~detlight.callbacks.workflow.Workflow` and
:class:`~detlight.callbacks.evaluation.Evaluation` each say, through ``validation_due(trainer)``, whether *they* need
this epoch's (or batch's) validation; the loop runs when any of them does, and inside the run each one switches on
only its own part (the module's ``val_losses`` / ``evaluate``).
"""

from __future__ import annotations

import lightning.pytorch as pl

__all__ = ["apply_validation_gate", "in_val_phase"]


def apply_validation_gate(trainer: pl.Trainer, iteration_based: bool) -> bool:
    """Set the Trainer's validation flags for the coming check; return whether validation will run.

    Lightning validates when ``(current_epoch + 1) % check_val_every_n_epoch == 0``: ``1`` always passes and
    ``current_epoch + 2`` never does. Iteration-based runs also need ``val_check_batch = 1`` so that any batch can be a
    check. Callbacks without a ``validation_due`` method do not take part.
    """
    gates = [cb for cb in getattr(trainer, "callbacks", []) if callable(getattr(cb, "validation_due", None))]
    run = any(cb.validation_due(trainer) for cb in gates)
    trainer.check_val_every_n_epoch = 1 if run else trainer.current_epoch + 2
    if iteration_based:
        trainer.val_check_batch = 1
    return run


def in_val_phase(pl_module: pl.LightningModule, batch_idx: int) -> bool:
    """Whether validation batch ``batch_idx`` belongs to a ``('val', n)`` workflow phase: the module computes losses
    in this run (``val_losses``) and the batch is among the phase's first ``val_phase_batches`` (an iteration-based
    phase covers ``n`` batches also when an evaluation due at the same iteration runs over the whole loader)."""
    if not getattr(pl_module, "val_losses", False):
        return False
    limit = getattr(pl_module, "val_phase_batches", None)
    return limit is None or batch_idx < limit
