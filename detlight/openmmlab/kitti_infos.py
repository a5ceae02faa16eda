"""mmdet3d's KITTI info files for detlight's synthetic LiDAR set, written without images or the real data.

Replaces: mmdet3d's ``tools/create_data.py kitti`` (``kitti_converter.create_kitti_info_file``,
``create_reduced_point_cloud`` and ``create_groundtruth_database``), which read the KITTI images to get their sizes
and so cannot run on :mod:`detlight.data.synthetic_lidar`'s scenes. The files hold what mmdet3d's ``KittiDataset``,
its ``ObjectSample`` db-sampler and ``kitti_eval`` read, in mmdet3d 1.0's layout:

* ``kitti_infos_{train,val,trainval}.pkl``: one dict per frame with ``image`` (``image_idx``, ``image_path``,
  ``image_shape`` = KITTI's 375 x 1242), ``point_cloud`` (``num_features`` 4, ``velodyne_path``), ``calib`` (the
  seven matrices padded to 4 x 4) and ``annos`` (``name``, ``truncated``, ``occluded``, ``alpha``, ``bbox``,
  ``dimensions`` as camera ``l, h, w``, ``location``, ``rotation_y``, ``score``, ``index``, ``group_ids``,
  ``difficulty`` by KITTI's 2D-height / occlusion / truncation rule, ``num_points_in_gt``).
* ``training/velodyne_reduced``: the points inside the camera's image (the configs read these).
* ``kitti_dbinfos_train.pkl`` + ``kitti_gt_database/``: each train object's points (relative to the box's bottom
  centre) and its LiDAR box, for ``ObjectSample``.

Limits: no images are written (``image_path`` names a file that does not exist), so only LiDAR-only configs run;
``info['plane']`` is the synthetic flat ground. The velodyne / label / calib folders link to the synthetic set's own.
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detlight.data.kitti import read_calib, read_label, read_points
from detlight.data.synthetic_lidar import SyntheticLidarSpec, ensure_synthetic_kitti, synthetic_cache_dir
from detlight.exceptions import DatasetError
from detlight.models.box3d import camera_to_lidar_boxes, points_in_boxes

__all__ = ["GROUND_Z", "IMAGE_SHAPE", "ensure_kitti_infos", "frame_info", "main", "write_kitti_infos"]

#: (height, width) of a KITTI colour image, the shape every synthetic frame reports
IMAGE_SHAPE = (375, 1242)
#: height of the synthetic scenes' ground in the LiDAR frame (metres)
GROUND_Z = -1.73
_VERSION = 1
# KITTI's difficulty rule: minimum 2D box height (px), maximum occlusion level, maximum truncation per level
_MIN_HEIGHT = (40.0, 25.0, 25.0)
_MAX_OCCLUSION = (0, 1, 2)
_MAX_TRUNCATION = (0.15, 0.3, 0.5)


def _pad44(mat: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[: mat.shape[0], : mat.shape[1]] = mat
    return out


def _difficulty(bbox: np.ndarray, occluded: np.ndarray, truncated: np.ndarray) -> np.ndarray:
    """KITTI difficulty per object: 0 easy, 1 moderate, 2 hard, -1 none (mmdet3d's ``add_difficulty_to_annos``)."""
    height = bbox[:, 3] - bbox[:, 1]
    ok = [(occluded <= o) & (height > h) & (truncated <= t)
          for h, o, t in zip(_MIN_HEIGHT, _MAX_OCCLUSION, _MAX_TRUNCATION)]
    return np.select([ok[0], ok[1], ok[2]], [0, 1, 2], default=-1).astype(np.int32)


def _in_image(points: np.ndarray, calib: Any) -> np.ndarray:
    """Mask of the points in front of the camera whose projection falls inside the image."""
    homo = np.concatenate([points[:, :3].astype(np.float64), np.ones((len(points), 1))], axis=1)
    cam = homo @ (calib.lidar_to_rect()).T
    uvw = cam @ _pad44(calib.P2).T
    depth = uvw[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u, v = uvw[:, 0] / depth, uvw[:, 1] / depth
    return (depth > 0) & (u >= 0) & (u < IMAGE_SHAPE[1]) & (v >= 0) & (v < IMAGE_SHAPE[0])


def frame_info(root: Path, frame: str) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """The info dict of ``root/training/*/<frame>``, the frame's points and its LiDAR boxes ``[n, 7]``."""
    calib = read_calib(root / "training" / "calib" / f"{frame}.txt")
    objects = read_label(root / "training" / "label_2" / f"{frame}.txt")
    points = read_points(root / "training" / "velodyne" / f"{frame}.bin")
    n = len(objects)
    bbox = np.array([o.bbox for o in objects], dtype=np.float64).reshape(n, 4)
    occluded = np.array([o.occluded for o in objects], dtype=np.int64)
    truncated = np.array([o.truncated for o in objects], dtype=np.float64)
    cam = np.array([o.camera_box() for o in objects], dtype=np.float64).reshape(n, 7)  # x y z l h w ry
    lidar = camera_to_lidar_boxes(torch.from_numpy(cam), torch.from_numpy(calib.R0_rect),
                                  torch.from_numpy(calib.Tr_velo_to_cam)).numpy() if n else np.zeros((0, 7), np.float32)
    inside = points_in_boxes(torch.from_numpy(points[:, :3]), torch.from_numpy(lidar)).numpy()
    annos = {
        "name": np.array([o.type for o in objects]),
        "truncated": truncated,
        "occluded": occluded,
        "alpha": np.array([o.alpha for o in objects], dtype=np.float64),
        "bbox": bbox,
        "dimensions": cam[:, 3:6].copy(),
        "location": cam[:, :3].copy(),
        "rotation_y": cam[:, 6].copy(),
        "score": np.zeros(n),
        "index": np.array([i if o.type != "DontCare" else -1 for i, o in enumerate(objects)], dtype=np.int32),
        "group_ids": np.arange(n, dtype=np.int32),
        "difficulty": _difficulty(bbox, occluded, truncated),
        "num_points_in_gt": inside.sum(0).astype(np.int32),
    }
    info = {
        "image": {"image_idx": int(frame), "image_path": f"training/image_2/{frame}.png",
                  "image_shape": np.array(IMAGE_SHAPE, dtype=np.int32)},
        "point_cloud": {"num_features": 4, "velodyne_path": f"training/velodyne/{frame}.bin"},
        "calib": {"P0": _pad44(calib.P0), "P1": _pad44(calib.P1), "P2": _pad44(calib.P2), "P3": _pad44(calib.P3),
                  "R0_rect": _pad44(calib.R0_rect), "Tr_velo_to_cam": _pad44(calib.Tr_velo_to_cam),
                  "Tr_imu_to_velo": _pad44(calib.Tr_imu_to_velo)},
        "annos": annos,
        "plane": _ground_plane(calib),
    }
    return info, points, lidar


def _ground_plane(calib: Any) -> np.ndarray:
    """The synthetic ground ``z = -1.73`` (LiDAR) as KITTI's camera-frame plane ``(a, b, c, d)``, unit normal."""
    rt = calib.lidar_to_rect()
    normal = rt[:3, :3] @ np.array([0.0, 0.0, 1.0])
    point = (rt @ np.array([0.0, 0.0, GROUND_Z, 1.0]))[:3]
    return np.concatenate([normal, [-normal @ point]])


def write_kitti_infos(source: str | Path, out_dir: str | Path) -> Path:
    """Write mmdet3d's KITTI info files for the KITTI-layout folder ``source`` into ``out_dir`` (created).

    ``out_dir/training/{velodyne,label_2,calib}`` link to ``source``'s; ``velodyne_reduced``, the info ``.pkl``
    files and the gt database are written.

    Returns:
        ``out_dir``, usable as an mmdet3d config's ``data_root``.
    """
    src, out = Path(source).resolve(), Path(out_dir)
    splits = {name: (src / "ImageSets" / f"{name}.txt") for name in ("train", "val")}
    for name, path in splits.items():
        if not path.is_file():
            raise DatasetError(f"{path} is missing: a KITTI-layout folder needs ImageSets/{name}.txt")
    (out / "training" / "velodyne_reduced").mkdir(parents=True, exist_ok=True)
    (out / "kitti_gt_database").mkdir(exist_ok=True)
    for sub in ("velodyne", "label_2", "calib"):
        os.symlink(src / "training" / sub, out / "training" / sub)
    shutil.copytree(src / "ImageSets", out / "ImageSets")
    infos: dict[str, list[dict[str, Any]]] = {}
    db: dict[str, list[dict[str, Any]]] = {}
    group = 0
    for split, path in splits.items():
        infos[split] = []
        for frame in path.read_text().split():
            info, points, lidar = frame_info(src, frame)
            calib = read_calib(src / "training" / "calib" / f"{frame}.txt")
            points[_in_image(points, calib)].tofile(out / "training" / "velodyne_reduced" / f"{frame}.bin")
            infos[split].append(info)
            if split != "train":
                continue
            annos = info["annos"]
            inside = points_in_boxes(torch.from_numpy(points[:, :3]), torch.from_numpy(lidar)).numpy()
            for i, name in enumerate(annos["name"].tolist()):
                obj = points[inside[:, i]].copy()
                obj[:, :3] -= lidar[i, :3]
                rel = f"kitti_gt_database/{int(frame)}_{name}_{i}.bin"
                obj.tofile(out / rel)
                db.setdefault(name, []).append({
                    "name": name, "path": rel, "image_idx": int(frame), "gt_idx": i, "box3d_lidar": lidar[i],
                    "num_points_in_gt": int(obj.shape[0]), "difficulty": int(annos["difficulty"][i]),
                    "group_id": group, "score": 0.0})
                group += 1
    for split, rows in (*infos.items(), ("trainval", infos["train"] + infos["val"])):
        with open(out / f"kitti_infos_{split}.pkl", "wb") as f:
            pickle.dump(rows, f)
    with open(out / "kitti_dbinfos_train.pkl", "wb") as f:
        pickle.dump(db, f)
    (out / "infos_version.txt").write_text(f"{_VERSION}\n")
    return out


def ensure_kitti_infos(spec: SyntheticLidarSpec | None = None, cache_dir: str | Path | None = None) -> Path:
    """mmdet3d's ``data_root`` for ``spec``'s synthetic KITTI set (generated into ``DETLIGHT_CACHE`` once).

    Like :func:`detlight.data.synthetic_lidar.ensure_synthetic_kitti`, the folder is written beside its target and
    moved into place, so concurrent processes never read half-written files.
    """
    spec = spec or SyntheticLidarSpec()
    root = Path(cache_dir) if cache_dir is not None else synthetic_cache_dir()
    source = ensure_synthetic_kitti(spec, root)
    target = root / f"synthetic_kitti_mmdet3d_{spec.cache_key()}_v{_VERSION}"
    if (target / "infos_version.txt").is_file():
        return target
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
    try:
        write_kitti_infos(source, tmp)
        try:
            os.replace(tmp, target)
        except OSError as err:
            if not (target / "infos_version.txt").is_file():
                raise DatasetError(f"{target} exists but holds no infos_version.txt; delete it to regenerate the "
                                   "mmdet3d info files") from err
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def main(argv: list[str] | None = None) -> int:
    """``python -m detlight.openmmlab.kitti_infos DEST``: link ``DEST`` to the (generated) info folder."""
    import argparse

    parser = argparse.ArgumentParser(description="mmdet3d KITTI info files for detlight's synthetic LiDAR set")
    parser.add_argument("dest", help="the data_root the config names, e.g. data/synthetic_kitti (a symlink is made)")
    parser.add_argument("--num-train", type=int, default=SyntheticLidarSpec.num_train)
    parser.add_argument("--num-val", type=int, default=SyntheticLidarSpec.num_val)
    parser.add_argument("--seed", type=int, default=SyntheticLidarSpec.seed)
    args = parser.parse_args(argv)
    root = ensure_kitti_infos(SyntheticLidarSpec(num_train=args.num_train, num_val=args.num_val, seed=args.seed))
    dest = Path(args.dest)
    if dest.is_symlink():
        dest.unlink()
    elif dest.exists():
        raise DatasetError(f"{dest} exists and is not a symlink; choose another folder for the synthetic set")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.symlink_to(root.resolve(), target_is_directory=True)
    print(f"{dest} -> {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
