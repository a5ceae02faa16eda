"""The one table of mmcv's and mmdet's standard hooks: where each went in detlight, and what happens to it.

Replaces: the ``HOOKS`` registry entries mmcv 1.7 and mmdet 2.28 register themselves (``mmcv/runner/hooks/*.py``,
``mmdet/core/hook/*.py``, ``EvalHook`` / ``DistEvalHook``, ``NumClassCheckHook``). Both readers of an mmcv config use
it: the config converter (:mod:`detlight.convert.entry`, which turns ``custom_hooks`` entries into callbacks with
:data:`CUSTOM_HOOKS` and drops the rest with :meth:`HookMapping.message`) and
:class:`~detlight.callbacks.mmcv_hooks.MMCVHooks`, which decides with :attr:`HookMapping.as_user_hook` what to do
when one of these classes is given to it as a user hook:

- ``run``: no detlight counterpart runs by default; the mmcv class runs unchanged through the adapter.
- ``replace``: it runs unchanged *instead of* its detlight counterpart, which ``MMCVHooks`` removes from
  ``trainer.callbacks`` at set-up and logs (never two LR updaters, two EMAs, two checkpoint writers).
- ``refuse``: it cannot run under Lightning as written (it owns backward / the optimizer step, or writes the same
  files as a detlight logger); the error names the replacement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from detlight.compat.hook_base import PRIORITIES

__all__ = [
    "CALLBACKS",
    "CUSTOM_HOOKS",
    "PRIORITIES",
    "HookMapping",
    "lookup_standard_hook",
    "refusal",
    "standard_base",
    "standard_hook_table",
]

MappingKind = Literal["callback", "trainer", "module", "automatic", "unsupported"]
UserHookPolicy = Literal["run", "replace", "refuse"]

#: Package of detlight's callbacks; the converter writes ``CALLBACKS + "module.Class"`` class paths.
CALLBACKS = "detlight.callbacks."


@dataclass(frozen=True)
class HookMapping:
    """Where one of mmcv's standard hook types went in detlight.

    Attributes:
        kind: ``callback`` (``target`` is a Lightning callback class path), ``trainer`` (a Trainer setting),
            ``module`` (a :class:`~detlight.module.DetectorModule` argument), ``automatic`` (Lightning does it
            already) or ``unsupported`` (no counterpart; ``note`` says what to use instead).
        target: the class path or setting, empty for ``automatic`` / ``unsupported``.
        note: what differs from mmcv, or what to do instead.
        as_user_hook: what :class:`~detlight.callbacks.mmcv_hooks.MMCVHooks` does with an instance of this class
            (see the module docstring).
        convert: for the converter, ``(class path, init args taken from the mmcv dict, fixed init args)`` of the
            callback a ``custom_hooks`` entry becomes; ``None`` when the entry is dropped with :meth:`message`.
    """

    kind: MappingKind
    target: str = ""
    note: str = ""
    as_user_hook: UserHookPolicy = "refuse"
    convert: tuple[str, tuple[str, ...], dict[str, Any]] | None = None

    def message(self, hook_type: str) -> str:
        """The sentence shown when an mmcv config asks for ``hook_type`` as an mmcv-style hook it cannot run."""
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
_OPTIMIZER_NOTE = ("backward and step are Lightning's automatic optimization; code that customised them goes in "
                   "LightningModule.configure_gradient_clipping or a callback's on_before_optimizer_step")

_LR_POLICIES = ("Fixed", "Step", "Exp", "Poly", "Inv", "CosineAnnealing", "FlatCosineAnnealing", "CosineRestart",
                "Cyclic", "OneCycle", "LinearAnnealing")
_MOMENTUM_POLICIES = ("Step", "CosineAnnealing", "LinearAnnealing", "Cyclic", "OneCycle")
_EMA = CALLBACKS + "ema.EMA"


def _logger(target_logger: str) -> HookMapping:
    return HookMapping("callback", _CB + "IntervalLogger", f"with trainer.logger: {target_logger}; {_LOGGER_NOTE}")


_STANDARD: dict[str, HookMapping] = {
    **{f"{p}LrUpdaterHook": HookMapping("callback", _CB + "LrUpdater", _LR_NOTE, "replace") for p in _LR_POLICIES},
    **{f"{p}MomentumUpdaterHook": HookMapping("callback", _CB + "MomentumUpdater", _LR_NOTE, "replace")
       for p in _MOMENTUM_POLICIES},
    "LrUpdaterHook": HookMapping("unsupported", _CB + "LrUpdater", "a concrete policy, e.g. lr_config=dict("
                                 "policy='step', ...) -> detlight.callbacks.LrUpdater", "replace"),
    "MomentumUpdaterHook": HookMapping("unsupported", _CB + "MomentumUpdater", "a concrete policy, e.g. "
                                       "momentum_config=dict(policy='cyclic', ...) -> detlight.callbacks."
                                       "MomentumUpdater", "replace"),
    "OptimizerHook": HookMapping("module", "grad_clip", "backward and step are Lightning's automatic optimization; "
                                 "grad_clip: {max_norm, norm_type} clips and logs grad_norm"),
    "Fp16OptimizerHook": HookMapping("trainer", "precision: 16-mixed", "Lightning autocasts the whole step, mmcv "
                                     "only @auto_fp16 methods; a static loss_scale becomes a dynamic GradScaler"),
    "GradientCumulativeOptimizerHook": HookMapping("trainer", "accumulate_grad_batches", "Lightning's windows "
                                                   "restart every epoch; mmcv's span epochs"),
    "GradientCumulativeFp16OptimizerHook": HookMapping("trainer", "accumulate_grad_batches + precision: 16-mixed",
                                                       "see GradientCumulativeOptimizerHook and Fp16OptimizerHook"),
    "CheckpointHook": HookMapping("callback", _CB + "MMCheckpoint", "mmcv-format epoch_N.pth / iter_N.pth",
                                  "replace"),
    "IterTimerHook": HookMapping("callback", _CB + "IterTimer"),
    "TextLoggerHook": HookMapping("callback", _CB + "TextLogger", "{timestamp}.log and .log.json as mmcv writes them"),
    "TensorboardLoggerHook": _logger("TensorBoardLogger"),
    "WandbLoggerHook": _logger("WandbLogger"),
    "MMDetWandbHook": _logger("WandbLogger (no checkpoint/bbox artefacts)"),
    "MlflowLoggerHook": _logger("MLFlowLogger"),
    "NeptuneLoggerHook": _logger("NeptuneLogger"),
    "DvcliveLoggerHook": _logger("dvclive's dvclive.lightning.DVCLiveLogger"),
    "PaviLoggerHook": HookMapping("unsupported", note="detlight.callbacks.IntervalLogger with a Lightning logger "
                                  "for your tracker (Pavi has none)"),
    "SegmindLoggerHook": HookMapping("unsupported", note="detlight.callbacks.IntervalLogger with a Lightning logger "
                                     "for your tracker (Segmind has none)"),
    "ClearMLLoggerHook": HookMapping("unsupported", note="detlight.callbacks.IntervalLogger with a Lightning logger "
                                     "for your tracker (ClearML has none; its Task auto-logging works unchanged)"),
    "LoggerHook": HookMapping("unsupported", note="a concrete logger, e.g. detlight.callbacks.TextLogger",
                              as_user_hook="run"),
    "EvalHook": HookMapping("callback", _CB + "Evaluation", "mmdet `evaluation=dict(...)`"),
    "DistEvalHook": HookMapping("callback", _CB + "Evaluation", "gathers across ranks itself"),
    "EMAHook": HookMapping("callback", _CB + "EMA", "mmcv's EMAHook update rule", "replace",
                           (_EMA, ("momentum", "interval", "warm_up"), {"momentum_schedule": "mmcv"})),
    "ExpMomentumEMAHook": HookMapping("callback", _CB + "EMA", "mmdet's exponential-momentum rule", "replace",
                                      (_EMA, ("momentum", "interval", "total_iter", "skip_buffers"),
                                       {"momentum_schedule": "exp"})),
    "LinearMomentumEMAHook": HookMapping("callback", _CB + "EMA", "mmdet's linear-momentum rule", "replace",
                                         (_EMA, ("momentum", "interval", "warm_up", "skip_buffers"),
                                          {"momentum_schedule": "linear"})),
    "NumClassCheckHook": HookMapping("callback", _CB + "NumClassCheck", "DetectorModule.setup also checks it",
                                     "replace", (CALLBACKS + "num_class_check.NumClassCheck", (), {})),
    "CheckInvalidLossHook": HookMapping("callback", _CB + "CheckInvalidLoss", "", "replace",
                                        (CALLBACKS + "check_invalid_loss.CheckInvalidLoss", ("interval",), {})),
    "EmptyCacheHook": HookMapping("callback", _CB + "EmptyCache", "", "replace",
                                  (CALLBACKS + "empty_cache.EmptyCache", ("before_epoch", "after_epoch", "after_iter"), {})),
    "SyncBuffersHook": HookMapping("callback", _CB + "SyncBuffers", "", "replace", (CALLBACKS + "sync_buffers.SyncBuffers", (), {})),
    "SetEpochInfoHook": HookMapping("callback", _CB + "SetEpochInfo", "", "replace",
                                    (CALLBACKS + "set_epoch_info.SetEpochInfo", (), {})),
    "DistSamplerSeedHook": HookMapping("automatic", note="Lightning calls sampler.set_epoch(epoch) at every train "
                                       "epoch start (keep your own sampler with trainer.use_distributed_sampler: "
                                       "false)", as_user_hook="run"),
    "ProfilerHook": HookMapping("trainer", "profiler: pytorch", "lightning.pytorch.profilers.PyTorchProfiler takes "
                                "the torch.profiler schedule arguments", "run"),
    "MemoryProfilerHook": HookMapping("unsupported", note="lightning.pytorch.callbacks.DeviceStatsMonitor (device "
                                      "memory; psutil for CPU) in trainer.callbacks", as_user_hook="run"),
    "ClosureHook": HookMapping("unsupported", note=_NO_FN + " (configs cannot hold functions)", as_user_hook="run"),
    "SyncNormHook": HookMapping("unsupported", note="trainer.sync_batchnorm: true (SyncBatchNorm all the way) or "
                                "detlight.callbacks.SyncBuffers", as_user_hook="run"),
    "SyncRandomSizeHook": HookMapping("unsupported", note="a multi-scale Resize in the train pipeline (mmdet "
                                      "deprecated this hook)", as_user_hook="run"),
    "YOLOXModeSwitchHook": HookMapping("unsupported", note=_NO_FN + " that switches the pipeline and L1 loss",
                                       as_user_hook="run"),
    "YOLOXLrUpdaterHook": HookMapping("unsupported", _CB + "LrUpdater", "lr_config=dict(policy='YOLOX', ...), i.e. "
                                      "detlight.callbacks.LrUpdater with policy 'YOLOX' (mmdet's exact values)",
                                      "replace"),
    "Hook": HookMapping("unsupported", note="a subclass that overrides a stage (the base class does nothing)",
                        as_user_hook="run"),
}

#: The refusal for OptimizerHook and its subclasses given as user hooks (they own backward and the step).
OPTIMIZER_REFUSAL = _OPTIMIZER_NOTE

#: mmcv/mmdet ``custom_hooks`` type -> (callback class path, init args it takes, fixed init args), for the converter.
CUSTOM_HOOKS: dict[str, tuple[str, tuple[str, ...], dict[str, Any]]] = {
    name: mapping.convert for name, mapping in _STANDARD.items() if mapping.convert is not None
}

def standard_hook_table() -> dict[str, HookMapping]:
    """mmcv / mmdet standard hook type name -> :class:`HookMapping` (a copy)."""
    return dict(_STANDARD)


def lookup_standard_hook(hook_type: str) -> HookMapping | None:
    """The mapping of one standard hook type, ``None`` if the name is not a standard mmcv / mmdet hook."""
    return _STANDARD.get(hook_type)


def standard_base(cls: type) -> str | None:
    """The name of the nearest standard mmcv / mmdet hook class ``cls`` is or derives from (``Hook`` excluded).

    Matched by class name, wherever the class is defined: projects copy mmdet's hook files into their own packages,
    and a class named like a standard hook does that hook's job (a copied ``EMAHook`` would fight detlight's EMA).

    Example:
        >>> from detlight.compat.hook_base import Hook
        >>> class Mine(Hook): pass
        >>> standard_base(Mine) is None
        True
    """
    for klass in cls.__mro__:
        name = klass.__name__
        if name != "Hook" and name in _STANDARD:
            return name
    return None


def refusal(cls: type) -> str | None:
    """Why an instance of ``cls`` cannot run as a user hook (the message names the replacement), else ``None``."""
    name = standard_base(cls)
    mapping = lookup_standard_hook(name) if name is not None else None
    if name is None or mapping is None:
        return None
    kind = f"`{cls.__name__}`" + ("" if cls.__name__ == name else f" (a subclass of mmcv's `{name}`)")
    if "OptimizerHook" in name:
        return (f"mmcv-style hook {kind} cannot run in detlight: {OPTIMIZER_REFUSAL}; for clipping alone set "
                "model.grad_clip, for fp16 trainer.precision, for accumulation trainer.accumulate_grad_batches")
    if mapping.as_user_hook == "refuse":
        return f"mmcv-style hook {kind} cannot run in detlight: {mapping.message(name)}"
    return None
