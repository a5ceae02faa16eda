"""The target schema of ``detlight convert``: the detlight class paths each mmcv runtime key maps to, and their args.

Replaces: the hook and runner type names mmcv's ``register_training_hooks`` resolved. This is the one place to edit
when a detlight class moves; :mod:`detlight.convert.entry` reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from detlight.compat.hook_table import CALLBACKS as _CB
from detlight.exceptions import ConfigError

__all__ = [
    "CHECKPOINT", "CHECKPOINT_ARGS", "DROPPED_KEYS", "EMA", "EVALUATION", "EVALUATION_ARGS", "FP16_PLUGIN",
    "GRAD_SCALER_ARGS", "HELPER_NOTE", "INTERVAL_LOGGER", "INTERVAL_LOGGER_ARGS", "ITER_TIMER", "LR_UPDATER",
    "MMCV_HOOKS", "MOMENTUM_UPDATER", "TB_LOGGER", "TEXT_LOGGER", "TEXT_LOGGER_ARGS", "WORKFLOW",
]

FP16_PLUGIN = "detlight.precision.MMFp16Precision"
LR_UPDATER = _CB + "lr_updater.LrUpdater"
MOMENTUM_UPDATER = _CB + "lr_updater.MomentumUpdater"
ITER_TIMER = _CB + "iter_timer.IterTimer"
TEXT_LOGGER = _CB + "text_logger.TextLogger"
INTERVAL_LOGGER = _CB + "interval_logger.IntervalLogger"
CHECKPOINT = _CB + "checkpoint.MMCheckpoint"
EVALUATION = _CB + "evaluation.Evaluation"
EMA = _CB + "ema.EMA"
MMCV_HOOKS = "detlight.callbacks.mmcv_hooks.MMCVHooks"
WORKFLOW = _CB + "workflow.Workflow"
TB_LOGGER = "lightning.pytorch.loggers.TensorBoardLogger"

#: init args each callback accepts; other keys of the mmcv dict are reported as dropped.
CHECKPOINT_ARGS = ("interval", "by_epoch", "save_optimizer", "out_dir", "max_keep_ckpts", "save_last",
                   "create_symlink", "meta")
EVALUATION_ARGS = ("interval", "by_epoch", "start", "save_best", "rule", "greater_keys", "less_keys", "out_dir",
                   "dynamic_intervals")
TEXT_LOGGER_ARGS = ("interval", "by_epoch", "ignore_last", "interval_exp_name")
INTERVAL_LOGGER_ARGS = ("interval", "by_epoch", "ignore_last")
#: one-line mapping for keys that have no detlight setting.
DROPPED_KEYS = {
    "log_level": "Python logging level; set it with `logging.getLogger('detlight').setLevel(...)` (no Lightning flag)",
    "gpu_ids": "set by mmdet's tools/train.py, not a config setting; choose GPUs with trainer.devices",
    "opencv_num_threads": "detlight does not use OpenCV; torch threads follow OMP_NUM_THREADS",
    "mp_start_method": "DataLoader workers use the platform default start method",
    "custom_imports": "modules are never imported by the converter; detlight imports a `class_path` itself, so point "
    "model.model.class_path (or a callback class_path) at the class in those modules",
}
#: keyword arguments of ``torch.amp.GradScaler`` (a dict ``fp16.loss_scale`` is passed to it).
GRAD_SCALER_ARGS = ("init_scale", "growth_factor", "backoff_factor", "growth_interval", "enabled")
HELPER_NOTE = "helper variable, not a runtime key; its value is already inlined where the config used it"


def _check_loss_scale(scale: Any, source: str) -> None:
    """What :func:`detlight.precision.build_scaler` accepts, checked without importing torch."""
    if isinstance(scale, str) and scale == "dynamic":
        return
    if isinstance(scale, Mapping):
        unknown = sorted(set(scale) - set(GRAD_SCALER_ARGS))
        if unknown:
            raise ConfigError(f"{source}: fp16.loss_scale keys {unknown} are not GradScaler arguments; accepted: "
                              f"{list(GRAD_SCALER_ARGS)}.")
        return
    if isinstance(scale, float) and scale > 0:
        return
    raise ConfigError(f"{source}: `fp16.loss_scale` must be a float > 0 (static scale, e.g. 512.), 'dynamic' or a dict "
                      f"of GradScaler kwargs; got {scale!r} ({type(scale).__name__}). mmcv refuses ints too.")
