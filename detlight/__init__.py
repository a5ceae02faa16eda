"""detlight: mmdetection-style detection training, run by PyTorch Lightning.

Public names are imported on first access, so ``import detlight`` costs almost nothing until they are used.
"""

from __future__ import annotations

from detlight._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "DetectorModule": "detlight.module",
    "DetLightCLI": "detlight.cli",
    "DetDataModule": "detlight.data.datamodule",
    "Det3DDataModule": "detlight.data.datamodule3d",
    "LogBuffer": "detlight.logbuffer",
    "fit": "detlight.api",
    "validate": "detlight.api",
    "test": "detlight.api",
    "predict": "detlight.api",
    "train_detector": "detlight.api",
    "Run": "detlight.api",
}

__all__ = sorted([*_EXPORTS, "__version__"])
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
