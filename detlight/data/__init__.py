"""Datasets, transforms, collate, samplers and datamodules (2D COCO-format and 3D KITTI-format).

Names are imported on first access (see :mod:`detlight._lazy`).
"""

from __future__ import annotations

from detlight._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "BaseDataModule": "base",
    "CocoDataset": "coco",
    "CocoSplit": "datamodule",
    "DatasetError": "coco",
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

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
