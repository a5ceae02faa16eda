"""Lightning callbacks for mmcv's standard hooks.

Order: Lightning runs callbacks in list order (ModelCheckpoint subclasses are moved last); mmcv ran hooks by
priority (LR 10 < Momentum 30 < Optimizer 40 < Checkpoint 50 < IterTimer/Eval 70 < loggers 90). List them in
that order in ``trainer.callbacks`` to keep mmcv's order; users' own mmcv-style hooks go through
:class:`detlight.compat.MMCVHooks`, which sorts them by priority.

Names are imported on first access (see :mod:`detlight._lazy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from detlight._lazy import lazy_exports

if TYPE_CHECKING:
    from detlight.callbacks.bev_visualization import BEVVisualization
    from detlight.callbacks.checkpoint import MMCheckpoint
    from detlight.callbacks.ema import EMA
    from detlight.callbacks.evaluation import Evaluation
    from detlight.callbacks.interval_logger import (
        IntervalLogger,
        LoggerCallback,
    )
    from detlight.callbacks.iter_timer import IterTimer
    from detlight.callbacks.lr_updater import (
        LrUpdater,
        MomentumUpdater,
    )
    from detlight.callbacks.misc import (
        CheckInvalidLoss,
        EmptyCache,
        NumClassCheck,
        SetEpochInfo,
        SyncBuffers,
    )
    from detlight.callbacks.mmcv_hooks import MMCVHooks
    from detlight.callbacks.nan_guard import NanGuard
    from detlight.callbacks.preemption import Preemption
    from detlight.callbacks.text_logger import TextLogger
    from detlight.callbacks.visualization import DetVisualization
    from detlight.checkpoint_io import AtomicCheckpointIO
    from detlight.workflow import Workflow

_EXPORTS: dict[str, str] = {
    "AtomicCheckpointIO": "detlight.checkpoint_io",
    "BEVVisualization": "bev_visualization",
    "CheckInvalidLoss": "misc",
    "DetVisualization": "visualization",
    "EMA": "ema",
    "EmptyCache": "misc",
    "Evaluation": "evaluation",
    "IntervalLogger": "interval_logger",
    "IterTimer": "iter_timer",
    "LoggerCallback": "interval_logger",
    "LrUpdater": "lr_updater",
    "MMCVHooks": "mmcv_hooks",
    "MMCheckpoint": "checkpoint",
    "MomentumUpdater": "lr_updater",
    "NanGuard": "nan_guard",
    "NumClassCheck": "misc",
    "Preemption": "preemption",
    "SetEpochInfo": "misc",
    "SyncBuffers": "misc",
    "TextLogger": "text_logger",
    "Workflow": "detlight.workflow",
}

__all__ = [
    "AtomicCheckpointIO",
    "BEVVisualization",
    "CheckInvalidLoss",
    "DetVisualization",
    "EMA",
    "EmptyCache",
    "Evaluation",
    "IntervalLogger",
    "IterTimer",
    "LoggerCallback",
    "LrUpdater",
    "MMCVHooks",
    "MMCheckpoint",
    "MomentumUpdater",
    "NanGuard",
    "NumClassCheck",
    "Preemption",
    "SetEpochInfo",
    "SyncBuffers",
    "TextLogger",
    "Workflow",
]

if not TYPE_CHECKING:  # type checkers read the imports above
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
