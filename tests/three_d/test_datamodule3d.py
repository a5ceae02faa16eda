"""collate_3d and Det3DDataModule."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from detlight.data.collate3d import collate_3d
from detlight.data.datamodule3d import Det3DDataModule
from detlight.data.kitti import Augment3D
from detlight.data.synthetic_lidar import SyntheticLidarSpec


def test_collate_keeps_variable_lengths() -> None:
    samples = [{"points": torch.zeros(n, 4), "img_metas": {"sample_idx": n}, "gt_bboxes_3d": torch.zeros(n % 3, 7),
                "gt_labels_3d": torch.zeros(n % 3, dtype=torch.long)} for n in (5, 7)]
    batch = collate_3d(samples)
    assert [p.shape[0] for p in batch["points"]] == [5, 7]
    assert [b.shape[0] for b in batch["gt_bboxes_3d"]] == [2, 1]
    assert batch["img_metas"] == [{"sample_idx": 5}, {"sample_idx": 7}]


@pytest.mark.parametrize(("samples", "match"), [
    ([], "empty batch"),
    ([{"points": torch.zeros(1, 4)}], "img_metas"),
    ([{"points": torch.zeros(1, 4), "img_metas": {}}, {"points": torch.zeros(1, 4), "img_metas": {}, "x": 1}],
     "Sample 1 has keys"),
    ([{"points": torch.zeros(4), "img_metas": {}}], "2D tensor"),
])
def test_collate_errors(samples: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        collate_3d(samples)


def test_datamodule_loaders(tiny_cache: Path, tiny_spec: SyntheticLidarSpec, tiny_range: list[float]) -> None:
    dm = Det3DDataModule(synthetic=tiny_spec, cache_dir=str(tiny_cache), point_cloud_range=tiny_range,
                         samples_per_gpu=2, val_samples_per_gpu=2, augment=Augment3D(rot_range=(0.3, 0.3)))
    dm.prepare_data()
    dm.setup("fit")
    assert dm.num_classes == 3 and dm.CLASSES == ("Pedestrian", "Cyclist", "Car")
    train = next(iter(dm.train_dataloader()))
    assert set(train) == {"points", "img_metas", "gt_bboxes_3d", "gt_labels_3d"} and len(train["points"]) == 2
    assert all(m["pcd_rotation"] == pytest.approx(0.3) for m in train["img_metas"])
    val = list(dm.val_dataloader())
    assert [m["sample_idx"] for b in val for m in b["img_metas"]] == [6, 7, 8]
    assert all(m["pcd_rotation"] == 0.0 and not m["pcd_horizontal_flip"] for b in val for m in b["img_metas"])
    assert all(p.dtype == torch.float32 for b in val for p in b["points"])


def test_datamodule_reads_a_kitti_root(tiny_kitti: Path) -> None:
    dm = Det3DDataModule(data_root=str(tiny_kitti), classes=["Car"], val_samples_per_gpu=3)
    batch = next(iter(dm.val_dataloader()))
    assert len(batch["points"]) == 3
    assert all((lab == 0).all() for lab in batch["gt_labels_3d"])


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"samples_per_gpu": 0}, "samples_per_gpu"),
    ({"workers_per_gpu": -1}, "workers_per_gpu"),
    ({"point_cloud_range": [0, 0, 0, 1, 1]}, "point_cloud_range"),
    ({"point_cloud_range": [5, 0, 0, 1, 1, 1]}, "point_cloud_range"),
    ({"data_root": "x", "synthetic": SyntheticLidarSpec()}, "not both"),
    ({"classes": []}, "classes"),
])
def test_datamodule_rejects_bad_config(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Det3DDataModule(**kwargs)
