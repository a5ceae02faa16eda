"""Lightning callbacks for mmcv's standard hooks.

Order: Lightning runs callbacks in list order (ModelCheckpoint subclasses are moved last); mmcv ran hooks by
priority (LR 10 < Momentum 30 < Optimizer 40 < Checkpoint 50 < IterTimer/Eval 70 < loggers 90). List them in
that order in ``trainer.callbacks`` to keep mmcv's order; users' own mmcv-style hooks go through
:class:`detlight.compat.MMCVHooks`, which sorts them by priority.

Names are imported on first access (see :mod:`detlight._lazy`).
"""

from __future__ import annotations

from detlight._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "AtomicCheckpointIO": "checkpoint",
    "BEVVisualization": "bev_visualization",
    "CheckInvalidLoss": "check_invalid_loss",
    "DetVisualization": "visualization",
    "EMA": "ema",
    "EmptyCache": "empty_cache",
    "Evaluation": "evaluation",
    "IntervalLogger": "interval_logger",
    "IterTimer": "iter_timer",
    "LrUpdater": "lr_updater",
    "MMCVHooks": "mmcv_hooks",
    "MMCheckpoint": "checkpoint",
    "MomentumUpdater": "lr_updater",
    "NumClassCheck": "num_class_check",
    "Preemption": "preemption",
    "ProgressBar": "progress_bar",
    "SetEpochInfo": "set_epoch_info",
    "SyncBuffers": "sync_buffers",
    "TextLogger": "text_logger",
    "Workflow": "workflow",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
