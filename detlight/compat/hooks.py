"""Run users' own mmcv-style hooks unchanged, and map mmcv's standard hook types to their detlight counterparts.

Replaces: ``mmcv.runner.Hook``, ``BaseRunner.register_hook`` / ``call_hook`` and the ``HOOKS`` registry, for hooks that
are *not* one of mmcv's standard ones. The standard ones (LR and momentum updaters, optimizer, checkpoint, loggers,
evaluation, EMA, ...) are Lightning callbacks or Trainer settings in detlight; :func:`standard_hook_table` says which,
and asking :class:`MMCVHooks` for one of them raises a message that names its replacement.

mmcv is never imported: a hook is any object with mmcv's stage methods, so a class written against
``mmcv.runner.Hook`` works whether or not mmcv is installed. :class:`Hook` is a dependency-free base with mmcv's
fallbacks and helpers for users without mmcv.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from typing_extensions import override

from detlight.compat.runner import RunnerView
from detlight.exceptions import ConfigError, HookError

__all__ = [
    "PRIORITIES",
    "STAGES",
    "Hook",
    "HookMapping",
    "MMCVHooks",
    "build_hook",
    "get_priority",
    "lookup_standard_hook",
    "register_hook",
    "registered_hooks",
    "standard_hook_table",
]

log = logging.getLogger(__name__)

#: mmcv's ``Priority`` enum (``mmcv/runner/priority.py``): lower runs first.
PRIORITIES: dict[str, int] = {
    "HIGHEST": 0, "VERY_HIGH": 10, "HIGH": 30, "ABOVE_NORMAL": 40, "NORMAL": 50,
    "BELOW_NORMAL": 60, "LOW": 70, "VERY_LOW": 90, "LOWEST": 100,
}

#: The stages a runner calls, in mmcv's ``Hook.stages`` order.
STAGES: tuple[str, ...] = (
    "before_run", "before_train_epoch", "before_train_iter", "after_train_iter", "after_train_epoch",
    "before_val_epoch", "before_val_iter", "after_val_iter", "after_val_epoch", "after_run",
)
#: Stages that fall back to a generic method, as ``mmcv.runner.Hook`` does by default.
_FALLBACKS: dict[str, str] = {
    "before_train_epoch": "before_epoch", "before_val_epoch": "before_epoch",
    "after_train_epoch": "after_epoch", "after_val_epoch": "after_epoch",
    "before_train_iter": "before_iter", "before_val_iter": "before_iter",
    "after_train_iter": "after_iter", "after_val_iter": "after_iter",
}
#: Called directly by IterBasedRunner (once each).
_DIRECT = ("before_epoch", "after_epoch")


def get_priority(priority: int | str | Any) -> int:
    """mmcv's ``get_priority``: an int in [0, 100], a ``PRIORITIES`` name (any case) or an enum with ``.value``.

    Raises:
        ValueError: an int outside [0, 100] or an unknown name.
        TypeError: anything else.
    """
    value = getattr(priority, "value", priority)
    if isinstance(value, bool):
        raise ConfigError(f"Expected hook priority to be an int or one of {list(PRIORITIES)}, but got {priority!r}")
    if isinstance(value, int):
        if not 0 <= value <= 100:
            raise ConfigError(f"Hook priority must be in [0, 100], but got {value}")
        return value
    if isinstance(value, str):
        key = value.upper()
        if key not in PRIORITIES:
            raise ConfigError(f"Unknown hook priority {value!r}; expected an int in [0, 100] or one of "
                              f"{list(PRIORITIES)}")
        return PRIORITIES[key]
    raise ConfigError(f"Expected hook priority to be an int or one of {list(PRIORITIES)}, but got {priority!r}")


class Hook:
    """Dependency-free twin of ``mmcv.runner.Hook``: no-op stages, mmcv's fallbacks and helpers.

    Replaces: ``mmcv.runner.Hook`` for users without mmcv. Subclasses of mmcv's own ``Hook`` work with
    :class:`MMCVHooks` just as well; nothing here is required.

    Example:
        >>> class CountIters(Hook):
        ...     def __init__(self): self.n = 0
        ...     def after_iter(self, runner): self.n += 1
        >>> hook = CountIters(); hook.after_train_iter(None); hook.after_val_iter(None); hook.n
        2
    """

    stages = STAGES

    def before_run(self, runner: Any) -> None:
        pass

    def after_run(self, runner: Any) -> None:
        pass

    def before_epoch(self, runner: Any) -> None:
        pass

    def after_epoch(self, runner: Any) -> None:
        pass

    def before_iter(self, runner: Any) -> None:
        pass

    def after_iter(self, runner: Any) -> None:
        pass

    def before_train_epoch(self, runner: Any) -> None:
        self.before_epoch(runner)

    def before_val_epoch(self, runner: Any) -> None:
        self.before_epoch(runner)

    def after_train_epoch(self, runner: Any) -> None:
        self.after_epoch(runner)

    def after_val_epoch(self, runner: Any) -> None:
        self.after_epoch(runner)

    def before_train_iter(self, runner: Any) -> None:
        self.before_iter(runner)

    def before_val_iter(self, runner: Any) -> None:
        self.before_iter(runner)

    def after_train_iter(self, runner: Any) -> None:
        self.after_iter(runner)

    def after_val_iter(self, runner: Any) -> None:
        self.after_iter(runner)

    def every_n_epochs(self, runner: Any, n: int) -> bool:
        return (runner.epoch + 1) % n == 0 if n > 0 else False

    def every_n_inner_iters(self, runner: Any, n: int) -> bool:
        return (runner.inner_iter + 1) % n == 0 if n > 0 else False

    def every_n_iters(self, runner: Any, n: int) -> bool:
        return (runner.iter + 1) % n == 0 if n > 0 else False

    def end_of_epoch(self, runner: Any) -> bool:
        return runner.inner_iter + 1 == len(runner.data_loader)

    def is_last_epoch(self, runner: Any) -> bool:
        return runner.epoch + 1 == runner._max_epochs

    def is_last_iter(self, runner: Any) -> bool:
        return runner.iter + 1 == runner._max_iters


# ---------------------------------------------------------------------------------------------------- registry
_HookT = TypeVar("_HookT", bound=type)
_REGISTRY: dict[str, type] = {}


def register_hook(cls: _HookT | None = None, *, name: str | None = None, force: bool = False) -> Any:
    """Register an mmcv-style hook class under ``name`` (default: the class name) so ``{type: Name}`` finds it.

    Use as ``@register_hook`` or ``@register_hook(name="Alias")``. A ``class_path`` needs no registration; this is
    for configs written with mmcv's ``type=`` names. The module defining the class must be imported before the
    hooks are built (``class_path`` has no such catch).

    Raises:
        KeyError: ``name`` is taken by another class and ``force`` is False.
    """

    def _register(klass: _HookT) -> _HookT:
        key = name or klass.__name__
        existing = _REGISTRY.get(key)
        if existing is not None and existing is not klass and not force:
            raise KeyError(f"Hook type `{key}` is already registered to {existing.__module__}.{existing.__qualname__};"
                           " pass force=True to replace it or register under another name")
        _REGISTRY[key] = klass
        return klass

    return _register(cls) if cls is not None else _register


def registered_hooks() -> dict[str, type]:
    """The registered ``type`` names and their classes (a copy)."""
    return dict(_REGISTRY)


# ---------------------------------------------------------------------------------------------------- standard table
MappingKind = Literal["callback", "trainer", "module", "automatic", "unsupported"]


@dataclass(frozen=True)
class HookMapping:
    """Where one of mmcv's standard hook types went in detlight.

    Attributes:
        kind: ``callback`` (``target`` is a Lightning callback class path), ``trainer`` (a Trainer setting),
            ``module`` (a :class:`~detlight.module.DetectorModule` argument), ``automatic`` (Lightning does it
            already) or ``unsupported`` (no counterpart; ``note`` says what to use instead).
        target: the class path or setting, empty for ``automatic`` / ``unsupported``.
        note: what differs from mmcv, or what to do instead.
    """

    kind: MappingKind
    target: str = ""
    note: str = ""

    def message(self, hook_type: str) -> str:
        """The sentence shown when an mmcv config asks for ``hook_type`` as an mmcv-style hook."""
        note = f" ({self.note})" if self.note and self.kind != "unsupported" else ""
        if self.kind == "callback":
            return (f"mmcv hook `{hook_type}` is the Lightning callback `{self.target}` in detlight{note}; add "
                    f"{{class_path: {self.target}}} to trainer.callbacks instead of listing it in custom_hooks")
        if self.kind == "trainer":
            return (f"mmcv hook `{hook_type}` is the Trainer setting `{self.target}` in detlight{note}; set it under "
                    "`trainer:` and drop the hook from custom_hooks")
        if self.kind == "module":
            return (f"mmcv hook `{hook_type}` is the DetectorModule setting `{self.target}` in detlight{note}; set "
                    "it under `model:` and drop the hook from custom_hooks")
        if self.kind == "automatic":
            return f"mmcv hook `{hook_type}` is not needed in detlight: {self.note}; drop it from custom_hooks"
        return f"mmcv hook `{hook_type}` has no detlight counterpart; use {self.note}; or drop it from custom_hooks"


_CB = "detlight.callbacks."
_LR_NOTE = "policy and warmup arguments keep their mmcv names"
_LOGGER_NOTE = "interval averages go to the Trainer's loggers; set the matching Lightning logger under trainer.logger"
_NO_FN = "an mmcv-style hook object passed to detlight.compat.MMCVHooks(hooks=[...])"

_LR_POLICIES = ("Fixed", "Step", "Exp", "Poly", "Inv", "CosineAnnealing", "FlatCosineAnnealing", "CosineRestart",
                "Cyclic", "OneCycle", "LinearAnnealing")
_MOMENTUM_POLICIES = ("Step", "CosineAnnealing", "LinearAnnealing", "Cyclic", "OneCycle")

_STANDARD: dict[str, HookMapping] = {
    **{f"{p}LrUpdaterHook": HookMapping("callback", _CB + "LrUpdater", _LR_NOTE) for p in _LR_POLICIES},
    **{f"{p}MomentumUpdaterHook": HookMapping("callback", _CB + "MomentumUpdater", _LR_NOTE)
       for p in _MOMENTUM_POLICIES},
    "LrUpdaterHook": HookMapping("unsupported", note="a concrete policy, e.g. lr_config=dict(policy='step', ...) "
                                 "-> detlight.callbacks.LrUpdater"),
    "MomentumUpdaterHook": HookMapping("unsupported", note="a concrete policy, e.g. momentum_config=dict("
                                       "policy='cyclic', ...) -> detlight.callbacks.MomentumUpdater"),
    "OptimizerHook": HookMapping("module", "grad_clip", "backward and step are Lightning's automatic optimization; "
                                 "grad_clip: {max_norm, norm_type} clips and logs grad_norm"),
    "Fp16OptimizerHook": HookMapping("trainer", "precision: 16-mixed", "Lightning autocasts the whole step, mmcv "
                                     "only @auto_fp16 methods; a static loss_scale becomes a dynamic GradScaler"),
    "GradientCumulativeOptimizerHook": HookMapping("trainer", "accumulate_grad_batches", "Lightning's windows "
                                                   "restart every epoch; mmcv's span epochs"),
    "GradientCumulativeFp16OptimizerHook": HookMapping("trainer", "accumulate_grad_batches + precision: 16-mixed",
                                                       "see GradientCumulativeOptimizerHook and Fp16OptimizerHook"),
    "CheckpointHook": HookMapping("callback", _CB + "MMCheckpoint", "mmcv-format epoch_N.pth / iter_N.pth"),
    "IterTimerHook": HookMapping("callback", _CB + "IterTimer"),
    "TextLoggerHook": HookMapping("callback", _CB + "TextLogger", "{timestamp}.log and .log.json as mmcv writes them"),
    "TensorboardLoggerHook": HookMapping("callback", _CB + "IntervalLogger",
                                         "with trainer.logger: TensorBoardLogger; " + _LOGGER_NOTE),
    "WandbLoggerHook": HookMapping("callback", _CB + "IntervalLogger", "with trainer.logger: WandbLogger; "
                                   + _LOGGER_NOTE),
    "MMDetWandbHook": HookMapping("callback", _CB + "IntervalLogger", "with trainer.logger: WandbLogger (no "
                                  "checkpoint/bbox artefacts); " + _LOGGER_NOTE),
    "MlflowLoggerHook": HookMapping("callback", _CB + "IntervalLogger", "with trainer.logger: MLFlowLogger; "
                                    + _LOGGER_NOTE),
    "NeptuneLoggerHook": HookMapping("callback", _CB + "IntervalLogger", "with trainer.logger: NeptuneLogger; "
                                     + _LOGGER_NOTE),
    "DvcliveLoggerHook": HookMapping("callback", _CB + "IntervalLogger", "with trainer.logger: dvclive's "
                                     "dvclive.lightning.DVCLiveLogger; " + _LOGGER_NOTE),
    "PaviLoggerHook": HookMapping("unsupported", note="detlight.callbacks.IntervalLogger with a Lightning logger "
                                  "for your tracker (Pavi has none)"),
    "SegmindLoggerHook": HookMapping("unsupported", note="detlight.callbacks.IntervalLogger with a Lightning logger "
                                     "for your tracker (Segmind has none)"),
    "ClearMLLoggerHook": HookMapping("unsupported", note="detlight.callbacks.IntervalLogger with a Lightning logger "
                                     "for your tracker (ClearML has none; its Task auto-logging works unchanged)"),
    "LoggerHook": HookMapping("unsupported", note="a concrete logger, e.g. detlight.callbacks.TextLogger"),
    "EvalHook": HookMapping("callback", _CB + "Evaluation", "mmdet `evaluation=dict(...)`"),
    "DistEvalHook": HookMapping("callback", _CB + "Evaluation", "gathers across ranks itself"),
    "EMAHook": HookMapping("callback", _CB + "EMA", "mmcv's EMAHook update rule"),
    "ExpMomentumEMAHook": HookMapping("callback", _CB + "EMA", "mmdet's exponential-momentum rule"),
    "LinearMomentumEMAHook": HookMapping("callback", _CB + "EMA", "mmdet's linear-momentum rule"),
    "NumClassCheckHook": HookMapping("callback", _CB + "NumClassCheck", "DetectorModule.setup also checks it"),
    "CheckInvalidLossHook": HookMapping("callback", _CB + "CheckInvalidLoss"),
    "EmptyCacheHook": HookMapping("callback", _CB + "EmptyCache"),
    "SyncBuffersHook": HookMapping("callback", _CB + "SyncBuffers"),
    "SetEpochInfoHook": HookMapping("callback", _CB + "SetEpochInfo"),
    "DistSamplerSeedHook": HookMapping("automatic", note="Lightning calls sampler.set_epoch(epoch) at every train "
                                       "epoch start (keep your own sampler with trainer.use_distributed_sampler: "
                                       "false)"),
    "ProfilerHook": HookMapping("trainer", "profiler: pytorch", "lightning.pytorch.profilers.PyTorchProfiler takes "
                                "the torch.profiler schedule arguments"),
    "MemoryProfilerHook": HookMapping("unsupported", note="lightning.pytorch.callbacks.DeviceStatsMonitor (device "
                                      "memory; psutil for CPU) in trainer.callbacks"),
    "ClosureHook": HookMapping("unsupported", note=_NO_FN + " (configs cannot hold functions)"),
    "SyncNormHook": HookMapping("unsupported", note="trainer.sync_batchnorm: true (SyncBatchNorm all the way) or "
                                "detlight.callbacks.SyncBuffers"),
    "YOLOXModeSwitchHook": HookMapping("unsupported", note=_NO_FN + " that switches the pipeline and L1 loss"),
    "YOLOXLrUpdaterHook": HookMapping("unsupported", note="detlight.callbacks.LrUpdater with policy "
                                      "'CosineAnnealing' and warmup 'exp' (close to YOLOX's schedule, not equal)"),
    "Hook": HookMapping("unsupported", note="a subclass that overrides a stage (the base class does nothing)"),
}


def standard_hook_table() -> dict[str, HookMapping]:
    """mmcv / mmdet standard hook type name -> :class:`HookMapping` (a copy; for the config converter)."""
    return dict(_STANDARD)


def lookup_standard_hook(hook_type: str) -> HookMapping | None:
    """The mapping of one standard hook type, ``None`` if the name is not a standard mmcv / mmdet hook."""
    return _STANDARD.get(hook_type)


# ---------------------------------------------------------------------------------------------------- building
HookSpec = Any  # an mmcv-style hook object, or {type | class_path, priority?, init_args? | **kwargs}


def _import(path: str) -> Any:
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise ConfigError(f"Hook class_path `{path}` must be a full import path such as `my_pkg.hooks.MyHook`")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise HookError(f"Cannot import hook class_path `{path}`: {err}") from err


def _resolve_type(hook_type: Any) -> Any:
    if not isinstance(hook_type, str):
        if callable(hook_type):
            return hook_type
        raise ConfigError(f"Expected hook `type` to be a registered name or a class, but got {hook_type!r}")
    if hook_type in _REGISTRY:
        return _REGISTRY[hook_type]
    mapping = _STANDARD.get(hook_type)
    if mapping is not None:
        raise ConfigError(mapping.message(hook_type))
    if "." in hook_type:
        return _import(hook_type)
    known = ", ".join(sorted(_REGISTRY)) or "none registered"
    raise ConfigError(f"Unknown hook type `{hook_type}`. Registered hook types: {known}. Decorate the class with "
                      "detlight.compat.hooks.register_hook (and import its module first), or give "
                      "`class_path: my_pkg.hooks.MyHook` instead of `type`")


def _check_hook(hook: Any, where: str) -> None:
    names = (*STAGES, *_DIRECT, "before_iter", "after_iter")
    if not any(callable(getattr(hook, name, None)) for name in names):
        raise ConfigError(f"{where} ({type(hook).__name__}) is not an mmcv-style hook: it has none of the stage methods "
                          f"{list(STAGES)} nor before_epoch/after_epoch/before_iter/after_iter")


def build_hook(spec: HookSpec) -> tuple[Any, int]:
    """Build one hook from an object or a dict; return it with its priority.

    A dict is ``{type: Name | class_path: a.b.C, priority: 'NORMAL' | int, init_args: {...}}`` or mmcv's flat
    ``{type: Name, priority: ..., **kwargs}``. A hook object's priority is its own ``priority`` attribute when it has
    one (mmengine hooks do), else ``NORMAL``; a dict's ``priority`` key wins over both.

    Raises:
        ValueError: the type is one of mmcv's standard hooks (the message names its detlight counterpart), or the
            priority is invalid.
        KeyError: an unknown ``type`` name (the message lists the registered ones).
        TypeError: the built object has no mmcv stage method, or the class rejects the arguments.
    """
    if not isinstance(spec, Mapping):
        _check_hook(spec, "Hook object")
        return spec, get_priority(getattr(spec, "priority", "NORMAL"))
    cfg = dict(spec)
    priority = cfg.pop("priority", None)
    if ("type" in cfg) == ("class_path" in cfg):
        raise ConfigError(f"A hook dict needs exactly one of `type` (registered name) or `class_path` (import path); "
                          f"got keys {sorted(spec)}")
    name = cfg.pop("type") if "type" in cfg else cfg.pop("class_path")
    cls = _resolve_type(name) if "type" in spec else _import(name)
    kwargs = dict(cfg.pop("init_args", None) or {})
    kwargs.update(cfg)
    try:
        hook = cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"Cannot build hook `{name}` with arguments {sorted(kwargs)}: {err}") from err
    _check_hook(hook, f"Hook `{name}`")
    if priority is None:
        priority = getattr(hook, "priority", "NORMAL")
    return hook, get_priority(priority)


# ---------------------------------------------------------------------------------------------------- the callback
class MMCVHooks(Callback):
    """Runs mmcv-style hooks in mmcv's priority order, each stage at the matching point of Lightning's fit loop.

    Replaces: ``BaseRunner.register_hook`` / ``call_hook`` for ``custom_hooks`` that are not standard mmcv hooks.
    Hooks are sorted by priority (lower first; ties keep registration order, mmcv's insertion rule) and receive a
    :class:`~detlight.compat.runner.RunnerView` whose counters are mmcv's at that stage.

    Stage mapping (epoch-based run): ``on_train_start`` -> ``before_run``; ``on_train_epoch_start`` ->
    ``before_train_epoch``; ``on_train_batch_start`` / ``_end`` -> ``before_train_iter`` / ``after_train_iter``; the
    *last* train batch's ``on_train_batch_end`` -> ``after_train_epoch`` (so it precedes the epoch's validation as
    in mmcv; an epoch cut short fires it from ``on_train_epoch_end``); ``on_validation_*`` -> ``before_val_epoch`` ...
    ``after_val_epoch``; ``on_train_end`` -> ``after_run``. Iteration-based run (``by_epoch=False``): no per-epoch
    stages; ``before_epoch`` once after ``before_run`` and ``after_epoch`` once before ``after_run``, as
    IterBasedRunner calls them.

    Differences from mmcv, by design (docs/mmcv-semantics.md §4.3): backward and the optimizer step are Lightning's automatic
    optimization and have already run when ``after_train_iter`` is dispatched, so a hook with priority < 40
    (ABOVE_NORMAL) sees stepped weights, where mmcv ran it before OptimizerHook. detlight's own callbacks are ordered
    by the callback list, not by these priorities. Val stages fire only during ``fit`` and not during the sanity check.

    Args:
        hooks: hook objects or dicts (see :func:`build_hook`).
        by_epoch: epoch-based (mmcv EpochBasedRunner) or iteration-based stages; ``None`` infers it from the Trainer
            (iteration-based when ``max_steps`` is set and ``max_epochs`` is not). :class:`detlight.workflow.Workflow`
            sets it from ``runner.type``.
        val_stages: dispatch the val stages for Lightning's validation loop. ``None``: only when the module computes
            a ``('val', n)`` workflow phase (``pl_module.val_losses``), which is when mmcv calls them.
        meta: initial ``runner.meta``; saved in and restored from Lightning checkpoints (plain types only).
        timestamp: ``runner.timestamp``; default: the time the callback is built, ``%Y%m%d_%H%M%S``.

    Example:
        >>> class Count(Hook):
        ...     def __init__(self): self.seen = []
        ...     def before_run(self, runner): self.seen.append(runner.iter)
        >>> cb = MMCVHooks(hooks=[Count(), {"class_path": "detlight.compat.hooks.Hook", "priority": "VERY_LOW"}])
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
    ) -> None:
        super().__init__()
        if isinstance(hooks, (str, bytes, Mapping)) or not isinstance(hooks, Sequence):
            raise ConfigError(f"Expected `hooks` to be a list of hooks or hook dicts, but got {type(hooks).__name__}")
        self.by_epoch = by_epoch
        self.val_stages = val_stages
        self.runner = RunnerView(meta=meta, timestamp=timestamp or time.strftime("%Y%m%d_%H%M%S"))
        self._entries: list[tuple[int, int, Any]] = []
        self._calls: dict[str, list[Callable[[Any], Any]]] = {}
        for spec in hooks:
            self.register(spec)
        self._train_epoch_closed = True
        self._new_phase = True
        self._dispatch_val = False

    # ------------------------------------------------------------------ registration
    def register(self, hook: HookSpec, priority: int | str | None = None) -> Any:
        """Add one hook (object or dict) after every hook whose priority is <= its own; return the hook."""
        built, own_priority = build_hook(hook)
        value = get_priority(priority) if priority is not None else own_priority
        self._entries.append((value, len(self._entries), built))
        self._entries.sort(key=lambda e: (e[0], e[1]))
        self.runner._hooks[:] = [e[2] for e in self._entries]
        self._calls = {}
        return built

    @property
    def hooks(self) -> list[Any]:
        """The hooks in call order."""
        return list(self.runner._hooks)

    @property
    def priorities(self) -> list[int]:
        """Each hook's priority, in call order."""
        return [e[0] for e in self._entries]

    def _methods(self, stage: str) -> list[Callable[[Any], Any]]:
        calls = self._calls.get(stage)
        if calls is None:
            calls = []
            for hook in self.runner._hooks:
                method = getattr(hook, stage, None)
                if not callable(method) and stage in _FALLBACKS:
                    method = getattr(hook, _FALLBACKS[stage], None)
                if callable(method):
                    calls.append(method)
            self._calls[stage] = calls
        return calls

    def call_hook(self, stage: str) -> None:
        """Call ``stage`` on every hook in priority order (mmcv ``runner.call_hook``)."""
        for method in self._methods(stage):
            method(self.runner)

    # ------------------------------------------------------------------ run
    def _is_by_epoch(self, trainer: pl.Trainer) -> bool:
        if self.by_epoch is not None:
            return self.by_epoch
        return not (trainer.max_steps not in (-1, None) and trainer.max_epochs in (-1, None))

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.runner.bind(trainer, pl_module)

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

    def _close_train_epoch(self) -> None:
        if self._train_epoch_closed:
            return
        self._train_epoch_closed = True
        self.call_hook("after_train_epoch")
        self.runner._epoch += 1

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.runner.by_epoch:
            self._close_train_epoch()

    def _val_active(self, trainer: pl.Trainer) -> bool:
        return self._dispatch_val and not trainer.sanity_checking and trainer.state.fn == TrainerFn.FITTING

    @override
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._val_active(trainer):
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
        if not self._val_active(trainer):
            return
        view = self.runner
        view.data_batch = batch
        if view.by_epoch:
            view._inner_iter = batch_idx
        self.call_hook("before_val_iter")

    @override
    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if not self._val_active(trainer):
            return
        self.call_hook("after_val_iter")
        self.runner.data_batch = None
        if not self.runner.by_epoch:
            self.runner._inner_iter += 1

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._val_active(trainer):
            return
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
        return self._generate_state_key(hooks=[type(h).__qualname__ for h in self.runner._hooks])

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"meta": _plain(self.runner.meta, "runner.meta")}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.runner.meta = dict(state_dict.get("meta") or {})


def _plain(value: Any, where: str) -> Any:
    """Copy ``value`` as checkpoint-safe plain types (tensors and numpy scalars become python numbers / lists)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {k: _plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v, f"{where}[{i}]") for i, v in enumerate(value))
    tolist = getattr(value, "tolist", None)  # torch.Tensor, numpy arrays and scalars
    if callable(tolist):
        return tolist()
    raise TypeError(f"`{where}` holds a {type(value).__name__}; runner.meta is saved in checkpoints (loaded with "
                    "weights_only=True) and may only hold dicts, lists, str, numbers, bools, None and tensors")
