"""Evaluation metrics as torchmetrics ``Metric`` s, exact under DDP.

Names are imported on first access (see :mod:`detlight._lazy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from detlight._lazy import lazy_exports

if TYPE_CHECKING:
    from detlight.metrics.center_distance import CenterDistanceMAP
    from detlight.metrics.coco import CocoMeanAP

_EXPORTS: dict[str, str] = {
    "CenterDistanceMAP": "center_distance",
    "CocoMeanAP": "coco",
}

__all__ = [
    "CenterDistanceMAP",
    "CocoMeanAP",
]

if not TYPE_CHECKING:  # type checkers read the imports above
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
