"""When to evaluate and which checkpoint is the best: mmcv's ``EvalHook`` rules on top of Lightning's validation loop.

Replaces: mmcv ``EvalHook`` / ``DistEvalHook`` and mmdet's subclass (docs/mmcv-semantics.md §2.7): ``interval``, ``start``,
``dynamic_intervals``, ``save_best`` (incl. ``'auto'``), ``rule`` and the greater/less key inference.
"""

from __future__ import annotations

import bisect
import logging
import math
import os
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from typing_extensions import override

from detlight.callbacks._val_gate import apply_validation_gate
from detlight.callbacks.checkpoint import MMCheckpoint, batches_done, every_n, export_mmcv_checkpoint
from detlight.exceptions import ConfigError
from detlight.upstream_internals import keep_first_loop_iter

__all__ = ["DEFAULT_GREATER_KEYS", "DEFAULT_LESS_KEYS", "Evaluation", "infer_rule"]

log = logging.getLogger(__name__)

#: mmcv ``EvalHook._default_greater_keys`` / ``_default_less_keys``
DEFAULT_GREATER_KEYS: tuple[str, ...] = ("acc", "top", "AR@", "auc", "precision", "mAP", "mDice", "mIoU", "mAcc",
                                         "aAcc")
DEFAULT_LESS_KEYS: tuple[str, ...] = ("loss",)

Rule = Literal["greater", "less"]
_COMPARE: dict[str, Callable[[float, float], bool]] = {"greater": lambda x, y: x > y, "less": lambda x, y: x < y}
_INIT_SCORE: dict[str, float] = {"greater": -math.inf, "less": math.inf}


def infer_rule(
    key: str,
    greater_keys: Sequence[str] = DEFAULT_GREATER_KEYS,
    less_keys: Sequence[str] = DEFAULT_LESS_KEYS,
) -> Rule:
    """mmcv ``EvalHook._init_rule``: case-insensitive exact match first (greater, then less), then substring match.

    Raises:
        ValueError: no key matches; the message asks for an explicit ``rule``.

    Example:
        >>> infer_rule("bbox_mAP"), infer_rule("loss_val"), infer_rule("AR@100")
        ('greater', 'less', 'greater')
    """
    lc = key.lower()
    greater = [k.lower() for k in greater_keys]
    less = [k.lower() for k in less_keys]
    if lc in greater:
        return "greater"
    if lc in less:
        return "less"
    if any(k in lc for k in greater):
        return "greater"
    if any(k in lc for k in less):
        return "less"
    raise ConfigError(
        f"Cannot infer whether a higher or lower {key!r} is better (known greater keys: {list(greater_keys)}, "
        f"less keys: {list(less_keys)}). Pass `rule: greater` or `rule: less` to Evaluation."
    )


class Evaluation(Callback):
    """mmcv ``EvalHook``: decides in which epochs (or batches) Lightning's validation loop runs, and keeps the best.

    The evaluation itself is the LightningModule's validation loop (:class:`~detlight.module.DetectorModule` runs
    inference, its ``evaluator`` computes the metrics and stores them in ``eval_results``). This callback only gates
    it, by setting ``trainer.check_val_every_n_epoch`` before each epoch (``by_epoch``) or before each batch's
    validation check (``by_epoch=False``, which also sets ``trainer.val_check_batch = 1``); the Trainer's own values
    are restored when training ends. The gate is mmcv's ``_should_evaluate``: every ``interval`` epochs/batches
    (``(progress + 1) % interval == 0``), or with ``start``: never before progress ``start``, then
    ``(progress + 1 - start) % interval == 0``. As in mmcv, the first epoch (batch) of a run whose progress is
    already ``>= start`` is also evaluated *before* training it (``start=0``: before any training).

    ``save_best`` keeps one ``best_{key}_epoch_{E+1}.ckpt`` (``..._iter_{I+1}``; ``/`` in the key becomes ``_``) in
    ``out_dir`` (default: the :class:`~detlight.callbacks.checkpoint.MMCheckpoint` directory; else the ``out_dir`` of
    mmcv's ``CheckpointHook`` running in its place; else ``<log_dir>/checkpoints`` with a logger, ``default_root_dir``
    without), replacing the previous best only on a strict improvement. ``'auto'`` takes the first key
    of the results; the rule is ``rule`` or inferred with :func:`infer_rule`.

    Order difference: in mmcv ``epoch_N.pth`` (CheckpointHook, priority 50) is written before that epoch's
    evaluation (EvalHook, priority 70). Lightning runs the epoch-end validation before ``on_train_epoch_end``, so the
    ``best_*`` file of an epoch is written before its ``epoch_N`` checkpoint.

    Args:
        interval: evaluation period in epochs or training batches.
        start: first epoch / batch (1-based progress) to evaluate; see above.
        by_epoch: count in epochs (``EpochBasedRunner``) or training batches (``IterBasedRunner``).
        save_best: result key to keep the best checkpoint for, ``'auto'`` (first key) or ``None``.
        rule: ``'greater'`` or ``'less'``; inferred from the key when ``None``.
        greater_keys: replaces :data:`DEFAULT_GREATER_KEYS` for the inference (mmcv semantics: not appended).
        less_keys: replaces :data:`DEFAULT_LESS_KEYS`.
        out_dir: directory of the best checkpoint.
        export_mmcv: also write ``best_..._epoch_N.pth`` in mmcv's layout.
        dynamic_intervals: mmdet ``[(milestone, interval), ...]``: from 1-based progress ``milestone`` on, use
            ``interval``.

    Example:
        >>> cb = Evaluation(interval=2, save_best="auto")
        >>> [cb.should_evaluate(e) for e in range(4)]
        [False, True, False, True]
    """

    def __init__(
        self,
        interval: int = 1,
        start: int | None = None,
        by_epoch: bool = True,
        save_best: str | None = None,
        rule: Rule | None = None,
        greater_keys: Sequence[str] | None = None,
        less_keys: Sequence[str] | None = None,
        out_dir: str | None = None,
        export_mmcv: bool = False,
        dynamic_intervals: Sequence[tuple[int, int]] | None = None,
    ) -> None:
        if not isinstance(interval, int) or interval <= 0:
            raise ConfigError(f"`interval` must be a positive int, got {interval!r}")
        if start is not None and start < 0:
            raise ConfigError(f"`start` must be None or >= 0, got {start!r}")
        if save_best is not None and not isinstance(save_best, str):
            raise ConfigError(f"`save_best` must be a result key, 'auto' or None, got {save_best!r}")
        if rule is not None and rule not in _COMPARE:
            raise ConfigError(f"`rule` must be 'greater', 'less' or None, got {rule!r}")
        self.interval = interval
        self.start = start
        self.by_epoch = by_epoch
        self.save_best = save_best
        self.greater_keys = _as_keys(greater_keys, DEFAULT_GREATER_KEYS, "greater_keys")
        self.less_keys = _as_keys(less_keys, DEFAULT_LESS_KEYS, "less_keys")
        self.rule: Rule | None = rule
        self.key_indicator: str | None = None
        if save_best is not None and save_best != "auto":
            self._init_rule(save_best)
        self.out_dir = out_dir
        self.export_mmcv = export_mmcv
        self._milestones, self._intervals = _dynamic(interval, dynamic_intervals)
        self.best_score: float | None = None
        self.best_ckpt_path: str | None = None
        self._initial = True
        self._forced = False
        self._trainer_gate: tuple[int | None, Any] | None = None

    # ------------------------------------------------------------------ rules
    def _init_rule(self, key: str) -> None:
        self.key_indicator = key
        if self.rule is None:
            self.rule = infer_rule(key, self.greater_keys, self.less_keys)

    def should_evaluate(self, progress: int) -> bool:
        """mmcv ``_should_evaluate`` for the 0-based epoch (``by_epoch``) or global batch index."""
        interval = self._interval_at(progress)
        if self.start is None:
            return every_n(progress, interval)
        if progress + 1 < self.start:
            return False
        return (progress + 1 - self.start) % interval == 0

    def _interval_at(self, progress: int) -> int:
        """mmdet ``_decide_interval``: the interval of the last milestone ``<= progress + 1``."""
        return self._intervals[bisect.bisect(self._milestones, progress + 1) - 1]

    # ------------------------------------------------------------------ gating the validation loop
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Run before the logger callbacks, as mmcv's EvalHook (LOW) runs before its logger hooks (VERY_LOW): the
        best-checkpoint lines then precede the evaluation's log line, as in mmcv's log."""
        from detlight.callbacks.logger_callback import LoggerCallback

        callbacks: list[Callback] = list(trainer.callbacks)  # type: ignore[attr-defined]
        first_logger = next((i for i, cb in enumerate(callbacks) if isinstance(cb, LoggerCallback)), None)
        if first_logger is not None and self in callbacks and callbacks.index(self) > first_logger:
            callbacks.remove(self)
            callbacks.insert(first_logger, self)
            trainer.callbacks = callbacks  # type: ignore[attr-defined]

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._trainer_gate = (trainer.check_val_every_n_epoch, trainer.val_check_batch)
        self._initial = True

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._trainer_gate is not None:
            trainer.check_val_every_n_epoch, trainer.val_check_batch = self._trainer_gate

    def validation_due(self, trainer: pl.Trainer) -> bool:
        """Whether this epoch (``by_epoch``, asked at its start) or this batch (asked at its end) is evaluated."""
        if self.by_epoch:
            return self.should_evaluate(trainer.current_epoch)
        return self.should_evaluate(trainer.fit_loop.epoch_loop.total_batch_idx)

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.by_epoch:
            return
        epoch = trainer.current_epoch
        apply_validation_gate(trainer, iteration_based=False)
        if self._initial and self.start is not None and epoch >= self.start and self.should_evaluate(epoch):
            self._forced = True
            try:
                _run_validation_now(trainer)
            finally:
                self._forced = False
        self._initial = False

    @override
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self.by_epoch or not self._initial:
            return
        self._initial = False
        it = trainer.fit_loop.epoch_loop.total_batch_idx
        if self.start is not None and it >= self.start and self.should_evaluate(it):
            trainer.check_val_every_n_epoch = 1
            self._forced = True
            try:
                _run_validation_now(trainer)
            finally:
                self._forced = False

    @override
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.by_epoch:
            return
        apply_validation_gate(trainer, iteration_based=True)  # just before the loop's validation check

    @override
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Evaluate in this validation run only when due (a ``('val', n)`` workflow phase may run it alone)."""
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING or not hasattr(pl_module, "evaluate"):
            return
        setattr(pl_module, "evaluate", self._forced or self.validation_due(trainer))  # noqa: B010

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if hasattr(pl_module, "evaluate"):
            evaluated = bool(getattr(pl_module, "evaluate"))  # noqa: B009
            setattr(pl_module, "evaluate", True)  # noqa: B010 - validate()/test() outside fit always evaluate
            if not evaluated:
                return
        self._save_best_if_better(trainer, pl_module)

    # ------------------------------------------------------------------ best checkpoint
    def _save_best_if_better(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.save_best is None or trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        results = _eval_results(trainer, pl_module)
        if not results:
            log.warning("save_best=%r: the validation produced no results; nothing to compare", self.save_best)
            return
        if self.key_indicator is None:  # 'auto'
            self._init_rule(next(iter(results)))
        key = self.key_indicator
        assert key is not None and self.rule is not None
        if key not in results:
            raise ConfigError(f"save_best={key!r} is not among the evaluation results {list(results)}; "
                              "pick one of them or use save_best: auto")
        score = float(results[key])
        best = _INIT_SCORE[self.rule] if self.best_score is None else self.best_score
        if _COMPARE[self.rule](score, best):
            self.best_score = score
            self._save_best(trainer, pl_module, key, score)

    def best_filename(self, key: str, trainer: pl.Trainer) -> str:
        """``best_{key}_epoch_{E+1}`` / ``best_{key}_iter_{I+1}`` without extension; ``/`` in the key becomes ``_``."""
        safe = key.replace("/", "_").replace(os.sep, "_")
        if self.by_epoch:
            return f"best_{safe}_epoch_{trainer.current_epoch + 1}"
        return f"best_{safe}_iter_{batches_done(trainer)}"  # batches_done = I + 1 inside iteration I

    def _resolve_dir(self, trainer: pl.Trainer) -> str:
        if self.out_dir is not None:
            return self.out_dir
        for cb in trainer.callbacks:  # type: ignore[attr-defined]
            if isinstance(cb, MMCheckpoint) and cb.dirpath is not None:
                return str(cb.dirpath)
        for cb in trainer.callbacks:  # type: ignore[attr-defined]
            # mmcv's CheckpointHook running in MMCheckpoint's place: beside its epoch_N.pth (set in its before_run)
            out_dir = getattr(getattr(cb, "replacements", {}).get("detlight.callbacks.MMCheckpoint"), "out_dir", None)
            if isinstance(out_dir, str):
                return out_dir
        if trainer.loggers:  # the run's folder, as MMCheckpoint's: a later run never replaces this run's best
            return os.path.join(os.path.abspath(str(trainer.log_dir or trainer.default_root_dir)), "checkpoints")
        return str(trainer.default_root_dir)

    def _save_best(self, trainer: pl.Trainer, pl_module: pl.LightningModule, key: str, score: float) -> None:
        directory = self._resolve_dir(trainer)
        stem = self.best_filename(key, trainer)
        old, path = self.best_ckpt_path, os.path.join(directory, f"{stem}.ckpt")
        if old and os.path.abspath(old) != os.path.abspath(path):
            for ext in (".ckpt", ".pth"):
                if trainer.is_global_zero and os.path.isfile(old[: -len(".ckpt")] + ext):
                    os.remove(old[: -len(".ckpt")] + ext)
            log.info("The previous best checkpoint %s was removed", old)
        self.best_ckpt_path = path
        trainer.save_checkpoint(path, weights_only=False)  # all ranks; the strategy writes on rank 0
        if self.export_mmcv and trainer.is_global_zero:
            hook_msgs: dict[str, Any] = {"best_score": score, "best_ckpt": path[: -len(".ckpt")] + ".pth"}
            last = next((cb.last_ckpt for cb in trainer.callbacks  # type: ignore[attr-defined]
                         if isinstance(cb, MMCheckpoint) and cb.last_ckpt), None)
            if last:
                hook_msgs["last_ckpt"] = last
            export_mmcv_checkpoint(os.path.join(directory, f"{stem}.pth"), trainer, pl_module, by_epoch=self.by_epoch,
                                   hook_msgs=hook_msgs)
        unit = "epoch" if self.by_epoch else "iter"
        # mmcv's two lines (EvalHook._save_ckpt)
        log.info("Now best checkpoint is saved as %s.", os.path.basename(path))
        log.info("Best %s is %.4f at %s %s.", key, score, stem.rsplit("_", 1)[-1], unit)

    # ------------------------------------------------------------------ state
    @override
    def state_dict(self) -> dict[str, Any]:
        return {"best_score": self.best_score, "best_ckpt_path": self.best_ckpt_path,
                "key_indicator": self.key_indicator, "rule": self.rule}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_score = state_dict.get("best_score")
        self.best_ckpt_path = state_dict.get("best_ckpt_path")
        if self.save_best == "auto" and state_dict.get("key_indicator"):
            self.key_indicator = state_dict["key_indicator"]
            self.rule = self.rule or state_dict.get("rule")


def _as_keys(keys: Sequence[str] | str | None, default: tuple[str, ...], name: str) -> tuple[str, ...]:
    if keys is None:
        return default
    keys = (keys,) if isinstance(keys, str) else tuple(keys)
    if not all(isinstance(k, str) for k in keys):
        raise ConfigError(f"`{name}` must be a string or a list of strings, got {keys!r}")
    return keys


def _dynamic(interval: int, dynamic: Sequence[tuple[int, int]] | None) -> tuple[list[int], list[int]]:
    """mmdet ``_calc_dynamic_intervals``: milestones ``[0, m1, ...]`` and intervals ``[interval, i1, ...]``."""
    milestones, intervals = [0], [interval]
    for item in dynamic or ():
        if len(item) != 2 or int(item[1]) <= 0:
            raise ConfigError(f"`dynamic_intervals` entries must be (milestone, interval > 0) pairs, got {item!r}")
        milestones.append(int(item[0]))
        intervals.append(int(item[1]))
    if milestones != sorted(milestones):
        raise ConfigError(f"`dynamic_intervals` milestones must be ascending, got {milestones[1:]}")
    return milestones, intervals


def _eval_results(trainer: pl.Trainer, pl_module: pl.LightningModule) -> OrderedDict[str, float]:
    """``pl_module.eval_results`` (DetectorModule), else the ``val/``-prefixed logged metrics."""
    results = getattr(pl_module, "eval_results", None)
    if isinstance(results, Mapping) and results:
        return OrderedDict((str(k), float(v)) for k, v in results.items())
    return OrderedDict((k[len("val/"):], float(v)) for k, v in trainer.callback_metrics.items() if k.startswith("val/"))


def _run_validation_now(trainer: pl.Trainer) -> None:
    """Run the fit loop's validation loop outside its usual place (mmcv's evaluation in ``before_train_epoch``).

    Mirrors what ``_TrainingEpochLoop.on_advance_end`` does around ``val_loop.run()``.
    """
    if not trainer.enable_validation:
        return
    with keep_first_loop_iter(trainer):
        trainer.validating = True
        trainer.fit_loop.epoch_loop.val_loop.run()
        trainer.training = True
