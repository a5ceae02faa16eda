"""mmdet3d's KITTI data side and evaluation on detlight's synthetic set: info files, db-sampler, CPU rotate_iou, fit.

Run with the OpenMMLab venv: ``.venv-openmmlab/bin/python -m pytest -q -m openmmlab tests/openmmlab/test_bridge_kitti3d.py``.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import detlight.openmmlab

pytestmark = pytest.mark.openmmlab

mmdet3d = pytest.importorskip("mmdet3d")
detlight.openmmlab.install_ops()  # before anything imports mmcv.ops

from detlight.data.synthetic_lidar import SyntheticLidarSpec  # noqa: E402

SPEC = SyntheticLidarSpec(num_train=4, num_val=2, num_beams=16, azimuth_res=0.8, max_range=30.0, spawn_x=(4.0, 19.0),
                          spawn_half_width=9.0)
PCR = [0.0, -10.24, -3.0, 20.48, 10.24, 1.0]


@pytest.fixture(scope="module")
def infos_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from detlight.openmmlab.kitti_infos import ensure_kitti_infos

    return ensure_kitti_infos(SPEC, tmp_path_factory.mktemp("cache"))


def test_info_files_hold_mmdet3d_kitti_layout_and_round_trip_the_labels(infos_root: Path) -> None:
    import torch

    from detlight.data.kitti import objects_to_lidar, read_calib, read_label
    from detlight.openmmlab.kitti_infos import ensure_kitti_infos

    assert ensure_kitti_infos(SPEC, infos_root.parent) == infos_root  # cached
    train = pickle.loads((infos_root / "kitti_infos_train.pkl").read_bytes())
    val = pickle.loads((infos_root / "kitti_infos_val.pkl").read_bytes())
    assert [i["image"]["image_idx"] for i in train] == [0, 1, 2, 3]
    assert [i["image"]["image_idx"] for i in val] == [4, 5]
    info = train[1]
    assert info["calib"]["P2"].shape == (4, 4) and info["calib"]["R0_rect"][3, 3] == 1.0
    annos = info["annos"]
    n = len(annos["name"])
    assert n > 0 and annos["dimensions"].shape == (n, 3) and annos["bbox"].shape == (n, 4)
    assert set(annos["difficulty"].tolist()) <= {-1, 0, 1, 2}
    # mmdet3d's KittiDataset turns the infos into the same LiDAR boxes detlight's own reader gives
    from mmdet3d.datasets import KittiDataset

    ds = KittiDataset(str(infos_root), str(infos_root / "kitti_infos_train.pkl"), "training",
                      pts_prefix="velodyne_reduced", pipeline=None, classes=["Pedestrian", "Cyclist", "Car"],
                      modality={"use_lidar": True, "use_camera": False})
    gt = ds.get_ann_info(1)["gt_bboxes_3d"].tensor
    calib = read_calib(infos_root / "training" / "calib" / "000001.txt")
    ref, labels = objects_to_lidar(read_label(infos_root / "training" / "label_2" / "000001.txt"), calib,
                                   ["Pedestrian", "Cyclist", "Car"])
    assert torch.allclose(gt[:, :6], ref[:, :6], atol=1e-4)
    assert torch.allclose(torch.cos(gt[:, 6] - ref[:, 6]), torch.ones(n), atol=1e-5)
    assert ds.get_ann_info(1)["gt_labels_3d"].tolist() == labels.tolist()
    # every point with a positive count in the gt database lies in its box; the reduced cloud is a subset
    full = np.fromfile(infos_root / "training" / "velodyne" / "000001.bin", np.float32).reshape(-1, 4)
    reduced = np.fromfile(infos_root / "training" / "velodyne_reduced" / "000001.bin", np.float32).reshape(-1, 4)
    assert 0 < len(reduced) < len(full)
    db = pickle.loads((infos_root / "kitti_dbinfos_train.pkl").read_bytes())
    total = sum(len(v) for v in db.values())
    assert total == sum(len(i["annos"]["name"]) for i in train)
    entry = db["Car"][0]
    pts = np.fromfile(infos_root / entry["path"], np.float32).reshape(-1, 4)
    assert len(pts) == entry["num_points_in_gt"] > 0
    half = entry["box3d_lidar"][3:5] / 2 + 1e-4
    yaw = entry["box3d_lidar"][6]
    local = pts[:, :2] @ np.array([[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]])
    assert (np.abs(local) <= half).all() and (pts[:, 2] >= -1e-4).all()


def test_train_pipeline_with_object_sample_runs_on_the_infos(infos_root: Path, tmp_path: Path) -> None:
    from mmcv import Config
    from mmdet3d.datasets import build_dataset

    from detlight.openmmlab.samples3d import mmdet3d_config_dir, retarget

    out = retarget(mmdet3d_config_dir() / "pointpillars" / "hv_pointpillars_secfpn_6x8_160e_kitti-3d-3class.py",
                   tmp_path / "pp.py", SPEC, point_cloud_range=PCR, cache_dir=infos_root.parent)
    cfg = Config.fromfile(str(out))
    assert cfg.model.middle_encoder.output_shape == [128, 128]
    assert cfg.data.train.dataset.ann_file == str(infos_root / "kitti_infos_train.pkl")
    sample = next(p for p in cfg.data.train.dataset.pipeline if p["type"] == "ObjectSample")
    assert sample["db_sampler"]["info_path"] == str(infos_root / "kitti_dbinfos_train.pkl")
    ds = build_dataset(cfg.data.train)
    item = ds[0]
    boxes = item["gt_bboxes_3d"].data.tensor
    n_own = len(pickle.loads((infos_root / "kitti_infos_train.pkl").read_bytes())[0]["annos"]["name"])
    assert len(boxes) > 0 and item["points"].data.shape[1] == 4
    assert len(boxes) >= n_own  # ObjectSample pasted database objects next to the frame's own
    assert (boxes[:, 0] >= PCR[0]).all() and (boxes[:, 0] <= PCR[3]).all()


def test_rotate_iou_cpu_equals_numbas_cuda_kernel_in_the_simulator(tmp_path: Path) -> None:
    from detlight.openmmlab.kitti_eval_cpu import rotate_iou_cpu_eval

    rng = np.random.default_rng(3)

    def boxes(n: int) -> np.ndarray:
        return np.concatenate([rng.uniform(0, 5, (n, 2)), rng.uniform(0.5, 3, (n, 2)),
                               rng.uniform(-3.2, 3.2, (n, 1))], 1).astype(np.float32)

    b, q = boxes(9), boxes(7)
    q[0] = b[0]  # identical pair: IoU 1 here; numba's kernel gives 1/3 (coincident edges double its vertices)
    np.save(tmp_path / "b.npy", b)
    np.save(tmp_path / "q.npy", q)
    script = (
        "import sys, numpy as np; import detlight.openmmlab; detlight.openmmlab.install_ops()\n"
        "from mmdet3d.core.evaluation.kitti_utils.rotate_iou import rotate_iou_gpu_eval as f\n"
        "d = sys.argv[1]; b, q = np.load(d + '/b.npy'), np.load(d + '/q.npy')\n"
        "np.save(d + '/ref.npy', np.stack([f(b, q, c) for c in (-1, 0, 1, 2)]))\n")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, env=env, capture_output=True)
    ref = np.load(tmp_path / "ref.npy")
    ours = np.stack([rotate_iou_cpu_eval(b, q, c) for c in (-1, 0, 1, 2)])
    assert ours.dtype == np.float32 and ours.shape == (4, 9, 7)
    assert (ref[0] > 0).sum() >= 5  # the check covers overlapping pairs
    same = np.zeros((9, 7), dtype=bool)
    same[0, 0] = True
    np.testing.assert_allclose(ours[:, ~same], ref[:, ~same], atol=2e-5, rtol=1e-5)
    assert ours[0, 0, 0] == pytest.approx(1.0, abs=1e-5) and ours[3, 0, 0] == pytest.approx(b[0, 2] * b[0, 3])
    assert rotate_iou_cpu_eval(b[:0], q).shape == (0, 7)


def test_fit_trains_pointpillars_and_logs_mmdet3ds_kitti_evaluation(infos_root: Path, tmp_path: Path) -> None:
    from mmdet3d.datasets import KittiDataset
    from mmdet3d.models.detectors import VoxelNet

    from detlight.api import fit
    from detlight.openmmlab.samples3d import mmdet3d_config_dir, retarget

    config = retarget(mmdet3d_config_dir() / "pointpillars" / "hv_pointpillars_secfpn_6x8_160e_kitti-3d-3class.py",
                      tmp_path / "pp.py", SPEC, point_cloud_range=PCR, max_voxels=3000, samples_per_gpu=4,
                      max_epochs=1, cache_dir=infos_root.parent,
                      extra={"evaluation.interval": 1, "data.val_dataloader.samples_per_gpu": 2,
                             "work_dir": str(tmp_path / "work")})
    trainer, module = fit(str(config), overrides={"trainer.default_root_dir": str(tmp_path / "work"),
                                                  "trainer.max_steps": 2, "trainer.enable_progress_bar": False})
    assert isinstance(module.model, VoxelNet)
    assert isinstance(trainer.datamodule.dataset("val"), KittiDataset)
    assert trainer.global_step == 2
    key = "KITTI/Car_3D_AP40_moderate_strict"
    assert key in module.eval_results and f"val/{key}" in trainer.callback_metrics
    assert all(0.0 <= v <= 100.0 for v in module.eval_results.values())


def test_kitti_evaluate_on_cpu_scores_ground_truth_as_predictions_100(tmp_path: Path) -> None:
    import torch
    from mmdet3d.datasets import KittiDataset

    from detlight.openmmlab.kitti_eval_cpu import install_kitti_eval_cpu, rotate_iou_cpu_eval
    from detlight.openmmlab.kitti_infos import ensure_kitti_infos

    install_kitti_eval_cpu()
    # KITTI's AP samples 41 recall points: the val set needs well over 41 cars for a perfect score to read 100
    spec = SyntheticLidarSpec(num_train=1, num_val=14, num_beams=8, azimuth_res=1.0, max_range=30.0,
                              spawn_x=(5.0, 25.0), objects_per_scene=(8, 12), class_probs=(0.1, 0.1, 0.8))
    root = ensure_kitti_infos(spec, tmp_path)
    ds = KittiDataset(str(root), str(root / "kitti_infos_val.pkl"), "training", pts_prefix="velodyne_reduced",
                      pipeline=None, classes=["Pedestrian", "Cyclist", "Car"], test_mode=False,
                      modality={"use_lidar": True, "use_camera": False})
    gen = torch.Generator().manual_seed(0)
    results = []
    for i in range(len(ds)):
        ann = ds.get_ann_info(i)
        n = len(ann["gt_labels_3d"])
        results.append({"boxes_3d": ann["gt_bboxes_3d"], "scores_3d": 0.5 + 0.5 * torch.rand(n, generator=gen),
                         "labels_3d": torch.from_numpy(ann["gt_labels_3d"])})
    cars = sum(int((ds.get_ann_info(i)["gt_labels_3d"] == 2).sum()) for i in range(len(ds)))
    assert cars > 41
    out = ds.evaluate(results)
    import mmdet3d.core.evaluation.kitti_utils.rotate_iou as riou

    if riou.rotate_iou_gpu_eval is rotate_iou_cpu_eval:  # no CUDA here: the CPU stand-in computed the bev / 3d IoUs
        for key in ("3D_AP40_moderate_strict", "BEV_AP40_moderate_strict", "2D_AP40_moderate_strict"):
            assert out[f"KITTI/Car_{key}"] == pytest.approx(100.0)
    # predictions shifted 0.8 m along x fall below IoU 0.7 for some cars: the strict AP drops
    shifted = []
    for r in results:
        boxes = r["boxes_3d"].clone()
        boxes.tensor[:, 0] += 0.8
        shifted.append(dict(r, boxes_3d=boxes))
    worse = ds.evaluate(shifted)
    assert worse["KITTI/Car_3D_AP40_moderate_strict"] < 100.0
