"""Reference detectors and the detector contracts detlight trains.

Names are imported on first access (see :mod:`detlight._lazy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from detlight._lazy import lazy_exports

if TYPE_CHECKING:
    from detlight.models.centernet import CenterNet
    from detlight.models.contract import (
        DetectorAdapter,
        TorchvisionFamily,
        parse_losses,
    )
    from detlight.models.pointpillars import PointPillars
    from detlight.models.torchvision_factory import torchvision_detector

_EXPORTS: dict[str, str] = {
    "CenterNet": "centernet",
    "DetectorAdapter": "contract",
    "PointPillars": "pointpillars",
    "TorchvisionFamily": "contract",
    "parse_losses": "contract",
    "torchvision_detector": "torchvision_factory",
}

__all__ = [
    "CenterNet",
    "DetectorAdapter",
    "PointPillars",
    "TorchvisionFamily",
    "parse_losses",
    "torchvision_detector",
]

if not TYPE_CHECKING:  # type checkers read the imports above
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
