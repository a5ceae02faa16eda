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
    from detlight.callbacks.check_invalid_loss import CheckInvalidLoss
    from detlight.callbacks.checkpoint import MMCheckpoint
    from detlight.callbacks.ema import EMA
    from detlight.callbacks.empty_cache import EmptyCache
    from detlight.callbacks.evaluation import Evaluation
    from detlight.callbacks.interval_logger import IntervalLogger
    from detlight.callbacks.iter_timer import IterTimer
    from detlight.callbacks.logger_callback import LoggerCallback
    from detlight.callbacks.lr_updater import (
        LrUpdater,
        MomentumUpdater,
    )
    from detlight.callbacks.mmcv_hooks import MMCVHooks
    from detlight.callbacks.nan_guard import NanGuard
    from detlight.callbacks.num_class_check import NumClassCheck
    from detlight.callbacks.prediction_writer import PredictionWriter
    from detlight.callbacks.preemption import Preemption
    from detlight.callbacks.progress_bar import ProgressBar
    from detlight.callbacks.set_epoch_info import SetEpochInfo
    from detlight.callbacks.sync_buffers import SyncBuffers
    from detlight.callbacks.text_logger import TextLogger
    from detlight.callbacks.visualization import DetVisualization
    from detlight.callbacks.workflow import Workflow
    from detlight.checkpoint_io import AtomicCheckpointIO
    from detlight.openmmlab.checkpoint import MMCVResume

_EXPORTS: dict[str, str] = {
    "AtomicCheckpointIO": "detlight.checkpoint_io",
    "BEVVisualization": "bev_visualization",
    "CheckInvalidLoss": "check_invalid_loss",
    "DetVisualization": "visualization",
    "EMA": "ema",
    "EmptyCache": "empty_cache",
    "Evaluation": "evaluation",
    "IntervalLogger": "interval_logger",
    "IterTimer": "iter_timer",
    "LoggerCallback": "logger_callback",
    "LrUpdater": "lr_updater",
    "MMCVHooks": "mmcv_hooks",
    "MMCVResume": "detlight.openmmlab.checkpoint",
    "MMCheckpoint": "checkpoint",
    "MomentumUpdater": "lr_updater",
    "NanGuard": "nan_guard",
    "NumClassCheck": "num_class_check",
    "PredictionWriter": "prediction_writer",
    "Preemption": "preemption",
    "ProgressBar": "progress_bar",
    "SetEpochInfo": "set_epoch_info",
    "SyncBuffers": "sync_buffers",
    "TextLogger": "text_logger",
    "Workflow": "workflow",
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
    "MMCVResume",
    "MMCheckpoint",
    "MomentumUpdater",
    "NanGuard",
    "NumClassCheck",
    "PredictionWriter",
    "Preemption",
    "ProgressBar",
    "SetEpochInfo",
    "SyncBuffers",
    "TextLogger",
    "Workflow",
]

if not TYPE_CHECKING:  # type checkers read the imports above
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
