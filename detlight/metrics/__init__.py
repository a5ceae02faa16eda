"""Evaluation metrics as torchmetrics ``Metric`` s, exact under DDP.

Names are imported on first access (see :mod:`detlight._lazy`).
"""

from __future__ import annotations

from detlight._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "CenterDistanceMAP": "center_distance",
    "CocoMeanAP": "coco",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
