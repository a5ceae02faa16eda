"""Users' own mmcv-style hooks as one Lightning callback: mmcv's priority order, stages and runner.

Replaces: ``BaseRunner.register_hook`` / ``call_hook`` for ``custom_hooks`` (docs/mmcv-semantics.md §4.3). The hooks are
built by :mod:`detlight.compat.hook_registry`, see a :class:`~detlight.compat.runner.RunnerView`, and may be written
against a real mmcv or against detlight's dependency-free shim (:mod:`detlight.compat.mmcv_shim`). One of mmcv's or
mmdet's standard hooks given here runs, runs in place of its detlight counterpart, or is refused, as
:mod:`detlight.compat.hook_table` says.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, Checkpoint
from lightning.pytorch.trainer.states import TrainerFn
from typing_extensions import override

from detlight.callbacks._val_gate import in_val_phase
from detlight.compat.hook_base import FALLBACKS, get_priority
from detlight.compat.hook_registry import HookSpec, build_hook, import_hook_module
from detlight.compat.hook_table import lookup_standard_hook, refusal, standard_base
from detlight.compat.runner import RunnerView, plain_meta
from detlight.exceptions import DetLightError, HookError
from detlight.upstream_internals import callback_state_key

__all__ = ["MMCVHooks"]

log = logging.getLogger(__name__)

#: mmcv's EvalHook priority (LOW): ``after_train_epoch`` of hooks after it waits for the epoch's evaluation.
LATE_PRIORITY = 70


class MMCVHooks(Callback):
    """Runs mmcv-style hooks in mmcv's priority order, each stage at the matching point of Lightning's fit loop.

    Replaces: ``BaseRunner.register_hook`` / ``call_hook`` for ``custom_hooks``.
    Hooks are sorted by priority (lower first; ties keep registration order, mmcv's insertion rule) and receive a
    :class:`~detlight.compat.runner.RunnerView` whose counters are mmcv's at that stage.

    Stage mapping (epoch-based run): ``on_train_start`` -> ``before_run``; ``on_train_epoch_start`` ->
    ``before_train_epoch``; ``on_train_batch_start`` / ``_end`` -> ``before_train_iter`` / ``after_train_iter``; the
    *last* train batch's ``on_train_batch_end`` -> ``after_train_epoch`` (so it precedes the epoch's validation as
    in mmcv; an epoch cut short fires it from ``on_train_epoch_end``); ``on_validation_*`` -> ``before_val_epoch`` ...
    ``after_val_epoch``; ``on_train_end`` -> ``after_run``. Iteration-based run (``by_epoch=False``): no per-epoch
    stages; ``before_epoch`` once after ``before_run`` and ``after_epoch`` once before ``after_run``, as
    IterBasedRunner calls them.

    Standard hooks (a class named like one of mmcv's or mmdet's, or a subclass of one): ``OptimizerHook`` and its
    subclasses are refused (Lightning owns backward and the step: put that code in
    ``LightningModule.configure_gradient_clipping`` or a callback's ``on_before_optimizer_step``), and so are mmcv's
    concrete loggers, ``IterTimerHook`` and ``EvalHook`` (the message names the detlight callback); LR / momentum
    updaters, ``CheckpointHook``, the EMA hooks and mmdet's small hooks run *in place of* their detlight counterpart,
    which is removed from ``trainer.callbacks`` at set-up with a warning; the others run as they are. Two hooks that
    would replace the same callback (two LR updaters) are refused.

    ``after_train_epoch`` of hooks after mmcv's EvalHook (priority > LOW: ``VERY_LOW``, ``LOWEST``) is called once
    the epoch's validation and checkpoint are done (from a helper callback placed after the checkpoint callbacks), so
    ``runner.meta['hook_msgs']`` holds this epoch's ``last_ckpt`` and best, as in mmcv; not when val stages are
    dispatched (a ``('val', n)`` workflow phase), where mmcv calls them before the val phase. Hooks up to LOW run
    before the epoch's checkpoint and see the previous ``last_ckpt`` (in mmcv those after CheckpointHook, NORMAL, see
    this epoch's).

    A hook that raises inside a stage stops the run with a :class:`~detlight.exceptions.HookError` naming the hook
    class and the stage; checkpoints written before stay as they are.

    Differences from mmcv, by design (docs/mmcv-semantics.md §4.3): backward and the optimizer step are Lightning's automatic
    optimization and have already run when ``after_train_iter`` is dispatched, so a hook with priority < 40
    (ABOVE_NORMAL) sees stepped weights, where mmcv ran it before OptimizerHook. detlight's own callbacks are ordered
    by the callback list, not by these priorities. Val stages fire only during ``fit`` and not during the sanity check.

    Args:
        hooks: hook objects or dicts (see :func:`build_hook`).
        by_epoch: epoch-based (mmcv EpochBasedRunner) or iteration-based stages; ``None`` infers it from the Trainer
            (iteration-based when ``max_steps`` is set and ``max_epochs`` is not). :class:`detlight.callbacks.workflow.Workflow`
            sets it from ``runner.type``.
        val_stages: dispatch the val stages for Lightning's validation loop. ``None``: only when the module computes
            a ``('val', n)`` workflow phase (``pl_module.val_losses``), which is when mmcv calls them.
        meta: initial ``runner.meta``; saved in and restored from Lightning checkpoints (plain types only).
        timestamp: ``runner.timestamp``; default: the time the callback is built, ``%Y%m%d_%H%M%S``.
        mmcv_shim: install :func:`detlight.compat.install_mmcv_shim` before building the hooks, so hook files that
            import ``mmcv.runner`` load without mmcv (a real mmcv, when installed, is used instead).
        custom_imports: modules to import before building the hooks (mmcv's ``custom_imports=dict(imports=[...])``),
            so the ``type`` names they register with ``@HOOKS.register_module()`` are found.

    Raises:
        ConfigError: a hook cannot be built (the message carries the reason, e.g. the ImportError of its module).
        HookError: a hook has no stage method, or is a standard hook that cannot run here (the message names the
            replacement).

    Example:
        >>> from detlight.compat.hook_base import Hook
        >>> class Count(Hook):
        ...     def __init__(self): self.seen = []
        ...     def before_run(self, runner): self.seen.append(runner.iter)
        >>> cb = MMCVHooks(hooks=[Count(), {"class_path": "detlight.compat.Hook", "priority": "VERY_LOW"}])
        >>> [type(h).__name__ for h in cb.hooks]
        ['Count', 'Hook']
    """

    def __init__(
        self,
        hooks: Sequence[Any] = (),
        by_epoch: bool | None = None,
        val_stages: bool | None = None,
        meta: dict[str, Any] | None = None,
        timestamp: str | None = None,
        mmcv_shim: bool = False,
        custom_imports: Sequence[str] = (),
    ) -> None:
        super().__init__()
        if isinstance(hooks, (str, bytes, Mapping)) or not isinstance(hooks, Sequence):
            raise HookError(f"Expected `hooks` to be a list of hooks or hook dicts, but got {type(hooks).__name__}")
        self.mmcv_shim = mmcv_shim
        if mmcv_shim:
            from detlight.compat.mmcv_shim import install_mmcv_shim

            install_mmcv_shim()
        self.custom_imports = list(custom_imports)
        for module_name in self.custom_imports:  # mmcv's custom_imports: modules whose import registers hook types
            import_hook_module(module_name)
        #: detlight callback class path -> the standard hook running in its place
        self.replacements: dict[str, Any] = {}
        self.by_epoch = by_epoch
        self.val_stages = val_stages
        self.runner = RunnerView(meta=meta, timestamp=timestamp or time.strftime("%Y%m%d_%H%M%S"))
        self._entries: list[tuple[int, int, Any]] = []
        self._calls: dict[str, list[tuple[int, Callable[[Any], Any]]]] = {}
        for spec in hooks:
            self.register(spec)
        self._train_epoch_closed = True
        self._new_phase = True
        self._dispatch_val = False
        self._late_pending = False
        self._late_runner: _LateHooks | None = None
        self._in_val_phase = False
        self._val_batch_active = False

    # ------------------------------------------------------------------ registration
    def register(self, hook: HookSpec, priority: int | str | None = None) -> Any:
        """Add one hook (object or dict) after every hook whose priority is <= its own; return the hook."""
        built, own_priority = build_hook(hook)
        value = get_priority(priority) if priority is not None else own_priority
        self._check_standard(built)
        self._entries.append((value, len(self._entries), built))
        self._entries.sort(key=lambda e: (e[0], e[1]))
        self.runner._hooks[:] = [e[2] for e in self._entries]
        self._calls = {}
        return built

    def _check_standard(self, hook: Any) -> None:
        reason = refusal(type(hook))
        if reason is not None:
            raise HookError(reason)
        name = standard_base(type(hook))
        mapping = lookup_standard_hook(name) if name is not None else None
        if mapping is not None and mapping.as_user_hook == "replace":
            other = self.replacements.get(mapping.target)
            if other is not None:
                raise HookError(f"mmcv-style hooks `{type(other).__name__}` and `{type(hook).__name__}` would both "
                                f"replace {mapping.target} (e.g. two LR updaters fighting over the learning rate); "
                                "keep one")
            self.replacements[mapping.target] = hook

    @property
    def hooks(self) -> list[Any]:
        """The hooks in call order."""
        return list(self.runner._hooks)

    @property
    def priorities(self) -> list[int]:
        """Each hook's priority, in call order."""
        return [e[0] for e in self._entries]

    def _methods(self, stage: str) -> list[tuple[int, Callable[[Any], Any]]]:
        calls = self._calls.get(stage)
        if calls is None:
            calls = []
            for priority, _, hook in self._entries:
                method = getattr(hook, stage, None)
                if not callable(method) and stage in FALLBACKS:
                    method = getattr(hook, FALLBACKS[stage], None)
                if callable(method):
                    calls.append((priority, method))
            self._calls[stage] = calls
        return calls

    def call_hook(self, stage: str, priorities: Callable[[int], bool] | None = None) -> None:
        """Call ``stage`` on every hook in priority order (mmcv ``runner.call_hook``); with ``priorities``, only on
        the hooks whose priority it accepts.

        Raises:
            HookError: a hook raised; the message names its class and the stage (the original is the cause).
        """
        methods = [m for p, m in self._methods(stage) if priorities is None or priorities(p)]
        if methods and self.runner.trainer is not None:
            self._sync_hook_msgs(self.runner.trainer)
        for method in methods:
            try:
                method(self.runner)
            except DetLightError:
                raise
            except Exception as err:
                owner = getattr(method, "__self__", None)
                name = type(owner).__name__ if owner is not None else getattr(method, "__qualname__", "?")
                raise HookError(f"mmcv-style hook `{name}` raised in `{stage}` ({self.runner!r}): "
                                f"{type(err).__name__}: {err}") from err

    def _sync_hook_msgs(self, trainer: pl.Trainer) -> None:
        """mmcv's ``runner.meta['hook_msgs']``: last / best checkpoint and best score of detlight's callbacks."""
        msgs = self.runner.meta.setdefault("hook_msgs", {})
        for callback in trainer.callbacks:  # type: ignore[attr-defined]
            last = getattr(callback, "last_ckpt", None)
            if isinstance(last, str):
                msgs["last_ckpt"] = last
            best_score, best_ckpt = getattr(callback, "best_score", None), getattr(callback, "best_ckpt_path", None)
            if isinstance(best_score, (int, float)) and isinstance(best_ckpt, str):
                msgs["best_score"], msgs["best_ckpt"] = float(best_score), best_ckpt

    def _replace_counterparts(self, trainer: pl.Trainer) -> None:
        """Remove the detlight callbacks that a standard mmcv hook given here replaces (logged)."""
        for target, hook in self.replacements.items():
            module_name, _, attr = target.rpartition(".")
            counterpart = getattr(importlib.import_module(module_name), attr)
            for other in trainer.callbacks:  # type: ignore[attr-defined]
                if other is not self and isinstance(other, MMCVHooks) and target in other.replacements:
                    raise HookError(f"mmcv-style hooks `{type(other.replacements[target]).__name__}` and "
                                    f"`{type(hook).__name__}` (in two MMCVHooks callbacks) would both replace "
                                    f"{target}; keep one")
            removed = [cb for cb in trainer.callbacks if isinstance(cb, counterpart)]  # type: ignore[attr-defined]
            if removed:
                trainer.callbacks = [cb for cb in trainer.callbacks  # type: ignore[attr-defined]
                                     if not isinstance(cb, counterpart)]
                log.warning("mmcv hook `%s` runs in place of %s: removed %d %s callback(s) from trainer.callbacks",
                            type(hook).__name__, target, len(removed), attr)

    # ------------------------------------------------------------------ run
    def _is_by_epoch(self, trainer: pl.Trainer) -> bool:
        if self.by_epoch is not None:
            return self.by_epoch
        return not (trainer.max_steps not in (-1, None) and trainer.max_epochs in (-1, None))

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.runner.bind(trainer, pl_module)
        if stage == "fit":
            self._replace_counterparts(trainer)
            trainer.callbacks = [cb for cb in trainer.callbacks  # type: ignore[attr-defined]
                                 if not (isinstance(cb, _LateHooks) and cb.owner is self)]
            self._late_runner = None
            if any(p > LATE_PRIORITY for p, _ in self._methods("after_train_epoch")):
                # last in the list: after the checkpoint callbacks, which Lightning has already moved to the end
                self._late_runner = _LateHooks(self)
                trainer.callbacks.append(self._late_runner)  # type: ignore[attr-defined]

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        view = self.runner
        view.bind(trainer, pl_module)
        view.by_epoch = self._is_by_epoch(trainer)
        view._epoch = trainer.current_epoch
        view._iter = trainer.fit_loop.epoch_loop.batch_progress.total.completed
        view._max_epochs = trainer.max_epochs if view.by_epoch else None
        view._max_iters = self._max_iters(trainer)
        self._dispatch_val = self.val_stages if self.val_stages is not None else bool(getattr(pl_module, "val_losses",
                                                                                             False))
        self.call_hook("before_run")
        if not view.by_epoch:
            self.call_hook("before_epoch")

    def _max_iters(self, trainer: pl.Trainer) -> int | None:
        if not self.runner.by_epoch:
            return trainer.max_steps if trainer.max_steps not in (-1, None) else None
        batches = trainer.num_training_batches
        if trainer.max_epochs in (-1, None) or batches == float("inf"):
            return trainer.max_steps if trainer.max_steps not in (-1, None) else None
        return int(trainer.max_epochs * batches)

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        view = self.runner
        if not view.by_epoch:
            return
        view.mode = "train"
        view._epoch = trainer.current_epoch
        view._max_iters = self._max_iters(trainer)
        self._train_epoch_closed = False
        self.call_hook("before_train_epoch")

    @override
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        view = self.runner
        view.mode = "train"
        view.data_batch = batch
        if view.by_epoch:
            view._inner_iter = batch_idx
        else:
            if self._new_phase:
                view._inner_iter, self._new_phase = 0, False
            # IterLoader reports the epoch *before* the fetch that exhausts the loader.
            view._epoch = trainer.current_epoch - (1 if batch_idx == 0 and trainer.current_epoch > 0 else 0)
        self.call_hook("before_train_iter")

    @override
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        view = self.runner
        self.call_hook("after_train_iter")
        view.data_batch = None
        view._iter += 1
        if not view.by_epoch:
            view._inner_iter += 1
            return
        last = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch or batch_idx + 1 >= trainer.num_training_batches
        if last:
            self._close_train_epoch()

    def _defers_late_hooks(self) -> bool:
        """Whether ``after_train_epoch`` of the hooks after EvalHook (priority > LOW) waits for the epoch's
        evaluation and checkpoint (see :meth:`_close_late_hooks`)."""
        return (self._late_runner is not None and not self._dispatch_val
                and any(p > LATE_PRIORITY for p, _ in self._methods("after_train_epoch")))

    def _close_train_epoch(self) -> None:
        if self._train_epoch_closed:
            return
        self._train_epoch_closed = True
        defer = self._defers_late_hooks()
        self.runner.closing_epoch = True
        try:
            self.call_hook("after_train_epoch", (lambda p: p <= LATE_PRIORITY) if defer else None)
        finally:
            self.runner.closing_epoch = False
        if defer:
            self._late_pending = True
        else:
            self.runner._epoch += 1

    def _close_late_hooks(self, trainer: pl.Trainer) -> None:
        """``after_train_epoch`` of the hooks after mmcv's EvalHook (priority > LOW: VERY_LOW, LOWEST), once this
        epoch's evaluation and checkpoint are done, so ``runner.meta['hook_msgs']`` holds this epoch's
        ``last_ckpt`` / ``best_ckpt`` / ``best_score``, as in mmcv (where CheckpointHook and EvalHook run before them
        inside ``after_train_epoch``)."""
        if not self._late_pending:
            return
        self._late_pending = False
        self.runner.closing_epoch = True
        try:
            self.call_hook("after_train_epoch", lambda p: p > LATE_PRIORITY)
        finally:
            self.runner.closing_epoch = False
        self.runner._epoch += 1
        self._write_pending_ckpts()

    def _write_pending_ckpts(self) -> None:
        pending, self.runner.pending_ckpts = self.runner.pending_ckpts, []
        for path, weights_only, latest in pending:
            self.runner.write_lightning_checkpoint(path, weights_only, latest)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.runner.by_epoch:
            self._close_train_epoch()
        self._write_pending_ckpts()

    def _val_active(self, trainer: pl.Trainer, batch_idx: int = 0) -> bool:
        if not self._dispatch_val or trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return False
        if self.val_stages:  # asked for every validation run
            return True
        # Inferred from a ('val', n) phase: only its batches; an evaluation-only run is mmcv's EvalHook, which calls
        # no val stage (the Workflow callback sets the module's `val_losses` per run, in on_validation_start).
        return in_val_phase(trainer.lightning_module, batch_idx)

    @override
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._in_val_phase = self._val_active(trainer)
        if not self._in_val_phase:
            return
        view = self.runner
        view.mode = "val"
        if view.by_epoch:
            self.call_hook("before_val_epoch")
        else:
            view._inner_iter = 0

    @override
    def on_validation_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                                  batch_idx: int, dataloader_idx: int = 0) -> None:
        self._val_batch_active = self._val_active(trainer, batch_idx)
        if not self._val_batch_active:
            return
        view = self.runner
        view.data_batch = batch
        if view.by_epoch:
            view._inner_iter = batch_idx
        self.call_hook("before_val_iter")

    @override
    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if not self._val_batch_active:
            return
        self._val_batch_active = False
        self.call_hook("after_val_iter")
        self.runner.data_batch = None
        if not self.runner.by_epoch:
            self.runner._inner_iter += 1

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._in_val_phase:
            return
        self._in_val_phase = False
        if self.runner.by_epoch:
            self.call_hook("after_val_epoch")
        else:
            self._new_phase = True

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.runner.by_epoch:
            self.call_hook("after_epoch")
        self.call_hook("after_run")

    # ------------------------------------------------------------------ state
    @property
    @override
    def state_key(self) -> str:
        # Two MMCVHooks in one Trainer (a converted config plus the user's own) need distinct checkpoint keys.
        return callback_state_key(self, hooks=[type(h).__qualname__ for h in self.runner._hooks])

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"meta": plain_meta(self.runner.meta, "runner.meta")}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.runner.meta = dict(state_dict.get("meta") or {})


class _LateHooks(Checkpoint):
    """Runs :meth:`MMCVHooks._close_late_hooks` at the train epoch's end, after the checkpoint callbacks.

    A ``Checkpoint`` (which saves nothing) only so that Lightning calls its ``on_train_epoch_end`` in the second pass,
    with the checkpoint callbacks, where it comes last. Added only when some hook needs it.
    """

    MMCV_STAGES: tuple[str, ...] = ()  # not a hook of its own in the text log's hook table

    def __init__(self, owner: MMCVHooks) -> None:
        self.owner = owner

    @property
    @override
    def state_key(self) -> str:
        return f"{self.owner.state_key}:late"

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.owner._close_late_hooks(trainer)
