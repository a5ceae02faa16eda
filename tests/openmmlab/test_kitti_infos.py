"""mmdet3d KITTI info files written from the synthetic LiDAR set, read back without mmdet3d (base venv)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from detlight.data.synthetic_lidar import SyntheticLidarSpec
from detlight.exceptions import DatasetError
from detlight.openmmlab.kitti_infos import GROUND_Z, _difficulty, ensure_kitti_infos, main, write_kitti_infos

SPEC = SyntheticLidarSpec(num_train=3, num_val=1, num_beams=8, azimuth_res=1.0, max_range=25.0, spawn_x=(4.0, 20.0))


def test_difficulty_follows_kittis_height_occlusion_truncation_rule() -> None:
    bbox = np.array([[0, 0, 10, 50], [0, 0, 10, 30], [0, 0, 10, 30], [0, 0, 10, 20], [0, 0, 10, 50]], float)
    occluded = np.array([0, 0, 2, 0, 1])
    truncated = np.array([0.0, 0.0, 0.0, 0.0, 0.2])
    # 50 px visible: easy; 30 px: moderate; occlusion 2: hard; 20 px: none; occluded 1 + truncated 0.2: moderate
    assert _difficulty(bbox, occluded, truncated).tolist() == [0, 1, 2, -1, 1]


def test_infos_ground_plane_and_gt_database(tmp_path: Path) -> None:
    root = ensure_kitti_infos(SPEC, tmp_path)
    assert ensure_kitti_infos(SPEC, tmp_path) == root
    infos = pickle.loads((root / "kitti_infos_train.pkl").read_bytes())
    both = pickle.loads((root / "kitti_infos_trainval.pkl").read_bytes())
    assert len(infos) == 3 and len(both) == 4
    info = infos[0]
    assert info["point_cloud"]["velodyne_path"] == "training/velodyne/000000.bin"
    assert (root / info["point_cloud"]["velodyne_path"]).is_file()
    # the plane, taken back to the LiDAR frame, is z = GROUND_Z
    rt = info["calib"]["R0_rect"] @ info["calib"]["Tr_velo_to_cam"]
    a, b, c, d = info["plane"]
    ground = np.array([[5.0, 1.0, GROUND_Z, 1.0], [20.0, -4.0, GROUND_Z, 1.0]]) @ rt.T
    np.testing.assert_allclose(ground[:, :3] @ np.array([a, b, c]) + d, 0.0, atol=1e-6)
    annos = info["annos"]
    n = len(annos["name"])
    assert annos["num_points_in_gt"].shape == (n,) and (annos["num_points_in_gt"] >= 0).all()
    db = pickle.loads((root / "kitti_dbinfos_train.pkl").read_bytes())
    counts = sorted(e["num_points_in_gt"] for entries in db.values() for e in entries)
    assert counts == sorted(int(c) for i in infos for c in i["annos"]["num_points_in_gt"])


def test_missing_split_file_names_it(tmp_path: Path) -> None:
    (tmp_path / "src" / "ImageSets").mkdir(parents=True)
    with pytest.raises(DatasetError, match="ImageSets/train.txt"):
        write_kitti_infos(tmp_path / "src", tmp_path / "out")


def test_cli_links_the_data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DETLIGHT_CACHE", str(tmp_path / "cache"))
    dest = tmp_path / "data" / "synthetic_kitti"
    assert main([str(dest), "--num-train", "2", "--num-val", "1"]) == 0
    assert dest.is_symlink() and (dest / "kitti_infos_val.pkl").is_file()
    (tmp_path / "plain").mkdir()
    with pytest.raises(DatasetError, match="not a symlink"):
        main([str(tmp_path / "plain"), "--num-train", "2", "--num-val", "1"])


def test_dataset_file_check_accepts_mmdet3ds_unjoined_ann_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from detlight.openmmlab.data import check_dataset_files

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "kitti").mkdir(parents=True)
    (tmp_path / "data" / "kitti" / "kitti_infos_train.pkl").write_bytes(b"")
    split = {"type": "KittiDataset", "data_root": "data/kitti/", "ann_file": "data/kitti/kitti_infos_train.pkl"}
    check_dataset_files(split, "data.train", unjoined_ok=True)  # mmdet3d reads ann_file as written
    with pytest.raises(DatasetError, match="data/kitti/data/kitti/kitti_infos_train.pkl"):
        check_dataset_files(split, "data.train")  # mmdet joins data_root
    with pytest.raises(DatasetError, match="`data.train.ann_file`"):
        check_dataset_files(dict(split, ann_file="data/kitti/gone.pkl"), "data.train", unjoined_ok=True)
