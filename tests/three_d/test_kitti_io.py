"""KITTI file formats, camera <-> LiDAR conversion and the synthetic generator."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from detlight.data.kitti import (
    KittiCalib,
    KittiDataset,
    KittiObject,
    objects_to_lidar,
    read_calib,
    read_label,
    read_points,
    write_calib,
    write_label,
    write_points,
)
from detlight.data.synthetic_lidar import SyntheticLidarSpec, ensure_synthetic_kitti, make_scene
from detlight.exceptions import DatasetError
from detlight.models.box3d import camera_to_lidar_boxes, lidar_to_camera_boxes, points_in_boxes

_TR = np.array([[7.533745e-03, -9.999714e-01, -6.166020e-04, -4.069766e-03],
                [1.480249e-02, 7.280733e-04, -9.998902e-01, -7.631618e-02],
                [9.998621e-01, 7.523790e-03, 1.480755e-02, -2.717806e-01]])
_R0 = np.array([[0.9999239, 0.00983776, -0.007445048], [-0.009869795, 0.9999421, -0.004278459],
                [0.007402527, 0.004351614, 0.9999631]])


def _calib() -> KittiCalib:
    p2 = np.array([[721.5377, 0.0, 609.5593, 44.85728], [0.0, 721.5377, 172.854, 0.2163791], [0, 0, 1, 0.0027]])
    return KittiCalib(P0=p2 * 0.5, P1=p2, P2=p2, P3=p2 + 1, R0_rect=_R0, Tr_velo_to_cam=_TR,
                      Tr_imu_to_velo=np.arange(12.0).reshape(3, 4))


def test_calib_round_trip(tmp_path: Path) -> None:
    calib = _calib()
    write_calib(tmp_path / "c.txt", calib)
    back = read_calib(tmp_path / "c.txt")
    for key in ("P0", "P1", "P2", "P3", "R0_rect", "Tr_velo_to_cam", "Tr_imu_to_velo"):
        np.testing.assert_allclose(getattr(back, key), getattr(calib, key), rtol=1e-11, err_msg=key)


def test_calib_missing_key_names_file(tmp_path: Path) -> None:
    (tmp_path / "bad.txt").write_text("P2: " + " ".join(["1"] * 12) + "\n")
    with pytest.raises(ValueError, match=r"bad\.txt.*R0_rect"):
        read_calib(tmp_path / "bad.txt")


@pytest.mark.parametrize("score", [None, 0.8731])
def test_label_round_trip(tmp_path: Path, score: float | None) -> None:
    objects = [
        KittiObject("Car", 0.12, 1, -1.58, (587.01, 173.33, 614.12, 200.12), (1.65, 1.67, 3.64), (-0.65, 1.71, 46.7),
                    -1.59, score),
        KittiObject("Pedestrian", 0.0, 0, 0.21, (1.0, 2.0, 3.0, 4.0), (1.8, 0.6, 0.8), (3.2, 1.6, 10.5), 0.5, score),
    ]
    write_label(tmp_path / "l.txt", objects)
    assert read_label(tmp_path / "l.txt") == objects


def test_label_reads_kitti_line(tmp_path: Path) -> None:
    line = "Pedestrian 0.00 0 -0.20 712.40 143.00 810.73 307.92 1.89 0.48 1.20 1.84 1.47 8.41 0.01\n"
    (tmp_path / "l.txt").write_text(line + "DontCare -1 -1 -10 1 2 3 4 -1 -1 -1 -1000 -1000 -1000 -10\n")
    objs = read_label(tmp_path / "l.txt")
    assert [o.type for o in objs] == ["Pedestrian", "DontCare"]
    assert objs[0].dimensions == (1.89, 0.48, 1.20) and objs[0].location == (1.84, 1.47, 8.41)
    boxes, labels = objects_to_lidar(objs, _calib(), ["Pedestrian", "Cyclist", "Car"])
    assert labels.tolist() == [0] and boxes.shape == (1, 7)  # DontCare dropped
    # (l, w, h) and yaw = -ry - pi/2
    torch.testing.assert_close(boxes[0, 3:6], torch.tensor([1.20, 0.48, 1.89]))
    assert boxes[0, 6].item() == pytest.approx(-0.01 - math.pi / 2, abs=1e-6)


def test_label_bad_columns(tmp_path: Path) -> None:
    (tmp_path / "l.txt").write_text("Car 0 0 1 2 3\n")
    with pytest.raises(ValueError, match=r"l\.txt:1.*15 or 16 columns"):
        read_label(tmp_path / "l.txt")


def test_points_round_trip_and_bad_size(tmp_path: Path) -> None:
    pts = np.random.default_rng(0).normal(size=(17, 4)).astype(np.float32)
    write_points(tmp_path / "p.bin", pts)
    np.testing.assert_array_equal(read_points(tmp_path / "p.bin"), pts)
    pts[:, :3].tofile(tmp_path / "bad.bin")  # 51 floats
    with pytest.raises(ValueError, match="multiple of num_features=4"):
        read_points(tmp_path / "bad.bin")


def test_camera_lidar_conversion_hand_case() -> None:
    # Identity rectification and the axis permutation camera(x right, y down, z fwd) <- lidar(x fwd, y left, z up).
    tr = np.array([[0.0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0]])
    cam = torch.tensor([[2.0, 1.5, 10.0, 4.0, 1.5, 1.6, 0.0]])  # x, y, z, l, h, w, ry
    lidar = camera_to_lidar_boxes(cam, torch.eye(3), torch.from_numpy(tr))
    torch.testing.assert_close(lidar, torch.tensor([[10.0, -2.0, -1.5, 4.0, 1.6, 1.5, -math.pi / 2]]))


def test_camera_lidar_round_trip_real_calib() -> None:
    g = torch.Generator().manual_seed(0)
    boxes = torch.cat([torch.rand(20, 3, generator=g) * 30, torch.rand(20, 3, generator=g) + 0.5,
                       (torch.rand(20, 1, generator=g) * 2 - 1) * math.pi], dim=1)
    r0, tr = torch.from_numpy(_R0), torch.from_numpy(_TR)
    back = camera_to_lidar_boxes(lidar_to_camera_boxes(boxes, r0, tr), r0, tr)
    torch.testing.assert_close(back[:, :6], boxes[:, :6], atol=1e-4, rtol=0)
    yaw_err = torch.remainder(back[:, 6] - boxes[:, 6] + math.pi, 2 * math.pi) - math.pi
    assert yaw_err.abs().max() < 1e-5


def test_synthetic_is_deterministic_and_objects_have_points() -> None:
    spec = SyntheticLidarSpec(num_train=1, num_val=0, seed=3)
    p1, b1, n1 = make_scene(spec, 0)
    p2, b2, n2 = make_scene(spec, 0)
    np.testing.assert_array_equal(p1, p2)
    assert n1 == n2 and len(n1) > 0 and set(n1) <= {"Pedestrian", "Cyclist", "Car"}
    assert p1.dtype == np.float32 and p1.shape[1] == 4 and 1000 < len(p1) < 20000
    inside = points_in_boxes(torch.from_numpy(p1[:, :3]), torch.from_numpy(b1).float()).sum(0)
    assert (inside >= 1).all(), inside
    # density falls with distance: more points per square metre of ground near the sensor than far away
    ground = p1[p1[:, 2] < -1.6]
    near, far = np.sum(ground[:, 0] < 15), np.sum((ground[:, 0] > 25) & (ground[:, 0] < 40))
    assert near > far


def test_ensure_synthetic_caches_atomically(tiny_cache: Path, tiny_kitti: Path, tiny_spec: SyntheticLidarSpec) -> None:
    stamp = (tiny_kitti / "spec.json").stat().st_mtime_ns
    assert ensure_synthetic_kitti(tiny_spec, tiny_cache) == tiny_kitti
    assert (tiny_kitti / "spec.json").stat().st_mtime_ns == stamp
    assert not [p for p in tiny_cache.iterdir() if p.name.startswith(".")]  # no temp dirs left behind
    ids = (tiny_kitti / "ImageSets" / "train.txt").read_text().split()
    assert ids == [f"{i:06d}" for i in range(6)]


def test_kitti_dataset_sample(tiny_kitti: Path, tiny_spec: SyntheticLidarSpec, tiny_range: list[float]) -> None:
    ds = KittiDataset(tiny_kitti, "val", point_cloud_range=tiny_range)
    assert len(ds) == 3
    sample = ds[1]
    pts, boxes = sample["points"], sample["gt_bboxes_3d"]
    assert pts.dtype == torch.float32 and pts.shape[1] == 4
    lo, hi = torch.tensor(tiny_range[:3]), torch.tensor(tiny_range[3:])
    assert ((pts[:, :3] >= lo) & (pts[:, :3] < hi)).all()
    assert boxes.dtype == torch.float32 and boxes.shape[1] == 7 and len(boxes) == len(sample["gt_labels_3d"])
    assert sample["gt_labels_3d"].dtype == torch.int64
    assert sample["img_metas"]["sample_idx"] == 7 and isinstance(sample["img_metas"]["sample_idx"], int)
    # labels written in the camera frame come back close to the generator's LiDAR boxes (2-decimal rounding)
    _, truth, _ = make_scene(tiny_spec, 7)
    keep = (truth[:, 0] < tiny_range[3]) & (np.abs(truth[:, 1]) < tiny_range[4])
    np.testing.assert_allclose(boxes[:, :6].numpy(), truth[keep][:, :6], atol=0.03)


def test_kitti_dataset_missing_split(tiny_kitti: Path) -> None:
    with pytest.raises(DatasetError, match=r"ImageSets/nope\.txt"):
        KittiDataset(tiny_kitti, "nope")
