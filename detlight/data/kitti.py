"""KITTI-format LiDAR data: file readers/writers, point-cloud augmentation and a map-style dataset.

Replaces: mmdet3d's ``KittiDataset`` (infos built by ``tools/create_data.py`` are not needed: the raw files are read
directly), ``LoadPointsFromFile``, ``ObjectNoise``, ``RandomFlip3D``, ``GlobalRotScaleTrans``, ``PointsRangeFilter``,
``ObjectRangeFilter`` and ``PointShuffle``.

Directory layout (the KITTI object benchmark's)::

    root/ImageSets/{train,val}.txt          one 6-digit frame id per line
    root/training/velodyne/000000.bin       float32 (x, y, z, intensity) rows, LiDAR frame
    root/training/label_2/000000.txt        KITTI label lines, camera frame
    root/training/calib/000000.txt          P0-P3, R0_rect, Tr_velo_to_cam, Tr_imu_to_velo

Boxes leave this module in the LiDAR frame, bottom-centred (see :mod:`detlight.models.box3d`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from detlight.exceptions import ConfigError, DatasetError
from detlight.models.box3d import (
    camera_to_lidar_boxes,
    flip_horizontal,
    limit_period,
    points_in_boxes,
    rotate_z,
    scale_scene,
)

__all__ = [
    "KITTI_CLASSES",
    "Augment3D",
    "KittiCalib",
    "KittiDataset",
    "KittiObject",
    "read_calib",
    "read_label",
    "read_points",
    "write_calib",
    "write_label",
    "write_points",
]

KITTI_CLASSES: tuple[str, ...] = ("Pedestrian", "Cyclist", "Car")
_CALIB_KEYS = ("P0", "P1", "P2", "P3", "R0_rect", "Tr_velo_to_cam", "Tr_imu_to_velo")
_CALIB_SHAPES = {"R0_rect": (3, 3)}


# ---------------------------------------------------------------------------------------------------------- files
def read_points(path: str | Path, num_features: int = 4) -> np.ndarray:
    """Velodyne ``.bin`` scan as ``float32[N, num_features]``."""
    raw = np.fromfile(path, dtype=np.float32)
    if raw.size % num_features:
        raise DatasetError(f"{path}: {raw.size} float32 values is not a multiple of num_features={num_features}")
    return raw.reshape(-1, num_features)


def write_points(path: str | Path, points: np.ndarray) -> None:
    """Write ``float32[N, 4]`` points as a velodyne ``.bin`` file."""
    np.ascontiguousarray(points, dtype=np.float32).tofile(path)


@dataclass
class KittiCalib:
    """One frame's calibration: the seven matrices of a KITTI ``calib/*.txt`` file (3x4 except ``R0_rect`` 3x3)."""

    P0: np.ndarray
    P1: np.ndarray
    P2: np.ndarray
    P3: np.ndarray
    R0_rect: np.ndarray
    Tr_velo_to_cam: np.ndarray
    Tr_imu_to_velo: np.ndarray

    def lidar_to_rect(self) -> np.ndarray:
        """``4x4`` matrix taking LiDAR points to the rectified camera frame (``R0_rect @ Tr_velo_to_cam``)."""
        r0, tr = np.eye(4), np.eye(4)
        r0[:3, :3], tr[:3, :4] = self.R0_rect, self.Tr_velo_to_cam
        return r0 @ tr


def read_calib(path: str | Path) -> KittiCalib:
    """Parse a KITTI object ``calib`` file (``Tr_velo_cam`` is accepted for ``Tr_velo_to_cam``)."""
    mats: dict[str, np.ndarray] = {}
    for line in Path(path).read_text().splitlines():
        if ":" not in line:
            continue
        key, values = line.split(":", 1)
        key = {"Tr_velo_cam": "Tr_velo_to_cam", "R_rect": "R0_rect", "Tr_imu_velo": "Tr_imu_to_velo"}.get(key, key)
        shape = _CALIB_SHAPES.get(key, (3, 4))
        numbers = np.array([float(v) for v in values.split()], dtype=np.float64)
        if numbers.size != shape[0] * shape[1]:
            raise DatasetError(f"{path}: `{key}` has {numbers.size} numbers, expected {shape[0] * shape[1]}")
        mats[key] = numbers.reshape(shape)
    missing = [k for k in ("P2", "R0_rect", "Tr_velo_to_cam") if k not in mats]
    if missing:
        raise DatasetError(f"{path}: calibration lacks {missing}; a KITTI calib file has keys {list(_CALIB_KEYS)}")
    eye34 = np.eye(3, 4)
    return KittiCalib(**{k: mats.get(k, eye34) for k in _CALIB_KEYS})


def write_calib(path: str | Path, calib: KittiCalib) -> None:
    """Write ``calib`` in the KITTI text layout (12 significant digits)."""
    lines = [f"{k}: " + " ".join(f"{v:.12e}" for v in np.asarray(getattr(calib, k)).ravel()) for k in _CALIB_KEYS]
    Path(path).write_text("\n".join(lines) + "\n")


@dataclass
class KittiObject:
    """One ``label_2`` line. ``dimensions`` are ``(h, w, l)`` and ``location`` the bottom centre, camera frame."""

    type: str
    truncated: float = 0.0
    occluded: int = 0
    alpha: float = -10.0
    bbox: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    dimensions: tuple[float, float, float] = (0.0, 0.0, 0.0)
    location: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rotation_y: float = 0.0
    score: float | None = None

    def camera_box(self) -> list[float]:
        """mmdet3d camera box ``(x, y, z, l, h, w, ry)``."""
        h, w, length = self.dimensions
        return [*self.location, length, h, w, self.rotation_y]

    def to_line(self) -> str:
        """Format as a KITTI label line (2 decimals, as the benchmark's files)."""
        nums = [self.truncated, self.occluded, self.alpha, *self.bbox, *self.dimensions, *self.location, self.rotation_y]
        text = f"{self.type} " + " ".join(f"{v:.2f}" if i != 1 else str(int(v)) for i, v in enumerate(nums))
        return text + (f" {self.score:.4f}" if self.score is not None else "")


def read_label(path: str | Path) -> list[KittiObject]:
    """Parse a ``label_2`` file (15 columns, or 16 with a score)."""
    objects = []
    for n, line in enumerate(Path(path).read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) not in (15, 16):
            raise DatasetError(f"{path}:{n}: expected 15 or 16 columns (type ... rotation_y [score]), got {len(parts)}")
        v = [float(p) for p in parts[1:]]
        objects.append(KittiObject(
            type=parts[0], truncated=v[0], occluded=int(v[1]), alpha=v[2], bbox=(v[3], v[4], v[5], v[6]),
            dimensions=(v[7], v[8], v[9]), location=(v[10], v[11], v[12]), rotation_y=v[13],
            score=v[14] if len(v) == 15 else None,
        ))
    return objects


def write_label(path: str | Path, objects: Sequence[KittiObject]) -> None:
    """Write label lines (an empty file for a frame without objects)."""
    Path(path).write_text("".join(obj.to_line() + "\n" for obj in objects))


def objects_to_lidar(objects: Sequence[KittiObject], calib: KittiCalib, classes: Sequence[str]) -> tuple[
        torch.Tensor, torch.Tensor]:
    """LiDAR boxes ``float32[n, 7]`` and labels ``int64[n]`` of the objects whose type is in ``classes``."""
    keep = [o for o in objects if o.type in classes]
    labels = torch.tensor([classes.index(o.type) for o in keep], dtype=torch.int64)
    if not keep:
        return torch.zeros(0, 7), labels
    cam = torch.tensor([o.camera_box() for o in keep], dtype=torch.float64)
    return camera_to_lidar_boxes(cam, torch.from_numpy(calib.R0_rect), torch.from_numpy(calib.Tr_velo_to_cam)), labels


# ---------------------------------------------------------------------------------------------------- augmentation
@dataclass(frozen=True)
class Augment3D:
    """Training-time point-cloud augmentation, applied in mmdet3d's pipeline order.

    ``ObjectNoise`` (if ``object_noise``) -> ``RandomFlip3D`` (``flip_ratio``) -> ``GlobalRotScaleTrans``
    (``rot_range`` radians, ``scale_range``) -> range filters -> ``PointShuffle`` (``shuffle``). Randomness comes
    from ``numpy.random`` as in mmdet3d, so Lightning's ``seed_everything(workers=True)`` makes it reproducible.

    Args:
        rot_range: uniform global rotation about +z, radians (mmdet3d KITTI: ``[-0.78539816, 0.78539816]``).
        scale_range: uniform global scale factor (mmdet3d KITTI: ``[0.95, 1.05]``).
        flip_ratio: probability of a horizontal (``y -> -y``) flip.
        object_noise: per-object translation and rotation noise, moving the points inside each box with it.
        translation_std: standard deviation of the object translation noise, metres.
        object_rot_range: uniform per-object rotation noise, radians.
        shuffle: shuffle the point order.
    """

    rot_range: tuple[float, float] = (-0.78539816, 0.78539816)
    scale_range: tuple[float, float] = (0.95, 1.05)
    flip_ratio: float = 0.5
    object_noise: bool = False
    translation_std: tuple[float, float, float] = (0.25, 0.25, 0.25)
    object_rot_range: tuple[float, float] = (-0.15707963267, 0.15707963267)
    shuffle: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.flip_ratio <= 1.0:
            raise ConfigError(f"Augment3D.flip_ratio must be in [0, 1], got {self.flip_ratio}")
        for name in ("rot_range", "scale_range", "object_rot_range"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ConfigError(f"Augment3D.{name} must be (low, high) with low <= high, got {(lo, hi)}")
        if self.scale_range[0] <= 0:
            raise ConfigError(f"Augment3D.scale_range must be positive, got {self.scale_range}")

    def __call__(self, points: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Augment one scene; returns the new points, boxes and the meta entries that :func:`undo_pcd_aug` reads."""
        if self.object_noise and len(boxes):
            points, boxes = _object_noise(points, boxes, self.translation_std, self.object_rot_range)
        flip = bool(np.random.rand() < self.flip_ratio)
        if flip:
            points, boxes = flip_horizontal(points, boxes)
        angle = float(np.random.uniform(*self.rot_range))
        points, boxes = rotate_z(points, boxes, angle)
        scale = float(np.random.uniform(*self.scale_range))
        points, boxes = scale_scene(points, boxes, scale)
        return points, boxes, {"pcd_horizontal_flip": flip, "pcd_rotation": angle, "pcd_scale_factor": scale}


def _object_noise(points: torch.Tensor, boxes: torch.Tensor, translation_std: Sequence[float],
                  rot_range: Sequence[float], num_try: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """mmdet3d ``ObjectNoise`` with a conservative collision test (circumscribed BEV circles)."""
    masks = points_in_boxes(points[:, :3], boxes)
    points, boxes = points.clone(), boxes.clone()
    radius = torch.linalg.norm(boxes[:, 3:5], dim=1) * 0.5
    for i in range(len(boxes)):
        for _ in range(num_try):
            shift = torch.from_numpy(np.random.normal(0.0, translation_std, 3).astype(np.float32))
            angle = float(np.random.uniform(rot_range[0], rot_range[1]))
            center = boxes[i, :2] + shift[:2]
            others = torch.cat([boxes[:i, :2], boxes[i + 1:, :2]])
            r_others = torch.cat([radius[:i], radius[i + 1:]])
            if len(others) and bool((torch.linalg.norm(others - center, dim=1) < r_others + radius[i]).any()):
                continue
            sel = masks[:, i]
            local, _ = rotate_z(points[sel, :3] - boxes[i, :3], boxes.new_zeros(0, 7), angle)
            points[sel, :3] = local + boxes[i, :3] + shift
            boxes[i, :3] = boxes[i, :3] + shift
            boxes[i, 6] = limit_period(boxes[i, 6] + angle)
            break
    return points, boxes


def range_filter(points: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor,
                 pc_range: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``PointsRangeFilter`` (3D, half-open) and ``ObjectRangeFilter`` (BEV centre), wrapping yaw into [-pi, pi)."""
    lo, hi = points.new_tensor(pc_range[:3]), points.new_tensor(pc_range[3:])
    points = points[((points[:, :3] >= lo) & (points[:, :3] < hi)).all(dim=1)]
    keep = ((boxes[:, :2] >= lo[:2]) & (boxes[:, :2] < hi[:2])).all(dim=1)
    boxes, labels = boxes[keep].clone(), labels[keep]
    boxes[:, 6] = limit_period(boxes[:, 6])
    return points, boxes, labels


# --------------------------------------------------------------------------------------------------------- dataset
@dataclass
class _Frame:
    sample_idx: int
    pts_filename: str
    boxes: torch.Tensor = field(repr=False)
    labels: torch.Tensor = field(repr=False)


class KittiDataset(Dataset):
    """KITTI-format LiDAR frames as detlight 3D samples (replaces mmdet3d ``KittiDataset`` + its point pipeline).

    Labels and calibrations are parsed once at construction; each ``__getitem__`` reads one ``.bin`` file.

    Args:
        root: dataset root (the directory holding ``ImageSets`` and ``training``).
        split: name of the ``ImageSets/<split>.txt`` frame list.
        classes: class names; label index is the position in this list, other types are dropped.
        point_cloud_range: ``[x_min, y_min, z_min, x_max, y_max, z_max]`` kept after augmentation.
        augment: training augmentation, or ``None`` for evaluation.

    A sample is ``{"points": float32[N, 4], "img_metas": dict, "gt_bboxes_3d": float32[n, 7],
    "gt_labels_3d": int64[n]}``; ``img_metas`` holds ``sample_idx``, ``pts_filename``, ``point_cloud_range`` and the
    augmentation record (``pcd_horizontal_flip``, ``pcd_rotation``, ``pcd_scale_factor``).
    """

    def __init__(self, root: str | Path, split: str, classes: Sequence[str] = KITTI_CLASSES,
                 point_cloud_range: Sequence[float] = (0.0, -39.68, -3.0, 69.12, 39.68, 1.0),
                 augment: Augment3D | None = None) -> None:
        self.root = Path(root)
        self.classes = list(classes)
        if len(point_cloud_range) != 6:
            raise ConfigError(f"point_cloud_range needs 6 numbers [x0, y0, z0, x1, y1, z1], got {point_cloud_range}")
        self.point_cloud_range = [float(v) for v in point_cloud_range]
        self.augment = augment
        split_file = self.root / "ImageSets" / f"{split}.txt"
        if not split_file.is_file():
            raise DatasetError(f"Split list {split_file} not found; expected ImageSets/<split>.txt under {root}")
        ids = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
        self.frames = [self._load_frame(i) for i in ids]

    def _load_frame(self, frame_id: str) -> _Frame:
        base = self.root / "training"
        calib = read_calib(base / "calib" / f"{frame_id}.txt")
        boxes, labels = objects_to_lidar(read_label(base / "label_2" / f"{frame_id}.txt"), calib, self.classes)
        pts = base / "velodyne" / f"{frame_id}.bin"
        if not pts.is_file():
            raise DatasetError(f"Point cloud {pts} listed in the split is missing")
        return _Frame(int(frame_id), str(pts), boxes, labels)

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> dict[str, Any]:
        frame = self.frames[index]
        points = torch.from_numpy(read_points(frame.pts_filename))
        boxes, labels = frame.boxes.clone(), frame.labels.clone()
        meta: dict[str, Any] = {"sample_idx": frame.sample_idx, "pts_filename": frame.pts_filename,
                                "point_cloud_range": list(self.point_cloud_range), "box_type_3d": "LiDAR",
                                "pcd_horizontal_flip": False, "pcd_rotation": 0.0, "pcd_scale_factor": 1.0}
        if self.augment is not None:
            points, boxes, record = self.augment(points, boxes)
            meta.update(record)
        points, boxes, labels = range_filter(points, boxes, labels, self.point_cloud_range)
        if self.augment is not None and self.augment.shuffle:
            points = points[torch.from_numpy(np.random.permutation(len(points)))]
        return {"points": points.contiguous(), "img_metas": meta, "gt_bboxes_3d": boxes, "gt_labels_3d": labels}


def rotation_to_alpha(ry: float, x: float, z: float) -> float:
    """KITTI observation angle ``alpha = ry - atan2(x, z)`` wrapped into ``[-pi, pi)``."""
    return float((ry - math.atan2(x, z) + math.pi) % (2 * math.pi) - math.pi)
