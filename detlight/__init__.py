"""detlight: mmdetection-style detection training, run by PyTorch Lightning.

Public names are imported on first access, so ``import detlight`` costs almost nothing until they are used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from detlight._aliases import install_alias_finder
from detlight._lazy import lazy_exports

if TYPE_CHECKING:
    from detlight.api import (
        Run,
        fit,
        predict,
        test,
        train_detector,
        validate,
    )
    from detlight.cli_app import DetLightCLI
    from detlight.data.datamodule import DetDataModule
    from detlight.data.datamodule3d import Det3DDataModule
    from detlight.logbuffer import LogBuffer
    from detlight.module import DetectorModule

from detlight._version import __version__

_EXPORTS: dict[str, str] = {
    "Det3DDataModule": "detlight.data.datamodule3d",
    "DetDataModule": "detlight.data.datamodule",
    "DetLightCLI": "detlight.cli_app",
    "DetectorModule": "detlight.module",
    "LogBuffer": "detlight.logbuffer",
    "Run": "detlight.api",
    "fit": "detlight.api",
    "predict": "detlight.api",
    "test": "detlight.api",
    "train_detector": "detlight.api",
    "validate": "detlight.api",
}

__all__ = [
    "Det3DDataModule",
    "DetDataModule",
    "DetLightCLI",
    "DetectorModule",
    "LogBuffer",
    "Run",
    "__version__",
    "fit",
    "predict",
    "test",
    "train_detector",
    "validate",
]

install_alias_finder()  # old module paths (detlight.workflow, ...) resolve through detlight._aliases.ALIASES

if not TYPE_CHECKING:  # type checkers read the imports above
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
