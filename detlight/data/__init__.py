"""Datasets, transforms, collate, samplers and datamodules (2D COCO-format and 3D KITTI-format).

Names are imported on first access, so ``import detlight.data`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "CocoDataset": "coco",
    "CocoSplit": "datamodule",
    "DatasetError": "coco",
    "Det3DDataModule": "datamodule3d",
    "DetDataModule": "datamodule",
    "DetSampler": "sampler",
    "KittiDataset": "kitti",
    "PipelineConfig": "transforms",
    "SyntheticCocoSpec": "synthetic",
    "SyntheticLidarSpec": "synthetic_lidar",
    "collate": "collate",
    "ensure_synthetic_coco": "synthetic",
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
