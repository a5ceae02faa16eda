"""Reference detectors and the detector contracts detlight trains.

Names are imported on first access (see :mod:`detlight._lazy`).
"""

from __future__ import annotations

from detlight._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "CenterNet": "centernet",
    "DetectorAdapter": "contract",
    "PointPillars": "pointpillars",
    "TorchvisionFamily": "contract",
    "parse_losses": "contract",
    "torchvision_detector": "torchvision_factory",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
