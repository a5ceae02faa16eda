"""mmcv's ``runner`` and ``workflow`` config keys as Trainer settings, plus the ``('val', n)`` validation-loss phase.

Replaces: ``EpochBasedRunner.run`` / ``IterBasedRunner.run`` with a workflow (docs/mmcv-semantics.md §3.2-3.3):

- ``runner=dict(type='EpochBasedRunner', max_epochs=N)`` -> ``max_epochs=N``.
- ``runner=dict(type='IterBasedRunner', max_iters=N)`` -> ``max_steps=N, max_epochs=-1``: Lightning repeats the
  train loader (re-seeding the sampler each pass, as ``IterLoader`` does), and ``RunnerView.epoch`` counts passes.
- ``workflow=[('train', k), ('val', n)]``: a validation-loss phase (the detector's losses on the val split, mmcv
  ``val_step``) after every ``k`` train epochs (``n`` must be 1), or after every ``k`` train iterations over ``n``
  val batches (iteration-based). As in mmcv, the last cycle always ends with a val phase, even when the run length
  is not a multiple of ``k``; Lightning's ``check_val_every_n_epoch`` / ``val_check_interval`` alone would skip it.

Known differences from mmcv (docs/mmcv-semantics.md §4.1-4.2):

- The val phase is Lightning's validation loop, so it also feeds the module's evaluator (mAP) and sees the val
  loader's pipeline; mmcv's tools build a separate val dataset with the *train* pipeline for it.
- Lightning validates *inside* the train epoch, before ``on_train_epoch_end``: a Lightning callback's
  ``on_train_epoch_end`` runs after the val phase, where mmcv's ``after_train_epoch`` ran before it.
  :class:`~detlight.callbacks.mmcv_hooks.MMCVHooks` keeps mmcv's order for mmcv-style hooks.
- With an :class:`~detlight.callbacks.evaluation.Evaluation` callback, validation runs when either the val phase
  or the evaluation is due (mmcv's two cadences); the losses are computed only in runs the workflow asked for and
  the metrics only in runs the evaluation asked for.
- Iteration-based: each val phase restarts the val loader (the first ``n`` batches every time); mmcv's
  ``IterLoader`` continues where the previous phase stopped. A validation run that is only a val phase covers ``n``
  batches; one where an evaluation is due covers the whole loader (as mmcv's EvalHook) and computes the losses on its
  first ``n`` batches. Gradient accumulation is rejected there, because ``max_steps`` counts optimizer steps, not
  iterations.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from typing_extensions import override

from detlight.callbacks._val_gate import apply_validation_gate
from detlight.exceptions import ConfigError
from detlight.upstream_internals import limit_next_validation

__all__ = ["RUNNER_TYPES", "Workflow"]

log = logging.getLogger(__name__)

RUNNER_TYPES = ("EpochBasedRunner", "IterBasedRunner")
_RUNNER_KEYS = {"type", "max_epochs", "max_iters"}


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"Expected `{where}` to be a positive int, but got {value!r}")
    return value


def _parse_runner(runner: Mapping[str, Any] | None, total_epochs: int | None) -> tuple[bool, int]:
    """Return ``(by_epoch, length)`` from mmcv's ``runner`` dict (or the legacy ``total_epochs``)."""
    if runner is None:
        if total_epochs is None:
            raise ConfigError("Workflow needs `runner`, e.g. {type: EpochBasedRunner, max_epochs: 12} or "
                              "{type: IterBasedRunner, max_iters: 90000} (or the legacy `total_epochs`)")
        return True, _positive_int(total_epochs, "total_epochs")
    if not isinstance(runner, Mapping):
        raise ConfigError(f"Expected `runner` to be a dict like {{type: EpochBasedRunner, max_epochs: 12}}, "
                          f"but got {type(runner).__name__}")
    unknown = set(runner) - _RUNNER_KEYS
    if unknown:
        raise ConfigError(f"Unknown key(s) {sorted(unknown)} in `runner`; accepted: {sorted(_RUNNER_KEYS)} "
                          "(a custom runner `constructor` has no detlight counterpart)")
    kind = runner.get("type", "EpochBasedRunner")
    if kind not in RUNNER_TYPES:
        raise ConfigError(f"Unknown `runner.type` {kind!r}; expected one of {list(RUNNER_TYPES)}")
    if "max_epochs" in runner and "max_iters" in runner:
        raise ConfigError("Only one of `runner.max_epochs` and `runner.max_iters` can be set (as in mmcv)")
    if kind == "EpochBasedRunner":
        if "max_epochs" not in runner:
            raise ConfigError("`runner` of type EpochBasedRunner needs `max_epochs`")
        length = _positive_int(runner["max_epochs"], "runner.max_epochs")
        if total_epochs is not None and total_epochs != length:
            raise ConfigError(f"`total_epochs` ({total_epochs}) and `runner.max_epochs` ({length}) disagree")
        return True, length
    if "max_iters" not in runner:
        raise ConfigError("`runner` of type IterBasedRunner needs `max_iters`")
    return False, _positive_int(runner["max_iters"], "runner.max_iters")


def _parse_workflow(workflow: Sequence[Any], by_epoch: bool) -> tuple[int, int | None]:
    """Return ``(train_n, val_n or None)`` for ``[('train', k)]`` or ``[('train', k), ('val', n)]``."""
    if isinstance(workflow, (str, bytes)) or not isinstance(workflow, Sequence):
        raise ConfigError(f"Expected `workflow` to be a list of (mode, n) pairs, but got {workflow!r}")
    phases = []
    for i, phase in enumerate(workflow):
        if isinstance(phase, (str, bytes)) or not isinstance(phase, Sequence) or len(phase) != 2:
            raise ConfigError(f"`workflow[{i}]` must be a (mode, n) pair such as ('train', 1), but got {phase!r}")
        mode, n = phase
        if mode not in ("train", "val"):
            raise ConfigError(f"`workflow[{i}]` has mode {mode!r}; expected 'train' or 'val'")
        phases.append((mode, _positive_int(n, f"workflow[{i}][1]")))
    modes = [m for m, _ in phases]
    if modes not in (["train"], ["train", "val"]):
        raise ConfigError(f"Unsupported workflow {phases}: detlight runs [('train', k)] or [('train', k), ('val', n)] "
                          "(Lightning validates after training, so a val-first or multi-train cycle has no "
                          "counterpart)")
    val_n = phases[1][1] if len(phases) == 2 else None
    if by_epoch and val_n not in (None, 1):
        raise ConfigError(f"`workflow` ('val', {val_n}) with an EpochBasedRunner would run {val_n} full val passes in "
                          "a row; detlight runs one. Use ('val', 1)")
    return phases[0][1], val_n


class Workflow(Callback):
    """Applies mmcv's ``runner`` / ``workflow`` to the Trainer and runs the ``('val', n)`` validation-loss phase.

    Replaces: ``EpochBasedRunner`` / ``IterBasedRunner`` ``run(data_loaders, workflow)``. See the module docstring
    for the mapping and the known differences. At ``setup`` (fit only) it sets ``max_epochs`` / ``max_steps``,
    ``check_val_every_n_epoch`` / ``val_check_interval``, ``limit_val_batches`` and ``num_sanity_val_steps=0`` on
    the Trainer (the runner config wins over Trainer arguments; a conflicting explicit value is reported), switches
    on the module's ``val_losses`` when there is a val phase, and sets ``by_epoch`` on
    :class:`~detlight.callbacks.mmcv_hooks.MMCVHooks` callbacks that left it unset. :meth:`trainer_kwargs` gives the same
    settings for building a Trainer in Python.

    Args:
        workflow: mmcv's ``workflow``: ``[('train', k)]`` or ``[('train', k), ('val', n)]``.
        runner: mmcv's ``runner`` dict: ``{type: EpochBasedRunner, max_epochs}`` or
            ``{type: IterBasedRunner, max_iters}``.
        total_epochs: legacy spelling of ``max_epochs`` (used when ``runner`` is absent; must agree with it).

    Raises:
        ValueError: an unsupported or malformed ``workflow`` / ``runner`` (the message names the key).

    Example:
        >>> wf = Workflow(workflow=[("train", 2), ("val", 1)], runner={"type": "EpochBasedRunner", "max_epochs": 3})
        >>> sorted(wf.trainer_kwargs().items())
        [('check_val_every_n_epoch', 2), ('max_epochs', 3), ('max_steps', -1), ('num_sanity_val_steps', 0)]
    """

    def __init__(
        self,
        workflow: Sequence[tuple[str, int]] = (("train", 1),),
        runner: dict[str, Any] | None = None,
        total_epochs: int | None = None,
    ) -> None:
        super().__init__()
        self.by_epoch, length = _parse_runner(runner, total_epochs)
        self.max_epochs: int | None = length if self.by_epoch else None
        self.max_iters: int | None = None if self.by_epoch else length
        self.train_n, self.val_n = _parse_workflow(workflow, self.by_epoch)
        self.workflow = [("train", self.train_n)] + ([("val", self.val_n)] if self.val_n else [])
        self._saved_gate: tuple[int | None, Any] | None = None

    @classmethod
    def from_mmcv_config(cls, cfg: Mapping[str, Any]) -> Workflow:
        """Build from a resolved mmcv config dict (its ``workflow``, ``runner`` and ``total_epochs`` keys)."""
        return cls(workflow=cfg.get("workflow") or (("train", 1),), runner=cfg.get("runner"),
                   total_epochs=cfg.get("total_epochs"))

    @property
    def has_val_phase(self) -> bool:
        return self.val_n is not None

    def trainer_kwargs(self) -> dict[str, Any]:
        """Trainer arguments equivalent to this runner and workflow."""
        if self.by_epoch:
            kwargs: dict[str, Any] = {"max_epochs": self.max_epochs, "max_steps": -1}
            if self.has_val_phase:
                kwargs.update(check_val_every_n_epoch=self.train_n, num_sanity_val_steps=0)
            return kwargs
        kwargs = {"max_steps": self.max_iters, "max_epochs": -1}
        if self.has_val_phase:
            kwargs.update(check_val_every_n_epoch=None, val_check_interval=self.train_n, num_sanity_val_steps=0)
        return kwargs

    # ------------------------------------------------------------------ set-up
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._apply_to_trainer(trainer)
        if self.has_val_phase:
            if not hasattr(pl_module, "val_losses"):
                raise ConfigError(f"workflow {self.workflow} has a ('val', n) phase, which needs a module with a "
                                  f"`val_losses` switch such as detlight.module.DetectorModule; got "
                                  f"{type(pl_module).__name__}")
            setattr(pl_module, "val_losses", True)  # noqa: B010 - any module with the switch, not only DetectorModule
            # an iteration-based phase is n batches, also inside a longer run that an evaluation shares
            setattr(pl_module, "val_phase_batches", None if self.by_epoch else self.val_n)  # noqa: B010
        from detlight.callbacks.mmcv_hooks import MMCVHooks

        for callback in trainer.callbacks:  # type: ignore[attr-defined]
            if isinstance(callback, MMCVHooks) and callback.by_epoch is None:
                callback.by_epoch = self.by_epoch

    def _apply_to_trainer(self, trainer: pl.Trainer) -> None:
        kwargs = self.trainer_kwargs()
        current_epochs, current_steps = trainer.max_epochs, trainer.max_steps
        if self.by_epoch and current_epochs not in (None, -1, 1000, self.max_epochs):
            rank_zero_warn(f"Workflow: runner.max_epochs={self.max_epochs} overrides trainer.max_epochs="
                           f"{current_epochs}")
        if not self.by_epoch and current_steps not in (-1, self.max_iters):
            rank_zero_warn(f"Workflow: runner.max_iters={self.max_iters} overrides trainer.max_steps={current_steps}")
        if not self.by_epoch and trainer.accumulate_grad_batches != 1:
            raise ConfigError(f"An IterBasedRunner workflow counts iterations, but Lightning's max_steps counts "
                              f"optimizer steps; trainer.accumulate_grad_batches={trainer.accumulate_grad_batches} "
                              "would change the run length. Use accumulate_grad_batches: 1 with IterBasedRunner")
        trainer.fit_loop.max_epochs = kwargs.pop("max_epochs")
        trainer.fit_loop.epoch_loop.max_steps = kwargs.pop("max_steps")
        for key, value in kwargs.items():
            setattr(trainer, key, value)
        log.info("Workflow %s: %s", self.workflow, self.trainer_kwargs())

    # ------------------------------------------------------------------ the val phase's cadence
    def validation_due(self, trainer: pl.Trainer) -> bool:
        """Whether the ``('val', n)`` phase follows this train epoch (asked at its start) or batch (at its end).

        Every ``k``-th epoch / iteration, and, as in mmcv, after the final one even when the run length is not a
        multiple of ``k``. ``False`` without a val phase.
        """
        if not self.has_val_phase:
            return False
        if self.by_epoch:
            progress, total = trainer.current_epoch + 1, self.max_epochs
        else:
            progress, total = trainer.fit_loop.epoch_loop.total_batch_idx + 1, self.max_iters
        return progress % self.train_n == 0 or progress == total

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.by_epoch and self.has_val_phase:
            self._save_gate(trainer)
            apply_validation_gate(trainer, iteration_based=False)

    @override
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self.by_epoch and self.has_val_phase:
            self._save_gate(trainer)
            if apply_validation_gate(trainer, iteration_based=True):  # just before the loop's validation check
                # An evaluation due here sees the whole val loader (mmcv's EvalHook does); a val phase alone, n batches
                evaluation = any(cb.validation_due(trainer) for cb in trainer.callbacks  # type: ignore[attr-defined]
                                 if cb is not self and callable(getattr(cb, "validation_due", None)))
                limit_next_validation(trainer, None if evaluation else self.val_n)

    @override
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Run the detector's losses only in validation runs the workflow asked for (not in evaluation-only ones)."""
        if not self.has_val_phase or trainer.sanity_checking or not hasattr(pl_module, "val_losses"):
            return
        after_training = trainer.fit_loop.epoch_loop.batch_progress.current.completed > 0
        setattr(pl_module, "val_losses", after_training and self.validation_due(trainer))  # noqa: B010

    def _save_gate(self, trainer: pl.Trainer) -> None:
        if self._saved_gate is None:
            self._saved_gate = (trainer.check_val_every_n_epoch, trainer.val_check_batch)

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._saved_gate is not None:
            trainer.check_val_every_n_epoch, trainer.val_check_batch = self._saved_gate
            self._saved_gate = None
