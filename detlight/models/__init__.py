"""Reference detectors and the detector contracts detlight trains.

Names are imported on first access, so ``import detlight.models`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "CenterNet": "centernet",
    "DetectorAdapter": "contract",
    "PointPillars": "pointpillars",
    "parse_losses": "contract",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
