"""Datasets, transforms, collate, samplers and datamodules (2D COCO-format and 3D KITTI-format).

Names are imported on first access (see :mod:`detlight._lazy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from detlight._lazy import lazy_exports

if TYPE_CHECKING:
    from detlight.data.base import BaseDataModule
    from detlight.data.coco import CocoDataset
    from detlight.data.collate import collate
    from detlight.data.datamodule import (
        CocoSplit,
        DetDataModule,
    )
    from detlight.data.datamodule3d import Det3DDataModule
    from detlight.data.kitti import KittiDataset
    from detlight.data.loader import DetDataLoader
    from detlight.data.loader_state import StatefulDataLoader
    from detlight.data.sampler import DetSampler
    from detlight.data.synthetic import (
        SyntheticCocoSpec,
        ensure_synthetic_coco,
    )
    from detlight.data.synthetic_lidar import SyntheticLidarSpec
    from detlight.data.transforms import PipelineConfig
    from detlight.exceptions import DatasetError

_EXPORTS: dict[str, str] = {
    "BaseDataModule": "base",
    "CocoDataset": "coco",
    "CocoSplit": "datamodule",
    "DatasetError": "detlight.exceptions",
    "Det3DDataModule": "datamodule3d",
    "DetDataLoader": "loader",
    "DetDataModule": "datamodule",
    "DetSampler": "sampler",
    "KittiDataset": "kitti",
    "PipelineConfig": "transforms",
    "StatefulDataLoader": "loader_state",
    "SyntheticCocoSpec": "synthetic",
    "SyntheticLidarSpec": "synthetic_lidar",
    "collate": "collate",
    "ensure_synthetic_coco": "synthetic",
}

__all__ = [
    "BaseDataModule",
    "CocoDataset",
    "CocoSplit",
    "DatasetError",
    "Det3DDataModule",
    "DetDataLoader",
    "DetDataModule",
    "DetSampler",
    "KittiDataset",
    "PipelineConfig",
    "StatefulDataLoader",
    "SyntheticCocoSpec",
    "SyntheticLidarSpec",
    "collate",
    "ensure_synthetic_coco",
]

if not TYPE_CHECKING:  # type checkers read the imports above
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
